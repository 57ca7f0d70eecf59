"""Options: PySR's names and defaults, validation, loss and stop-condition strings."""
import inspect
import math

import pytest
import torch

from enhancements.hybrid_optimization.losses import make_loss, make_stop_condition
from enhancements.hybrid_optimization.options import Options, option_names
from enhancements.hybrid_optimization.regressor import PySRRegressor
from pysr_baseline.parsing import parse_expression


def test_defaults_follow_pysr():
    o = Options()
    assert [op.name for op in o.binary] == ["add", "sub", "mul", "div"] and o.unary == ()
    assert (o.niterations, o.populations, o.population_size, o.ncycles_per_iteration) == (100, 31, 27, 380)
    assert (o.maxsize, o.maxdepth, o.parsimony, o.adaptive_parsimony_scaling) == (30, None, 0.0, 1040.0)
    assert (o.tournament_selection_n, o.tournament_selection_p) == (15, 0.982)
    assert (o.optimizer_nrestarts, o.optimize_probability, o.optimizer_iterations) == (2, 0.14, 8)
    assert (o.weight_add_node, o.weight_rotate_tree, o.crossover_probability) == (2.47, 4.26, 0.0259)
    assert o.should_simplify is True


def test_regressor_defaults_equal_options_defaults():
    sig = inspect.signature(PySRRegressor.__init__).parameters
    defaults = Options.__dataclass_fields__
    for name in option_names():
        assert name in sig, name
        assert sig[name].default == defaults[name].default, name


def test_custom_operator_string_is_parsed_not_evaluated():
    o = Options(unary_operators=["cos", "inv(x) = 1/x", "sq3(x) = 3 * x^2"])
    assert [op.name for op in o.unary] == ["cos", "inv", "sq3"]
    x = torch.tensor([2.0], dtype=torch.float64)
    assert o.by_name["sq3"].fn(x).item() == 12.0
    with pytest.raises(ValueError, match="another meaning"):
        Options(unary_operators=["inv(x) = 2/x"])
    with pytest.raises(ValueError):
        Options(unary_operators=["__import__('os')(x) = x"])
    with pytest.raises(ValueError):
        Options(unary_operators=["f(x) = x + os.system(1)"])


@pytest.mark.parametrize("kwargs, error", [
    ({"binary_operators": ["+", "frobnicate"]}, ValueError),
    ({"unary_operators": ["+"]}, ValueError),           # binary given as unary
    ({"binary_operators": [], "unary_operators": []}, ValueError),
    ({"populations": 0}, ValueError),
    ({"populations": 2.5}, TypeError),
    ({"tournament_selection_n": 40}, ValueError),       # > population_size
    ({"tournament_selection_p": 0.0}, ValueError),
    ({"crossover_probability": 1.5}, ValueError),
    ({"weight_add_node": -1.0}, ValueError),
    ({"model_selection": "fastest"}, ValueError),
    ({"precision": 8}, ValueError),
    ({"elementwise_loss": "L3DistLoss()"}, ValueError),
    ({"elementwise_loss": "f(x, y) = import(x)"}, ValueError),
    ({"elementwise_loss": 3}, TypeError),
    ({"early_stop_condition": "f(loss, complexity) = loss ~ 3"}, ValueError),
    ({"constraints": {"pow": 3}}, ValueError),          # pow not among the operators
    ({"constraints": {"/": (1,)}}, ValueError),
    ({"nested_constraints": {"cos": {"sin": -1}}, "unary_operators": ["cos", "sin"]}, ValueError),
    ({"timeout_in_seconds": -1}, ValueError),
    ({"batching": "sometimes"}, ValueError),
    ({"weight_soft_tree": -1.0}, ValueError),
    ({"soft_tree_seed_fraction": 1.5}, ValueError),
])
def test_invalid_options_raise(kwargs, error):
    with pytest.raises(error):
        Options(**kwargs)


def test_loss_strings():
    pred = torch.tensor([[1.0, 3.0], [0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0.0, 0.0], dtype=torch.float64)
    assert make_loss(None)(pred, y).tolist() == [5.0, 0.0]
    assert make_loss("L1DistLoss()")(pred, y).tolist() == [2.0, 0.0]
    assert make_loss("LPDistLoss{3}()")(pred, y).tolist() == [14.0, 0.0]
    assert make_loss("HuberLoss(1.0)")(pred, y).tolist() == [pytest.approx((0.5 + 2.5) / 2), 0.0]
    assert make_loss("myloss(x, y) = abs(x - y)")(pred, y).tolist() == [2.0, 0.0]
    w = torch.tensor([1.0, 3.0], dtype=torch.float64)
    assert make_loss("f(x, y, w) = w * (x - y)^2")(pred, y, w).tolist() == [(1 + 27) / 2, 0.0]
    assert make_loss(None)(pred, y, w).tolist() == [(1 + 27) / 4, 0.0]     # weighted mean
    nan = torch.tensor([[math.nan, 1.0]], dtype=torch.float64)
    assert make_loss(None)(nan, y).tolist() == [math.inf]


def test_stop_conditions():
    assert make_stop_condition(None) is None
    assert make_stop_condition(1e-6)(1e-7, 30) and not make_stop_condition(1e-6)(1e-5, 3)
    cond = make_stop_condition("stop_if(loss, complexity) = loss < 1e-6 && complexity < 10")
    assert cond(1e-7, 5) and not cond(1e-7, 12) and not cond(1e-3, 5)
    either = make_stop_condition("f(l, c) = l <= 0.1 || c == 1")
    assert either(0.1, 9) and either(5.0, 1) and not either(5.0, 2)


def test_complexity_and_constraints():
    o = Options(complexity_of_operators={"/": 3}, complexity_of_constants=2, constraints={"/": (-1, 1)})
    e = parse_expression("x0 / (x1 + 1.5)")
    assert o.complexity(e) == 1 + 3 + 1 + 1 + 2
    assert not o.satisfies_constraints(e)            # denominator of complexity 4 > 1
    assert o.satisfies_constraints(parse_expression("(x0 + x1) / x1"))
    n = Options(unary_operators=["sin", "cos"], nested_constraints={"sin": {"sin": 0, "cos": 1}})
    assert not n.satisfies_constraints(parse_expression("sin(x0 + sin(x1))"))
    assert n.satisfies_constraints(parse_expression("sin(cos(x0))"))
    assert not n.satisfies_constraints(parse_expression("sin(cos(cos(x0)))"))
