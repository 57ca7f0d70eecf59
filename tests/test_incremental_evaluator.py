"""IncrementalEvaluator: batched, memoized evaluation equals plain one-at-a-time evaluation."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from enhancements.dp_memoization import IncrementalEvaluator, SubexpressionCache
from enhancements.dp_memoization.incremental_evaluator import _OUT_FUNCTIONS
from pysr_baseline.expression import Expression
from pysr_baseline.operators import (BUILTIN_OPERATORS, DEFAULT_BINARY_OPERATORS, DEFAULT_UNARY_OPERATORS,
                                     custom_operator)
from pysr_baseline.parsing import parse_expression
from pysr_baseline.random_expressions import random_expression, random_mutation

ALL_BINARY = ("add", "sub", "mul", "div", "pow")
ALL_UNARY = tuple(n for n, op in BUILTIN_OPERATORS.items() if op.arity == 1)


def plain(exprs, X):
    return torch.stack([e.evaluate(X) for e in exprs])


def same(a, b):
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-300, equal_nan=True)


def bits(t):
    """The bit patterns of a float64 tensor, every NaN as one pattern (NaN payloads and
    signs are not values), so that -0.0 and 0.0 differ."""
    return t.masked_fill(t.isnan(), float("nan")).view(torch.int64)


def identical(got, want):
    """Bit for bit, NaN where NaN."""
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(bits(got), bits(want))


def data(rng, n_rows, n_features):
    X = rng.normal(scale=2.0, size=(n_rows, n_features))
    X[rng.random(X.shape) < 0.1] = 0.0  # zeros: divisions by zero, log(0)
    return torch.from_numpy(X)


# --- correctness on hand-written formulas ---------------------------------------------------

NASTY = ["log(x0 - 10.0)", "1.0 / (x0 - x0)", "sqrt(-(x0 * x0) - 1.0)", "exp(1000.0 * x0)",
         "x0 * cos(x1) + x0 * cos(x1)", "2.5 + 1.0", "cos(3.0) * x1", "0.0 / 0.0", "x1",
         "(x0 - 1.0) ^ 0.5", "tan(x1) * tanh(x0) + abs(x0)", "inv(x0) - square(x1) * cube(x0)"]


def test_matches_plain_evaluation_including_nan_and_inf():
    X = torch.tensor([[0.0, 1.0], [-1.5, 2.0], [3.0, -0.5], [1e-300, 1e300]], dtype=torch.float64)
    exprs = [parse_expression(s) for s in NASTY]
    ref = plain(exprs, X)
    assert ref.isnan().any() and ref.isinf().any()
    for memoize in (True, False):
        ev = IncrementalEvaluator(X, memoize=memoize)
        identical(ev.evaluate(exprs), ref)
        identical(ev.evaluate(exprs), ref)  # second time from the cache


def test_builtin_out_functions_equal_the_operators_bit_for_bit():
    values = torch.tensor([0.0, -0.0, 1.5, -2.0, 1e-310, -1e-310, 700.0, -700.0, 1e300, -3e17, float("inf"),
                           float("-inf"), float("nan"), -float("nan"), 3.0, 0.5], dtype=torch.float64)
    a, b = torch.meshgrid(values, values, indexing="ij")
    for name, fast in _OUT_FUNCTIONS.items():
        op = BUILTIN_OPERATORS[name]
        out = torch.empty_like(a)
        args = (a, b) if op.arity == 2 else (a,)
        fast(*args, out=out)
        identical(out, op.fn(*args))


@pytest.mark.parametrize("name", ["sin", "cos", "tan"])
def test_periodic_functions_skip_the_slow_path_with_the_same_bits(name):
    # sin/cos/tan compute NaN and infinite inputs as 0 and restore NaN (see _periodic_out):
    # every other element must come out of the same kernel with the same bits.
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(scale=50.0, size=(64, 257)))
    mask = rng.random(x.shape)
    x[torch.from_numpy(mask < 0.3)] = float("nan")
    x[torch.from_numpy((mask > 0.3) & (mask < 0.35))] = float("inf")
    x[torch.from_numpy((mask > 0.35) & (mask < 0.4))] = -float("inf")
    x[torch.from_numpy((mask > 0.4) & (mask < 0.42))] = -0.0
    x[torch.from_numpy((mask > 0.42) & (mask < 0.44))] = -5e-320
    out = torch.empty_like(x)
    _OUT_FUNCTIONS[name](x, out)
    identical(out, BUILTIN_OPERATORS[name].fn(x))
    identical(out[3], BUILTIN_OPERATORS[name].fn(x[3]))  # one row alone: the same bits


@pytest.mark.parametrize("n_rows", [1, 7, 64])
def test_pow_has_the_bits_of_the_plain_evaluation(n_rows):
    # PyTorch's pow is the scalar std::pow on a strided column, a 0-dim scalar or a row's
    # tail, and the vectorised pow elsewhere: nodes of pow are computed one at a time.
    rng = np.random.default_rng(n_rows)
    X = torch.from_numpy(rng.uniform(0.1, 3.0, size=(n_rows, 3)))
    exprs = [parse_expression(s) for s in ("x0 ^ 0.37", "x1 ^ x2", "1.7 ^ x0", "sin(x0) ^ 1.3", "0.7 ^ 2.9",
                                           "(x0 + x1) ^ (x2 * 0.5)", "exp(x2) ^ x1", "(0.3 ^ 1.1) * x0")]
    for memoize in (True, False):
        ev = IncrementalEvaluator(X, memoize=memoize)
        identical(ev.evaluate(exprs), plain(exprs, X))
        identical(ev.evaluate(exprs), plain(exprs, X))


def test_custom_operators_go_through_their_own_function():
    sinc = custom_operator("sinc", lambda x: torch.sin(x) / x, lambda x: x, arity=1)
    e = Expression(sinc, (Expression.var(0),))
    f = Expression.apply("+", e, Expression.const(1.0))
    X = torch.linspace(-1, 1, 9, dtype=torch.float64).reshape(9, 1)
    same(IncrementalEvaluator(X).evaluate([e, f]), plain([e, f], X))


def test_float32_data():
    X = torch.linspace(-3, 3, 32, dtype=torch.float32).reshape(16, 2)
    exprs = [parse_expression(s) for s in ("exp(x0) * 0.1 + cos(x1 * 3.3)", "log(x0) / 7.0", "sin(2.0) * x0")]
    ev = IncrementalEvaluator(X, dtype=torch.float32)
    out = ev.evaluate(exprs)
    assert out.dtype == torch.float32
    same(out, plain(exprs, X))


# --- the property test --------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_rows=st.sampled_from([1, 5, 64]), n_features=st.integers(1, 3),
       n_formulas=st.integers(1, 12), n_rounds=st.integers(0, 4),
       capacity=st.sampled_from([3, 50, 10_000]), all_ops=st.booleans())
def test_batched_incremental_equals_one_at_a_time(seed, n_rows, n_features, n_formulas, n_rounds, capacity,
                                                  all_ops):
    rng = np.random.default_rng(seed)
    binary, unary = (ALL_BINARY, ALL_UNARY) if all_ops else (DEFAULT_BINARY_OPERATORS, DEFAULT_UNARY_OPERATORS)
    X = data(rng, n_rows, n_features)
    cache = SubexpressionCache(capacity=capacity)
    ev = IncrementalEvaluator(X, cache=cache)
    ev_plain = IncrementalEvaluator(X, memoize=False)
    exprs = [random_expression(rng, n_features, int(rng.integers(1, 16)), binary, unary) for _ in range(n_formulas)]
    for _ in range(n_rounds + 1):
        batch = exprs + [exprs[int(rng.integers(len(exprs)))]]  # a duplicate in the batch
        ref = plain(batch, X)
        for got in (ev.evaluate(batch), ev_plain.evaluate(batch)):
            identical(got, ref)  # bit for bit, pow included (see _ONE_AT_A_TIME)
        c = ev.counters
        assert c.nodes_requested == c.nodes_from_cache + c.nodes_shared + c.leaves_loaded + c.nodes_computed
        exprs = [random_mutation(e, rng, n_features, binary, unary, max_size=15) for e in exprs]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_results_do_not_depend_on_batch_order_or_composition(seed):
    rng = np.random.default_rng(seed)
    X = data(rng, 8, 2)
    exprs = [random_expression(rng, 2, int(rng.integers(1, 14))) for _ in range(10)]
    exprs += [random_mutation(e, rng, 2) for e in exprs[:5]]  # relatives share sub-trees
    ref = IncrementalEvaluator(X).evaluate(exprs)
    perm = rng.permutation(len(exprs))
    warm = IncrementalEvaluator(X)
    warm.evaluate(exprs[:3])
    shuffled = warm.evaluate([exprs[i] for i in perm])
    identical(shuffled, ref[perm])
    for i, e in enumerate(exprs):  # each alone, in a fresh evaluator
        identical(IncrementalEvaluator(X).evaluate([e])[0], ref[i])


# --- gradients through constants -----------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_evaluate_with_constants_gives_autograd_gradients(seed):
    rng = np.random.default_rng(seed)
    X = torch.from_numpy(rng.uniform(0.5, 2.0, size=(12, 2)))
    unary = ("cos", "exp", "square", "neg")
    exprs = [random_expression(rng, 2, int(rng.integers(1, 12)), unary_operators=unary, const_probability=0.6)
             for _ in range(6)]
    exprs.append(exprs[0])  # the same formula twice, with its own constants each time
    consts = [torch.tensor(e.constants, dtype=torch.float64) * (1 + 0.1 * k) for k, e in enumerate(exprs)]
    mine = [c.clone().requires_grad_(True) for c in consts]
    ref = [c.clone().requires_grad_(True) for c in consts]
    ev = IncrementalEvaluator(X, cache=SubexpressionCache())
    out = ev.evaluate_with_constants(exprs, mine)
    expected = torch.stack([e.evaluate(X, constants=c) for e, c in zip(exprs, ref)])
    same(out.detach(), expected.detach())
    w = torch.from_numpy(rng.normal(size=out.shape))
    (out * w).nan_to_num().sum().backward()
    (expected * w).nan_to_num().sum().backward()
    for a, b in zip(mine, ref):
        if b.grad is None:
            assert a.grad is None or not a.grad.any()
        else:
            same(a.grad, b.grad)
    # A second call with other constants: nothing stale.
    new = [c + 1.0 for c in consts]
    same(ev.evaluate_with_constants(exprs, new).detach(),
         torch.stack([e.evaluate(X, constants=c) for e, c in zip(exprs, new)]))


def test_constants_path_shares_constant_free_subtrees_only():
    X = torch.linspace(0.5, 1.5, 10, dtype=torch.float64).reshape(5, 2)
    f = parse_expression("sin(x0 * x1) + 2.0")
    ev = IncrementalEvaluator(X)
    c1, c2 = torch.tensor([2.0], dtype=torch.float64), torch.tensor([3.0], dtype=torch.float64)
    out = ev.evaluate_with_constants([f, f], [c1, c2])
    same(out, torch.stack([f.evaluate(X, constants=c1), f.evaluate(X, constants=c2)]))
    # sin(x0*x1) and x0*x1 computed once; the two "+ c" nodes separately.
    assert ev.counters.nodes_computed == 4


# --- counters, out=, errors ------------------------------------------------------------------------

def test_a_mutant_costs_only_its_changed_path():
    X = torch.linspace(0.5, 1.5, 20, dtype=torch.float64).reshape(10, 2)
    ev = IncrementalEvaluator(X)
    parent = parse_expression("exp(x0 * x1) + cos(x1) * sin(x0)")
    ev.evaluate([parent])
    mutant = parse_expression("exp(x0 * x1) + cos(x1) * sin(x1)")
    ev.reset_counters()
    same(ev.evaluate([mutant]), plain([mutant], X))
    c = ev.counters
    assert c.nodes_computed == 3  # sin(x1), the product, the sum
    assert c.nodes_from_cache == 4 + 2  # exp(x0 * x1) and cos(x1), leaves included
    assert c.leaves_loaded == 1  # the x1 under sin
    assert c.node_rows_computed == 30 and c.tensor_calls == 3


def test_a_cached_subtree_met_twice_in_a_batch_is_served_from_the_cache_twice():
    X = torch.linspace(0.5, 1.5, 20, dtype=torch.float64).reshape(10, 2)
    ev = IncrementalEvaluator(X)
    ev.evaluate([parse_expression("exp(x0 * x1)")])
    ev.reset_counters()
    batch = [parse_expression("exp(x0 * x1) + x1"), parse_expression("exp(x0 * x1) - x0"),
             parse_expression("sin(x0) * sin(x0)")]
    same(ev.evaluate(batch), plain(batch, X))
    c = ev.counters
    assert c.nodes_from_cache == 4 + 4 and c.nodes_from_cache_again == 4  # exp(x0 * x1), twice
    assert c.nodes_shared == 2  # sin(x0), computed in this call, met again
    assert c.nodes_computed == 4 and c.leaves_loaded == 3  # +, -, sin, *; x1, x0, x0
    assert c.nodes_requested == c.nodes_from_cache + c.nodes_shared + c.leaves_loaded + c.nodes_computed


def test_out_argument_and_empty_batches():
    X = torch.ones(3, 1, dtype=torch.float64)
    ev = IncrementalEvaluator(X)
    out = torch.empty(2, 3, dtype=torch.float64)
    res = ev.evaluate([parse_expression("x0 + 1"), parse_expression("4.0")], out=out)
    assert res is out
    same(out, torch.tensor([[2.0] * 3, [4.0] * 3], dtype=torch.float64))
    assert ev.evaluate([]).shape == (0, 3)
    with pytest.raises(ValueError):
        ev.evaluate([parse_expression("x0")], out=torch.empty(2, 3, dtype=torch.float64))


def test_bad_input_is_rejected_clearly():
    X = torch.ones(3, 2, dtype=torch.float64)
    ev = IncrementalEvaluator(X)
    with pytest.raises(ValueError, match="x5"):
        ev.evaluate([parse_expression("x0 + x5")])
    with pytest.raises(TypeError):
        ev.evaluate(parse_expression("x0"))
    with pytest.raises(TypeError):
        ev.evaluate(["x0"])
    with pytest.raises(ValueError, match="2-D"):
        IncrementalEvaluator(torch.ones(3))
    with pytest.raises(ValueError, match="no rows"):
        IncrementalEvaluator(torch.ones(0, 2))
    with pytest.raises(TypeError):
        IncrementalEvaluator(X, cache={})
    with pytest.raises(ValueError, match="constant"):
        ev.evaluate_with_constants([parse_expression("x0 * 2.0")], [torch.ones(2)])
    # After an error the evaluator and its cache still work.
    same(ev.evaluate([parse_expression("x0 * x1")]), torch.ones(1, 3, dtype=torch.float64))


def test_numpy_input_and_copy_of_data():
    X = np.linspace(0, 1, 6).reshape(3, 2)
    ev = IncrementalEvaluator(X)
    X[:] = 100.0  # the evaluator holds its own copy
    same(ev.evaluate([parse_expression("x0 + x1")])[0], torch.tensor([0.2, 1.0, 1.8], dtype=torch.float64))


# --- random formulas and mutations ------------------------------------------------------------------

def test_random_expressions_are_seeded_and_sized():
    a = [random_expression(np.random.default_rng(7), 3, s) for s in range(1, 21)]
    b = [random_expression(np.random.default_rng(7), 3, s) for s in range(1, 21)]
    assert [e.key for e in a] == [e.key for e in b]
    assert all(e.size == s for s, e in zip(range(1, 21), a))
    assert all(e.n_features_required() <= 3 for e in a)
    rng = np.random.default_rng(3)
    e = random_expression(rng, 2, 10)
    kinds = set()
    for _ in range(200):
        m = random_mutation(e, rng, 2, max_size=12)
        assert m.size <= 12 and m.n_features_required() <= 2
        kinds.add(m.size - e.size)
        e = m
    assert len(kinds) > 2  # growing, shrinking and size-preserving mutations all happen


def test_gradients_survive_later_calls_that_reuse_store_rows():
    X = torch.linspace(0.5, 1.5, 12, dtype=torch.float64).reshape(6, 2)
    ev = IncrementalEvaluator(X, cache=SubexpressionCache(capacity=4))
    f = parse_expression("x0 * 2.0 + sin(x1) * cos(x0)")
    c = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    out = ev.evaluate_with_constants([f], [c])
    rng = np.random.default_rng(0)
    ev.evaluate([random_expression(rng, 2, 15) for _ in range(30)])  # evicts and rewrites rows
    out.sum().backward()
    torch.testing.assert_close(c.grad, X[:, 0].sum().reshape(1))
