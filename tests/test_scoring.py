"""Tests for SRBench-style scoring (experiments/scoring.py)."""
import multiprocessing
import time

import numpy as np
import pytest
import sympy

from experiments.feynman_data import get_equation, load_equations, make_dataset
from experiments.scoring import (
    complexity, is_symbolic_solution, r2_score, round_floats, score_model, symbolic_checks)

SOME_EQUATIONS = load_equations()[:20] + load_equations(bonus=True)[:4]


def test_r2_score_basics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.full(4, y.mean())) == pytest.approx(0.0)
    assert r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 3.5]) == pytest.approx(0.875)
    assert r2_score(y, [1.0, np.nan, 3.0, 4.0]) == float("-inf")
    assert r2_score(y, [1.0, np.inf, 3.0, 4.0]) == float("-inf")
    assert r2_score(y, 2.5) == pytest.approx(0.0)  # a constant model's scalar output
    with pytest.raises(ValueError):
        r2_score(y, y[:3])


def test_round_floats_three_significant_digits():
    x = sympy.Symbol("x")

    def sig(expr, **kw):
        return round_floats(expr, rounding="significant", **kw)
    assert sig(0.50004 * x) == sympy.Float("0.5") * x
    assert sig(sympy.Float(3.14159)) == sympy.Float("3.14")
    assert sig(123456.7 * x) == sympy.Float("1.23e5") * x
    assert sig(0.000123456 * x) == sympy.Float("0.000123") * x
    # Integers and rationals are left exactly as they were.
    exact = sympy.Rational(1, 3) * x**2 + 7
    assert sig(exact) == exact
    y = sympy.Symbol("y")
    assert sig(1e-7 * y + x, zero_below=1e-4) == x


def test_round_floats_three_decimal_places_is_srbench_and_the_default():
    x, y = sympy.symbols("x y")
    assert round_floats(0.50004 * x) == sympy.Float("0.5") * x
    assert round_floats(sympy.Float(3.14159)) == sympy.Float("3.142")
    assert round_floats(123456.7 * x) == sympy.Float("123456.7") * x   # no digit lost
    assert round_floats(12345.678 * x) == sympy.Float("12345.678") * x
    assert round_floats(0.0004 * x + y) == y                            # 0.000: gone
    assert round_floats(0.0123456 * x) == sympy.Float("0.012") * x
    exact = sympy.Rational(1, 3) * x**2 + 7
    assert round_floats(exact) == exact
    assert round_floats(0.0004 * x, rounding="decimals") == round_floats(0.0004 * x)
    with pytest.raises(ValueError, match="rounding"):
        round_floats(x, rounding="sig")


def test_the_two_rounding_rules_give_different_verdicts():
    x = sympy.Symbol("x")
    # A tiny spurious term: SRBench's 3 decimal places drop it, 3 significant digits keep it.
    small = x**2 + 0.0004 * x
    assert is_symbolic_solution(small, x**2).solved                       # the default: SRBench's
    assert is_symbolic_solution(small, x**2, rounding="decimals").solved
    assert not is_symbolic_solution(small, x**2, rounding="significant").solved
    # A large constant inside a function: 3 significant digits round 1000.4 to 1000,
    # 3 decimal places keep the 0.4.
    big = sympy.sin(1000.4 * x)
    assert is_symbolic_solution(big, sympy.sin(1000 * x), rounding="significant").solved
    assert not is_symbolic_solution(big, sympy.sin(1000 * x)).solved
    # Below SRBench's 1e-4 a float is 0 under both rules (zero_below), so both agree.
    tiny = x**2 + 1.2345678e-5 * x
    assert all(is_symbolic_solution(tiny, x**2, rounding=r).solved
               for r in ("decimals", "significant"))
    with pytest.raises(ValueError, match="rounding"):
        is_symbolic_solution(x, x, rounding="nearest")


def test_score_model_reports_each_rule_asked_for():
    eq = get_equation("I.12.1")  # mu*Nn
    data = make_dataset(eq, n_samples=40, seed=0)
    mu, Nn = eq.symbols
    model = mu * Nn + 0.0004 * Nn
    both = score_model(model, eq, data.X_test, data.y_test,
                       rounding=("decimals", "significant"))
    assert both["symbolic"]["decimals"].solved and not both["symbolic"]["significant"].solved
    assert both["symbolic_solved"] and both["reason"] == "difference constant"
    default = score_model(model, eq, data.X_test, data.y_test)
    assert default["symbolic_solved"] and list(default["symbolic"]) == ["decimals"]
    sig_first = score_model(model, eq, data.X_test, data.y_test,
                            rounding=("significant", "decimals"))
    assert not sig_first["symbolic_solved"] and sig_first["reason"] == "not equivalent"
    checks = symbolic_checks(mu * Nn * 12345.678, eq, data.X_test)
    assert set(checks) == {"decimals", "significant"} and all(c.solved for c in checks.values())


def test_complexity_counts_tree_nodes():
    x, y = sympy.symbols("x y")
    assert complexity(x) == 1
    assert complexity(x + y) == 3
    assert complexity(sympy.sin(x) * y) == 4


def test_true_formulas_are_solutions_of_themselves():
    for eq in SOME_EQUATIONS:
        result = is_symbolic_solution(eq.sympy_expr, eq.sympy_expr)
        assert result.solved, (eq.name, result)


def test_scaled_and_shifted_truths_are_solved():
    for eq in SOME_EQUATIONS[::4]:
        truth = eq.sympy_expr
        assert is_symbolic_solution(2.5 * truth, truth).reason == "ratio constant"
        assert is_symbolic_solution(truth + 1.7, truth).reason == "difference constant"
    # One that needs simplify (expanded polynomial) in the child process.
    eq = get_equation("I.8.14")
    inner = sympy.expand(eq.sympy_expr.args[0])  # (x2-x1)**2+(y2-y1)**2 expanded
    result = is_symbolic_solution(3 * sympy.sqrt(inner), eq.sympy_expr)
    assert result.solved, result


def test_float_constants_are_rounded_before_the_check():
    eq = get_equation("I.6.2a")  # exp(-theta**2/2)/sqrt(2*pi)
    theta = sympy.Symbol("theta")
    model = 0.3989422 * sympy.exp(-0.50002 * theta**2)
    assert is_symbolic_solution(model, eq.sympy_expr).reason == "ratio constant"
    # 0.5 vs 0.4 in the exponent is a real difference, not round-off.
    wrong = 0.3989422 * sympy.exp(-0.4 * theta**2)
    assert not is_symbolic_solution(wrong, eq.sympy_expr).solved


def test_symbols_match_by_name_whatever_their_assumptions():
    x = sympy.Symbol("x", positive=True)
    assert is_symbolic_solution(2 * x**2, sympy.Symbol("x") ** 2).solved


def test_near_misses_are_not_solved():
    eq = get_equation("I.14.4")  # k_spring*x**2/2
    k, x = sympy.symbols("k_spring x")
    assert is_symbolic_solution(k * x**3 / 2, eq.sympy_expr).reason == "not equivalent"
    assert not is_symbolic_solution(x * k**2 / 2, eq.sympy_expr).solved  # swapped
    eq = get_equation("I.12.11")  # q*(Ef+B*v*sin(theta))
    q, Ef, B, v, theta = sympy.symbols("q Ef B v theta")
    assert not is_symbolic_solution(q * (Ef + B * v * sympy.cos(theta)),
                                    eq.sympy_expr).solved
    assert not is_symbolic_solution(q * (Ef + B * theta * sympy.sin(v)),
                                    eq.sympy_expr).solved
    assert not is_symbolic_solution(q * Ef + B * v * sympy.sin(theta),
                                    eq.sympy_expr).solved


@pytest.mark.parametrize("bad", [sympy.nan, sympy.zoo, sympy.Integer(0)])
def test_degenerate_models_are_not_solutions(bad):
    x = sympy.Symbol("x")
    assert not is_symbolic_solution(bad, x**2).solved
    assert not is_symbolic_solution(bad * x, x**2).solved


def test_zero_truth_is_not_matched_by_a_ratio():
    x = sympy.Symbol("x")
    assert not is_symbolic_solution(x, sympy.Integer(0)).solved
    assert is_symbolic_solution(sympy.Integer(3), sympy.Integer(0)).solved


def test_timeout_returns_quickly_and_is_reported():
    x, y, z = sympy.symbols("x y z")
    truth = (x + y + z + 1) ** 12
    # Numerically equal, so the pre-check passes and simplify must run: it needs
    # over a second here, far beyond the 0.05 s allowed.
    model = sympy.expand(truth)
    start = time.perf_counter()
    result = is_symbolic_solution(model, truth, timeout=0.05)
    elapsed = time.perf_counter() - start
    assert result == (False, "timeout")
    assert elapsed < 3.0
    # The killed simplify process is reaped, not left running.
    assert not multiprocessing.active_children()


def test_score_model_exact_recovery():
    eq = get_equation("I.12.1")
    data = make_dataset(eq, n_samples=200, seed=0)
    mu, Nn = eq.symbols
    exact = score_model(1.00001 * mu * Nn, eq, data.X_test, data.y_test)
    assert exact["symbolic_solved"] and exact["accuracy_solved"]
    assert exact["test_r2"] > 0.999999 and exact["complexity"] == 4
    scaled = score_model(2 * mu * Nn, eq, data.X_test, data.y_test)
    assert scaled["symbolic_solved"] and not scaled["accuracy_solved"]
    wrong = score_model(mu + Nn, eq, data.X_test, data.y_test)
    assert not wrong["symbolic_solved"] and wrong["reason"] == "not equivalent"


def test_score_model_failure_and_bad_predictions():
    eq = get_equation("I.12.1")
    data = make_dataset(eq, n_samples=40, seed=0)
    failed = score_model(None, eq, data.X_test, data.y_test)
    assert failed["test_r2"] == float("-inf")
    assert not failed["accuracy_solved"] and not failed["symbolic_solved"]
    mu, _ = eq.symbols
    nan_model = score_model(sympy.log(-mu), eq, data.X_test, data.y_test)
    assert nan_model["test_r2"] == float("-inf") and not nan_model["accuracy_solved"]
    # predict= replaces evaluating the expression for R2.
    via_predict = score_model(mu, eq, data.X_test, data.y_test,
                              predict=lambda X: X[:, 0] * X[:, 1])
    assert via_predict["accuracy_solved"] and not via_predict["symbolic_solved"]


def test_score_model_feature_names_map_columns():
    eq = get_equation("I.14.4")  # variables (k_spring, x)
    data = make_dataset(eq, n_samples=80, seed=2)
    x0, x1 = sympy.symbols("x0 x1")
    result = score_model(0.5 * x0 * x1**2, eq, data.X_test, data.y_test,
                         feature_names=["x0", "x1"])
    assert result["symbolic_solved"] and result["test_r2"] > 0.999999
