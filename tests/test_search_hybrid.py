"""Soft trees in the search: the residual target, the shipped proposer, its use by the search."""
import numpy as np
import pytest
import sympy
import torch

from enhancements.hybrid_optimization.evolution import Search
from enhancements.hybrid_optimization.hybrid import TrainedSoftTreeProposer, subtree_target
from enhancements.hybrid_optimization.options import Options
from pysr_baseline.parsing import parse_expression



@pytest.fixture(autouse=True)
def one_thread():
    # As the search runs its fits: small tensors, and spinning threads are slow on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


rng = np.random.default_rng(1)
X = torch.tensor(rng.uniform(0.5, 2.0, (120, 3)))


@pytest.mark.parametrize("text", [
    "x0 * (x1 + 0.7)", "exp(x0 - x1) / x2", "sqrt(x0 + x1) - inv(x2)", "log(x0 * x1) + square(x2 - 0.3)",
    "neg(x0 / (x1 - x2 * 0.5))", "x0 * x0 * x0 + x1",
])
def test_subtree_target_inverts_every_path(text):
    # The formula's own output as the target: every sub-tree's target is its own value.
    expr = parse_expression(text)
    out = expr.evaluate(X)
    for index in range(expr.size):
        target = subtree_target(expr, index, X, out)
        assert target is not None
        own = expr.subtree(index).evaluate(X)
        ok = torch.isfinite(target)
        assert ok.float().mean() > 0.9
        assert torch.allclose(target[ok], own.expand_as(target)[ok], rtol=1e-8, atol=1e-8), (text, index)


def test_subtree_target_gives_up_below_a_non_invertible_operator():
    expr = parse_expression("cos(x0 * x1) + x2")
    assert subtree_target(expr, 0, X, expr.evaluate(X)) is not None
    assert subtree_target(expr, 1, X, expr.evaluate(X)) is not None   # cos(...) itself
    assert subtree_target(expr, 2, X, expr.evaluate(X)) is None       # inside cos
    with pytest.raises(IndexError):
        subtree_target(expr, 99, X, expr.evaluate(X))


def _bound_proposer(y, **kwargs):
    proposer = TrainedSoftTreeProposer(**kwargs)
    proposer.bind(X, y, None, Options(binary_operators=["+", "-", "*", "/"], unary_operators=["square"]))
    return proposer


def test_propose_fits_the_residual_of_a_subtree():
    y = X[:, 0] * X[:, 1] + X[:, 2]
    proposer = _bound_proposer(y, mutation_restarts=4, mutation_epochs=100)
    wrong = parse_expression("x0 * x1 + x0")              # right but for its last leaf
    new = proposer.propose(wrong, 4, np.random.default_rng(0))
    assert new is not None and new.subtree(1).key == wrong.subtree(1).key   # the rest is kept
    assert sympy.simplify(new.to_sympy() - sympy.sympify("x0*x1 + x2")) == 0


def test_propose_returns_a_constant_for_a_constant_target_and_needs_bind():
    y = X[:, 0] + 2.5
    proposer = _bound_proposer(y)
    new = proposer.propose(parse_expression("x0 + x1"), 2, np.random.default_rng(0))
    assert new.subtree(2).is_constant and new.subtree(2).value == pytest.approx(2.5)
    with pytest.raises(RuntimeError, match="bind"):
        TrainedSoftTreeProposer().propose(parse_expression("x0"), 0, np.random.default_rng(0))
    with pytest.raises(ValueError):
        TrainedSoftTreeProposer(seed_depths=(0,))


def test_seeds_are_distinct_fitted_formulas_and_reproducible():
    y = 0.5 * X[:, 0] * X[:, 1] ** 2
    a = _bound_proposer(y, seed_depths=(2,), n_restarts=4).seed(50, np.random.default_rng(3))
    b = _bound_proposer(y, seed_depths=(2,), n_restarts=4).seed(50, np.random.default_rng(3))
    assert [e.key for e in a] == [e.key for e in b]
    assert len({e.key for e in a}) == len(a) and 1 <= len(a) <= 5
    best = a[0].to_sympy()
    assert sympy.simplify(best - sympy.sympify("0.5*x0*x1**2")) == 0


def test_search_with_the_shipped_proposer_is_seeded_and_reproducible():
    y = X[:, 0] / X[:, 1] ** 2
    small = dict(populations=3, population_size=16, ncycles_per_iteration=10, niterations=2, verbosity=0,
                 binary_operators=["+", "-", "*", "/"], unary_operators=["square"], soft_tree_seed_fraction=0.25,
                 weight_soft_tree=2.0)
    first = Search(X, y, None, Options(random_state=0, **small))
    result = first.run()
    assert first.opts.soft_tree_proposer.n_fits >= 2          # the seeds' fits, then mutations
    assert first.opts.soft_tree_proposer.n_proposals > 0
    assert result.hall_of_fame.best_loss() < 1e-20             # a seed is exact
    again = Search(X, y, None, Options(random_state=0, **small)).run()
    front = [(e.complexity, e.expr.key) for e in result.hall_of_fame.pareto_front()]
    assert front == [(e.complexity, e.expr.key) for e in again.hall_of_fame.pareto_front()]


def test_seeding_starts_no_fit_after_its_deadline():
    import time

    proposer = _bound_proposer(X[:, 0] * X[:, 1] ** 2, seed_depths=(2,), n_restarts=2)
    assert proposer.seed(10, np.random.default_rng(0), deadline=time.perf_counter() - 1.0) == []
    assert proposer.seed(10, np.random.default_rng(0), deadline=time.perf_counter() + 60.0)


def test_seeds_drop_the_scaling_the_search_has_no_operator_for():
    from enhancements.hybrid_optimization.hybrid import _unscaled

    f = parse_expression("2.5 * (x0 * x1) + 0.75")
    assert _unscaled(f, {"mul", "add"}).key == f.key
    assert _unscaled(f, {"mul"}).key == parse_expression("2.5 * (x0 * x1)").key
    assert _unscaled(f, set()).key == parse_expression("x0 * x1").key
    assert _unscaled(parse_expression("2.0 / x0"), set()).key == parse_expression("2.0 / x0").key  # not a scaling


def test_seeds_fit_on_at_most_seed_rows_rows():
    proposer = _bound_proposer(X[:, 0] * X[:, 1], seed_rows=40, seed_depths=(2,), n_restarts=2)
    assert len(proposer._seed_at) == 40 and len(set(proposer._seed_at.tolist())) == 40
    assert proposer.seed(5, np.random.default_rng(0))
