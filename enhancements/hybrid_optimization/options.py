"""Every setting of the search in one validated object, under PySR's names and defaults.

`PySRRegressor` keeps the user's parameters as given (scikit-learn style) and builds an
`Options` from them in ``fit``; everything below the estimator reads only `Options`.

    >>> opts = Options(binary_operators=["+", "*"], unary_operators=["cos", "inv(x) = 1/x"])
    >>> [op.name for op in opts.operators]
    ['add', 'mul', 'cos', 'inv']

Where a default differs from PySR 1.x the field's comment says why (see also
`PYSR_DIFFERENCES`).
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import numpy as np
import torch

from pysr_baseline.expression import Expression
from pysr_baseline.operators import DEFAULT_BINARY_OPERATORS, Operator
from pysr_baseline.parsing import resolve_operator, resolve_operators

# Mutation names in a fixed order (the order of the weight vector the mutation sampler uses).
MUTATIONS = ("mutate_constant", "mutate_operator", "mutate_feature", "swap_operands", "rotate_tree",
             "add_node", "insert_node", "delete_node", "simplify", "randomize", "do_nothing", "optimize",
             "soft_tree")

PYSR_DIFFERENCES = {
    "precision": "64 (PySR: 32). Exact recovery is judged on constants; float64 costs little on a CPU.",
    "optimizer_algorithm": "'BFGS' is a batched BFGS over many candidates at once (per-candidate "
                           "Hessian and line search); 'NelderMead' is accepted and runs BFGS.",
    "batching": "mutants are scored on a fresh random batch of rows each step (without the "
                "sub-expression cache, which needs the same rows every time); the hall of fame's "
                "candidates are re-scored on all rows at the end of every iteration.",
    "linear_scaling": "new, default off (PySR has none): True scores each formula f as a*f+b with closed-form "
                      "a, b, and the hall of fame then holds f, a*f, f+b and a*f+b at their own complexities. "
                      "A number in [0, 1] scales that fraction of the populations only (0.5: every second "
                      "one), the others scoring f itself. Scaling finds constant factors for free but draws "
                      "populations to forms that only fit the data's shape (a*exp(sin(x))+b for a "
                      "polynomial): measured, all 100 Feynman equations at 60 s 65 solved either way, exact "
                      "recovery in 10 s (results/recovery.md, one run) 31 of 60 runs off against 20 on.",
    "ncycles_per_iteration": "same meaning and default; a step runs several cycles' mutations of every "
                             "population at once (~192 formulas per evaluator call, at most a quarter "
                             "of a population) instead of one mutation at a time.",
    "model_selection": "losses below eps * (loss of the mean) count as equal, so the 'best' pick among "
                       "exact formulas is not decided by round-off.",
    "early_stop_condition": "a number stops once a formula's loss is <= it; strings are whitelist-parsed "
                            "comparisons joined by && / ||, not Julia code.",
    "elementwise_loss": "LossFunctions.jl names (L2DistLoss(), L1DistLoss(), HuberLoss(d), LPDistLoss{P}(), "
                        "...) or 'f(x, y) = ...' / 'f(x, y, w) = ...' whitelist-parsed; or a torch callable.",
    "should_simplify": "also refines the hall of fame: node-deletion polish and sympy (4 entries per "
                       "iteration, variables with positive data declared positive).",
    "optimizer_probability": "accepted as an alias of PySR's optimize_probability.",
    "soft_tree_seed_fraction": "new, default 0.1: a tenth of every population starts as (and, with "
                               "soft_tree_reseed, every 20,000 evaluations is replaced by) formulas of "
                               "OptimizedSymbolicTrainer fits at depths 2 and 3 with 8 restarts each. "
                               "Measured on the first 20 Feynman equations, 30 s each, seed 0: 9 solved "
                               "with seeding and reseeding, 8 with seeding only, 7 without.",
    "weight_soft_tree": "new, default 0: the residual soft-tree mutation (hybrid.py) costs ~0.3 s a "
                        "proposal; at weight 0.001 it solved nothing more on the first Feynman equations "
                        "and took longer to the solutions it shared.",
    "timeout_in_seconds": "covers the whole search, its last look at the front included: the search "
                          "proper stops 5% of the budget (at most 2 s) early, and no sympy call or "
                          "soft-tree fit starts that would obviously end past the budget.",
    "threads": "the search runs with one torch thread (restored afterwards): its tensors are small, "
               "and idle-spinning threads cost ~10x on a busy 2-core machine.",
}


def check_device(device) -> None:
    """Fail at once, naming the device, where torch cannot use it (torch's own error is an
    AssertionError deep inside the search)."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device ({err})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} needs CUDA, but CUDA is not available to this torch "
                             f"({torch.__version__}); use device='cpu' (or None)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} needs MPS, but MPS is not available to this torch; "
                         "use device='cpu' (or None)")


@dataclass
class Options:
    """All search settings. Construct with keyword arguments; invalid values raise
    ValueError/TypeError naming the parameter.

    The fields follow the groups of PySR's API reference (see `parameters`, which also
    holds the estimator's parameters that are not search settings: data preprocessing,
    the run directory, exports). A default here equals PySR's (a test checks it against
    `parameters.PARAMETERS`), with None resolved to what it stands for.
    """

    # --- creating the search space -------------------------------------------------------
    binary_operators: Any = None            # None -> + - * /
    unary_operators: Any = None             # None -> no unary operators
    extra_sympy_mappings: dict | None = None  # operator name -> sympy form (overrides the operator's)
    maxsize: int = 30
    maxdepth: int | None = None
    # --- setting the search size ---------------------------------------------------------
    niterations: int = 100
    populations: int = 31
    population_size: int = 27
    ncycles_per_iteration: int = 380
    # --- the objective ---------------------------------------------------------------------
    elementwise_loss: Any = None            # None -> "L2DistLoss()"
    loss_function: Callable | None = None   # f(prediction, target, weights) -> loss of one formula
    loss_scale: str = "log"
    model_selection: str = "best"
    linear_scaling: bool | float = False    # not in PySR: see PYSR_DIFFERENCES; or a fraction of populations
    # --- working with complexities -----------------------------------------------------------
    parsimony: float = 0.0
    constraints: dict | None = None         # {"pow": (-1, 1), "sin": 5}: max complexity of arguments
    nested_constraints: dict | None = None  # {"sin": {"sin": 0, "cos": 0}}: max nesting
    complexity_of_operators: dict | None = None
    complexity_of_constants: float | None = None   # None -> 1
    complexity_of_variables: Any = None     # None -> 1; a number, or one number per variable
    warmup_maxsize_by: float | None = None  # None -> 0
    use_frequency: bool = True
    use_frequency_in_tournament: bool = True
    adaptive_parsimony_scaling: float = 1040.0
    should_simplify: bool | None = True     # None -> True
    # --- mutations -----------------------------------------------------------------------------
    weight_add_node: float = 2.47
    weight_insert_node: float = 0.0112
    weight_delete_node: float = 0.870
    weight_do_nothing: float = 0.273
    weight_mutate_constant: float = 0.0346
    weight_mutate_operator: float = 0.293
    weight_mutate_feature: float = 0.1
    weight_swap_operands: float = 0.198
    weight_rotate_tree: float = 4.26
    weight_randomize: float = 0.000502
    weight_simplify: float = 0.00209
    weight_optimize: float = 0.0
    weight_soft_tree: float = 0.0           # the residual soft-tree mutation (hybrid.py)
    crossover_probability: float = 0.0259
    annealing: bool = False
    alpha: float = 3.17
    perturbation_factor: float = 0.129
    probability_negate_constant: float = 0.00743
    skip_mutation_failures: bool = True
    # --- tournament selection ------------------------------------------------------------------
    tournament_selection_n: int = 15
    tournament_selection_p: float = 0.982
    # --- constant optimization -----------------------------------------------------------------
    optimizer_algorithm: str = "BFGS"       # "NelderMead" is accepted and runs BFGS (the estimator warns)
    optimizer_nrestarts: int = 2
    optimize_probability: float = 0.14
    optimizer_iterations: int = 8
    should_optimize_constants: bool = True
    # --- migration between populations ---------------------------------------------------------
    fraction_replaced: float = 0.00036
    fraction_replaced_hof: float = 0.0614
    fraction_replaced_guesses: float = 0.001
    migration: bool = True
    hof_migration: bool = True
    topn: int = 12
    # --- stopping criteria ---------------------------------------------------------------------
    max_evals: int | None = None
    timeout_in_seconds: float | None = None
    early_stop_condition: Any = None        # float, callable(loss, complexity) or "f(loss, complexity) = ..."
    # --- performance -----------------------------------------------------------------------------
    batching: Any = False                   # False, True or "auto" (on above 1,000 rows)
    batch_size: int | None = 50             # None: PySR 2's size by rows
    precision: int = 64
    memoize: bool = True
    device: Any = None
    engine: str = "auto"                    # "auto": compiled (numba) where it can run, else torch
    # --- determinism, monitoring -----------------------------------------------------------------
    random_state: Any = None
    verbosity: int = 1
    progress: bool = True
    print_precision: int = 5
    # --- soft trees (this project's) ---------------------------------------------------------
    soft_tree_seed_fraction: float = 0.1    # share of each population seeded by soft-tree fits (0: off)
    soft_tree_reseed: bool = True           # with seeding: new fits every 20,000 evaluations (compiled: 100,000)
    soft_tree_proposer: Any = None          # .seed/.propose (hybrid.py); None: the shipped one if needed

    # derived (filled in by __post_init__)
    operators: tuple = field(init=False, repr=False, default=())
    loss: Any = field(init=False, repr=False, default=None)
    stop_condition: Callable | None = field(init=False, repr=False, default=None)
    _op_complexity: dict = field(init=False, repr=False, default_factory=dict)
    _unit_complexity: bool = field(init=False, repr=False, default=True)

    def __post_init__(self):
        from enhancements.hybrid_optimization.losses import make_formula_loss, make_loss, make_stop_condition

        binary = DEFAULT_BINARY_OPERATORS if self.binary_operators is None else self.binary_operators
        unary = () if self.unary_operators is None else self.unary_operators
        self.binary = _with_sympy_mappings(resolve_operators(binary, 2), self.extra_sympy_mappings)
        self.unary = _with_sympy_mappings(resolve_operators(unary, 1), self.extra_sympy_mappings)
        if not self.binary and not self.unary:
            raise ValueError("at least one operator is needed (binary_operators and unary_operators are empty)")
        names = [op.name for op in self.binary + self.unary]
        if len(set(names)) != len(names):
            raise ValueError(f"an operator is listed twice: {names}")
        self.operators = self.binary + self.unary
        self.by_name = {op.name: op for op in self.operators}

        _int(self, "maxsize", 1)
        if self.maxdepth is not None:
            _int(self, "maxdepth", 1)
        for name in ("niterations", "populations", "population_size", "ncycles_per_iteration",
                     "tournament_selection_n", "topn", "optimizer_iterations", "print_precision"):
            _int(self, name, 1)
        _int(self, "optimizer_nrestarts", 0)
        if self.tournament_selection_n > self.population_size:
            raise ValueError(f"tournament_selection_n ({self.tournament_selection_n}) must not exceed "
                             f"population_size ({self.population_size})")
        if self.max_evals is not None:
            _int(self, "max_evals", 1)
        if self.timeout_in_seconds is not None:
            _number(self, "timeout_in_seconds", lo=0.0, lo_open=True)
        if self.warmup_maxsize_by is None:
            self.warmup_maxsize_by = 0.0
        for name in ("tournament_selection_p",):
            _number(self, name, lo=0.0, hi=1.0, lo_open=True)
        for name in ("crossover_probability", "fraction_replaced", "fraction_replaced_hof",
                     "fraction_replaced_guesses", "optimize_probability", "warmup_maxsize_by",
                     "probability_negate_constant", "soft_tree_seed_fraction"):
            _number(self, name, lo=0.0, hi=1.0)
        self.linear_scaling_fraction = _scaling_fraction(self.linear_scaling)
        for name in ("parsimony", "adaptive_parsimony_scaling", "perturbation_factor"):
            _number(self, name, lo=0.0)
        _number(self, "alpha", lo=0.0, lo_open=True)
        weights = self.mutation_weights()
        if sum(weights.values()) <= 0:
            raise ValueError("all mutation weights are zero")
        if (self.weight_soft_tree > 0 or self.soft_tree_seed_fraction > 0) and self.soft_tree_proposer is None:
            # The shipped proposer: a new one per Options, since it holds the data it is bound to.
            from enhancements.hybrid_optimization.hybrid import TrainedSoftTreeProposer
            self.soft_tree_proposer = TrainedSoftTreeProposer()
        if self.model_selection not in ("best", "accuracy", "score"):
            raise ValueError(f"model_selection must be 'best', 'accuracy' or 'score', got {self.model_selection!r}")
        if self.engine not in ("auto", "compiled", "torch"):
            raise ValueError(f"engine must be 'auto', 'compiled' or 'torch', got {self.engine!r}")
        if self.loss_scale not in ("log", "linear"):
            raise ValueError(f"loss_scale must be 'log' or 'linear', got {self.loss_scale!r}")
        if self.optimizer_algorithm not in ("BFGS", "NelderMead"):
            raise NotImplementedError("PySR currently only supports the following optimizer algorithms: "
                                      f"['BFGS', 'NelderMead'] (got {self.optimizer_algorithm!r})")
        if self.precision not in (16, 32, 64):
            raise ValueError(f"precision must be 16, 32 or 64, got {self.precision!r}")
        check_device(self.device)
        if self.batching not in (False, True, "auto"):
            raise ValueError(f"batching must be False, True or 'auto', got {self.batching!r}")
        if self.batch_size is not None:
            _int(self, "batch_size", -2**62)
            if self.batch_size < 1:
                warnings.warn("Given `batch_size` must be greater than or equal to one. `batch_size` has been "
                              "increased to equal one.", UserWarning, stacklevel=3)
                self.batch_size = 1
        if self.should_simplify is None:
            self.should_simplify = True
        if self.complexity_of_constants is None:
            self.complexity_of_constants = 1
        _number(self, "complexity_of_constants", lo=0.0, convert=False)
        self.complexity_of_variables = _variable_complexities(self.complexity_of_variables)
        self._op_complexity = {op.name: op.complexity for op in self.operators}
        for key, value in (self.complexity_of_operators or {}).items():
            op = self._lookup(key, "complexity_of_operators")
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or value < 0 or not math.isfinite(value):
                raise ValueError(f"complexity_of_operators[{key!r}] must be a non-negative number, got {value!r}")
            self._op_complexity[op.name] = value
        cv = self.complexity_of_variables
        self._unit_complexity = (self.complexity_of_constants == 1 and all(v == 1 for v in _as_tuple(cv))
                                 and all(v == 1 for v in self._op_complexity.values()))
        self._check_constraints()
        if self.loss_function is not None:
            if self.elementwise_loss is not None:
                raise ValueError("You cannot set both `elementwise_loss` and `loss_function`.")
            self.loss = make_formula_loss(self.loss_function)
        else:
            self.loss = make_loss(self.elementwise_loss)
        self.stop_condition = make_stop_condition(self.early_stop_condition)
        proposer = self.soft_tree_proposer
        for method, setting, value in (("seed", "soft_tree_seed_fraction", self.soft_tree_seed_fraction),
                                       ("propose", "weight_soft_tree", self.weight_soft_tree)):
            if proposer is not None and value > 0 and not callable(getattr(proposer, method, None)):
                raise TypeError(f"soft_tree_proposer has no .{method}(...) method, which {setting}={value:g} "
                                f"needs: add it (see hybrid.SoftTreeProposer) or set {setting}=0")

    # --- helpers used by the search ---------------------------------------------------------
    def scaled_populations(self) -> list[bool]:
        """Which populations score their members as a*f+b (`linear_scaling`): all, none, or
        that fraction of them, spread evenly (0.5: every second one).

        >>> Options(populations=4, linear_scaling=0.5, progress=False).scaled_populations()
        [False, True, False, True]
        """
        f = self.linear_scaling_fraction
        return [math.floor((p + 1) * f + 1e-9) > math.floor(p * f + 1e-9) for p in range(self.populations)]

    def mutation_weights(self) -> dict[str, float]:
        """The mutation weights by mutation name (crossover is chosen separately)."""
        out = {}
        for name in MUTATIONS:
            value = getattr(self, "weight_" + name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"weight_{name} must be a non-negative finite number, got {value!r}")
            out[name] = float(value)
        return out

    def complexity(self, expr: Expression) -> float:
        """PySR's complexity of ``expr`` under these options (the node count by default)."""
        if self._unit_complexity:
            return expr.size
        ops, cc, cv = self._op_complexity, self.complexity_of_constants, self.complexity_of_variables
        per_variable = isinstance(cv, tuple)
        total = 0
        for node in expr.nodes():
            if node.op is not None:
                total += ops.get(node.op.name, node.op.complexity)
            elif node.feature is not None:
                total += cv[node.feature] if per_variable else cv
            else:
                total += cc
        return total

    def node_complexity(self, node: Expression) -> float:
        if node.op is not None:
            return self._op_complexity.get(node.op.name, node.op.complexity)
        if node.feature is None:
            return self.complexity_of_constants
        cv = self.complexity_of_variables
        return cv[node.feature] if isinstance(cv, tuple) else cv

    def satisfies_constraints(self, expr: Expression) -> bool:
        """PySR's ``constraints`` (argument complexity) and ``nested_constraints`` hold."""
        if not self._arg_limits and not self._nested:
            return True
        for node in expr.nodes():
            if node.op is None:
                continue
            limits = self._arg_limits.get(node.op.name)
            if limits is not None:
                for child, limit in zip(node.children, limits):
                    if limit >= 0 and self.complexity(child) > limit:
                        return False
            inner = self._nested.get(node.op.name)
            if inner:
                for child in node.children:
                    for name, limit in inner.items():
                        if _nesting(child, name) > limit:
                            return False
        return True

    def _lookup(self, key, where: str) -> Operator:
        try:
            name = resolve_operator(key).name if not isinstance(key, Operator) else key.name
        except (ValueError, TypeError):
            name = key
        if name not in self.by_name:
            raise ValueError(f"{where}: operator {key!r} is not among the search's operators "
                             f"({', '.join(self.by_name)})")
        return self.by_name[name]

    def _check_constraints(self):
        self._arg_limits, self._nested = {}, {}
        if self.constraints is not None:
            if not isinstance(self.constraints, dict):
                raise TypeError("constraints must be a dict like {'pow': (-1, 1), 'sin': 5}")
            for key, value in self.constraints.items():
                op = self._lookup(key, "constraints")
                limits = (value,) if op.arity == 1 else value
                if not isinstance(limits, (tuple, list)) or len(limits) != op.arity or not all(
                        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in limits):
                    raise ValueError(f"constraints[{key!r}] must be {'an int' if op.arity == 1 else 'a pair of ints'}"
                                     f" (-1 = no limit), got {value!r}")
                self._arg_limits[op.name] = tuple(int(v) for v in limits)
        if self.nested_constraints is not None:
            if not isinstance(self.nested_constraints, dict):
                raise TypeError("nested_constraints must be a dict like {'sin': {'sin': 0}}")
            for key, inner in self.nested_constraints.items():
                outer = self._lookup(key, "nested_constraints")
                if not isinstance(inner, dict):
                    raise TypeError(f"nested_constraints[{key!r}] must be a dict")
                table = {}
                for k2, limit in inner.items():
                    op2 = self._lookup(k2, "nested_constraints")
                    if not isinstance(limit, numbers.Integral) or isinstance(limit, bool) or limit < 0:
                        raise ValueError(f"nested_constraints[{key!r}][{k2!r}] must be a non-negative int")
                    table[op2.name] = int(limit)
                self._nested[outer.name] = table


def _with_sympy_mappings(ops: tuple, mappings: dict | None) -> tuple:
    """The operators, with the sympy form of those named in ``extra_sympy_mappings``
    replaced by the user's (PySR's custom operators need one; a mapping overrides ours)."""
    if mappings is None:
        return ops
    if not isinstance(mappings, dict):
        raise TypeError("extra_sympy_mappings must be a dict like {'inv': lambda x: 1 / x}")
    for key, fn in mappings.items():
        if not isinstance(key, str) or not callable(fn):
            raise TypeError(f"extra_sympy_mappings must map operator names to callables; got {key!r}: {fn!r}")
    out = []
    for op in ops:
        fn = mappings.get(op.name)
        out.append(op if fn is None else replace(op, sympy_fn=fn))
    return tuple(out)


def _scaling_fraction(value) -> float:
    """``linear_scaling``: True (every population), False (none) or a fraction in [0, 1]."""
    if isinstance(value, (bool, np.bool_)):
        return 1.0 if value else 0.0
    if isinstance(value, numbers.Real) and 0.0 <= value <= 1.0:
        return float(value)
    raise ValueError(f"linear_scaling must be True, False or a fraction of the populations in [0, 1], got {value!r}")


def _as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _variable_complexities(value):
    """``complexity_of_variables``: None -> 1, a number, or one number per variable (a tuple)."""
    if value is None:
        return 1
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"complexity_of_variables must be a non-negative number, got {value!r}")
        return value
    if isinstance(value, (list, tuple)) or hasattr(value, "__array__"):
        values = tuple(value.tolist() if hasattr(value, "tolist") else value)
        for v in values:
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"complexity_of_variables must hold non-negative numbers, got {v!r}")
        if not values:
            raise ValueError("complexity_of_variables is an empty list")
        return values
    raise TypeError(f"complexity_of_variables must be a number or a list of numbers, got {value!r}")


def _nesting(expr: Expression, name: str) -> int:
    """How many ``name`` operators are nested along the deepest path of ``expr``."""
    if expr.op is None:
        return 0
    below = max(_nesting(c, name) for c in expr.children)
    return below + (1 if expr.op.name == name else 0)


def _int(opts: Options, name: str, lo: int):
    value = getattr(opts, name)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be at least {lo}, got {value}")
    setattr(opts, name, int(value))


def _number(opts: Options, name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            convert: bool = True):
    raw = getattr(opts, name)
    if not isinstance(raw, numbers.Real) or isinstance(raw, bool):
        raise TypeError(f"{name} must be a number, got {raw!r}")
    value = float(raw)
    if not math.isfinite(value) or (lo is not None and (value < lo or (lo_open and value == lo))) or (
            hi is not None and value > hi):
        bounds = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}{']' if hi is not None else ')'}"
        raise ValueError(f"{name} must be in {bounds}, got {value}")
    setattr(opts, name, value if convert else raw)


def option_names() -> list[str]:
    """The names a user may set (the init fields of Options)."""
    return [f.name for f in fields(Options) if f.init]
