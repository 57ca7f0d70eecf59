"""The drop-in's parameter surface: every PySR parameter under its name with PySR's
default, deprecated names, unknown names, options without effect, and PySR's rules."""
import inspect
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from enhancements import PySRRegressor
from enhancements.hybrid_optimization.options import Options, option_names
from enhancements.hybrid_optimization.parameters import (DEPRECATED_ALIASES, GROUPS, PARAMETERS, status_counts)

TINY = dict(niterations=1, populations=2, population_size=10, tournament_selection_n=5, ncycles_per_iteration=10,
            soft_tree_seed_fraction=0.0, verbosity=0, progress=False, random_state=0)
rng = np.random.default_rng(0)
X = rng.uniform(1, 3, (40, 2))
Y = X[:, 0] * X[:, 1]

# PySR 1.5's documented defaults (its API reference), where this project keeps them.
PYSR_DEFAULTS = {
    "model_selection": "best", "binary_operators": None, "unary_operators": None, "maxsize": 30, "maxdepth": None,
    "niterations": 100, "populations": 31, "population_size": 27, "ncycles_per_iteration": 380,
    "elementwise_loss": None, "loss_function": None, "loss_scale": "log", "parsimony": 0.0, "constraints": None,
    "nested_constraints": None, "complexity_of_operators": None, "complexity_of_constants": None,
    "complexity_of_variables": None, "warmup_maxsize_by": None, "use_frequency": True,
    "use_frequency_in_tournament": True, "adaptive_parsimony_scaling": 1040.0, "should_simplify": True,
    "weight_add_node": 2.47, "weight_insert_node": 0.0112, "weight_delete_node": 0.870, "weight_do_nothing": 0.273,
    "weight_mutate_constant": 0.0346, "weight_mutate_operator": 0.293, "weight_swap_operands": 0.198,
    "weight_rotate_tree": 4.26, "weight_randomize": 0.000502, "weight_simplify": 0.00209, "weight_optimize": 0.0,
    "crossover_probability": 0.0259, "annealing": False, "alpha": 3.17, "perturbation_factor": 0.129,
    "probability_negate_constant": 0.00743, "skip_mutation_failures": True, "tournament_selection_n": 15,
    "tournament_selection_p": 0.982, "optimizer_algorithm": "BFGS", "optimizer_nrestarts": 2,
    "optimizer_f_calls_limit": None, "optimize_probability": 0.14, "optimizer_iterations": 8,
    "should_optimize_constants": True, "fraction_replaced": 0.00036, "fraction_replaced_hof": 0.0614,
    "migration": True, "hof_migration": True, "topn": 12, "denoise": False, "select_k_features": None,
    "max_evals": None, "timeout_in_seconds": None, "early_stop_condition": None, "parallelism": None, "procs": None,
    "cluster_manager": None, "heap_size_hint_in_bytes": None, "batching": False, "batch_size": 50,
    "fast_cycle": False, "turbo": False, "bumper": False, "autodiff_backend": None, "random_state": None,
    "deterministic": False, "warm_start": False, "verbosity": 1, "update_verbosity": None, "print_precision": 5,
    "progress": True, "logger_spec": None, "input_stream": "stdin", "temp_equation_file": False, "tempdir": None,
    "delete_tempfiles": True, "update": False, "output_directory": None, "run_id": None,
    "output_jax_format": False, "output_torch_format": False, "extra_sympy_mappings": None,
    "extra_torch_mappings": None, "extra_jax_mappings": None,
    # PySR 2's
    "operators": None, "guesses": None, "fraction_replaced_guesses": 0.001, "weight_mutate_feature": 0.1,
}


def test_every_pysr_parameter_is_accepted_with_pysrs_default():
    model = PySRRegressor()
    params = model.get_params()
    for name, default in PYSR_DEFAULTS.items():
        assert name in params, name
        assert params[name] == default, (name, params[name], default)
    assert params["precision"] == 64 and PARAMETERS["precision"].status == "different"   # PySR: 32, documented
    sig = inspect.signature(PySRRegressor)
    assert list(sig.parameters)[0] == "model_selection"
    assert all(p.kind is p.KEYWORD_ONLY for p in list(sig.parameters.values())[1:])


def test_parameters_are_grouped_as_pysrs_reference():
    assert GROUPS[:5] == ("Creating the Search Space", "Setting the Search Size", "The Objective",
                          "Working with Complexities", "Mutations")
    assert set(GROUPS) >= {"Tournament Selection", "Constant Optimization", "Migration between Populations",
                           "Data Preprocessing", "Stopping Criteria", "Performance and Parallelization",
                           "Determinism", "Monitoring", "Environment", "Exporting the Results"}
    assert PARAMETERS["turbo"].group == "Performance and Parallelization"
    assert sum(status_counts().values()) == len(PARAMETERS)


def test_search_options_take_the_tables_defaults():
    # The search's Options and the estimator's table agree on every shared default
    # (None in the table stands for the value Options resolves it to).
    opts = Options(soft_tree_seed_fraction=0.1)
    resolved = {"complexity_of_constants": 1, "complexity_of_variables": 1, "warmup_maxsize_by": 0.0}
    for name in option_names():
        if name in PARAMETERS and name not in ("soft_tree_proposer",):
            expected = resolved.get(name, PARAMETERS[name].default)
            got = getattr(opts, name)
            if name in ("binary_operators", "unary_operators"):
                continue
            assert got == expected, (name, got, expected)


@pytest.mark.parametrize("old", sorted(DEPRECATED_ALIASES))
def test_deprecated_names_map_with_a_future_warning(old):
    new = DEPRECATED_ALIASES[old]
    value = "outputs/hall_of_fame.csv" if old == "equation_file" else 7
    with pytest.warns(FutureWarning, match=f"`{old}` has been renamed to `{new}`"):
        model = PySRRegressor(**{old: value})
    if old == "equation_file":
        assert (model.output_directory, model.run_id) == ("outputs", "hall_of_fame")
    else:
        assert getattr(model, new) == 7


def test_unknown_keyword_is_a_type_error_with_suggestions():
    with pytest.raises(TypeError, match=r"`ncyclesperiterationn` is not a valid keyword.*Did you mean "
                                        r"`ncycles_per_iteration`"):
        PySRRegressor(ncyclesperiterationn=5)


def test_data_keywords_in_init_warn_and_are_ignored():
    with pytest.warns(FutureWarning, match="data-dependent parameter"):
        model = PySRRegressor(variable_names=["a", "b"])
    assert "variable_names" not in model.get_params()


@pytest.mark.parametrize("name,value", [("turbo", True), ("bumper", True), ("procs", 4),
                                        ("heap_size_hint_in_bytes", 10**9), ("update", True),
                                        ("fast_cycle", True), ("autodiff_backend", "Zygote")])
def test_julia_only_options_warn_that_they_have_no_effect(name, value):
    plain = PySRRegressor(**TINY).fit(X, Y)
    with pytest.warns(UserWarning, match=f"`{name}` has no effect here"):
        model = PySRRegressor(**TINY, **{name: value}).fit(X, Y)
    assert list(model.equations_["equation"]) == list(plain.equations_["equation"])


@pytest.mark.parametrize("kwargs", [dict(loss_function_expression="f(ex, d, o) = 0"),
                                    dict(complexity_mapping="f(ex) = 1")])
def test_options_that_would_change_the_answer_are_errors(kwargs):
    with pytest.raises(ValueError, match="not supported"):
        PySRRegressor(**TINY, **kwargs).fit(X, Y)


@pytest.mark.parametrize("fit_kwargs", [dict(X_units=["m", "s"]), dict(y_units="m"), dict(category=[0] * 40)])
def test_units_and_categories_are_refused(fit_kwargs):
    with pytest.raises(ValueError, match="not supported"):
        PySRRegressor(**TINY).fit(X, Y, **fit_kwargs)


def test_template_expressions_are_refused_and_the_default_spec_is_accepted():
    from enhancements import ExpressionSpec, TemplateExpressionSpec

    PySRRegressor(**TINY, expression_spec=ExpressionSpec()).fit(X, Y)
    with pytest.raises(ValueError, match="expression_spec"):
        PySRRegressor(**TINY, expression_spec=TemplateExpressionSpec("f(x1)", expressions=["f"])).fit(X, Y)


def test_deterministic_follows_pysrs_rule():
    with pytest.raises(ValueError, match="To ensure deterministic searches, you must set `parallelism='serial'`"):
        PySRRegressor(**TINY, deterministic=True).fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # parallelism has no effect here
        a = PySRRegressor(**TINY, deterministic=True, parallelism="serial").fit(X, Y)
        b = PySRRegressor(**TINY, deterministic=True, parallelism="serial").fit(X, Y)
    assert list(a.equations_["equation"]) == list(b.equations_["equation"])
    with pytest.raises(ValueError, match="parallelism"):
        PySRRegressor(**TINY, parallelism="threads").fit(X, Y)


def test_operators_by_arity():
    m = PySRRegressor(**TINY, operators={2: ["+", "*"], 1: ["cos"]}).fit(X, Y)
    used = {n for e in m.expressions_ for n in (node.op.name for node in e.nodes() if node.op is not None)}
    assert used <= {"add", "mul", "cos"}
    with pytest.raises(ValueError, match="Cannot use `operators` with `binary_operators`"):
        PySRRegressor(**TINY, operators={2: ["+"]}, binary_operators=["*"]).fit(X, Y)


@pytest.mark.parametrize("precision,dtype", [(16, np.float16), (32, np.float32), (64, np.float64)])
def test_precision_picks_the_dtype(precision, dtype):
    m = PySRRegressor(**TINY, precision=precision).fit(X, Y)
    pred = m.predict(X)
    assert pred.dtype == np.float64
    # the search ran in that dtype: its losses are rounded to it
    import torch
    scorer_dtype = {16: torch.float16, 32: torch.float32, 64: torch.float64}[precision]
    from enhancements.hybrid_optimization.scoring import search_dtype
    assert search_dtype(m._options()) == scorer_dtype


def test_nelder_mead_is_accepted_with_a_warning():
    with pytest.warns(UserWarning, match="NelderMead"):
        PySRRegressor(**TINY, optimizer_algorithm="NelderMead").fit(X, Y)
    with pytest.raises(NotImplementedError, match="optimizer algorithms"):
        PySRRegressor(**TINY, optimizer_algorithm="Newton").fit(X, Y)


def test_clone_keeps_every_parameter():
    model = PySRRegressor(maxsize=12, turbo=True, guesses=["x0 * x1"], batching="auto")
    c = clone(model)
    assert c.get_params() == model.get_params()
