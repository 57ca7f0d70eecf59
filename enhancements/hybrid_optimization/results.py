"""The fitted front as PySR shows it: the ``equations_`` table, its callables, the pick,
and the printed form.

    >>> from pysr_baseline.expression import Expression
    >>> from pysr_baseline.parsing import parse_expression
    >>> frame = equations_frame([(parse_expression("x0"), 2.0, 1), (parse_expression("x0 * x1"), 0.0, 3)],
    ...                         ["a", "b"])
    >>> list(frame.columns)
    ['complexity', 'loss', 'equation', 'score', 'sympy_format', 'lambda_format']
    >>> frame["equation"].tolist(), pick_index(frame, "best")
    (['a', 'a * b'], 1)
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import sympy
import torch

from pysr_baseline.expression import Expression
from pysr_baseline.validation import check_x

from enhancements.hybrid_optimization.hall_of_fame import front_scores, select_index

EPS_FLOOR = float(np.finfo(np.float64).eps)


class CallableEquation:
    """One formula as a function of X (``lambda_format``): ``f(X)`` -> numpy predictions.

    X may hold the fitted columns or, after feature selection, all the original ones
    (the selected ones are taken, as PySR does); a DataFrame's columns are matched by
    name. Picklable, unlike a lambda."""

    def __init__(self, expr: Expression, names: list[str], selection: list[int] | None = None,
                 n_features_in: int | None = None, dtype: torch.dtype = torch.float64):
        self.expr = expr
        self.names = list(names)
        self.selection = None if selection is None else list(selection)
        self.n_features_in = len(self.names) if n_features_in is None else n_features_in
        self.dtype = dtype

    def __call__(self, X) -> np.ndarray:
        if isinstance(X, pd.DataFrame) and all(n in X.columns for n in self.names):
            X = X[self.names]
        elif self.selection is not None and np.shape(X)[-1] == self.n_features_in != len(self.names):
            X = np.asarray(X)[:, self.selection]
        Xt = check_x(X, len(self.names), dtype=self.dtype)
        with torch.no_grad():
            return self.expr.evaluate(Xt).cpu().numpy().astype(np.float64)

    def __repr__(self) -> str:
        return f"PySRFunction(X=>{self.expr.to_sympy(self.names)})"


def equations_frame(entries, names: list[str], floor: float = 0.0, loss_scale: str = "log",
                    selection: list[int] | None = None, n_features_in: int | None = None,
                    torch_format: bool = False, jax_format: bool = False,
                    dtype: torch.dtype = torch.float64) -> pd.DataFrame:
    """PySR's ``equations_`` for ``entries`` ((expression, loss, complexity), by increasing
    complexity): complexity, loss, equation, score (with ``loss_scale="log"``),
    sympy_format, lambda_format, then jax_format and torch_format when asked for."""
    exprs = [e for e, _, _ in entries]
    losses = [float(loss) for _, loss, _ in entries]
    complexities = [c for _, _, c in entries]
    columns = {
        "complexity": complexities,
        "loss": losses,
        "equation": [e.to_string(names) for e in exprs],
    }
    if loss_scale == "log":
        columns["score"] = front_scores(losses, complexities, floor)
    columns["sympy_format"] = [e.to_sympy(names) for e in exprs]
    columns["lambda_format"] = [CallableEquation(e, names, selection, n_features_in, dtype) for e in exprs]
    if jax_format:
        from enhancements.hybrid_optimization.exports import sympy2jax

        symbols = [sympy.Symbol(n) for n in names]
        columns["jax_format"] = [dict(zip(("callable", "parameters"), sympy2jax(s, symbols, selection)))
                                 for s in columns["sympy_format"]]
    if torch_format:
        from enhancements.hybrid_optimization.exports import ExpressionModule

        columns["torch_format"] = [ExpressionModule(e, names, selection) for e in exprs]
    return pd.DataFrame(columns)


def pick_index(equations: pd.DataFrame, model_selection: str, floor: float = 0.0) -> int:
    """The row PySR's ``model_selection`` picks (by accuracy when there is no score column)."""
    losses, complexities = list(equations["loss"]), list(equations["complexity"])
    if "score" not in equations.columns:
        model_selection = "accuracy"
    return select_index(losses, complexities, model_selection, floor)


def format_front(equations: pd.DataFrame, exprs: list[Expression], pick: int, names: list[str],
                 print_precision: int = 5) -> str:
    """One front as PySR prints it: a pandas table with a ``pick`` column (``>>>>`` on the
    picked row), every line indented by a tab."""
    table = {"pick": [">>>>" if i == pick else "" for i in range(len(equations))]}
    if "score" in equations.columns:
        table["score"] = list(equations["score"])
    table["equation"] = [e.to_string(names, precision=print_precision) for e in exprs]
    table["loss"] = list(equations["loss"])
    table["complexity"] = list(equations["complexity"])
    with pd.option_context("display.max_colwidth", 50, "display.width", 10_000, "display.max_columns", None,
                           "display.max_rows", None):
        text = repr(pd.DataFrame(table))
    return "\n".join("\t" + line for line in text.splitlines()) + "\n"
