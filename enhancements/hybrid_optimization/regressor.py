"""PySRRegressor: the search as a scikit-learn estimator, with PySR's parameter names.

    >>> import numpy as np
    >>> from enhancements import PySRRegressor
    >>> X = np.random.default_rng(0).uniform(1, 5, (200, 2)); y = 0.5 * X[:, 0] * X[:, 1] ** 2
    >>> model = PySRRegressor(niterations=2, populations=4, population_size=20, binary_operators=["+", "-", "*", "/"],
    ...                       random_state=0, progress=False, verbosity=0).fit(X, y)
    >>> model.sympy()
    0.5*x0*x1**2
    >>> model.predict(X[:3]).shape
    (3,)

``__init__`` only stores parameters (so `clone`, `get_params` and `set_params` work);
``fit`` validates them (`Options`) and the data, runs the `Search`, and stores
``equations_`` (a DataFrame of the Pareto front: complexity, loss, score, equation,
sympy_format, lambda_format), ``expressions_`` (the `Expression` of each row),
``variable_names_`` (the names the formulas use: x0, x1, ... unless named),
``feature_names_in_`` (only when the variables were named: a DataFrame with string
column names, or ``variable_names``; as in scikit-learn) and ``stats_`` (evaluations,
evaluations per second, cache hit rate, time, stop reason).
"""
from __future__ import annotations

import numbers
import re
import warnings

import numpy as np
import pandas as pd
import sympy
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.validation import check_is_fitted

from pysr_baseline.expression import Expression
from pysr_baseline.parsing import parse_expression
from pysr_baseline.validation import check_x, check_xy

from enhancements.hybrid_optimization.evolution import Search
from enhancements.hybrid_optimization.hall_of_fame import front_scores, select_index
from enhancements.hybrid_optimization.options import Options, check_device, option_names


class _Lambda:
    """Callable form of one formula: ``f(X)`` -> numpy predictions (picklable, unlike a lambda)."""

    def __init__(self, expr: Expression, n_features: int):
        self.expr = expr
        self.n_features = n_features

    def __call__(self, X) -> np.ndarray:
        Xt = check_x(X, self.n_features)
        with torch.no_grad():
            return self.expr.evaluate(Xt).cpu().numpy()

    def __repr__(self) -> str:
        return f"PySRFunction(X => {self.expr})"


class PySRRegressor(RegressorMixin, BaseEstimator):
    """Symbolic regression by regularized evolution (PySR's algorithm) in PyTorch.

    Parameters keep PySR's names and (mostly) its defaults; see
    `enhancements.hybrid_optimization.options.Options` for each one and
    ``PYSR_DIFFERENCES`` there for where they differ. Extra parameters: ``linear_scaling``
    (score each formula as a*f+b with closed-form a, b), ``memoize`` (sub-expression
    cache on/off), ``device``, ``soft_tree_proposer`` / ``weight_soft_tree`` /
    ``soft_tree_seed_fraction`` / ``soft_tree_reseed`` (soft trees in the search, see
    `enhancements.hybrid_optimization.hybrid`), and ``optimizer_probability`` (an alias of
    PySR's ``optimize_probability``).
    """

    def __init__(self, model_selection="best", *, binary_operators=None, unary_operators=None,
                 niterations=100, populations=31, population_size=27, max_evals=None, maxsize=30, maxdepth=None,
                 warmup_maxsize_by=0.0, timeout_in_seconds=None, constraints=None, nested_constraints=None,
                 elementwise_loss=None, complexity_of_operators=None, complexity_of_constants=1,
                 complexity_of_variables=1, parsimony=0.0, use_frequency=True, use_frequency_in_tournament=True,
                 adaptive_parsimony_scaling=1040.0, alpha=3.17, annealing=False, early_stop_condition=None,
                 ncycles_per_iteration=380, fraction_replaced=0.00036, fraction_replaced_hof=0.0614,
                 weight_add_node=2.47, weight_insert_node=0.0112, weight_delete_node=0.870,
                 weight_do_nothing=0.273, weight_mutate_constant=0.0346, weight_mutate_operator=0.293,
                 weight_mutate_feature=0.1, weight_swap_operands=0.198, weight_rotate_tree=4.26,
                 weight_randomize=0.000502, weight_simplify=0.00209, weight_optimize=0.0,
                 crossover_probability=0.0259, skip_mutation_failures=True, migration=True, hof_migration=True,
                 topn=12, should_simplify=None, should_optimize_constants=True, optimizer_algorithm="BFGS",
                 optimizer_nrestarts=2, optimize_probability=0.14, optimizer_iterations=8,
                 perturbation_factor=0.129, probability_negate_constant=0.00743, tournament_selection_n=15,
                 tournament_selection_p=0.982, batching=False, random_state=None, precision=64, verbosity=1,
                 progress=True, linear_scaling=True, memoize=True, device=None, weight_soft_tree=0.0,
                 soft_tree_seed_fraction=0.1, soft_tree_reseed=True, soft_tree_proposer=None,
                 optimizer_probability=None):
        self.model_selection = model_selection
        self.binary_operators = binary_operators
        self.unary_operators = unary_operators
        self.niterations = niterations
        self.populations = populations
        self.population_size = population_size
        self.max_evals = max_evals
        self.maxsize = maxsize
        self.maxdepth = maxdepth
        self.warmup_maxsize_by = warmup_maxsize_by
        self.timeout_in_seconds = timeout_in_seconds
        self.constraints = constraints
        self.nested_constraints = nested_constraints
        self.elementwise_loss = elementwise_loss
        self.complexity_of_operators = complexity_of_operators
        self.complexity_of_constants = complexity_of_constants
        self.complexity_of_variables = complexity_of_variables
        self.parsimony = parsimony
        self.use_frequency = use_frequency
        self.use_frequency_in_tournament = use_frequency_in_tournament
        self.adaptive_parsimony_scaling = adaptive_parsimony_scaling
        self.alpha = alpha
        self.annealing = annealing
        self.early_stop_condition = early_stop_condition
        self.ncycles_per_iteration = ncycles_per_iteration
        self.fraction_replaced = fraction_replaced
        self.fraction_replaced_hof = fraction_replaced_hof
        self.weight_add_node = weight_add_node
        self.weight_insert_node = weight_insert_node
        self.weight_delete_node = weight_delete_node
        self.weight_do_nothing = weight_do_nothing
        self.weight_mutate_constant = weight_mutate_constant
        self.weight_mutate_operator = weight_mutate_operator
        self.weight_mutate_feature = weight_mutate_feature
        self.weight_swap_operands = weight_swap_operands
        self.weight_rotate_tree = weight_rotate_tree
        self.weight_randomize = weight_randomize
        self.weight_simplify = weight_simplify
        self.weight_optimize = weight_optimize
        self.crossover_probability = crossover_probability
        self.skip_mutation_failures = skip_mutation_failures
        self.migration = migration
        self.hof_migration = hof_migration
        self.topn = topn
        self.should_simplify = should_simplify
        self.should_optimize_constants = should_optimize_constants
        self.optimizer_algorithm = optimizer_algorithm
        self.optimizer_nrestarts = optimizer_nrestarts
        self.optimize_probability = optimize_probability
        self.optimizer_iterations = optimizer_iterations
        self.perturbation_factor = perturbation_factor
        self.probability_negate_constant = probability_negate_constant
        self.tournament_selection_n = tournament_selection_n
        self.tournament_selection_p = tournament_selection_p
        self.batching = batching
        self.random_state = random_state
        self.precision = precision
        self.verbosity = verbosity
        self.progress = progress
        self.linear_scaling = linear_scaling
        self.memoize = memoize
        self.device = device
        self.weight_soft_tree = weight_soft_tree
        self.soft_tree_seed_fraction = soft_tree_seed_fraction
        self.soft_tree_reseed = soft_tree_reseed
        self.soft_tree_proposer = soft_tree_proposer
        self.optimizer_probability = optimizer_probability

    # --- fitting --------------------------------------------------------------------------------
    def _options(self) -> Options:
        params = {name: getattr(self, name) for name in option_names()}
        if self.optimizer_probability is not None:
            params["optimize_probability"] = self.optimizer_probability
        return Options(**params)

    def fit(self, X, y, weights=None, variable_names=None, sample_weight=None):
        """Search for formulas y ~ f(X). ``X``: array (n_samples, n_features) or DataFrame (its
        columns name the variables if they are all strings); ``y``: 1-D; ``weights``: optional
        non-negative per-sample weights (``sample_weight``: the same, scikit-learn's name);
        ``variable_names``: names to print the variables with."""
        options = self._options()  # checks the device too
        weights = _merge_weights(weights, sample_weight)
        _check_input(X, "X", n_features=None)
        _check_input(y, "y")
        if weights is not None:
            _check_input(weights, "weights")
        names = _variable_names(X, variable_names)
        dtype = torch.float64 if options.precision == 64 else torch.float32
        Xt, yt, wt = check_xy(X, y, weights, dtype=dtype, device=options.device)
        if names is not None and len(names) != Xt.shape[1]:
            raise ValueError(f"{len(names)} variable name(s) for {Xt.shape[1]} feature column(s)")
        shown = names if names is not None else [f"x{i}" for i in range(Xt.shape[1])]
        _warn_if_large(Xt.shape[0], options)
        bar = _ProgressBar(options, shown) if options.verbosity > 0 else None
        try:
            result = Search(Xt, yt, wt, options, callback=bar).run()
        finally:
            if bar is not None:
                bar.close()
        if result.stop_reason == "interrupted":
            warnings.warn(f"the search was interrupted (Ctrl-C) after {result.iterations} iteration(s) and "
                          f"{result.n_evals:,} evaluations; the fitted model holds the equations found so far",
                          UserWarning, stacklevel=2)
        front = result.hall_of_fame.pareto_front()
        if not front:
            raise RuntimeError(_no_finite_loss_message(yt, options))
        floor = float(np.finfo(np.float64).eps) * max(result.baseline_loss, 1e-300)
        n_features = Xt.shape[1]
        losses = [e.loss for e in front]
        complexities = [e.complexity for e in front]
        self.equations_ = pd.DataFrame({
            "complexity": complexities,
            "loss": losses,
            "score": front_scores(losses, complexities, floor),
            "equation": [e.expr.to_string(shown) for e in front],
            "sympy_format": [e.expr.to_sympy(shown) for e in front],
            "lambda_format": [_Lambda(e.expr, n_features) for e in front],
        })
        self.expressions_ = [e.expr for e in front]
        self.loss_floor_ = floor
        self.n_features_in_ = n_features
        self.variable_names_ = list(shown)
        # scikit-learn sets feature_names_in_ only for named columns; a refit on an array
        # must not keep the names of an earlier fit.
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        ev = result.evaluator_stats
        self.stats_ = {
            "evaluations": result.n_evals,
            "evals_per_second": result.evals_per_second,
            "elapsed_s": result.elapsed,
            "iterations": result.iterations,
            "stop_reason": result.stop_reason,
            "cache_hit_rate": ev.get("cache", {}).get("hit_rate"),
            "node_reuse_share": ev.get("reuse_share"),
            "evaluator": ev,
        }
        return self

    # --- using the result ---------------------------------------------------------------------
    def _check_fitted(self):
        check_is_fitted(self, ["equations_", "expressions_"],
                        msg="this %(name)s is not fitted yet; call fit(X, y) first")

    def _index(self, index=None) -> int:
        self._check_fitted()
        if index is None:
            eq = self.equations_
            return select_index(list(eq["loss"]), list(eq["complexity"]), self.model_selection, self.loss_floor_)
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"index must be an int (a row of equations_), got {index!r}")
        if not -len(self.equations_) <= index < len(self.equations_):
            raise IndexError(f"index {index} out of range for {len(self.equations_)} equation(s)")
        return int(index) % len(self.equations_)

    def get_best(self, index=None) -> pd.Series:
        """The row of ``equations_`` chosen by ``model_selection`` (or row ``index``)."""
        i = self._index(index)      # checks fitted before equations_ is touched
        return self.equations_.iloc[i]

    def predict(self, X, index=None) -> np.ndarray:
        """Predictions of the picked formula (or of row ``index`` of ``equations_``)."""
        i = self._index(index)
        check_device(self.device)
        _check_input(X, "X", n_features=self.n_features_in_)
        if isinstance(X, pd.DataFrame) and hasattr(self, "feature_names_in_"):
            missing = [n for n in self.feature_names_in_ if n not in X.columns]
            if not missing:
                X = X[list(self.feature_names_in_)]
            elif len(X.columns) == self.n_features_in_ and all(isinstance(c, str) for c in X.columns):
                raise ValueError(f"X lacks the column(s) {missing} seen in fit")
        Xt = check_x(X, self.n_features_in_, dtype=torch.float64 if self.precision == 64 else torch.float32,
                     device=self.device)
        with torch.no_grad():
            return self.expressions_[i].evaluate(Xt).cpu().numpy()

    def sympy(self, index=None) -> sympy.Expr:
        """The picked formula (or row ``index``) as a sympy expression in the variable names."""
        i = self._index(index)
        return self.equations_["sympy_format"].iloc[i]

    def latex(self, index=None, precision: int = 3) -> str:
        """LaTeX of the picked formula, constants rounded to ``precision`` significant digits."""
        expr = self.sympy(index)
        rounded = expr.xreplace({f: sympy.Float(f, precision) for f in expr.atoms(sympy.Float)})
        return sympy.latex(rounded)

    # --- pickling: operators hold lambdas, so formulas travel as exact strings -------------------
    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else dict(self.__dict__)
        state = dict(state)
        if "expressions_" in state:
            state["expressions_"] = [e.to_string() for e in self.expressions_]
            state["equations_"] = self.equations_.drop(columns=["lambda_format"])
        return state

    def __setstate__(self, state):
        state = dict(state)
        if "expressions_" in state and state["expressions_"] and isinstance(state["expressions_"][0], str):
            self.__dict__.update(state)
            operators = self._options().operators
            self.expressions_ = [parse_expression(text, operators=operators) for text in state["expressions_"]]
            self.equations_ = self.equations_.copy()
            self.equations_["lambda_format"] = [_Lambda(e, self.n_features_in_) for e in self.expressions_]
        else:
            self.__dict__.update(state)

    def __repr__(self, N_CHAR_MAX=700) -> str:
        if not hasattr(self, "equations_"):
            return super().__repr__(N_CHAR_MAX=N_CHAR_MAX)
        eq = self.equations_
        pick = self._index()
        table = pd.DataFrame({
            "pick": [">>>>" if i == pick else "" for i in range(len(eq))],
            "score": eq["score"].map(lambda s: f"{s:.4g}"),
            "equation": [e.to_string(self._shown_names(), precision=6) for e in self.expressions_],
            "loss": eq["loss"].map(lambda v: f"{v:.4g}"),
            "complexity": eq["complexity"],
        })
        with pd.option_context("display.max_colwidth", 80, "display.width", 200):
            body = table.to_string(index=False)
        return "PySRRegressor.equations_ = [\n" + body + "\n]"

    def _shown_names(self) -> list[str]:
        # Models pickled before variable_names_ existed always had feature_names_in_.
        if hasattr(self, "variable_names_"):
            return list(self.variable_names_)
        return list(self.feature_names_in_)


# PySR warns likewise past this many rows without batching.
LARGE_DATA_ROWS = 10_000


def _warn_if_large(n_rows: int, options: Options) -> None:
    """One warning, before the search, when every evaluation will run over many rows."""
    if n_rows > LARGE_DATA_ROWS and not options.batching:
        warnings.warn(f"X has {n_rows:,} rows: every formula of the search is evaluated on all of them, so "
                      f"the search runs about {n_rows / 1000:.0f}x slower per formula than on 1,000 rows "
                      f"(memory grows with the rows too). To speed it up, fit on a random subsample of "
                      f"{LARGE_DATA_ROWS:,} rows or fewer (a formula found there can be checked on all "
                      f"of them with predict or score).", UserWarning, stacklevel=3)


def _variable_names(X, variable_names):
    """The user's names for the variables, or None (then x0, x1, ...)."""
    source = "variable_names"
    if variable_names is None and isinstance(X, pd.DataFrame):
        # As scikit-learn: columns name the variables only if all are strings, so
        # pd.DataFrame(array) (columns 0, 1, ...) counts as an array.
        if not all(isinstance(c, str) for c in X.columns):
            return None
        variable_names, source = list(X.columns), "X"
    if variable_names is None:
        return None
    if isinstance(variable_names, str) or not hasattr(variable_names, "__iter__"):
        raise TypeError("variable_names must be a list of strings")
    names = [str(n) for n in variable_names]
    for n in names:
        if not n.isidentifier():
            if source == "X":
                what = f"column {n!r} of X"
                fix = f"rename the column (e.g. to {_identifier(n)!r}) or pass variable_names=[...] to fit"
            else:
                what, fix = f"variable name {n!r}", f"use e.g. {_identifier(n)!r}"
            raise ValueError(f"{what} is not a valid variable name: names must be identifiers (letters, "
                             f"digits and _, not starting with a digit); {fix}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"variable name(s) given twice: {dupes}")
    return names


def _identifier(name: str) -> str:
    """A valid variable name close to ``name`` (for error messages)."""
    fixed = re.sub(r"\W", "_", name) or "x"
    return fixed if fixed.isidentifier() else "x_" + fixed


def _merge_weights(weights, sample_weight):
    """``sample_weight`` (scikit-learn's name) is an alias of PySR's ``weights``."""
    if sample_weight is None:
        return weights
    if weights is None or weights is sample_weight:
        return sample_weight
    try:
        same = np.array_equal(np.asarray(weights, dtype=float), np.asarray(sample_weight, dtype=float))
    except (TypeError, ValueError):
        same = False
    if not same:
        raise ValueError("weights and sample_weight were both given, with different values; they are the "
                         "same setting (sample_weight is scikit-learn's name): pass only one")
    return weights


def _check_input(value, name: str, n_features: int | None = 0) -> None:
    """Reject, with a message saying what to do, input that `check_xy` would reject more vaguely
    (or not at all). ``n_features``: 0 for 1-D ``y``/weights, else what `check_x` gets."""
    if value is None:
        if name == "y":
            # "requires y to be passed, ...": scikit-learn's wording, which its estimator checks look for.
            raise ValueError("y is required: PySRRegressor requires y to be passed, but the target y is None; "
                             "fit(X, y) needs the target values (1-D, one per row of X)")
        raise ValueError(f"{name} is required, got None")
    if _is_complex(value):
        # scikit-learn's wording (its estimator checks look for it).
        raise ValueError(f"Complex data not supported: {name} has complex values; it must hold real numbers")
    if n_features != 0 and n_features != 1 and _ndim(value) == 1:
        if n_features is None:
            hint = f"for a single feature pass {name}.reshape(-1, 1)"
        else:
            hint = f"for a single sample pass {name}.reshape(1, -1)"
        raise ValueError(f"{name} must be 2-D (samples x features), got a 1-D array of shape "
                         f"{np.shape(value)}. Reshape your data: {hint}")
    if n_features and _ndim(value) == 2 and np.shape(value)[1] != n_features:
        raise ValueError(f"{name} has {np.shape(value)[1]} features, but PySRRegressor is expecting {n_features} "
                         "features as input (the number it was fitted with)")
    if name == "y" and _ndim(value) == 2 and np.shape(value)[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; it is used as y.ravel()",
                      DataConversionWarning, stacklevel=3)


def _ndim(value) -> int | None:
    try:
        return np.ndim(value)
    except Exception:  # ragged lists and the like: check_xy names the problem
        return None


def _is_complex(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_complex()
    if isinstance(value, pd.DataFrame):
        return any(dtype.kind == "c" for dtype in value.dtypes)
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, np.dtype):
        return dtype.kind == "c"
    try:
        return np.asarray(value).dtype.kind == "c"
    except Exception:  # ragged lists and the like: check_xy names the problem
        return False


def _no_finite_loss_message(y: torch.Tensor, options: Options) -> str:
    """Why a search can end with an empty front, and what to do about it."""
    largest = float(y.abs().max())
    limit = float(torch.finfo(y.dtype).max)
    text = ("the search found no formula with a finite loss: every candidate's loss was inf or NaN. "
            "Likely causes: y's scale overflows the loss, or every formula is undefined on the data "
            "(e.g. log or sqrt of negative values). ")
    if largest * largest > limit:
        text += (f"Here max |y| = {largest:.3g}, whose square overflows float{options.precision} "
                 f"(max {limit:.3g}). ")
    return text + "Rescale y (e.g. divide it by its standard deviation) and fit again."


class _ProgressBar:
    """Progress of a search towards the limit that will stop it, with the current pick.

    A search stops at ``niterations``, ``timeout_in_seconds`` or ``max_evals``, whichever
    comes first; the bar shows the percentage done towards the nearest of them (by the
    share done so far) and names it, so that a run under a deadline with a huge
    ``niterations`` reads in seconds, not in iterations it will never reach. It moves
    after every step, not only every iteration (an iteration on large data takes long).
    With ``progress=False`` a line is printed per iteration instead.
    """

    _UNITS = {"niterations": "iterations", "timeout_in_seconds": "time", "max_evals": "evaluations"}
    _STEPS = 1000  # the bar's resolution

    def __init__(self, options: Options, names: list[str]):
        self.names = names
        self.options = options
        self.bar = None
        self.shown = 0
        self.limit = None
        if options.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self._STEPS, desc="search", leave=False,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")

    def _describe(self, search: Search, limit: str) -> str:
        opts = self.options
        if limit == "timeout_in_seconds":
            return f"iteration {search.iteration} of a {opts.timeout_in_seconds:g} s budget"
        if limit == "max_evals":
            return f"{search.n_evals:,}/{opts.max_evals:,} evaluations"
        return f"iteration {search.iteration}/{opts.niterations}"

    def on_step(self, search: Search) -> None:
        if self.bar is None:
            return
        fractions = search.progress()
        limit = max(fractions, key=fractions.get)
        target = int(self._STEPS * fractions[limit])
        if target > self.shown:
            self.bar.update(target - self.shown)
            self.shown = target
        if limit != self.limit:
            self.limit = limit
            self.bar.set_description_str(f"search ({self._UNITS[limit]})", refresh=False)

    def __call__(self, search: Search, iteration: int) -> None:
        entry = search.best_entry()
        text = "" if entry is None else f"loss={entry.loss:.3g} {entry.expr.to_string(self.names, precision=4)}"
        if self.bar is not None:
            self.on_step(search)
            self.bar.set_postfix_str(f"{self._describe(search, self.limit)}, {text[:80]}", refresh=True)
        else:
            print(f"iteration {iteration}: evals={search.n_evals} best: {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
