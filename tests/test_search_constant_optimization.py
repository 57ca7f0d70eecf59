"""Batched BFGS: constants of many formulas fitted at once, each as if alone."""
import numpy as np
import torch

from enhancements.hybrid_optimization.constant_optimization import optimize_constants
from enhancements.hybrid_optimization.options import Options
from enhancements.hybrid_optimization.scoring import Scorer
from pysr_baseline.parsing import parse_expression

rng = np.random.default_rng(0)
X = torch.tensor(rng.uniform(0.5, 2.0, (200, 2)))
Y = torch.exp(-1.3 * X[:, 0]) * X[:, 1] + 0.5 * torch.cos(2.0 * X[:, 1])


def _scorer(linear_scaling=True):
    return Scorer(X, Y, None, Options(unary_operators=["exp", "cos"], linear_scaling=linear_scaling))


def test_fits_constants_of_a_batch():
    scorer = _scorer(linear_scaling=False)
    exprs = [parse_expression("exp(-1.0 * x0) * x1 + 0.3 * cos(1.5 * x1)"),
             parse_expression("x0 * 2.0"),
             parse_expression("x0 + x1")]                      # no constants: untouched
    before = scorer.score(exprs).loss
    out = optimize_constants(scorer, exprs, iterations=40, nrestarts=2, seeds=[1, 2, 3])
    assert out.loss[0] < 1e-12 and before[0] > 1e-3
    c = out.exprs[0].constants
    assert np.allclose(c, [-1.3, 0.5, 2.0], atol=1e-4)
    assert out.loss[1] <= before[1] and out.improved[1]
    assert out.exprs[2] is exprs[2] and not out.improved[2]


def test_never_worse_and_independent_of_batch():
    scorer = _scorer()
    target = parse_expression("exp(0.7 * x0) * x1")
    others = [parse_expression(f"cos({k}.5 * x0) + x1 * {k}.0") for k in range(1, 6)]
    alone = optimize_constants(scorer, [target], iterations=8, nrestarts=2, seeds=[7])
    batch = optimize_constants(scorer, others[:2] + [target] + others[2:], iterations=8, nrestarts=2,
                               seeds=[1, 2, 7, 3, 4, 5])
    assert alone.exprs[0].constants == batch.exprs[2].constants
    assert alone.loss[0] == batch.loss[2]
    assert alone.loss[0] <= scorer.score([target]).loss[0]


def test_nan_constants_are_left_alone():
    scorer = _scorer(linear_scaling=False)
    e = parse_expression("log(x0 - 5.0) * 1.0")          # NaN everywhere
    out = optimize_constants(scorer, [e], iterations=5, nrestarts=1, seeds=[0])
    assert out.exprs[0] is e and not out.improved[0]
