"""`linear_scaling` as a fraction of populations: some score a*f+b, the others f itself,
on both engines, through every path a member takes into a population (initial
members, mutation, constant optimisation, simplification, migration, reseeding)."""
import numpy as np
import pytest
import sympy
import torch

from enhancements.engine.search import CompiledSearch
from enhancements.hybrid_optimization.evolution import Search
from enhancements.hybrid_optimization.options import Options
from experiments.scoring import is_symbolic_solution

rng = np.random.default_rng(0)
X = torch.tensor(rng.uniform(0.5, 3, (150, 2)))
Y = 2.5 * X[:, 0] * torch.cos(X[:, 1]) + 1.0
# migration from the hall of fame and between populations often, so that members cross kinds
MIXED = dict(unary_operators=["cos", "exp"], populations=4, population_size=20, ncycles_per_iteration=40,
             niterations=3, verbosity=0, progress=False, linear_scaling=0.5, fraction_replaced=0.2,
             fraction_replaced_hof=0.2, random_state=1)
ENGINES = {"torch": Search, "compiled": CompiledSearch}


def test_the_fraction_is_checked_and_spread_over_the_populations():
    assert Options(populations=5, linear_scaling=True, progress=False).scaled_populations() == [True] * 5
    assert Options(populations=5, linear_scaling=False, progress=False).scaled_populations() == [False] * 5
    assert sum(Options(populations=31, linear_scaling=0.5, progress=False).scaled_populations()) == 15
    for bad in (1.5, -0.1, float("nan"), "yes", None):
        with pytest.raises(ValueError, match="linear_scaling"):
            Options(linear_scaling=bad, progress=False)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_each_population_holds_the_loss_its_kind_gives(engine):
    search = ENGINES[engine](X, Y, None, Options(soft_tree_seed_fraction=0.2, **MIXED))
    search.run()
    scaled = search.opts.scaled_populations()
    assert True in scaled and False in scaled
    differ = 0
    for p, pop in enumerate(search.populations):
        scores = search.scorer.score([m.expr for m in pop.members])
        for i, m in enumerate(pop.members):
            best, own = scores.loss[i], scores.variant_loss[i, 0]
            expected = best if scaled[p] else own
            assert m.loss == pytest.approx(expected, rel=1e-7, abs=1e-12), (p, str(m.expr))
            differ += (not scaled[p]) and own > best * (1 + 1e-6) + 1e-12
    # the unscaled populations' losses are not the scaled ones (else this test could not fail)
    assert differ > 0


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_mixed_search_is_reproducible_and_finds_the_formula(engine):
    opts = dict(MIXED, niterations=6, soft_tree_seed_fraction=0)
    a = ENGINES[engine](X, Y, None, Options(**opts)).run()
    b = ENGINES[engine](X, Y, None, Options(**opts)).run()
    front = [(e.complexity, e.loss, e.expr.key) for e in a.hall_of_fame.pareto_front()]
    assert front == [(e.complexity, e.loss, e.expr.key) for e in b.hall_of_fame.pareto_front()]
    x0, x1 = sympy.symbols("x0 x1")
    truth = 2.5 * x0 * sympy.cos(x1) + 1
    assert any(is_symbolic_solution(e.expr.to_sympy(), truth).solved for e in a.hall_of_fame.pareto_front())
