"""Formulas out of the search: torch modules, JAX functions, sympy, LaTeX tables.

The names PySR exports for this (`sympy2torch`, `sympy2jax`, `pysr2sympy`, `sympy2latex`)
take the same arguments here. None of them evaluates a string: `pysr2sympy` reads an
equation with the whitelist parser, and the torch and JAX forms are built by walking
the sympy tree over a fixed table of functions (plus the user's mappings).

    >>> import sympy, torch
    >>> x0, x1 = sympy.symbols("x0 x1")
    >>> module = sympy2torch(2.5 * sympy.cos(x1) + x0, [x0, x1])
    >>> module(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    tensor([3.5000], dtype=torch.float64, grad_fn=<AddBackward0>)
    >>> module.constants.tolist()
    [2.5]
"""
from __future__ import annotations

import functools
import operator
from typing import Callable, Mapping, Sequence

import sympy
import torch

from pysr_baseline.expression import Expression
from pysr_baseline.operators import Operator
from pysr_baseline.parsing import parse_expression


# --- torch modules --------------------------------------------------------------------------

class ExpressionModule(torch.nn.Module):
    """One formula as a ``torch.nn.Module``: ``forward(X)`` (rows x features, in the training
    columns' order) gives the same values as `PySRRegressor.predict`, and the formula's
    constants are trainable parameters (``self.constants``, in preorder).

        >>> m = ExpressionModule(parse_expression("2.0 * x0 + 1.0"))
        >>> m(torch.tensor([[3.0]], dtype=torch.float64)).tolist(), m.constants.requires_grad
        ([7.0], True)
    """

    def __init__(self, expr: Expression, variable_names: Sequence[str] | None = None,
                 selection: Sequence[int] | None = None, dtype: torch.dtype = torch.float64):
        super().__init__()
        self.expr = expr
        self.variable_names = list(variable_names) if variable_names is not None else None
        self.selection = None if selection is None else [int(i) for i in selection]
        self.constants = torch.nn.Parameter(torch.tensor(expr.constants, dtype=dtype))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = torch.as_tensor(X)
        if self.selection is not None and X.shape[-1] != len(self.selection):
            X = X[:, self.selection]
        X = X.to(self.constants.dtype)
        return self.expr.evaluate(X, constants=self.constants)

    def extra_repr(self) -> str:
        return f"expression={self.expr.to_string(self.variable_names, precision=6)}"


def _torch_functions(extra: Mapping | None) -> dict:
    table = {
        sympy.exp: torch.exp, sympy.log: torch.log, sympy.sin: torch.sin, sympy.cos: torch.cos,
        sympy.tan: torch.tan, sympy.tanh: torch.tanh, sympy.sinh: torch.sinh, sympy.cosh: torch.cosh,
        sympy.asin: torch.asin, sympy.acos: torch.acos, sympy.atan: torch.atan, sympy.asinh: torch.asinh,
        sympy.acosh: torch.acosh, sympy.atanh: torch.atanh, sympy.Abs: torch.abs, sympy.sign: torch.sign,
        sympy.erf: torch.erf, sympy.erfc: torch.erfc, sympy.floor: torch.floor, sympy.ceiling: torch.ceil,
        sympy.loggamma: torch.lgamma, sympy.re: lambda x: x,
    }
    for key, fn in (extra or {}).items():
        if not callable(fn):
            raise ValueError("extra_torch_mappings must be callable functions! e.g., {sympy.sqrt: torch.sqrt}.")
        table[key] = fn
    return table


class _SympyProgram:
    """A sympy expression prepared for evaluation by a numeric library: its symbols mapped
    to columns, its Floats to a parameter vector (sorted, so the order is fixed), and every
    function it calls checked against ``functions`` (``missing`` names the mapping to add)."""

    def __init__(self, expression, symbols_in, functions: dict, missing: str):
        self.expression = sympy.sympify(expression)
        symbols = [sympy.Symbol(str(s)) if not isinstance(s, sympy.Symbol) else s for s in symbols_in]
        self.symbol_index = {s: i for i, s in enumerate(symbols)}
        unknown = [s for s in self.expression.free_symbols if s not in self.symbol_index]
        if unknown:
            raise ValueError(f"symbols {sorted(map(str, unknown))} are not among symbols_in "
                             f"{[str(s) for s in symbols]}")
        self.floats = sorted(self.expression.atoms(sympy.Float), key=lambda f: (float(f), str(f)))
        self.float_index = {f: i for i, f in enumerate(self.floats)}
        self.functions = functions
        self._check(self.expression, missing)

    def _check(self, node, missing: str) -> None:
        if not (node.is_Atom or node.func in (sympy.Add, sympy.Mul, sympy.Pow)) and node.func not in self.functions:
            raise KeyError(missing.format(func=node.func))
        for arg in node.args:
            self._check(arg, missing)

    def evaluate(self, X, params, power: Callable, number: Callable):
        """The expression's value: ``X[:, i]`` for symbol i, ``params[k]`` for Float k,
        ``number(v)`` for other numbers, ``power`` for powers."""
        def rec(node):
            if isinstance(node, sympy.Float):
                return params[self.float_index[node]]
            if node.is_Symbol:
                return X[:, self.symbol_index[node]]
            if node.is_Number or node.is_NumberSymbol:
                return number(float(node))
            args = [rec(a) for a in node.args]
            if node.func is sympy.Add:
                return functools.reduce(operator.add, args)
            if node.func is sympy.Mul:
                return functools.reduce(operator.mul, args)
            if node.func is sympy.Pow:
                return power(*args)
            return self.functions[node.func](*args)

        return rec(self.expression)


class _SympyTorchModule(torch.nn.Module):
    """A sympy expression as a module: its Floats are parameters, the rest is fixed."""

    def __init__(self, expression, symbols_in, selection=None, extra_torch_mappings=None):
        super().__init__()
        self.program = _SympyProgram(expression, symbols_in, _torch_functions(extra_torch_mappings),
                                     "Function {func} was not found in Torch function mappings. Please add it to "
                                     "extra_torch_mappings in the format, e.g., {{sympy.sqrt: torch.sqrt}}.")
        self.expression = self.program.expression
        self.selection = None if selection is None else [int(i) for i in selection]
        self.constants = torch.nn.Parameter(torch.tensor([float(f) for f in self.program.floats],
                                                         dtype=torch.float64))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = torch.as_tensor(X)
        if self.selection is not None and X.shape[-1] != len(self.selection):
            X = X[:, self.selection]
        X = X.to(self.constants.dtype)
        out = self.program.evaluate(X, self.constants, torch.pow,
                                    lambda v: torch.tensor(v, dtype=X.dtype, device=X.device))
        return out.expand(X.shape[0]) if out.ndim == 0 else out

    def extra_repr(self) -> str:
        return f"expression={self.expression}"


def sympy2torch(expression, symbols_in, selection=None, extra_torch_mappings=None) -> torch.nn.Module:
    """A ``torch.nn.Module`` computing ``expression`` from X (columns in the order of
    ``symbols_in``); its Float constants are trainable parameters (PySR's signature)."""
    return _SympyTorchModule(expression, symbols_in, selection, extra_torch_mappings)


# --- JAX ------------------------------------------------------------------------------------

def _jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        raise ImportError("JAX export needs jax, which is not installed: pip install jax") from None
    return jax, jnp


_JAX_NAMES = {
    sympy.exp: "jnp.exp", sympy.log: "jnp.log", sympy.sin: "jnp.sin", sympy.cos: "jnp.cos",
    sympy.tan: "jnp.tan", sympy.tanh: "jnp.tanh", sympy.sinh: "jnp.sinh", sympy.cosh: "jnp.cosh",
    sympy.asin: "jnp.arcsin", sympy.acos: "jnp.arccos", sympy.atan: "jnp.arctan", sympy.Abs: "jnp.abs",
    sympy.sign: "jnp.sign", sympy.floor: "jnp.floor", sympy.ceiling: "jnp.ceil",
}


def sympy2jax(expression, symbols_in, selection=None, extra_jax_mappings=None):
    """``(f, parameters)`` with ``f(X, parameters)`` computing ``expression`` in JAX and
    ``parameters`` the expression's Float constants (PySR's signature). The mapping
    values name ``jax.numpy``/``jax.scipy`` functions as strings, e.g. ``{sympy.cos: "jnp.cos"}``."""
    jax, jnp = _jax()
    names = dict(_JAX_NAMES)
    for key, value in (extra_jax_mappings or {}).items():
        if not isinstance(value, str):
            raise ValueError("extra_jax_mappings must have keys that are strings! e.g., {sympy.sqrt: 'jnp.sqrt'}.")
        names[key] = value
    functions = {key: _jax_function(value, jax, jnp) for key, value in names.items()}
    program = _SympyProgram(expression, symbols_in, functions,
                            "Function {func} was not found in JAX function mappings.Please add it to "
                            "extra_jax_mappings in the format, e.g., {{sympy.sqrt: 'jnp.sqrt'}}.")
    sel = None if selection is None else jnp.asarray(list(selection))

    def f(X, parameters):
        if sel is not None and X.shape[-1] != len(sel):
            X = X[:, sel]
        return program.evaluate(X, parameters, jnp.power, float) * jnp.ones(X.shape[0])

    return f, jnp.asarray([float(v) for v in program.floats])


def _jax_function(name: str, jax, jnp) -> Callable:
    """``"jnp.cos"`` -> ``jax.numpy.cos``: a dotted name looked up attribute by attribute in
    jax's own modules only (a whitelist of roots, never eval)."""
    parts = name.split(".")
    roots = {"jnp": jnp, "jax": jax}
    if parts[0] not in roots or not all(p.isidentifier() and not p.startswith("_") for p in parts[1:]):
        raise ValueError(f"extra_jax_mappings value {name!r} must name a jax function, e.g. 'jnp.cos'")
    obj = roots[parts[0]]
    for p in parts[1:]:
        obj = getattr(obj, p, None)
        if obj is None:
            raise ValueError(f"extra_jax_mappings value {name!r}: jax has no {p!r} there")
    if not callable(obj):
        raise ValueError(f"extra_jax_mappings value {name!r} is not a function")
    return obj


# --- sympy and LaTeX ------------------------------------------------------------------------

def sympy_operator(name: str, sympy_fn: Callable, arity: int = 1) -> Operator:
    """A placeholder operator known only by its sympy form (for reading equations whose
    operator the reader only has ``extra_sympy_mappings`` for); evaluating it raises."""
    def fn(*args):
        raise ValueError(f"operator {name!r} has only a sympy mapping here; pass its definition "
                         f"(e.g. unary_operators=['{name}(x) = ...']) to evaluate it")

    return Operator(name, arity, fn, sympy_fn)


def pysr2sympy(equation: str, *, feature_names_in: Sequence[str] | None = None,
               extra_sympy_mappings: Mapping[str, Callable] | None = None, operators=None) -> sympy.Expr:
    """An equation string (PySR's CSV form, or this library's) as a sympy expression.

    Read with the whitelist parser, not sympy's string parser. ``extra_sympy_mappings``
    gives the sympy form of custom operators the string uses, e.g. ``{"inv": lambda x: 1/x}``.

        >>> pysr2sympy("(x0 * x0) + cos(x1)")
        x0**2 + cos(x1)
    """
    ops = list(operators or ())
    known = {getattr(o, "name", None) for o in ops}
    for name, fn in (extra_sympy_mappings or {}).items():
        if name not in known:
            arity = _arity_of_mapping(fn)
            ops.append(sympy_operator(name, fn, arity))
    expr = parse_expression(equation, variable_names=feature_names_in, operators=ops)
    names = list(feature_names_in) if feature_names_in is not None else None
    return expr.to_sympy(names)


def _arity_of_mapping(fn) -> int:
    import inspect

    try:
        n = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 1
    return n if n in (1, 2) else 1


def sympy2latex(expr, prec: int = 3, full_prec: bool = True) -> str:
    """LaTeX of ``expr`` with every Float shown to ``prec`` significant digits.

        >>> sympy2latex(sympy.Float(0.0231547))
        '0.0232'
    """
    expr = sympy.sympify(expr)
    rounded = expr.xreplace({f: sympy.Float(f, prec) for f in expr.atoms(sympy.Float)})
    return sympy.latex(rounded)


_COLUMN_TITLES = {"equation": "Equation", "complexity": "Complexity", "loss": "Loss", "score": "Score"}


def latex_table(equations, indices=None, precision: int = 3,
                columns=("equation", "complexity", "loss", "score"), output_variable: str = "y") -> str:
    """A booktabs table of rows of ``equations`` (a DataFrame with ``sympy_format``), as
    PySR's ``latex_table`` writes it (without the preamble)."""
    for col in columns:
        if col not in _COLUMN_TITLES:
            raise ValueError(f"Unknown column: {col}")
    rows = list(range(len(equations))) if indices is None else list(indices)
    lines = ["\\begin{table}[h]", "\\begin{center}", "\\begin{tabular}{@{}" + "c" * len(columns) + "@{}}",
             "\\toprule", " & ".join(_COLUMN_TITLES[c] for c in columns) + " \\\\", "\\midrule"]
    for i in rows:
        if not isinstance(i, int) or isinstance(i, bool):
            raise TypeError(f"indices must be ints (rows of equations_), got {i!r}")
        row = equations.iloc[i]
        cells = []
        for col in columns:
            if col == "equation":
                tex = sympy2latex(row["sympy_format"], prec=precision)
                if len(tex) < 50:
                    cells.append(f"${output_variable} = {tex}$")
                else:
                    cells.append(" ".join(["\\begin{minipage}{0.8\\linewidth}", "\\vspace{-1em}",
                                           "\\begin{dmath*}", f"{output_variable} = {tex}", "\\end{dmath*}",
                                           "\\end{minipage}"]))
            elif col == "complexity":
                cells.append(f"${int(row['complexity'])}$")
            else:
                cells.append(f"${sympy2latex(sympy.Float(float(row[col])), prec=precision)}$")
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{center}", "\\end{table}"]
    return "\n".join(lines)


LATEX_PREAMBLE = "\\usepackage{breqn}\n\\usepackage{booktabs}\n\n...\n\n"
