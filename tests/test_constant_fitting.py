"""Refitting a formula's constants: linear scaling, inner constants, parsimony, bad formulas."""
import math

import pytest
import torch

from pysr_baseline.constant_fitting import FittedFormula, fit_formula, linear_scaling, normalized_mse
from pysr_baseline.expression import Expression
from pysr_baseline.parsing import parse_expression


def P(text):
    return parse_expression(text)


@pytest.fixture(scope="module")
def X():
    g = torch.Generator().manual_seed(0)
    return torch.rand(200, 2, generator=g, dtype=torch.float64) * 4 - 2  # both signs


# --- linear scaling ------------------------------------------------------------------------------

def test_linear_scaling_recovers_a_and_b(X):
    f = torch.sin(X[:, 0]) + X[:, 1]
    a, b = linear_scaling(f, -3.5 * f + 0.25)
    assert a.item() == pytest.approx(-3.5, rel=1e-12) and b.item() == pytest.approx(0.25, rel=1e-12)


def test_linear_scaling_is_batched_and_handles_constant_candidates(X):
    x = X[:, 0]
    y = 3 * x - 1
    f = torch.stack([x, 2 * x + 1, torch.full_like(x, 7.0), -x])
    a, b = linear_scaling(f, y)
    assert a.shape == b.shape == (4,)
    torch.testing.assert_close(a, torch.tensor([3.0, 1.5, 0.0, -3.0], dtype=torch.float64))
    torch.testing.assert_close(b, torch.tensor([-1.0, -2.5, float(y.mean()), -1.0], dtype=torch.float64))
    # a constant candidate gets a = 0 exactly, not a round-off blow-up
    assert a[2].item() == 0.0


def test_linear_scaling_with_weights_ignores_zero_weight_rows(X):
    x = X[:, 0]
    y = 2 * x + 1
    y_corrupt = y.clone()
    y_corrupt[:50] = 1e6
    w = torch.ones_like(x)
    w[:50] = 0
    a, b = linear_scaling(x, y_corrupt, w)
    assert a.item() == pytest.approx(2.0, rel=1e-12) and b.item() == pytest.approx(1.0, rel=1e-12)
    a2, b2 = linear_scaling(x, y_corrupt, 3 * w)  # only relative weights matter
    assert a2.item() == pytest.approx(2.0, rel=1e-12) and b2.item() == pytest.approx(1.0, rel=1e-12)


def test_normalized_mse(X):
    y = X[:, 0]
    assert normalized_mse(y, y).item() == 0.0
    assert normalized_mse(torch.full_like(y, float(y.mean())), y).item() == pytest.approx(1.0, rel=1e-12)
    bad = y.clone()
    bad[3] = float("nan")
    assert normalized_mse(bad, y).item() == math.inf
    batch = torch.stack([y, y + 1, bad])
    out = normalized_mse(batch, y)
    assert out.shape == (3,) and out[0] == 0 and math.isfinite(out[1]) and out[2] == math.inf
    w = torch.zeros_like(y)
    w[:10] = 1
    shifted = y.clone()
    shifted[10:] += 100.0
    assert normalized_mse(shifted, y, w).item() == 0.0


# --- fit_formula ---------------------------------------------------------------------------------

def test_recovers_constants_inside_a_formula(X):
    x0 = X[:, 0]
    y = 2.5 * torch.exp(0.3 * x0) + 1.0
    fitted = fit_formula(P("exp(1.0 * x0)"), X, y)
    assert isinstance(fitted, FittedFormula)
    assert fitted.nmse < 1e-18
    e = fitted.expression
    assert e.shape_key == "add(mul(c,exp(mul(c,x0))),c)"  # a * exp(c * x0) + b
    a, c, b = e.constants
    assert a == pytest.approx(2.5, rel=1e-7) and c == pytest.approx(0.3, rel=1e-7) and b == pytest.approx(1.0, rel=1e-7)
    torch.testing.assert_close(e.evaluate(X), y, rtol=1e-8, atol=1e-8)
    assert fitted.complexity == e.complexity() == 8


def test_recovers_constants_from_a_poor_start(X):
    x0, x1 = X[:, 0], X[:, 1]
    y = torch.sin(1.7 * x0) * x1
    fitted = fit_formula(P("sin(1.2 * x0) * x1"), X, y)
    assert fitted.nmse < 1e-16
    assert fitted.expression.constants[0] == pytest.approx(1.7, rel=1e-7)
    assert fitted.expression.size == 6  # no a, no b: exact up to the inner constant


@pytest.mark.parametrize("formula, make_y, expected_shape", [
    ("x0 * x1", lambda x0, x1: x0 * x1, "mul(x0,x1)"),                         # exact: unscaled
    ("x0 * x1", lambda x0, x1: 3 * x0 * x1, "mul(c,mul(x0,x1))"),              # a only
    ("x0 * x1", lambda x0, x1: x0 * x1 + 2, "add(mul(x0,x1),c)"),              # b only
    ("x0 * x1", lambda x0, x1: -2 * x0 * x1 + 0.5, "add(mul(c,mul(x0,x1)),c)"),  # both
    ("cos(x1)", lambda x0, x1: torch.cos(x1), "cos(x1)"),
])
def test_needless_a_and_b_are_dropped(X, formula, make_y, expected_shape):
    y = make_y(X[:, 0], X[:, 1])
    fitted = fit_formula(P(formula), X, y)
    assert fitted.expression.shape_key == expected_shape
    assert fitted.nmse < 1e-20
    torch.testing.assert_close(fitted.expression.evaluate(X), y, rtol=1e-10, atol=1e-10)


def test_exact_values_of_a_and_b(X):
    x0, x1 = X[:, 0], X[:, 1]
    e = fit_formula(P("x0 * x1"), X, -2 * x0 * x1 + 0.5).expression
    a, b = e.constants
    assert a == pytest.approx(-2.0, rel=1e-12) and b == pytest.approx(0.5, rel=1e-12)


def test_negligible_constants_are_zeroed(X):
    x0, x1 = X[:, 0], X[:, 1]
    fitted = fit_formula(P("x0 * x1 + 1e-7"), X, x0 * x1)
    assert fitted.expression.constants == (0.0,)
    assert fitted.nmse == 0.0
    fitted = fit_formula(P("sin(1.0 * x0 + 0.1)"), X, torch.sin(2 * x0))
    c_scale, c_shift = fitted.expression.constants
    assert c_scale == pytest.approx(2.0, rel=1e-8)
    assert c_shift == 0.0  # fitted to ~1e-10, then set to exactly zero
    # a small constant that matters is kept
    y = x0 + 1e-4 * x1
    fitted = fit_formula(P("x0 + 1e-4 * x1"), X, y)
    assert fitted.expression.constants == (1e-4,)


def test_formulas_without_constants_and_precomputed_values(X):
    x0 = X[:, 0]
    y = 4 * torch.square(x0) - 1
    plain = fit_formula(P("square(x0)"), X, y)
    precomputed = fit_formula(P("square(x0)"), X, y, values=torch.square(x0))
    assert plain.expression == precomputed.expression and plain.nmse == precomputed.nmse
    assert plain.expression.constants == pytest.approx((4.0, -1.0), rel=1e-12)


def test_weights_are_respected(X):
    x0 = X[:, 0]
    y = torch.where(torch.arange(len(x0)) < 100, torch.full_like(x0, 5.0), 2 * x0 + 1)
    w = torch.ones_like(x0)
    w[:100] = 0
    fitted = fit_formula(P("x0"), X, y, weights=w)
    assert fitted.expression.constants == pytest.approx((2.0, 1.0), rel=1e-12)
    assert fitted.nmse < 1e-20
    assert fit_formula(P("x0"), X, y).nmse > 0.01  # unweighted, the corrupt rows count


@pytest.mark.parametrize("formula", [
    "log(x0)", "sqrt(x0 - 5.0)", "x0 / 0.0", "log(1.0 * x0)", "exp(exp(exp(exp(x1 * 3.0))))",
    "log(x0 - 10.0) * 2.0", "x0 ^ 0.5",
])
def test_non_finite_formulas_give_inf_not_an_exception(X, formula):
    fitted = fit_formula(P(formula), X, X[:, 0] + X[:, 1])
    assert fitted.nmse == math.inf
    assert isinstance(fitted.expression, Expression)


def test_all_nan_formula_with_constants_keeps_a_valid_tree(X):
    e = P("sqrt(x0 - 5.0) * 3.0")
    fitted = fit_formula(e, X, X[:, 0])
    assert fitted.nmse == math.inf and fitted.expression.shape_key == e.shape_key


def test_fit_never_makes_things_worse(X):
    x0, x1 = X[:, 0], X[:, 1]
    y = torch.tanh(x0) * x1 + 0.3 * x0
    for text in ["x0 * 0.5 + x1", "tanh(0.9 * x0) * x1", "exp(0.1 * x1) - x0", "2.0"]:
        start = P(text)
        out = start.evaluate(X)
        a, b = linear_scaling(out, y)
        before = normalized_mse(a * out + b, y).item()
        fitted = fit_formula(start, X, y)
        assert fitted.nmse <= before * (1 + 1e-9) + 1e-14
        again = normalized_mse(fitted.expression.evaluate(X), y).item()
        assert again == pytest.approx(fitted.nmse, rel=1e-6, abs=1e-14)


def test_float32_data(X):
    X32 = X.float()
    y = 1.5 * X32[:, 0] * X32[:, 1] - 2.0
    fitted = fit_formula(P("x0 * x1"), X32, y)
    assert fitted.nmse < 1e-10
    a, b = fitted.expression.constants
    assert a == pytest.approx(1.5, rel=1e-5) and b == pytest.approx(-2.0, rel=1e-5)
