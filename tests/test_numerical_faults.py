"""Numerical faults inside the search: overflow, division by zero, domain errors and
exploding or NaN gradients in constant fitting. The candidate scores an infinite loss,
the search goes on, the front never holds a NaN loss, and predict gives NaN (or inf)
where a formula is undefined instead of raising."""
import numpy as np
import pytest
import sympy
import torch

from enhancements import PySRRegressor
from enhancements.engine.constants import optimize_constants as compiled_optimize_constants
from enhancements.hybrid_optimization.constant_optimization import optimize_constants
from enhancements.hybrid_optimization.options import Options
from enhancements.hybrid_optimization.scoring import Scorer
from pysr_baseline.parsing import parse_expression

SEARCH = dict(niterations=3, populations=4, population_size=20, binary_operators=["+", "-", "*", "/"],
              unary_operators=["exp", "log", "sqrt", "inv", "sin"], progress=False, verbosity=0,
              temp_equation_file=True, random_state=0, soft_tree_seed_fraction=0.1)

rng = np.random.default_rng(0)
X = rng.uniform(-3, 3, (200, 2))
X[::17, 0] = 0.0  # division by zero and log(0) for many candidates


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("engine", ["compiled", "torch"])
@pytest.mark.parametrize("target", ["product", "overflowing", "logarithm"])
def test_faulty_candidates_score_inf_and_the_search_goes_on(engine, target):
    y = {"product": X[:, 0] * X[:, 1],
         "overflowing": np.exp(np.clip(X[:, 0] * 30, -700, 700)),      # up to e^90: most fits overflow
         "logarithm": np.log(np.abs(X[:, 0]) + 1e-12)}[target]
    model = PySRRegressor(**SEARCH, engine=engine).fit(X, y)
    losses = model.equations_["loss"].to_numpy(dtype=float)
    assert len(losses) >= 1 and np.isfinite(losses).all()
    assert model.stats_["iterations"] == 3                             # not stopped by the faults
    out = model.predict(np.array([[-1.0, -1.0], [0.0, 0.0], [1e308, -1e308], [np.pi, 2.0]]))
    assert out.shape == (4,) and np.isfinite(out[3])                   # NaN/inf allowed where undefined


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_predict_is_nan_where_the_formula_is_undefined():
    Xp = rng.uniform(0.5, 4.0, (100, 1))
    model = PySRRegressor(**{**SEARCH, "niterations": 10, "unary_operators": ["log"]}).fit(Xp, np.log(Xp[:, 0]))
    assert sympy.simplify(model.sympy() - sympy.log(sympy.Symbol("x0"))) == 0
    out = model.predict(np.array([[-1.0], [0.0], [np.e]]))
    assert np.isnan(out[0]) and out[1] == -np.inf and out[2] == pytest.approx(1.0)


@pytest.mark.parametrize("optimizer", [optimize_constants, compiled_optimize_constants])
def test_exploding_and_nan_gradients_leave_a_finite_or_infinite_loss(optimizer):
    Xc = torch.tensor(rng.uniform(0.0, 100.0, (100, 1)))
    yc = torch.exp(0.05 * Xc[:, 0])
    scorer = Scorer(Xc, yc, None, Options(unary_operators=["exp", "log", "sqrt"], linear_scaling=False))
    exprs = [parse_expression("exp(9.0 * x0)"),                # overflows from the start: inf, gradients inf
             parse_expression("exp(0.2 * x0) * 1.0"),          # gradients of ~e^20
             parse_expression("sqrt(x0 - 50.0) * 2.0"),        # NaN on half the rows: NaN gradients
             parse_expression("sqrt(sin(x0) - 2.0) * 3.0")]    # NaN on every row, whatever nearby constants
    out = optimizer(scorer, exprs, iterations=30, nrestarts=2, seeds=[0, 1, 2, 3])
    assert not np.isnan(out.loss).any()
    assert np.isinf(out.loss[3]) and not out.improved[3]
    start = scorer.score([exprs[1]]).loss[0]
    assert np.isfinite(out.loss[1]) and out.loss[1] <= start      # huge gradients: never worse, never NaN
    for e in out.exprs:
        assert all(np.isfinite(c) for c in e.constants)
