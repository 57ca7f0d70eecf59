"""The drop-in's operators, guesses and losses."""
import numpy as np
import pytest
import sympy
import torch

from enhancements import PySRRegressor
from pysr_baseline.parsing import parse_expression

TINY = dict(niterations=1, populations=2, population_size=10, tournament_selection_n=5, ncycles_per_iteration=10,
            soft_tree_seed_fraction=0.0, verbosity=0, progress=False, random_state=0)
rng = np.random.default_rng(3)
X = rng.uniform(0.5, 3, (60, 2))


def _solved(found, truth, names) -> bool:
    syms = sympy.symbols(names)
    expr = found.xreplace({s: sympy.Symbol(s.name) for s in found.free_symbols})
    expr = expr.xreplace({f: sympy.nsimplify(round(float(f), 6)) for f in expr.atoms(sympy.Float)})
    diff = sympy.simplify(expr - truth(*syms))
    return diff == 0


def test_extra_sympy_mappings_give_a_custom_operators_sympy_form():
    y = 1 / X[:, 0] + X[:, 1]
    guess = ["myinv(x0) + x1"]
    kwargs = dict(TINY, binary_operators=["+", "*"], unary_operators=["myinv(x) = 1/x"], guesses=guess)
    plain = PySRRegressor(**kwargs).fit(X, y)
    assert _solved(plain.sympy(), lambda a, b: 1 / a + b, ["x0", "x1"])          # from the definition
    mapped = PySRRegressor(**kwargs, extra_sympy_mappings={"myinv": lambda x: sympy.Function("Inv")(x)}).fit(X, y)
    assert mapped.sympy() == sympy.Function("Inv")(sympy.Symbol("x0")) + sympy.Symbol("x1")
    assert np.allclose(mapped.predict(X), y)                              # evaluation keeps the definition


def test_a_guess_that_is_the_truth_is_on_the_front_after_one_iteration():
    y = 2.5 * np.cos(X[:, 1]) + X[:, 0] ** 2
    model = PySRRegressor(**TINY, unary_operators=["cos"], guesses=["2.5 * cos(v) + m * m"])
    model.fit(X, y, variable_names=["m", "v"])
    assert model.stats_["iterations"] == 1
    best = model.get_best(int(np.argmin(model.equations_["loss"])))
    assert best["loss"] < 1e-20
    assert _solved(best["sympy_format"], lambda m, v: sympy.Rational(5, 2) * sympy.cos(v) + m ** 2, ["m", "v"])


def test_guess_constants_are_fitted_and_x_names_work():
    y = 1.7 * X[:, 0] * X[:, 1]
    model = PySRRegressor(**TINY, guesses=[sympy.Symbol("x0") * sympy.Symbol("x1") * 1.0]).fit(X, y)
    assert model.equations_["loss"].min() < 1e-20                       # 1.0 became 1.7


def test_guesses_in_variable_names_for_several_outputs():
    Y = np.stack([X[:, 0] * X[:, 1], X[:, 0] + 3 * X[:, 1]], axis=1)
    model = PySRRegressor(**TINY, guesses=[["a * b"], ["a + 3.0 * b"]]).fit(X, Y, variable_names=["a", "b"])
    assert [f["loss"].min() < 1e-20 for f in model.equations_] == [True, True]


@pytest.mark.parametrize("guesses,nout,match", [
    ("x0", 1, "guesses must be a list for single-output regression"),
    ([["x0"], ["x1"]], 1, "For single output, provide a list"),
    (["x0"], 2, "For multi-output .* must be a list of lists"),
    ([["x0"]], 2, r"Number of guess lists \(1\) must match number of outputs \(2\)"),
    (["x0 +"], 1, "guess 'x0 \\+'"),
    (["sin(x0)"], 1, r"uses the operator\(s\) \['sin'\]"),
    (["__import__('os')"], 1, "guess"),
])
def test_malformed_guesses_are_clear_errors(guesses, nout, match):
    y = X[:, 0] if nout == 1 else np.stack([X[:, 0], X[:, 1]], axis=1)
    with pytest.raises(ValueError, match=match):
        PySRRegressor(**TINY, guesses=guesses).fit(X, y)


def test_fraction_replaced_guesses_migrates_the_guesses():
    from enhancements.hybrid_optimization.evolution import Search
    from enhancements.hybrid_optimization.options import Options

    Xt, yt = torch.as_tensor(X), torch.as_tensor(X[:, 0] * 2.0 + X[:, 1])
    guess = parse_expression("x0 * 2.0 + x1")

    def copies(fraction):
        opts = Options(**{**TINY, "niterations": 3, "fraction_replaced_guesses": fraction, "hof_migration": False,
                          "migration": False, "should_optimize_constants": False})
        search = Search(Xt, yt, None, opts, guesses=[guess])
        search.run()
        return sum(m.expr.key == guess.key for pop in search.populations for m in pop.members)

    assert copies(1.0) > copies(0.0)


@pytest.mark.parametrize("spec", ["loss(prediction, target) = (prediction - target)^2", "L2DistLoss()",
                                  "L1DistLoss()", "HuberLoss(1.0)", "LPDistLoss{2}()", "LPDistLoss(3)",
                                  "L1EpsilonInsLoss(0.01)", "LogitDistLoss()", "QuantileLoss(0.5)",
                                  "PeriodicLoss(100.0)", "myloss(x, y, w) = w * abs(x - y)"])
def test_losses_as_pysr_writes_them_find_an_exact_formula(spec):
    y = X[:, 0] * X[:, 1]
    model = PySRRegressor(**{**TINY, "niterations": 2, "populations": 4, "population_size": 20},
                          elementwise_loss=spec).fit(X, y)
    assert np.min(model.equations_["loss"]) < 1e-8


@pytest.mark.parametrize("spec,match", [("loss(x) = x", "two or three parameter"),
                                        ("loss(a, b, c, d) = a", "two or three parameter"),
                                        ("L3DistLoss()", "unknown elementwise_loss"),
                                        ("loss(x, y) = __import__(x)", "unknown")])
def test_bad_losses_fail_before_any_search(spec, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        PySRRegressor(**TINY, elementwise_loss=spec, output_directory=str(tmp_path)).fit(X, X[:, 0])
    assert not any(tmp_path.iterdir())                                 # not even a run directory


def test_loss_function_sees_the_whole_prediction():
    y = X[:, 0] * X[:, 1]
    seen = []

    def max_error(prediction, target, weights):
        seen.append(prediction.shape)
        return (prediction - target).abs().max()

    model = PySRRegressor(**TINY, loss_function=max_error).fit(X, y)
    assert seen and all(shape == (60,) for shape in seen)
    best = model.get_best(int(np.argmin(model.equations_["loss"])))
    assert best["loss"] == pytest.approx(float(np.max(np.abs(best["lambda_format"](X) - y))), rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="both `elementwise_loss` and `loss_function`"):
        PySRRegressor(**TINY, loss_function=max_error, elementwise_loss="L1DistLoss()").fit(X, y)
