"""Every PySRRegressor parameter in one table: PySR's name, group and default, and how
this project treats it.

PySR's API reference groups its parameters (``param_groupings.yml``); `PARAMETERS` keeps
those groups, in that order, then this project's own additions. The estimator's
signature, its defaults, the warnings for options that have no effect here, the
errors for options that would change the answer if ignored, and the README's "Coming
from PySR" table all come from this one table.

Each parameter has a ``status``:

- ``same``: PySR's meaning and default;
- ``different``: accepted and used, with a difference given in ``note``;
- ``no_effect``: accepted; a value other than the default warns that it does nothing here;
- ``unsupported``: a value other than the default raises, because ignoring it would change
  the answer (``note`` says why);
- ``added``: this project's own (names that PySR does not use).

    >>> PARAMETERS["maxsize"].default, PARAMETERS["maxsize"].group
    (30, 'Creating the Search Space')
    >>> DEPRECATED_ALIASES["ncyclesperiteration"]
    'ncycles_per_iteration'
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any

STATUSES = ("same", "different", "no_effect", "unsupported", "added")


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    group: str
    status: str = "same"
    note: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"{self.name}: status must be one of {STATUSES}, got {self.status!r}")


_JULIA = "Julia-specific"


def _group(group: str, *rows) -> list[Parameter]:
    return [Parameter(name, default, group, *rest) for name, default, *rest in rows]


_TABLE: list[Parameter] = [
    *_group(
        "Creating the Search Space",
        ("model_selection", "best", "same", "can be changed after fit; 'best', 'accuracy' or 'score'"),
        ("binary_operators", None, "different",
         "names as PySR's; a definition such as 'f(x, y) = x^2 + y' is read by a whitelist parser, not Julia"),
        ("unary_operators", None, "different", "names as PySR's; 'inv(x) = 1/x' is read by a whitelist parser"),
        ("operators", None, "same", "PySR 2's {1: [...], 2: [...]}; arity 3 is not offered"),
        ("expression_spec", None, "unsupported",
         "only the default ExpressionSpec(): template and parametric expressions are not offered"),
        ("maxsize", 30),
        ("maxdepth", None),
    ),
    *_group(
        "Setting the Search Size",
        ("niterations", 100),
        ("populations", 31),
        ("population_size", 27),
        ("ncycles_per_iteration", 380, "different",
         "same meaning; a step mutates several members of every population at once (see PYSR_DIFFERENCES)"),
    ),
    *_group(
        "The Objective",
        ("elementwise_loss", None, "different",
         "LossFunctions.jl names, or 'f(x, y) = ...' / 'f(x, y, w) = ...' read by a whitelist parser, "
         "or a Python callable f(prediction, target) on torch tensors"),
        ("loss_function", None, "different",
         "a Python callable f(prediction, target, weights) -> loss of one formula on all rows, "
         "not Julia's f(tree, dataset, options)"),
        ("loss_function_expression", None, "unsupported", "needs Julia expression objects"),
        ("loss_scale", "log", "same", "'log' or 'linear' (no score column; selection by accuracy)"),
        ("dimensional_constraint_penalty", None, "no_effect", "units (X_units, y_units) are not offered"),
        ("dimensionless_constants_only", False, "no_effect", "units (X_units, y_units) are not offered"),
    ),
    *_group(
        "Working with Complexities",
        ("parsimony", 0.0),
        ("constraints", None),
        ("nested_constraints", None),
        ("complexity_of_operators", None),
        ("complexity_of_constants", None),
        ("complexity_of_variables", None, "same", "one number here, or one per variable in fit"),
        ("complexity_mapping", None, "unsupported", "a Julia function of the expression"),
        ("warmup_maxsize_by", None),
        ("use_frequency", True),
        ("use_frequency_in_tournament", True),
        ("adaptive_parsimony_scaling", 1040.0),
        ("should_simplify", True, "different",
         "also refines the hall of fame's front (node deletion, sympy simplification)"),
    ),
    *_group(
        "Mutations",
        ("weight_add_node", 2.47),
        ("weight_insert_node", 0.0112),
        ("weight_delete_node", 0.870),
        ("weight_do_nothing", 0.273),
        ("weight_mutate_constant", 0.0346),
        ("weight_mutate_operator", 0.293),
        ("weight_mutate_feature", 0.1, "same", "PySR 2's"),
        ("weight_swap_operands", 0.198),
        ("weight_rotate_tree", 4.26),
        ("weight_randomize", 0.000502),
        ("weight_simplify", 0.00209),
        ("weight_optimize", 0.0),
        ("crossover_probability", 0.0259),
        ("annealing", False),
        ("alpha", 3.17),
        ("perturbation_factor", 0.129),
        ("probability_negate_constant", 0.00743),
        ("skip_mutation_failures", True),
    ),
    *_group(
        "Tournament Selection",
        ("tournament_selection_n", 15),
        ("tournament_selection_p", 0.982),
    ),
    *_group(
        "Constant Optimization",
        ("optimizer_algorithm", "BFGS", "different",
         "a batched BFGS over many formulas at once; 'NelderMead' is accepted and runs BFGS, with a warning"),
        ("optimizer_nrestarts", 2),
        ("optimizer_f_calls_limit", None, "no_effect", "the BFGS runs optimizer_iterations steps"),
        ("optimize_probability", 0.14),
        ("optimizer_iterations", 8),
        ("should_optimize_constants", True),
    ),
    *_group(
        "Migration between Populations",
        ("fraction_replaced", 0.00036),
        ("fraction_replaced_hof", 0.0614),
        ("fraction_replaced_guesses", 0.001, "same", "PySR 2's"),
        ("migration", True),
        ("hof_migration", True),
        ("topn", 12),
    ),
    *_group(
        "Data Preprocessing",
        ("denoise", False, "same", "scikit-learn's GaussianProcessRegressor, as PySR's"),
        ("select_k_features", None, "same", "random-forest importance, as PySR's"),
    ),
    *_group(
        "Stopping Criteria",
        ("max_evals", None),
        ("timeout_in_seconds", None, "different",
         "covers the whole fit: the search stops a little early to finish the front in time"),
        ("early_stop_condition", None, "different",
         "a number, a Python callable f(loss, complexity), or PySR's string form read by a whitelist parser"),
    ),
    *_group(
        "Performance and Parallelization",
        ("parallelism", None, "no_effect", "the search runs in one process and thread (serial)"),
        ("procs", None, "no_effect", "the search runs in one process and thread (serial)"),
        ("cluster_manager", None, "no_effect", "no distributed search yet"),
        ("heap_size_hint_in_bytes", None, "no_effect", _JULIA),
        ("batching", False, "same", "False, True, or 'auto' (on above 1,000 rows, PySR 2's rule)"),
        ("batch_size", 50, "same", "None with batching picks PySR 2's size by rows; values below 1 become 1"),
        ("fast_cycle", False, "no_effect", "steps are batched always"),
        ("turbo", False, "no_effect", _JULIA + " (LoopVectorization)"),
        ("bumper", False, "no_effect", _JULIA + " (Bumper.jl)"),
        ("precision", 64, "different", "default 64 (PySR: 32): exact recovery is judged on constants"),
        ("autodiff_backend", None, "no_effect", "gradients come from torch"),
    ),
    *_group(
        "Determinism",
        ("random_state", None, "different", "a seed alone makes a run reproducible: the search is serial"),
        ("deterministic", False, "same", "PySR's rule: requires parallelism='serial'"),
        ("warm_start", False, "same", "continues from the populations of the last fit"),
        ("guesses", None, "same", "PySR 2's: formula strings or sympy expressions, constants fitted"),
    ),
    *_group(
        "Monitoring",
        ("verbosity", 1),
        ("update_verbosity", None, "no_effect", "nothing is compiled or updated"),
        ("print_precision", 5),
        ("progress", True),
        ("logger_spec", None, "no_effect", "no TensorBoard logging yet"),
        ("input_stream", "stdin", "same", "'stdin' or 'devnull'; 'q' then Enter stops an interactive run"),
    ),
    *_group(
        "Environment",
        ("temp_equation_file", False),
        ("tempdir", None),
        ("delete_tempfiles", True),
        ("update", False, "no_effect", "there are no Julia packages to update"),
    ),
    *_group(
        "Exporting the Results",
        ("output_directory", None),
        ("run_id", None),
        ("output_jax_format", False),
        ("output_torch_format", False),
        ("extra_sympy_mappings", None, "same", "also gives a custom operator's sympy form"),
        ("extra_torch_mappings", None),
        ("extra_jax_mappings", None),
    ),
    *_group(
        "This project's additions",
        ("linear_scaling", False, "added", "score each formula as a*f + b with a, b fitted in closed form; a "
                                          "fraction in [0, 1]: in that share of the populations only"),
        ("memoize", True, "added", "the sub-expression cache and the loss memo"),
        ("device", None, "added", "a torch device for the evaluation"),
        ("engine", "auto", "added", "'auto': the compiled (numba) search where it can run, else the torch one; "
                                    "or 'compiled' / 'torch'"),
        ("weight_soft_tree", 0.0, "added", "weight of the residual soft-tree mutation"),
        ("soft_tree_seed_fraction", 0.1, "added", "share of each population seeded by soft-tree fits"),
        ("soft_tree_reseed", True, "added", "fresh soft-tree seeds every 20,000 evaluations (100,000 on the "
                                            "compiled engine)"),
        ("soft_tree_proposer", None, "added", "the object that makes soft-tree seeds and proposals"),
        ("optimizer_probability", None, "added", "an alias of optimize_probability"),
    ),
]

PARAMETERS: dict[str, Parameter] = {p.name: p for p in _TABLE}
if len(PARAMETERS) != len(_TABLE):
    raise AssertionError("a parameter is listed twice")

GROUPS: tuple[str, ...] = tuple(dict.fromkeys(p.group for p in _TABLE))

# PySR's deprecated names (pysr/deprecated.py): old -> new, with a FutureWarning.
DEPRECATED_ALIASES: dict[str, str] = {
    "fractionReplaced": "fraction_replaced",
    "fractionReplacedHof": "fraction_replaced_hof",
    "npop": "population_size",
    "hofMigration": "hof_migration",
    "shouldOptimizeConstants": "should_optimize_constants",
    "weightAddNode": "weight_add_node",
    "weightDeleteNode": "weight_delete_node",
    "weightDoNothing": "weight_do_nothing",
    "weightInsertNode": "weight_insert_node",
    "weightMutateConstant": "weight_mutate_constant",
    "weightMutateOperator": "weight_mutate_operator",
    "weightSwapOperands": "weight_swap_operands",
    "weightRandomize": "weight_randomize",
    "weightSimplify": "weight_simplify",
    "crossoverProbability": "crossover_probability",
    "perturbationFactor": "perturbation_factor",
    "batchSize": "batch_size",
    "warmupMaxsizeBy": "warmup_maxsize_by",
    "useFrequency": "use_frequency",
    "useFrequencyInTournament": "use_frequency_in_tournament",
    "ncyclesperiteration": "ncycles_per_iteration",
    "loss": "elementwise_loss",
    "full_objective": "loss_function",
    "equation_file": "output_directory",
}

# Keywords PySR accepts in __init__ only to warn about (data belongs to fit; Julia's setup).
DATA_KEYWORDS = ("weights", "variable_names", "Xresampled")
JULIA_KEYWORDS = {
    "julia_project": "The `julia_project` parameter has been deprecated. This project runs without Julia; "
                     "the parameter is ignored.",
    "julia_kwargs": "The `julia_kwargs` parameter has been deprecated. This project runs without Julia; "
                    "the parameter is ignored.",
}


def signature() -> inspect.Signature:
    """The estimator's ``__init__`` signature: ``model_selection`` first, every other
    parameter keyword-only (scikit-learn reads parameter names and defaults from it).
    PySR's deprecated names also reach ``__init__`` as keywords, but are not advertised:
    they are not parameters (``get_params`` must not list them)."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for p in _TABLE:
        kind = (inspect.Parameter.POSITIONAL_OR_KEYWORD if p.name == "model_selection"
                else inspect.Parameter.KEYWORD_ONLY)
        params.append(inspect.Parameter(p.name, kind, default=p.default))
    return inspect.Signature(params)


def suggest(name: str) -> str:
    """`` Did you mean `a`, `b`?`` for a mistyped parameter name (empty if nothing is close)."""
    close = difflib.get_close_matches(name, list(PARAMETERS), n=3)
    return (" Did you mean " + ", ".join(f"`{c}`" for c in close) + "?") if close else ""


# PySRRegressor's methods and PySR's top-level functions: (name, status, note).
METHODS: tuple[tuple[str, str, str], ...] = (
    ("fit(X, y, Xresampled, weights, variable_names, complexity_of_variables, X_units, y_units, category)",
     "different", "X_units, y_units and category raise (not offered); sample_weight is accepted too"),
    ("predict(X, index)", "same", "2-D for several outputs; X with all columns or the selected ones"),
    ("score(X, y)", "same", "scikit-learn's R^2"),
    ("get_best(index)", "same", ""),
    ("sympy(index)", "same", "a list for several outputs"),
    ("latex(index, precision)", "same", ""),
    ("latex_table(indices, precision, columns)", "same", "booktabs, PySR's preamble"),
    ("pytorch(index)", "different", "built from the formula itself: equals predict; constants are parameters"),
    ("jax(index)", "same", "needs jax installed (optional); a clear ImportError otherwise"),
    ("get_hof()", "same", ""),
    ("refresh(run_directory)", "same", "rereads the CSV with the whitelist parser"),
    ("from_file(run_directory, binary_operators, unary_operators, operators, n_features_in, ...)", "different",
     "reads checkpoint.json (data only) or the CSV; PySR's checkpoint.pkl is never unpickled"),
    ("print(model), repr(model)", "same", "the front with the pick marked >>>>"),
    ("equations", "same", "deprecated alias of equations_, with a FutureWarning"),
    ("plot_pareto(), plot_fit(X, y)", "added", "matplotlib figures"),
    ("sympy2torch, sympy2jax, pysr2sympy, sympy2latex", "same", "from enhancements"),
    ("run_feature_selection, denoise", "same", "from enhancements"),
    ("ExpressionSpec, TemplateExpressionSpec, ParametricExpressionSpec", "unsupported",
     "importable; only ExpressionSpec() may be used"),
    ("pysr, best, best_row, best_tex, best_callable, install", "same", "PySR's deprecation messages"),
    ("jl, SymbolicRegression, load_all_packages", "no_effect", "there is no Julia: load_all_packages warns; "
                                                               "jl and SymbolicRegression are absent"),
)

_LABELS = {"same": "same", "different": "different", "no_effect": "accepted, no effect",
           "unsupported": "not supported", "added": "added"}


def coming_from_pysr_table() -> str:
    """The README's tables: every PySR parameter (group, default here, status), then the
    methods and functions (the README holds this text; a test checks that they agree)."""
    lines = ["| group | parameter | default | here |", "|---|---|---|---|"]
    for p in _TABLE:
        text = _LABELS[p.status] + (f": {p.note}" if p.note else "")
        lines.append(f"| {p.group} | `{p.name}` | `{p.default!r}` | {text} |")
    lines += ["", "| method or function | here |", "|---|---|"]
    for name, status, note in METHODS:
        lines.append(f"| `{name}` | {_LABELS[status]}{': ' + note if note else ''} |")
    return "\n".join(lines)


def status_counts(include_methods: bool = False) -> dict[str, int]:
    """How many parameters (and, if asked, methods and functions) have each status."""
    out = {s: 0 for s in STATUSES}
    for p in _TABLE:
        out[p.status] += 1
    if include_methods:
        for _, status, _ in METHODS:
            out[status] += 1
    return out
