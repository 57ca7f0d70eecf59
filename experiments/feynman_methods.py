"""The methods the Feynman benchmark compares, each behind one call shape.

Every method takes a data set, a time budget in seconds and a seed, and returns a
`MethodResult`: the chosen formula as sympy (over the equation's variable names), its
normalized MSE on the training rows, its size as the method counts it, and an error
message when it failed. The runner (`experiments.feynman`) scores the formula.

    method = get_method("soft-tree")
    result = method.run(dataset, time_budget=30.0, seed=0)
    result.expr, result.train_loss, result.complexity, result.error

Methods whose code is optional (`optimized`, `search`, `gplearn`) import it lazily, so
this module always imports; `method.unavailable()` says why one cannot run.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sympy

# A fit this close to the data is exact; more fits cannot improve on it.
EXACT_NMSE = 1e-10
# Fit k of a budgeted soft-tree run uses random_state = seed + k * SEED_STRIDE, so that
# run seeds 0, 1, 2 ... never share restarts (as seed, seed + 1, ... would).
SEED_STRIDE = 1000


@dataclass
class MethodResult:
    """What one method returns for one (equation, seed)."""

    expr: sympy.Expr | None
    train_loss: float = math.nan          # normalized MSE on the training rows
    complexity: float | None = None       # the method's own size measure
    error: str | None = None
    predict: Callable[[np.ndarray], np.ndarray] | None = None  # scored instead of expr if set
    n_fits: int = 0
    details: dict = field(default_factory=dict)


def normalized_mse(y_true, y_pred) -> float:
    """MSE divided by the variance of ``y_true``; inf for non-finite predictions."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_pred.size == 1:  # a constant model predicts one number for every row
        y_pred = np.full(y_true.shape, y_pred[0])
    if y_pred.shape != y_true.shape:
        raise ValueError(f"{y_pred.size} predictions for {y_true.size} rows")
    if not np.all(np.isfinite(y_pred)):
        return math.inf
    variance = float(np.var(y_true))
    mse = float(np.mean((y_true - y_pred) ** 2))
    return mse / variance if variance > 0 else mse


class Method:
    """Base of the adapters: ``run(dataset, time_budget, seed) -> MethodResult``."""

    name = "method"

    def __init__(self, **options):
        self.options = options

    def unavailable(self) -> str | None:
        """None when the method can run here, else the reason it cannot."""
        return None

    @classmethod
    def takes(cls, name: str) -> bool:
        """Whether the adapter takes option ``name`` (`get_method` passes it only those)."""
        param = inspect.signature(cls.__init__).parameters.get(name)
        return name != "self" and param is not None and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)

    def settings(self) -> str:
        """The options that change results, as one stable string (part of a CSV row)."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))

    def run(self, dataset, time_budget: float, seed: int) -> MethodResult:
        raise NotImplementedError


def _import_error(module: str, attribute: str) -> str | None:
    try:
        getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        return f"not available: cannot import {attribute} from {module} ({err})"
    return None


# --- the soft tree ----------------------------------------------------------------------

class SoftTreeMethod(Method):
    """`SymbolicTrainer` on a depth-3 soft tree, refitted with new seeds until the budget
    is spent or a fit is exact; the best fit by train loss wins, the simplest among
    near-ties (within a factor ``1 + tie_tolerance``, the trainer's own rule).

    The first fit always runs, with ``random_state=seed`` and a single restart: it
    measures what a restart costs here (a whole batch first could alone overrun a short
    budget on a busy machine). Later fits take ``restarts_per_fit`` restarts, fewer when
    only those are expected to end within the budget, judged by the slowest restart so
    far; none starts when not even one restart is.
    """

    name = "soft-tree"
    module, attribute = "pysr_baseline.trainer", "SymbolicTrainer"

    def __init__(self, max_depth: int = 3, n_epochs: int = 200, restarts_per_fit: int = 4,
                 tie_tolerance: float = 0.5, clock: Callable[[], float] = time.perf_counter):
        super().__init__(max_depth=max_depth, n_epochs=n_epochs,
                         restarts_per_fit=restarts_per_fit)
        if restarts_per_fit < 1 or n_epochs < 1:
            raise ValueError("restarts_per_fit and n_epochs must be at least 1")
        self.max_depth, self.n_epochs = max_depth, n_epochs
        self.restarts_per_fit, self.tie_tolerance = restarts_per_fit, tie_tolerance
        self.clock = clock

    def unavailable(self) -> str | None:
        return _import_error(self.module, self.attribute)

    def trainer_class(self):
        return getattr(importlib.import_module(self.module), self.attribute)

    def run(self, dataset, time_budget: float, seed: int) -> MethodResult:
        from pysr_baseline.model import SymbolicRegressor

        trainer_class = self.trainer_class()
        names = list(dataset.variable_names)
        start = self.clock()
        deadline = start + float(time_budget)
        fits, per_restart, fit_index = [], 0.0, 0
        while True:
            n_restarts = 1
            if fits:
                affordable = int((deadline - self.clock()) // per_restart) \
                    if per_restart > 0 else self.restarts_per_fit
                if affordable < 1:
                    break
                n_restarts = min(self.restarts_per_fit, affordable)
            model = SymbolicRegressor(len(names), max_depth=self.max_depth,
                                      variable_names=names)
            trainer = trainer_class(model, random_state=seed + fit_index * SEED_STRIDE,
                                    n_restarts=n_restarts)
            fit_start = self.clock()
            history = trainer.fit(dataset.X_train, dataset.y_train, n_epochs=self.n_epochs)
            per_restart = max(per_restart, (self.clock() - fit_start) / n_restarts)
            formula = model.formula()
            nmse = float(history.nmse) if np.isfinite(history.nmse) else math.inf
            fits.append((nmse, float(formula.complexity()), formula, fit_index))
            fit_index += 1
            if nmse < EXACT_NMSE:
                break
        nmse, size, formula, chosen = fits[pick_best([(f[0], f[1]) for f in fits],
                                                     self.tie_tolerance)]
        return MethodResult(expr=formula.to_sympy(names), train_loss=nmse, complexity=size,
                            n_fits=len(fits), details={"chosen_fit": chosen})


def pick_best(candidates: list[tuple[float, float]], tolerance: float = 0.5) -> int:
    """Index of the simplest (loss, complexity) pair whose loss is within a factor
    ``1 + tolerance`` of the best (or below EXACT_NMSE); then lowest loss, then first.

    >>> pick_best([(0.10, 9), (0.12, 5), (0.5, 3)])
    1
    """
    best = min(loss for loss, _ in candidates)
    threshold = max(best * (1 + tolerance), EXACT_NMSE)
    eligible = [i for i, (loss, _) in enumerate(candidates) if loss <= threshold]
    if not eligible:  # every loss is inf/nan
        return 0
    return min(eligible, key=lambda i: (candidates[i][1], candidates[i][0], i))


class OptimizedSoftTreeMethod(SoftTreeMethod):
    """The same budgeted loop with `OptimizedSymbolicTrainer` (same arguments, faster)."""

    name = "optimized"
    module, attribute = "enhancements.dp_memoization", "OptimizedSymbolicTrainer"


# --- the evolutionary search ------------------------------------------------------------

class SearchMethod(Method):
    """`enhancements.PySRRegressor`, its timeout set to the budget.

    ``niterations`` is set huge so that the timeout, not an iteration count, ends the
    search (as SRBench runs PySR); with ``stop_on_exact`` it also ends once a formula fits
    the training data to round-off (normalized MSE below ``EXACT_NMSE``), as the soft-tree
    methods do. Of the quiet-mode options, only those the estimator accepts are passed.
    Any other `PySRRegressor` parameter may be given (``--set linear_scaling=false``); it
    enters the settings string, and so the CSV rows' key.
    """

    name = "search"
    # PySR's own default has no unary operators; the Feynman formulas need these (the set
    # the search was developed with: arcsin/arccos are not operators of this project).
    UNARY_OPERATORS = ("sqrt", "exp", "log", "sin", "cos", "square", "inv", "neg")

    def __init__(self, niterations: int = 10**6, unary_operators=UNARY_OPERATORS, stop_on_exact: bool = True,
                 soft_tree_seed_fraction: float | None = None, weight_soft_tree: float | None = None,
                 engine: str | None = None, **estimator_params):
        # Only options that differ from the estimator's defaults enter the settings string.
        extra = {k: v for k, v in (("soft_tree_seed_fraction", soft_tree_seed_fraction),
                                   ("weight_soft_tree", weight_soft_tree), ("engine", engine)) if v is not None}
        unknown = sorted(set(estimator_params) - _estimator_params())
        if unknown:
            raise ValueError(f"the search method takes PySRRegressor's parameters; not {', '.join(unknown)}")
        extra.update(estimator_params)
        super().__init__(niterations=niterations, unary_operators=",".join(unary_operators),
                         stop_on_exact=stop_on_exact, **extra)
        self.niterations = niterations
        self.unary_operators = list(unary_operators)
        self.stop_on_exact = bool(stop_on_exact)
        self.extra = extra

    @classmethod
    def takes(cls, name: str) -> bool:
        return super().takes(name) or name in _estimator_params()

    def unavailable(self) -> str | None:
        return _import_error("enhancements", "PySRRegressor")

    def run(self, dataset, time_budget: float, seed: int) -> MethodResult:
        from enhancements import PySRRegressor

        # A temporary run directory, deleted after the fit: a benchmark keeps no run files.
        optional = {"niterations": self.niterations, "verbosity": 0, "progress": False,
                    "temp_equation_file": True, **self.extra}
        if self.stop_on_exact:
            # Noise-free data: a formula within round-off of the data cannot be improved on.
            optional["early_stop_condition"] = EXACT_NMSE * float(np.var(dataset.y_train))
        params = inspect.signature(PySRRegressor.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            optional = {k: v for k, v in optional.items() if k in params}
        model = PySRRegressor(timeout_in_seconds=float(time_budget), random_state=seed,
                              unary_operators=self.unary_operators, **optional)
        model.fit(dataset.X_train, dataset.y_train, variable_names=list(dataset.variable_names))
        size = None
        try:  # PySR's get_best(); the scorer counts nodes anyway
            size = float(model.get_best()["complexity"])
        except Exception:
            pass
        return MethodResult(expr=model.sympy(), complexity=size, predict=model.predict,
                            train_loss=normalized_mse(dataset.y_train,
                                                      model.predict(dataset.X_train)))


def _estimator_params() -> set[str]:
    """`PySRRegressor`'s parameters that a run may set (not those the adapter sets itself;
    none where the package cannot be imported)."""
    try:
        from enhancements import PySRRegressor
    except ImportError:
        return set()
    own = {"self", "timeout_in_seconds", "random_state", "unary_operators"}
    return set(inspect.signature(PySRRegressor.__init__).parameters) - own


# --- gplearn, an optional peer ------------------------------------------------------------

_GPLEARN_FUNCTIONS = {
    # gplearn's protected operators, written with their exact meaning away from the
    # tiny guards around zero (|x| < 0.001), which sympy cannot express.
    "add": (2, lambda a, b: a + b), "sub": (2, lambda a, b: a - b),
    "mul": (2, lambda a, b: a * b), "div": (2, lambda a, b: a / b),
    "sqrt": (1, lambda a: sympy.sqrt(sympy.Abs(a))), "log": (1, lambda a: sympy.log(sympy.Abs(a))),
    "abs": (1, sympy.Abs), "neg": (1, lambda a: -a), "inv": (1, lambda a: 1 / a),
    "max": (2, sympy.Max), "min": (2, sympy.Min),
    "sin": (1, sympy.sin), "cos": (1, sympy.cos), "tan": (1, sympy.tan),
}


class GplearnMethod(Method):
    """gplearn's genetic programming, grown one generation at a time (warm start) while
    the next generation is expected to end within the budget."""

    name = "gplearn"
    # gplearn's protected versions of these (see _GPLEARN_FUNCTIONS).
    FUNCTION_SET = ("add", "sub", "mul", "div", "sqrt", "log", "neg", "inv", "sin", "cos")

    def __init__(self, population_size: int = 1000, max_generations: int = 1000,
                 parsimony_coefficient: float = 0.001, clock: Callable[[], float] = time.perf_counter):
        super().__init__(population_size=population_size,
                         parsimony_coefficient=parsimony_coefficient)
        self.population_size, self.max_generations = population_size, max_generations
        self.parsimony_coefficient, self.clock = parsimony_coefficient, clock

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("gplearn") is None:
            return "not available: gplearn is not installed (pip install gplearn)"
        return None

    def run(self, dataset, time_budget: float, seed: int) -> MethodResult:
        from gplearn.genetic import SymbolicRegressor as GPRegressor

        model = GPRegressor(population_size=self.population_size, generations=1,
                            function_set=self.FUNCTION_SET,
                            parsimony_coefficient=self.parsimony_coefficient,
                            random_state=seed, n_jobs=1, warm_start=True)
        deadline = self.clock() + float(time_budget)
        generations, slowest = 0, 0.0
        while generations < self.max_generations:
            tick = self.clock()
            generations += 1
            model.set_params(generations=generations)
            model.fit(dataset.X_train, dataset.y_train)
            slowest = max(slowest, self.clock() - tick)
            if self.clock() + slowest > deadline:
                break
        expr = gplearn_to_sympy(str(model._program), dataset.variable_names)
        return MethodResult(expr=expr,
                            train_loss=normalized_mse(dataset.y_train,
                                                      model.predict(dataset.X_train)),
                            complexity=float(model._program.length_), predict=model.predict,
                            n_fits=generations)


# --- whitelisted formula strings -> sympy -------------------------------------------------

_MAX_TEXT = 20000
_MAX_EXPONENT = 64
SYMPY_FUNCTIONS = {
    name: (1, getattr(sympy, name)) for name in
    ("exp", "log", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
     "tanh", "Abs", "sign")
} | {"Max": (None, sympy.Max), "Min": (None, sympy.Min)}
SYMPY_CONSTANTS = {"pi": sympy.pi, "E": sympy.E}


def parse_expression(text: str, symbols: dict[str, sympy.Symbol],
                     functions: dict = SYMPY_FUNCTIONS,
                     constants: dict = SYMPY_CONSTANTS) -> sympy.Expr:
    """Build sympy from a formula string through a whitelist, with no eval.

    Only numbers, the given symbols and constants, ``+ - * / **``, and calls of the given
    functions (name -> (arity or None, builder)) are accepted; else ValueError.

    >>> x = sympy.Symbol("x")
    >>> parse_expression("2.5*exp(-x**2) + pi", {"x": x})
    pi + 2.5*exp(-x**2)
    """
    if not isinstance(text, str):
        raise TypeError(f"formula must be a str, got {type(text).__name__}")
    if len(text) > _MAX_TEXT:
        raise ValueError(f"formula is longer than {_MAX_TEXT} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"formula {text[:80]!r} is not well formed: {err.msg}") from None

    def fail(what):
        return ValueError(f"formula {text[:80]!r}: {what} is not allowed")

    def build(node):
        if isinstance(node, ast.Expression):
            return build(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return sympy.Integer(node.value) if isinstance(node.value, int) \
                else sympy.Float(node.value)
        if isinstance(node, ast.Name):
            if node.id in symbols:
                return symbols[node.id]
            if node.id in constants:
                return constants[node.id]
            raise fail(f"name {node.id!r}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = build(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            left, right = build(node.left), build(node.right)
            ops = {ast.Add: sympy.Add, ast.Sub: lambda a, b: a - b, ast.Mult: sympy.Mul,
                   ast.Div: lambda a, b: a / b}
            if isinstance(node.op, ast.Pow):
                if right.is_Number and abs(right) > _MAX_EXPONENT:
                    raise fail(f"exponent {right}")
                return left ** right
            if type(node.op) in ops:
                return ops[type(node.op)](left, right)
            raise fail(f"operator {type(node.op).__name__}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in functions and not node.keywords:
            arity, builder = functions[node.func.id]
            if arity is not None and len(node.args) != arity:
                raise fail(f"{node.func.id}() with {len(node.args)} arguments")
            return builder(*[build(arg) for arg in node.args])
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else "this"
            raise fail(f"call of {name!r}")
        raise fail(f"syntax {type(node).__name__}")

    return build(tree)


def gplearn_to_sympy(program: str, variable_names) -> sympy.Expr:
    """A gplearn program string (``add(mul(X0, X1), 0.5)``) as sympy over the names.

    >>> gplearn_to_sympy("div(X0, sqrt(X1))", ["q", "r"])
    q/sqrt(Abs(r))
    """
    symbols = {f"X{i}": sympy.Symbol(name) for i, name in enumerate(variable_names)}
    return parse_expression(program, symbols, functions=_GPLEARN_FUNCTIONS, constants={})


METHODS: dict[str, type[Method]] = {
    "soft-tree": SoftTreeMethod,
    "optimized": OptimizedSoftTreeMethod,
    "search": SearchMethod,
    "gplearn": GplearnMethod,
}


def get_method(name: str, **options) -> Method:
    """An adapter by name, with the options its constructor takes (others are ignored,
    so one option set can serve several methods).

    >>> get_method("soft-tree", n_epochs=100).settings()
    'max_depth=3,n_epochs=100,restarts_per_fit=4'
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    cls = METHODS[name]
    return cls(**{k: v for k, v in options.items() if cls.takes(k)})
