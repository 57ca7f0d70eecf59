"""PySRRegressor: scikit-learn behaviour, outputs, bad input, and symbolic recovery."""
import pickle

import numpy as np
import pandas as pd
import pytest
import sympy
from sklearn.base import clone

from enhancements import PySRRegressor

FAST = dict(populations=6, population_size=20, ncycles_per_iteration=40, niterations=4, verbosity=0,
            progress=False, random_state=0)
rng = np.random.default_rng(0)
X2 = rng.uniform(1, 4, (150, 2))
Y2 = X2[:, 0] * X2[:, 1] + 2.0


@pytest.fixture(scope="module")
def fitted():
    return PySRRegressor(**FAST).fit(X2, Y2)


# --- scikit-learn ------------------------------------------------------------------------------

def test_init_only_stores_parameters():
    m = PySRRegressor(binary_operators=["+", "nonsense"], populations=-3)   # validated in fit, not here
    assert m.get_params()["binary_operators"] == ["+", "nonsense"]
    with pytest.raises(ValueError):
        m.fit(X2, Y2)
    assert not hasattr(m, "equations_")


def test_clone_get_set_params():
    m = PySRRegressor(niterations=7, unary_operators=["cos"], model_selection="accuracy")
    params = m.get_params()
    assert params["niterations"] == 7 and params["unary_operators"] == ["cos"]
    c = clone(m)
    assert c is not m and c.get_params() == params
    c.set_params(niterations=3, maxsize=12)
    assert (c.niterations, c.maxsize, m.niterations) == (3, 12, 7)
    with pytest.raises(ValueError):
        c.set_params(not_a_parameter=1)


def test_fitted_outputs(fitted):
    eq = fitted.equations_
    assert list(eq.columns) == ["complexity", "loss", "equation", "score", "sympy_format", "lambda_format"]
    assert (np.diff(eq["complexity"]) > 0).all() and (np.diff(eq["loss"]) < 0).all()
    best = fitted.get_best()
    pred = fitted.predict(X2)
    assert pred.shape == (150,)
    assert np.allclose(pred, best["lambda_format"](X2))
    assert np.mean((pred - Y2) ** 2) == pytest.approx(best["loss"], rel=1e-6, abs=1e-20)
    assert np.allclose(fitted.predict(X2, index=0), eq["lambda_format"][0](X2))
    assert isinstance(fitted.sympy(), sympy.Expr)
    assert isinstance(fitted.latex(), str) and fitted.latex()
    assert fitted.score(X2, Y2) > 0.99                      # RegressorMixin's R^2
    text = repr(fitted)
    assert ">>>>" in text and text.count(">>>>") == 1 and "complexity" in text
    assert set(fitted.stats_) >= {"evaluations", "evals_per_second", "cache_hit_rate", "stop_reason"}
    clone_of_fitted = pickle.loads(pickle.dumps(fitted))
    assert np.allclose(clone_of_fitted.predict(X2), pred)


def test_model_selection_changes_the_pick():
    """On y = 10 x0 + 0.2 x1 + noise the three rules disagree (at each of seeds 0-4):
    "score" takes 10 x0 (the largest drop in log loss per unit of complexity), "best" the
    highest score among formulas within 1.5x of the lowest loss (one with the 0.2 x1
    term), "accuracy" the lowest loss (a longer formula fitting the noise). Each pick is
    checked against the rule computed here from the front, and predict follows it."""
    data = np.random.default_rng(2)
    X = data.uniform(1, 4, (150, 2))
    y = 10 * X[:, 0] + 0.2 * X[:, 1] + 0.1 * data.normal(size=150)
    model = PySRRegressor(**FAST).fit(X, y)
    eq = model.equations_
    loss, complexity = eq["loss"].to_numpy(), eq["complexity"].to_numpy()
    score = np.concatenate([[0.0], -np.diff(np.log(loss)) / np.diff(complexity)])
    np.testing.assert_allclose(eq["score"], score, rtol=1e-9, atol=1e-12)
    within = np.flatnonzero(loss <= 1.5 * loss.min())
    expected = {"accuracy": int(np.argmin(loss)), "score": int(np.argmax(score)),
                "best": int(within[np.argmax(score[within])])}
    assert len(set(expected.values())) == 3, eq[["complexity", "loss", "score", "equation"]]
    for rule, row in expected.items():
        model.set_params(model_selection=rule)       # chosen at use, so no refit is needed
        assert model.get_best().name == row, rule
        np.testing.assert_array_equal(model.predict(X), model.predict(X, index=row))
        assert model.sympy() == eq["sympy_format"][row]


def test_pandas_input_names_variables():
    df = pd.DataFrame({"mass": X2[:, 0], "accel": X2[:, 1]})
    m = PySRRegressor(**FAST).fit(df, pd.Series(Y2))
    assert list(m.feature_names_in_) == ["mass", "accel"]
    assert {s.name for s in m.sympy().free_symbols} <= {"mass", "accel"}
    assert np.allclose(m.predict(df[["accel", "mass"]]), m.predict(df))   # columns matched by name
    m2 = PySRRegressor(**FAST).fit(X2, Y2, variable_names=["a", "b"])
    assert {s.name for s in m2.sympy().free_symbols} <= {"a", "b"}


def test_same_random_state_same_front():
    a = PySRRegressor(**FAST).fit(X2, Y2).equations_
    b = PySRRegressor(**FAST).fit(X2, Y2).equations_
    assert list(a["equation"]) == list(b["equation"]) and list(a["loss"]) == list(b["loss"])


def test_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        PySRRegressor().predict(X2)


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("X, y, error, match", [
    (np.where(X2 > 3.9, np.nan, X2), Y2, ValueError, "NaN or inf"),
    (X2, np.where(Y2 > 10, np.inf, Y2), ValueError, "NaN or inf"),
    (X2, Y2[:-1], ValueError, "samples"),
    (X2[:, :, None], Y2, ValueError, "2-D"),
    (np.zeros((0, 2)), np.zeros(0), ValueError, "empty"),
    (X2, np.stack([Y2, Y2], 1)[:, :, None], ValueError, "2-D"),
    (np.array([["a", "b"]] * 150), Y2, TypeError, "numeric"),
])
def test_bad_data(X, y, error, match):
    with pytest.raises(error, match=match):
        PySRRegressor(**FAST).fit(X, y)


@pytest.mark.parametrize("params, error", [
    ({"binary_operators": ["+", "frobnicate"]}, ValueError),
    ({"unary_operators": ["cos", "f(x) = x +"]}, ValueError),
    ({"unary_operators": ["f(x) = __import__('os').system('true')"]}, ValueError),
    ({"elementwise_loss": "L9DistLoss()"}, ValueError),
    ({"model_selection": "prettiest"}, ValueError),
    ({"niterations": "ten"}, TypeError),
    ({"random_state": -1}, ValueError),
])
def test_bad_parameters(params, error):
    with pytest.raises(error):
        PySRRegressor(**{**FAST, **params}).fit(X2, Y2)


def test_bad_weights_and_names():
    with pytest.raises(ValueError, match="non-negative"):
        PySRRegressor(**FAST).fit(X2, Y2, weights=-np.ones(150))
    with pytest.raises(ValueError, match="variable name"):
        PySRRegressor(**FAST).fit(X2, Y2, variable_names=["a-b", "c"])
    with pytest.raises(ValueError):
        PySRRegressor(**FAST).fit(X2, Y2, variable_names=["a"])
    m = PySRRegressor(**FAST).fit(X2, Y2)
    with pytest.raises(ValueError):
        m.predict(X2[:, :1])
    with pytest.raises(IndexError):
        m.predict(X2, index=99)


def test_other_losses_and_stop_conditions():
    """An early-stop string stops the search as soon as a formula meets it (here in the first
    iteration, where x0 * x1 + 2 is found), and only then: when its complexity clause cannot
    hold, the search runs all its iterations."""
    runs = {}
    for name, condition in (("met", "f(loss, complexity) = loss < 1e-9 && complexity < 10"),
                            ("never met", "f(loss, complexity) = loss < 1e-9 && complexity < 2")):
        m = PySRRegressor(**{**FAST, "elementwise_loss": "L1DistLoss()", "early_stop_condition": condition})
        runs[name] = m.fit(X2, Y2)
        best = m.get_best()
        assert np.mean(np.abs(m.predict(X2) - Y2)) == pytest.approx(best["loss"], rel=1e-6, abs=1e-12)
    met, never = runs["met"], runs["never met"]
    assert met.stats_["stop_reason"] == "early_stop_condition" and met.stats_["iterations"] < FAST["niterations"]
    eq = met.equations_
    assert ((eq["loss"] < 1e-9) & (eq["complexity"] < 10)).any()
    assert never.stats_["stop_reason"] == "niterations" and never.stats_["iterations"] == FAST["niterations"]
    assert met.stats_["evaluations"] < never.stats_["evaluations"] / 5


# --- recovery ----------------------------------------------------------------------------------

def _solved(found, truth) -> bool:
    """SRBench's check: after rounding floats to 3 significant digits, the simplified
    difference or ratio of found and true formula is a constant (variables are positive,
    as the data are)."""
    positive = {s.name: "positive" for s in truth.free_symbols | found.free_symbols}
    try:
        from experiments.scoring import is_symbolic_solution
    except ImportError:  # the benchmark scorer is not there: the same rule, inline
        def is_symbolic_solution(model, true, timeout=10, domain=None):
            pos = {s: sympy.Symbol(s.name, positive=True) for s in model.free_symbols | true.free_symbols}
            model = model.xreplace({f: sympy.Float(f, 3) for f in model.atoms(sympy.Float)}).xreplace(pos)
            true = true.xreplace(pos)
            for expr in (model - true, model / true):
                if sympy.simplify(expr).is_constant():
                    return True, "constant"
            return False, "not equivalent"
    return bool(is_symbolic_solution(found, truth, timeout=10, domain=positive)[0])


# The cases each found at seeds 0, 1 and 2 in the first iteration. I.6.2a
# (exp(-theta^2 / 2) / sqrt(2 pi)) is not among them: it was found at some seeds and not
# others (seeds 0 and 1 without soft-tree seeding, none of 0-2 with it; seed 2 missed it in
# all 30 iterations), so no test can assert it; the Feynman benchmark
# (`python -m experiments.feynman`) measures it with the other 99.
FEYNMAN = [  # (name, true formula over x0, x1, x2, number of variables); data in [1, 5]
    ("I.14.4 k x^2 / 2", lambda x0, x1, x2: x0 * x1**2 / 2, 2),
    ("x0 / x1^2", lambda x0, x1, x2: x0 / x1**2, 2),
    ("I.14.3 m g z", lambda x0, x1, x2: x0 * x1 * x2, 3),
    ("I.12.4 q / (4 pi eps r^2)", lambda x0, x1, x2: x0 / (4 * sympy.pi * x1 * x2**2), 3),
    ("I.18.12 r F sin(theta)", lambda x0, x1, x2: x0 * x1 * sympy.sin(x2), 3),
]


@pytest.mark.parametrize("name, formula, n_vars", FEYNMAN, ids=[f[0] for f in FEYNMAN])
def test_recovers_feynman_equations(name, formula, n_vars):
    symbols = sympy.symbols("x0 x1 x2")
    truth = formula(*symbols)
    X = np.random.default_rng(1).uniform(1, 5, (300, n_vars))
    f = sympy.lambdify(symbols[:n_vars], truth, "numpy")
    y = f(*X.T) * np.ones(len(X))
    # Bounded by iterations, not by a clock, so that a busy machine gets the same result.
    model = PySRRegressor(unary_operators=["sin", "exp", "sqrt", "square"], populations=8,
                          ncycles_per_iteration=100, niterations=30, random_state=0, verbosity=0,
                          early_stop_condition=1e-20)
    model.fit(X, y, variable_names=[f"x{i}" for i in range(n_vars)])
    assert _solved(model.sympy(), truth), f"{name}: found {model.sympy()}\n{model}"
