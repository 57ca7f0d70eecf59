"""The compiled engine: the array encoding, compiled evaluation and losses against torch
and plain evaluation, mutations that stay valid, gradients, BFGS, and whole searches."""
import dataclasses
import math

import numpy as np
import pytest
import sympy
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from enhancements.engine.constants import _loss_grad, optimize_constants
from enhancements.engine.evaluate import evaluate_programs, score_programs, tables
from enhancements.engine.mutate import crossover, mutate, mutation_params, scratch
from enhancements.engine.programs import CONST, NotCompilable, OperatorTable, Programs, decode, encode
from enhancements.engine.rng import below, geometric, normal, seed_states, uniform
from enhancements.engine.search import CompiledSearch, make_search, reason_not_compiled
from enhancements.engine.trees import is_valid, make_rules
from enhancements.hybrid_optimization.evolution import Search
from enhancements.hybrid_optimization.mutations import Mutator
from enhancements.hybrid_optimization.options import MUTATIONS, Options
from enhancements.hybrid_optimization.scoring import Scorer
from experiments.scoring import is_symbolic_solution
from pysr_baseline.parsing import parse_expression
from pysr_baseline.random_expressions import random_expression

UNARY = ["sqrt", "exp", "log", "sin", "cos", "square", "cube", "inv", "neg", "abs", "tan", "tanh"]
OPTS = Options(binary_operators=["+", "-", "*", "/", "^"], unary_operators=UNARY + ["cos2(x) = cos(x)^2"],
               soft_tree_seed_fraction=0)
TABLE = OperatorTable.from_options(OPTS)
ARITH = Options(binary_operators=["+", "-", "*", "/"], unary_operators=["square", "cube", "inv", "neg", "abs"],
                soft_tree_seed_fraction=0)
ARITH_TABLE = OperatorTable.from_options(ARITH)


def _random(seed, opts, n_features=3, size=None):
    rng = np.random.default_rng(seed)
    return random_expression(rng, n_features, size or int(rng.integers(1, 25)), opts.binary, opts.unary)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_encoding_round_trips(seed):
    e = _random(seed, OPTS)
    block = encode([e], TABLE, 32)
    back = decode(block.ops[0], block.feat[0], block.val[0], int(block.length[0]), TABLE)
    assert back.key == e.key
    assert block.length[0] == e.size


def test_malformed_programs_and_foreign_operators_are_refused():
    block = encode([parse_expression("x0 * cos(x1)")], TABLE, 8)
    ops, feat, val = block.ops[0], block.feat[0], block.val[0]
    with pytest.raises(ValueError, match="without its arguments"):   # mul with one value below it
        decode(ops[[0, 3]], feat, val, 2, TABLE)
    with pytest.raises(ValueError, match="2 values left"):            # x0 cos(x1), no mul
        decode(ops, feat, val, 3, TABLE)
    with pytest.raises(NotCompilable, match="tanh"):                  # not among this table's operators
        encode([parse_expression("tanh(x0)")], ARITH_TABLE, 8)


def _plain(exprs, X):
    with torch.no_grad():
        return torch.stack([e.evaluate(torch.as_tensor(X)) for e in exprs]).numpy()


def test_compiled_evaluation_equals_plain_exactly_for_arithmetic():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (200, 3))
    X[:5] = 0.0                                         # divisions by zero: inf and NaN
    exprs = [_random(s, ARITH) for s in range(400)]
    block = encode(exprs, ARITH_TABLE, 32)
    out = np.empty((len(exprs), 200))
    evaluate_programs(block.ops, block.feat, block.val, block.length, np.ascontiguousarray(X.T), out,
                      *tables(ARITH_TABLE))
    ref = _plain(exprs, X)
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    assert np.array_equal(np.nan_to_num(out, nan=0.0), np.nan_to_num(ref, nan=0.0))
    assert np.isinf(ref).any() and np.isnan(ref).any()


def test_compiled_evaluation_agrees_with_torch_for_every_operator():
    rng = np.random.default_rng(1)
    X = rng.uniform(-3, 3, (300, 3))
    exprs = [_random(s, OPTS, size=int(np.random.default_rng(s).integers(1, 10))) for s in range(600)]
    block = encode(exprs, TABLE, 32)
    out = np.empty((len(exprs), 300))
    evaluate_programs(block.ops, block.feat, block.val, block.length, np.ascontiguousarray(X.T), out, *tables(TABLE))
    ref = _plain(exprs, X)
    same_nan = np.isnan(out) == np.isnan(ref)
    close = np.isclose(out, ref, rtol=1e-9, atol=1e-12, equal_nan=True)
    # transcendental functions may differ in the last bit, which an ill-conditioned formula
    # amplifies (sin of exp of exp ...): nearly all values agree to 1e-9
    assert same_nan.mean() > 0.999 and close.mean() > 0.99
    assert close.all(axis=1).mean() > 0.97


def test_fused_losses_equal_the_scorers():
    rng = np.random.default_rng(2)
    X = rng.uniform(0.5, 3, (250, 3))
    y = X[:, 0] * np.cos(X[:, 1]) + 0.5
    w = rng.uniform(0.5, 2.0, 250)
    exprs = [_random(s, ARITH) for s in range(300)]
    block = encode(exprs, ARITH_TABLE, 32)
    for weights, scaled in ((None, True), (w, True), (None, False), (w, False)):
        scorer = Scorer(torch.as_tensor(X), torch.as_tensor(y), None if weights is None else torch.as_tensor(weights),
                        dataclasses.replace(ARITH, linear_scaling=scaled))
        ref = scorer.score(exprs)
        k = len(exprs)
        loss, lv, av, bv = np.empty(k), np.empty((k, 4)), np.empty((k, 4)), np.empty((k, 4))
        score_programs(block.ops, block.feat, block.val, block.length, np.ascontiguousarray(X.T), y,
                       np.zeros(0) if weights is None else weights, 0.0 if weights is None else float(weights.sum()),
                       scaled, *tables(ARITH_TABLE), loss, lv, av, bv)
        assert np.array_equal(np.isfinite(loss), np.isfinite(ref.loss))
        ok = np.isfinite(ref.loss)
        assert np.allclose(loss[ok], ref.loss[ok], rtol=1e-9, atol=1e-12)
        if not scaled:
            continue
        # the four forms' losses too (a and b themselves are ill-conditioned when f is nearly constant)
        assert np.allclose(lv[ok], ref.variant_loss[ok], rtol=1e-9, atol=1e-12)


def test_validity_rules_agree_with_the_python_mutator():
    opts = Options(binary_operators=["+", "-", "*", "/"], unary_operators=["cos", "exp", "square"], maxsize=15,
                   maxdepth=5, constraints={"/": (-1, 4), "exp": 3}, nested_constraints={"cos": {"cos": 0}},
                   soft_tree_seed_fraction=0)
    table = OperatorTable.from_options(opts)
    rules = make_rules(opts, table, 3, 30)
    mutator = Mutator(opts, 3)
    verdicts = []
    for s in range(1500):
        e = _random(s, opts)
        block = encode([e], table, 30)
        mine = is_valid(block.ops[0], block.feat[0], block.length[0], 15.0, rules)
        assert mine == mutator.is_valid(e, 15), str(e)
        verdicts.append(mine)
    assert 0.1 < np.mean(verdicts) < 0.9


def test_thousands_of_mutations_and_crossovers_stay_valid():
    opts = Options(binary_operators=["+", "-", "*", "/"], unary_operators=["cos", "exp", "square", "cos2(x)=cos(x)^2"],
                   maxsize=20, maxdepth=6, constraints={"/": (-1, 5), "exp": 4},
                   nested_constraints={"exp": {"exp": 0}, "cos": {"cos": 1}}, soft_tree_seed_fraction=0)
    table = OperatorTable.from_options(opts)
    L = 20
    rules, params, mutator = make_rules(opts, table, 3, L), mutation_params(opts), Mutator(opts, 3)
    state = seed_states(np.random.SeedSequence(1), 1)
    current = encode([parse_expression("x0 * cos(x1)")], table, L)
    out, W = Programs.empty(2, L + 8), scratch(L + 8)
    kinds, changed = np.zeros(len(MUTATIONS), int), 0
    for step in range(4000):
        kind, n = mutate(current.ops[0], current.feat[0], current.val[0], current.length[0], state, 0, 1.0, 20.0,
                         params, rules, out.ops[0], out.feat[0], out.val[0], W)
        kinds[kind] += 1
        if n < 0:
            continue
        new = decode(out.ops[0], out.feat[0], out.val[0], n, table)
        assert mutator.is_valid(new, 20), (MUTATIONS[kind], str(new))
        changed += new.key != current.get(0, table).key
        current.set(0, new, table)
        if step % 10 == 0:   # a crossover with a fresh tree now and then
            other = encode([_random(step, opts, size=5)], table, L)
            na, nb = crossover(current.ops[0], current.feat[0], current.val[0], current.length[0], other.ops[0],
                               other.feat[0], other.val[0], other.length[0], state, 0, 20.0, rules, out.ops[0],
                               out.feat[0], out.val[0], out.ops[1], out.feat[1], out.val[1], W)
            if na > 0:
                for m, n_ in ((0, na), (1, nb)):
                    assert mutator.is_valid(decode(out.ops[m], out.feat[m], out.val[m], n_, table), 20)
    assert changed > 3000
    used = {MUTATIONS[k] for k in np.flatnonzero(kinds)}
    assert used >= {"mutate_constant", "mutate_operator", "mutate_feature", "swap_operands", "rotate_tree",
                    "add_node", "insert_node", "delete_node", "do_nothing"}


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    X = rng.uniform(0.5, 2.0, (80, 2))
    y = 1.7 * X[:, 0] * np.cos(0.8 * X[:, 1]) + 0.2
    e = parse_expression("(x0 * 1.5) * cos(x1 * 0.7) + sqrt(x0 + 0.3) * 0.01", operators=None)
    block = encode([e], TABLE, 32)
    n = int(block.length[0])
    Xt = np.ascontiguousarray(X.T)
    buffers = (np.empty(n, np.int64), np.empty((n, 80)), np.zeros(n, np.bool_), np.zeros(n), np.empty((n, 80)),
               np.zeros(n), np.zeros(n))
    for linear in (False, True):
        val = block.val[0, :n].copy()
        base = _loss_grad(block.ops[0], block.feat[0], val, n, TABLE.arity, Xt, y, np.zeros(0), 0.0, linear,
                          *buffers)
        grad = buffers[-1].copy()
        for t in np.flatnonzero(block.ops[0, :n] == CONST):
            h = 1e-6 * max(1.0, abs(val[t]))
            up, down = val.copy(), val.copy()
            up[t] += h
            down[t] -= h
            f_up = _loss_grad(block.ops[0], block.feat[0], up, n, TABLE.arity, Xt, y, np.zeros(0), 0.0, linear, *buffers)
            f_down = _loss_grad(block.ops[0], block.feat[0], down, n, TABLE.arity, Xt, y, np.zeros(0), 0.0, linear,
                                *buffers)
            assert grad[t] == pytest.approx((f_up - f_down) / (2 * h), rel=1e-4, abs=1e-7)
        assert math.isfinite(base)


def test_compiled_bfgs_finds_constants_and_never_makes_a_formula_worse():
    X = torch.linspace(0.1, 3, 60, dtype=torch.float64).reshape(-1, 1)
    y = 2.0 * torch.exp(-0.7 * X[:, 0]) + 0.1
    opts = Options(unary_operators=["exp", "neg"], soft_tree_seed_fraction=0, linear_scaling=False)
    scorer = Scorer(X, y, None, opts)
    exprs = [parse_expression("1.0 * exp(x0 * -1.0) + 0.5"), parse_expression("x0 * 3.0"), parse_expression("x0")]
    result = optimize_constants(scorer, exprs, iterations=60, nrestarts=2, seeds=[0, 1, 2])
    assert result.loss[0] < 1e-18 and result.improved[0]
    assert str(result.exprs[2]) == "x0" and not result.improved[2]
    before = scorer.score(exprs).loss
    after = scorer.score(result.exprs).loss
    assert (after <= before * (1 + 1e-12)).all()


def test_the_random_streams():
    state = seed_states(np.random.SeedSequence(7), 2)
    u = np.array([uniform(state, 0) for _ in range(20000)])
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    k = np.array([below(state, 1, 7) for _ in range(7000)])
    assert set(k) == set(range(7))
    z = np.array([normal(state, 0) for _ in range(20000)])
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    g = np.array([geometric(state, 0, 0.3) for _ in range(20000)])
    assert g.min() >= 1 and abs(g.mean() - 1 / 0.3) < 0.1
    again = seed_states(np.random.SeedSequence(7), 2)
    assert uniform(again, 0) == u[0]


SMALL = dict(niterations=3, populations=4, population_size=20, ncycles_per_iteration=40, soft_tree_seed_fraction=0,
             linear_scaling=True,  # these tiny searches find constant factors and offsets through a*f+b
             progress=False, unary_operators=["cos"])


def _front(result):
    return [(e.complexity, e.expr.key, e.loss) for e in result.hall_of_fame.pareto_front()]


def test_a_seed_fixes_a_compiled_run_and_the_front_is_true():
    rng = np.random.default_rng(4)
    X = torch.as_tensor(rng.uniform(1, 3, (100, 2)))
    y = X[:, 0] * torch.cos(X[:, 1]) + 1.0
    a = CompiledSearch(X, y, None, Options(random_state=3, **SMALL)).run()
    b = CompiledSearch(X, y, None, Options(random_state=3, **SMALL)).run()
    c = CompiledSearch(X, y, None, Options(random_state=4, **SMALL)).run()
    assert _front(a) == _front(b) and a.n_evals == b.n_evals
    assert _front(c) != _front(a)
    losses = [e.loss for e in a.hall_of_fame.pareto_front()]
    assert all(l1 > l2 for l1, l2 in zip(losses, losses[1:]))
    for e in a.hall_of_fame.pareto_front():          # every front loss is the formula's true loss
        true = float(torch.mean((e.expr.evaluate(X) - y) ** 2))
        assert e.loss == pytest.approx(true, rel=1e-9, abs=1e-18)
    assert min(losses) < 1e-20


def test_compiled_searches_recover_formulas_across_seeds():
    rng = np.random.default_rng(5)
    X = torch.as_tensor(rng.uniform(1, 3, (100, 2)))
    x0, x1 = sympy.symbols("x0 x1")
    for target, truth in ((X[:, 0] * X[:, 1] + 1.0, x0 * x1 + 1), (torch.cos(X[:, 0]) * X[:, 1], sympy.cos(x0) * x1)):
        solved = 0
        for seed in range(4):
            r = CompiledSearch(X, target, None, Options(random_state=seed, **SMALL)).run()
            best = min(r.hall_of_fame.pareto_front(), key=lambda e: e.loss)
            solved += is_symbolic_solution(best.expr.to_sympy(), truth).solved
        assert solved >= 3, (truth, solved)


def test_the_engine_is_chosen_where_it_can_run():
    X = torch.rand(30, 2, dtype=torch.float64)
    y = X[:, 0]
    assert reason_not_compiled(Options(soft_tree_seed_fraction=0)) is None
    assert "squared error" in reason_not_compiled(Options(elementwise_loss="L1DistLoss()", soft_tree_seed_fraction=0))
    assert reason_not_compiled(Options(elementwise_loss="loss(p, t) = (p - t)^2", soft_tree_seed_fraction=0)) is None
    assert "precision" in reason_not_compiled(Options(precision=32, soft_tree_seed_fraction=0))
    assert "fractional" in reason_not_compiled(Options(complexity_of_operators={"+": 1.5}, soft_tree_seed_fraction=0))
    from pysr_baseline.operators import custom_operator
    pyop = custom_operator("twice", lambda a: 2 * a, lambda a: 2 * a)
    assert "Python callable" in reason_not_compiled(Options(unary_operators=[pyop], soft_tree_seed_fraction=0))
    assert type(make_search(X, y, None, Options(soft_tree_seed_fraction=0))) is CompiledSearch
    assert type(make_search(X, y, None, Options(soft_tree_seed_fraction=0, engine="torch"))) is Search
    assert type(make_search(X, y, None, Options(soft_tree_seed_fraction=0, precision=32))) is Search
    with pytest.raises(ValueError, match="engine='compiled' cannot run this search"):
        make_search(X, y, None, Options(soft_tree_seed_fraction=0, precision=32, engine="compiled"))


def test_the_compiled_loss_memo_changes_no_result():
    rng = np.random.default_rng(6)
    X = torch.as_tensor(rng.uniform(1, 3, (80, 2)))
    y = X[:, 0] * torch.cos(X[:, 1])
    on = CompiledSearch(X, y, None, Options(random_state=1, **SMALL)).run()
    off = CompiledSearch(X, y, None, Options(random_state=1, memoize=False, **SMALL)).run()
    assert _front(on) == _front(off) and on.n_evals == off.n_evals
    assert on.evaluator_stats["formulas_served_from_loss_memo"] > 0.05 * on.n_evals
    assert off.evaluator_stats["formulas_served_from_loss_memo"] <= 0.05 * off.n_evals  # Python-side memo only
