"""SubexpressionCache: LRU order, limits, stats, invalidation, and never a stale value."""
import numpy as np
import pytest
import torch

from enhancements.dp_memoization import IncrementalEvaluator, SubexpressionCache, data_fingerprint
from pysr_baseline.parsing import parse_expression

ROW = 4  # rows per test value: 4 float64 = 32 bytes


def row(v: float) -> torch.Tensor:
    return torch.full((ROW,), float(v), dtype=torch.float64)


def store_is_consistent(cache: SubexpressionCache) -> bool:
    """Every store row is pinned, free or held by exactly one entry."""
    for fp, store in cache._stores.items():
        held = [v for (f, _), v in cache._entries.items() if f == fp and type(v) is int]
        rows = list(range(store.n_pinned)) + store.free + held
        if sorted(rows) != list(range(store.top)) or store.top > store.capacity:
            return False
    return True


def bytes_are_counted(cache: SubexpressionCache) -> bool:
    """``stats.bytes`` is what the entries hold: a store row, a scalar, or a tensor's bytes."""
    total = 0
    for (fp, _), v in cache._entries.items():
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        else:
            store = cache._stores[fp]
            total += store.row_bytes if type(v) is int else store.buffer.element_size()
    return total == cache.stats.bytes


def test_get_returns_what_was_put_and_counts_hits_and_misses():
    cache = SubexpressionCache(capacity=10)
    assert cache.get("fp", "x0") is None
    assert cache.put("fp", "x0", row(1.0))
    torch.testing.assert_close(cache.get("fp", "x0"), row(1.0))
    s = cache.stats
    assert (s.hits, s.misses, s.entries, s.bytes) == (1, 1, 1, 32)
    assert s.hit_rate == 0.5
    cache.reset_stats()
    assert (cache.stats.hits, cache.stats.misses, cache.stats.bytes) == (0, 0, 32)


def test_lru_evicts_the_least_recently_used_entry():
    cache = SubexpressionCache(capacity=3)
    for k in "abc":
        cache.put("fp", k, row(ord(k)))
    cache.get("fp", "a")  # a is now the most recently used: b is the oldest
    cache.put("fp", "d", row(4))
    assert ("fp", "b") not in cache
    assert all(("fp", k) in cache for k in "acd")
    assert cache.stats.evictions == 1 and len(cache) == 3


def test_byte_limit_evicts_until_it_holds_and_refuses_oversized_values():
    cache = SubexpressionCache(capacity=100, max_bytes=3 * 32)
    for i in range(5):
        assert cache.put("fp", f"k{i}", row(i))
    assert cache.stats.bytes == 96 and len(cache) == 3
    assert [k for _, k in cache._entries] == ["k2", "k3", "k4"]
    assert not cache.put("fp", "big", torch.zeros(100, dtype=torch.float64))
    assert ("fp", "big") not in cache and cache.stats.bytes == 96
    assert cache.stats.peak_bytes == 96


def test_replacing_a_key_does_not_double_count_bytes():
    cache = SubexpressionCache(capacity=10)
    cache.put("fp", "k", row(1))
    cache.put("fp", "k", row(2))
    assert cache.stats.bytes == 32 and len(cache) == 1
    torch.testing.assert_close(cache.get("fp", "k"), row(2))


def test_values_that_require_grad_are_stored_only_when_frozen():
    cache = SubexpressionCache()
    trainable = row(1).requires_grad_(True)
    assert not cache.put("fp", "k", trainable)
    assert ("fp", "k") not in cache
    assert cache.put("fp", "k", trainable, frozen=True)
    assert not cache.get("fp", "k").requires_grad


def test_invalidate_by_prefix_predicate_and_data():
    cache = SubexpressionCache()
    cache.put("A", "mul(c1.5,x0)", row(1))
    cache.put("A", "mul(x0,x1)", row(2))
    cache.put("B", "mul(c1.5,x0)", row(3))
    assert cache.invalidate("mul(c") == 2
    assert len(cache) == 1
    cache.put("B", "cos(x0)", row(4))
    assert cache.invalidate(lambda fp, key: key.startswith("cos")) == 1
    assert cache.invalidate_data("A") == 1 and len(cache) == 0
    assert cache.stats.evictions == 0  # drops are not evictions
    with pytest.raises(TypeError):
        cache.invalidate(3)


def test_clear_empties_the_cache():
    cache = SubexpressionCache()
    cache.put("fp", "k", row(1))
    cache.clear()
    assert len(cache) == 0 and cache.stats.bytes == 0 and cache.get("fp", "k") is None


@pytest.mark.parametrize("capacity, max_bytes", [(0, None), (-1, None), (1.5, None), (10, -1)])
def test_bad_limits_are_rejected(capacity, max_bytes):
    with pytest.raises(ValueError):
        SubexpressionCache(capacity=capacity, max_bytes=max_bytes)


def test_fingerprint_names_content_shape_and_dtype():
    X = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    assert data_fingerprint(X) == data_fingerprint(X.clone())
    assert data_fingerprint(X) != data_fingerprint(X.reshape(2, 3))
    assert data_fingerprint(X) != data_fingerprint(X.float())
    Y = X.clone()
    Y[2, 1] += 1e-12
    assert data_fingerprint(X) != data_fingerprint(Y)


def test_cached_values_equal_fresh_evaluation():
    X = torch.linspace(-2, 3, 40, dtype=torch.float64).reshape(20, 2)
    cache = SubexpressionCache()
    ev = IncrementalEvaluator(X, cache=cache)
    f = parse_expression("exp(x0 * 1.5) - cos(x1) / x0")
    ev.evaluate([f])
    for node in f.nodes():
        if node.op is None:
            continue
        cached = cache.get(ev.fingerprint, node.key)
        torch.testing.assert_close(cached.expand(20), node.evaluate(X), equal_nan=True)


def test_a_cache_keyed_on_one_data_set_never_answers_for_another():
    rng = np.random.default_rng(0)
    X1 = torch.from_numpy(rng.normal(size=(30, 2)))
    X2 = X1.clone()
    X2[0, 0] += 1.0  # one value differs
    cache = SubexpressionCache()
    exprs = [parse_expression(s) for s in ("x0 * sin(x1)", "square(x0 + x1) - 2.0", "x1")]
    IncrementalEvaluator(X1, cache=cache).evaluate(exprs)
    ev2 = IncrementalEvaluator(X2, cache=cache)
    out = ev2.evaluate(exprs)
    assert ev2.counters.nodes_from_cache == 0
    torch.testing.assert_close(out, torch.stack([e.evaluate(X2) for e in exprs]))
    assert len(cache._stores) == 2 and store_is_consistent(cache)


def test_a_changed_constant_is_a_different_key_and_never_served_stale():
    X = torch.linspace(0.1, 2, 25, dtype=torch.float64).reshape(25, 1)
    cache = SubexpressionCache()
    ev = IncrementalEvaluator(X, cache=cache)
    before = parse_expression("exp(x0 * 1.5) + x0")
    after = before.with_constants([2.5])
    ev.evaluate([before])
    out = ev.evaluate([after])
    torch.testing.assert_close(out[0], after.evaluate(X))
    assert cache.get(ev.fingerprint, "mul(x0,c1.5)") is not None
    assert cache.get(ev.fingerprint, "mul(x0,c2.5)") is not None


def test_trainable_constants_never_enter_the_cache():
    X = torch.linspace(0.1, 2, 10, dtype=torch.float64).reshape(10, 1)
    cache = SubexpressionCache()
    ev = IncrementalEvaluator(X, cache=cache)
    f = parse_expression("exp(x0 * 1.5) + sin(x0)")
    for value in (1.5, 0.5):
        c = torch.tensor([value], dtype=torch.float64, requires_grad=True)
        out = ev.evaluate_with_constants([f], [c])
        torch.testing.assert_close(out[0], f.with_constants([value]).evaluate(X))
    keys = {k for _, k in cache._entries}
    assert keys == {"sin(x0)"}  # the only constant-free operator sub-tree


def test_small_cache_evicts_and_stays_correct_and_consistent():
    rng = np.random.default_rng(1)
    X = torch.from_numpy(rng.normal(size=(16, 3)))
    cache = SubexpressionCache(capacity=7, max_bytes=6 * 16 * 8)
    ev = IncrementalEvaluator(X, cache=cache)
    exprs = [parse_expression(s) for s in ("x0 * x1 + cos(x2)", "exp(x0 * x1) - 3.0", "log(cos(x2) * x1)",
                                           "x0 * x1 + cos(x2) * 2.0", "sqrt(x1 * x1)")]
    for _ in range(3):
        out = ev.evaluate(exprs)
        torch.testing.assert_close(out, torch.stack([e.evaluate(X) for e in exprs]), equal_nan=True)
        assert len(cache) <= 7 and cache.stats.bytes <= 6 * 16 * 8
        assert store_is_consistent(cache) and bytes_are_counted(cache)
    assert cache.stats.evictions > 0


@pytest.mark.parametrize("capacity, max_bytes", [(40, None), (1000, 25 * 16 * 8), (15, 12 * 16 * 8)])
def test_a_mutation_stream_keeps_limits_bytes_and_rows_consistent(capacity, max_bytes):
    from pysr_baseline.random_expressions import random_expression, random_mutation

    rng = np.random.default_rng(capacity)
    X = torch.from_numpy(rng.normal(size=(16, 3)))
    cache = SubexpressionCache(capacity=capacity, max_bytes=max_bytes)
    ev = IncrementalEvaluator(X, cache=cache)
    exprs = [random_expression(rng, 3, int(rng.integers(1, 15))) for _ in range(25)]
    for _ in range(6):
        out = ev.evaluate(exprs)
        want = torch.stack([e.evaluate(X) for e in exprs])
        assert torch.equal(out.isnan(), want.isnan()) and torch.equal(out.nan_to_num(), want.nan_to_num())
        assert len(cache) <= capacity and (max_bytes is None or cache.stats.bytes <= max_bytes)
        assert store_is_consistent(cache) and bytes_are_counted(cache)
        exprs = [random_mutation(e, rng, 3) for e in exprs]
    assert cache.stats.evictions > 0 and cache.stats.hits > 0


def test_get_of_an_evaluator_row_is_a_copy():
    X = torch.ones(5, 1, dtype=torch.float64)
    cache = SubexpressionCache()
    ev = IncrementalEvaluator(X, cache=cache)
    ev.evaluate([parse_expression("x0 + x0")])
    value = cache.get(ev.fingerprint, "add(x0,x0)")
    value += 100  # must not reach the cache
    again = ev.evaluate([parse_expression("x0 + x0")])[0]
    torch.testing.assert_close(again, torch.full((5,), 2.0, dtype=torch.float64))


def test_values_put_by_hand_are_used_by_the_evaluator():
    X = torch.ones(3, 1, dtype=torch.float64)
    cache = SubexpressionCache()
    ev = IncrementalEvaluator(X, cache=cache)
    # A (deliberately wrong) value put under the key is what the evaluator serves:
    # the cache trusts its writers, which is why keys are exact.
    cache.put(ev.fingerprint, "cos(x0)", torch.full((3,), 7.0, dtype=torch.float64))
    out = ev.evaluate([parse_expression("cos(x0) + 1")])
    torch.testing.assert_close(out[0], torch.full((3,), 8.0, dtype=torch.float64))
    assert store_is_consistent(cache)
