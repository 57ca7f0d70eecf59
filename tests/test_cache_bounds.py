"""The cache's bounds hold for the memory it really keeps, row stores included."""
import numpy as np
import pytest
import torch

from enhancements.dp_memoization import IncrementalEvaluator, SubexpressionCache
from pysr_baseline.random_expressions import random_expression, random_mutation


def _stream(n, n_features, seed):
    """Random formulas and mutants of them (mutants share sub-trees: the cache hits)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n // 2):
        e = random_expression(rng, n_features, int(rng.integers(5, 16)))
        out += [e, random_mutation(e, rng, n_features)]
    return out


@pytest.mark.parametrize("max_bytes", [4000, 60_000])
def test_reserved_rows_stay_within_max_bytes_after_every_batch(max_bytes):
    X = torch.rand(100, 3, dtype=torch.float64) + 0.5
    cache = SubexpressionCache(capacity=10_000, max_bytes=max_bytes)
    ev = IncrementalEvaluator(X, cache=cache)
    stream = _stream(600, 3, 0)
    store = cache.row_store(ev.fingerprint, ev._columns)
    pinned = store.n_pinned * store.row_bytes
    for start in range(0, len(stream), 300):          # batches of 300 formulas
        batch = stream[start:start + 300]
        values = ev.evaluate(batch)
        again = ev.evaluate(batch)                     # served partly from what was kept
        assert torch.equal(torch.nan_to_num(values, 7.0), torch.nan_to_num(again, 7.0))
        stats = cache.stats
        assert stats.bytes <= max_bytes
        assert stats.reserved_bytes - pinned <= max_bytes
    # The bound is not met by keeping nothing: the cache still serves hits.
    assert cache.stats.hits > 0 and cache.stats.entries > 0
    plain = torch.stack([e.evaluate(X) for e in stream[-300:]])
    assert torch.equal(torch.nan_to_num(ev.evaluate(stream[-300:]), 7.0), torch.nan_to_num(plain, 7.0))


def test_capacity_bounds_reserved_rows_too():
    X = torch.rand(50, 2, dtype=torch.float64) + 0.5
    cache = SubexpressionCache(capacity=20)
    ev = IncrementalEvaluator(X, cache=cache)
    ev.evaluate(_stream(300, 2, 1))
    store = cache.row_store(ev.fingerprint, ev._columns)
    assert len(cache) <= 20
    assert store.top - store.n_pinned <= 20


def test_trimmed_entries_keep_their_values():
    X = torch.linspace(0.5, 2.0, 40, dtype=torch.float64).reshape(20, 2)
    cache = SubexpressionCache(capacity=1000, max_bytes=40 * 20 * 8)   # forty rows of 20 values
    ev = IncrementalEvaluator(X, cache=cache)
    stream = _stream(60, 2, 2)
    ev.evaluate(stream)
    assert 0 < len(cache) and cache.stats.bytes <= 40 * 20 * 8
    fp = ev.fingerprint
    subtrees = {node.key: node for e in stream for node in e.nodes()}
    # every row entry still holds the value of its sub-tree after the rows moved
    rows = [key for (_, key), value in cache._entries.items() if type(value) is int]
    assert rows
    for key in rows:
        expected = subtrees[key].evaluate(X)
        assert torch.equal(torch.nan_to_num(cache.get(fp, key), 7.0), torch.nan_to_num(expected, 7.0))


def test_batches_smaller_than_the_cache_never_copy_the_store(monkeypatch):
    # Room is made before each batch (old entries evicted), so the store never outgrows the
    # bound and never has to be compacted, which would copy every live row each batch.
    from enhancements.dp_memoization.cache import RowStore
    calls = []
    original = RowStore.compact
    monkeypatch.setattr(RowStore, "compact", lambda self, live: calls.append(len(live)) or original(self, live))
    X = torch.rand(100, 3, dtype=torch.float64) + 0.5
    cache = SubexpressionCache(capacity=10_000, max_bytes=300 * 100 * 8)     # 300 rows
    ev = IncrementalEvaluator(X, cache=cache)
    stream = _stream(1000, 3, 3)
    for start in range(0, len(stream), 20):                                   # ~100 fresh rows a batch
        ev.evaluate(stream[start:start + 20])
    store = cache.row_store(ev.fingerprint, ev._columns)
    assert cache.stats.evictions > 0                                          # the bound was reached
    assert calls == []
    assert store.top - store.n_pinned <= 300
