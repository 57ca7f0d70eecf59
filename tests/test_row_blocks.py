"""Large data is evaluated and scored by blocks of rows (bounded memory): the same values
and the same losses as all rows at once, NaN/inf included."""
import numpy as np
import pytest
import torch

from pysr_baseline.parsing import parse_expression
from enhancements.dp_memoization.incremental_evaluator import IncrementalEvaluator
from enhancements.dp_memoization.row_blocks import RowBlockEvaluator
from enhancements.hybrid_optimization.options import Options
from enhancements.hybrid_optimization.scoring import Scorer

FORMULAS = ["x0 * cos(x1) + 1.5", "log(x0 - 2.0)", "x0 / (x1 - x1)", "exp(x0 * 300.0)", "2.5", "x1",
            "sqrt(x0) * x1 - x0 * x0"]
X = torch.tensor(np.random.default_rng(0).uniform(0.5, 3.0, (53, 2)))
Y = X[:, 0] * torch.cos(X[:, 1]) * 2 + 0.5


def _exprs():
    return [parse_expression(t) for t in FORMULAS]


@pytest.mark.parametrize("block_rows", [1, 7, 53, 100])
def test_values_equal_one_call_over_all_rows(block_rows):
    blocked = RowBlockEvaluator(X, block_rows=block_rows)
    whole = IncrementalEvaluator(X, memoize=False).evaluate(_exprs())
    assert torch.equal(torch.nan_to_num(blocked.evaluate(_exprs()), 7.0), torch.nan_to_num(whole, 7.0))
    assert torch.equal(torch.nan_to_num(torch.cat(blocked.evaluate_blocks(_exprs()), 1), 7.0),
                       torch.nan_to_num(whole, 7.0))
    assert blocked.counters.formulas == 2 * len(FORMULAS)  # two calls, formulas counted once a call


def test_gradients_through_blocks_equal_all_rows():
    e = [parse_expression("x0 * 3.0 + cos(x1 * 2.0)")]
    grads = []
    for ev in (RowBlockEvaluator(X, block_rows=5), IncrementalEvaluator(X, memoize=False)):
        c = torch.tensor([3.0, 2.0], dtype=torch.float64, requires_grad=True)
        ev.evaluate_with_constants(e, [c]).square().sum().backward()
        grads.append(c.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-12)


@pytest.mark.parametrize("loss", ["L2DistLoss()", "L1DistLoss()", "HuberLoss(0.5)", "f(x, y, w) = w * abs(x - y)"])
@pytest.mark.parametrize("linear_scaling", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_blocked_scores_equal_all_rows(loss, linear_scaling, weighted):
    w = torch.linspace(0.5, 2.0, X.shape[0], dtype=torch.float64) if weighted else None
    opts = Options(elementwise_loss=loss, linear_scaling=linear_scaling, progress=False)
    whole = Scorer(X, Y, w, opts, evaluator=IncrementalEvaluator(X))._score_in_chunks(_exprs())
    blocked = Scorer(X, Y, w, opts, evaluator=RowBlockEvaluator(X, block_rows=6))._score_in_chunks(_exprs())
    for name in ("loss", "variant_loss", "a", "b"):
        np.testing.assert_allclose(getattr(blocked, name), getattr(whole, name), rtol=1e-10, atol=1e-14)
    assert np.isinf(blocked.loss[[2, 3]]).all() and np.isfinite(blocked.loss[[0, 4, 5, 6]]).all()


def test_large_data_gets_the_blocked_evaluator():
    from enhancements.hybrid_optimization.scoring import make_evaluator
    from enhancements.dp_memoization.row_blocks import BLOCK_ROWS
    opts = Options(progress=False)
    assert isinstance(make_evaluator(torch.ones(BLOCK_ROWS + 1, 1, dtype=torch.float64), opts), RowBlockEvaluator)
    assert isinstance(make_evaluator(torch.ones(BLOCK_ROWS, 1, dtype=torch.float64), opts), IncrementalEvaluator)


def test_a_whole_formula_loss_is_scored_on_all_rows_at_once():
    seen = []

    def worst_error(pred, target, weights):
        seen.append(pred.shape[0])
        return (pred - target).abs().max()
    opts = Options(loss_function=worst_error, progress=False)
    scores = Scorer(X, Y, None, opts, evaluator=RowBlockEvaluator(X, block_rows=6))._score_in_chunks(_exprs()[:2])
    assert set(seen) == {X.shape[0]} and np.isfinite(scores.loss[0])


def test_blocks_have_fewer_rows_the_more_nodes_a_call_has():
    from enhancements.dp_memoization.row_blocks import MIN_BLOCK_ROWS, WORK_VALUES
    rows = 3 * MIN_BLOCK_ROWS + 5
    data = torch.tensor(np.random.default_rng(1).uniform(0.5, 3.0, (rows, 2)))
    blocked = RowBlockEvaluator(data)
    few, many = _exprs()[:1], _exprs() * 200
    assert [p.shape[1] for p in blocked.evaluate_blocks(few)] == [rows]  # 6 nodes: one block
    assert blocked.block_rows_for(_exprs() * 20) == WORK_VALUES // (20 * sum(e.size for e in _exprs()))
    assert blocked.block_rows_for(many) == MIN_BLOCK_ROWS  # 6,400 nodes: the floor
    parts = blocked.evaluate_blocks(many)
    assert [p.shape[1] for p in parts] == [MIN_BLOCK_ROWS] * 3 + [5]
    whole = IncrementalEvaluator(data, memoize=False).evaluate(many)
    assert torch.equal(torch.nan_to_num(torch.cat(parts, 1), 7.0), torch.nan_to_num(whole, 7.0))
    assert torch.equal(torch.nan_to_num(blocked.evaluate(many), 7.0), torch.nan_to_num(whole, 7.0))
