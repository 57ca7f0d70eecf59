"""An LRU cache of sub-expression values: the memo table of the dynamic programme.

A value is stored under ``(data fingerprint, Expression.key)``. The fingerprint names
the exact tensor the value was computed on (shape, dtype, device and a hash of its
bytes), so a value computed on one data set or batch is never served for another; the
key embeds every constant's exact value, so a formula whose constants changed is a
different key. Values that depend on trainable parameters (``requires_grad``) are not
stored unless the caller says the parameters are frozen; if they later change, drop
the stale entries with `invalidate`.

    >>> import torch
    >>> cache = SubexpressionCache(capacity=100, max_bytes=1 << 20)
    >>> X = torch.ones(4, 2, dtype=torch.float64)
    >>> fp = data_fingerprint(X)
    >>> cache.put(fp, "x0", X[:, 0])
    True
    >>> cache.get(fp, "x0")
    tensor([1., 1., 1., 1.], dtype=torch.float64)
    >>> cache.stats.hits, cache.stats.entries
    (1, 1)

The incremental evaluator keeps one data set's row values in a `RowStore` (one tensor,
one row per entry) owned by the cache, so that a batch of cached values is read with
one ``index_select`` and nothing is allocated per node. Such an entry costs one row's
bytes; `get` returns a copy of the row.

The LRU order lives in a ``collections.OrderedDict`` rather than ``cachetools.LRUCache``:
its bookkeeping is C code, measured here at ~0.2 us an insert or a hit, against ~1.1 us
an insert (~1.4 us with ``getsizeof``, which a byte bound needs) and ~0.5 us a hit for
cachetools, whose bookkeeping is Python code; the evaluator does thousands of these per
batch (``python -m experiments.lru_overhead`` measures both).

``max_bytes`` bounds what the cache holds between calls, the row stores' reserved rows
included: a batch may need more rows than the bound while it is computed (its working
set): room is made for it first by evicting old entries (`make_room`), and if it needs
more than the bound holds, the rows beyond it are given back after it (`trim`).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable

import torch

Fingerprint = str


def data_fingerprint(X: torch.Tensor) -> Fingerprint:
    """A name for exactly this tensor's content: shape, dtype, device and a 128-bit
    BLAKE2b digest of its bytes, as one string (so its hash is computed once).

    Hashing reads the whole tensor once: do it once per data set or batch.

        >>> data_fingerprint(torch.zeros(3, 2)) == data_fingerprint(torch.zeros(3, 2))
        True
        >>> data_fingerprint(torch.zeros(3, 2)) == data_fingerprint(torch.zeros(2, 3))
        False
    """
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"data must be a torch.Tensor, got {type(X).__name__}")
    flat = X.detach().reshape(-1).contiguous().cpu()
    digest = hashlib.blake2b(flat.view(torch.uint8).numpy().tobytes(), digest_size=16).hexdigest()
    shape = "x".join(str(s) for s in X.shape)
    return f"{shape}|{str(X.dtype).replace('torch.', '')}|{X.device}|{digest}"


@dataclass
class CacheStats:
    """Counters since the last `reset_stats`; ``bytes``/``entries`` describe the content now.

    ``bytes`` is what the entries hold (a row-store entry: one row); ``reserved_bytes``
    is what the row stores use: every row ever handed out (free ones and the pinned data
    columns included), the memory the cache really keeps touched.
    """

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    bytes: int = 0
    entries: int = 0
    peak_bytes: int = 0
    reserved_bytes: int = 0

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def as_dict(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "hit_rate": self.hit_rate, "bytes": self.bytes, "entries": self.entries,
                "peak_bytes": self.peak_bytes, "reserved_bytes": self.reserved_bytes}


class RowStore:
    """One data set's cached row values, as the rows of one 2-D tensor.

    The first ``n_pinned`` rows hold the data's columns (the variables' values); the
    other rows are handed out by `take` and given back to ``free``. The tensor is
    allocated for ``max_rows`` rows up front but only touched as rows are first handed
    out (rows at or above ``top`` never have been), so memory in use grows with the
    entries; it grows by doubling if a batch needs more, and never shrinks.
    """

    def __init__(self, columns: torch.Tensor, max_rows: int = 256):
        n_pinned, n_rows = columns.shape
        self.max_rows = max(int(max_rows), 1)
        self.limit_rows = self.max_rows  # rows kept between batches (`SubexpressionCache.trim`)
        capacity = n_pinned + self.max_rows
        self.buffer = torch.empty((capacity, n_rows), dtype=columns.dtype, device=columns.device)
        self.buffer[:n_pinned] = columns
        self.n_pinned = self.top = n_pinned
        self.row_bytes = n_rows * self.buffer.element_size()
        self.free: list = []  # rows given back

    @property
    def pinned_bytes(self) -> int:
        """Bytes of the data's own columns (always held)."""
        return self.n_pinned * self.row_bytes

    def compact(self, live: list) -> list:
        """Move the rows ``live`` (in that order) to a fresh buffer of ``max_rows`` rows
        (more if ``live`` needs them) and free the old one; returns their new indices.
        Every other row is forgotten."""
        n_pinned, n = self.n_pinned, len(live)
        buffer = torch.empty((n_pinned + max(self.max_rows, n), self.buffer.shape[1]),
                             dtype=self.buffer.dtype, device=self.buffer.device)
        buffer[:n_pinned] = self.buffer[:n_pinned]
        if n:
            index = torch.tensor(live, dtype=torch.long, device=buffer.device)
            torch.index_select(self.buffer, 0, index, out=buffer[n_pinned:n_pinned + n])
        self.buffer = buffer
        self.top = n_pinned + n
        self.free = []
        return list(range(n_pinned, n_pinned + n))

    @property
    def capacity(self) -> int:
        return self.buffer.shape[0]

    @property
    def reserved_bytes(self) -> int:
        """Bytes of the rows in use or given back (rows never handed out are not counted)."""
        return self.top * self.row_bytes

    def reserve(self, k: int) -> None:
        """Make sure `take` can hand out ``k`` rows without growing (call before reading
        ``buffer`` for a batch: growing replaces it)."""
        self.free.sort(reverse=True)  # `take` pops from the end: ascending, mostly contiguous runs
        missing = k - len(self.free) - (self.capacity - self.top)
        if missing > 0:
            old = self.capacity
            buffer = torch.empty((max(2 * old, old + missing), self.buffer.shape[1]),
                                 dtype=self.buffer.dtype, device=self.buffer.device)
            buffer[:self.top] = self.buffer[:self.top]
            self.buffer = buffer

    def take(self, k: int) -> list:
        """``k`` free row indices, ascending where possible (after `reserve`)."""
        free = self.free
        if len(free) >= k:
            rows = free[-k:]
            del free[-k:]
            rows.reverse()
            return rows
        rows = sorted(free)
        free.clear()
        top = self.top
        self.top = top + k - len(rows)
        rows.extend(range(top, self.top))
        return rows


class SubexpressionCache:
    """LRU cache of sub-expression values keyed by (data fingerprint, expression key).

    ``capacity`` bounds the number of entries and ``max_bytes`` (optional) their bytes;
    the least recently used entries are evicted until both hold, and a value larger
    than ``max_bytes`` is not stored. ``stats`` counts hits, misses and evictions.
    Not thread-safe: use one cache per thread.
    """

    def __init__(self, capacity: int = 1000, max_bytes: int | None = None):
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive int, got {capacity!r}")
        if max_bytes is not None and (not isinstance(max_bytes, int) or isinstance(max_bytes, bool)
                                      or max_bytes < 0):
            raise ValueError(f"max_bytes must be a non-negative int or None, got {max_bytes!r}")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._stats = CacheStats()
        # (fingerprint, key) -> value: a Tensor (from `put`), or, for the evaluator, an
        # int (a row of the fingerprint's RowStore) or a float (a scalar's value).
        self._entries: OrderedDict = OrderedDict()
        self._stores: dict = {}

    # --- reading and writing -------------------------------------------------------------
    def get(self, fingerprint: Fingerprint, key: Hashable) -> torch.Tensor | None:
        """The stored value, or None. A hit makes the entry the most recently used."""
        full_key = (fingerprint, key)
        value = self._entries.get(full_key)
        if value is None:
            self._stats.misses += 1
            return None
        self._entries.move_to_end(full_key)
        self._stats.hits += 1
        if isinstance(value, torch.Tensor):
            return value
        store = self._stores[fingerprint]
        if type(value) is int:
            return store.buffer[value].clone()
        return torch.tensor(value, dtype=store.buffer.dtype, device=store.buffer.device)

    def put(self, fingerprint: Fingerprint, key: Hashable, value: torch.Tensor, frozen: bool = False) -> bool:
        """Store ``value`` (not copied: do not modify it in place afterwards); returns
        whether it was stored.

        A value that requires grad depends on trainable parameters and is refused,
        unless ``frozen=True`` says they will not change while it is cached (it is then
        stored detached; call `invalidate` when they do change). A value larger than
        ``max_bytes`` is refused.
        """
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"cached values must be tensors, got {type(value).__name__}")
        if value.requires_grad:
            if not frozen:
                return False
            value = value.detach()
        nbytes = value.numel() * value.element_size()
        if self.max_bytes is not None and nbytes > self.max_bytes:
            return False
        full_key = (fingerprint, key)
        if full_key in self._entries:
            self._drop(full_key)
        self._entries[full_key] = value
        self._stats.bytes += nbytes
        self._evict_to_limits()
        return True

    def _insert_many(self, items, nbytes: int) -> list:
        """Enter ``((fingerprint, key), value)`` pairs of ``nbytes`` each (the evaluator's
        rows or scalars), then evict to the limits; returns the values not entered."""
        if self.max_bytes is not None and nbytes > self.max_bytes:
            return [value for _, value in items]
        entries = self._entries
        refused = []
        before = len(entries)
        for full_key, value in items:
            if full_key in entries:
                refused.append(value)
            else:
                entries[full_key] = value
        self._stats.bytes += (len(entries) - before) * nbytes
        self._evict_to_limits()
        return refused

    def _enter_new(self, full_keys, values, nbytes: int) -> list:
        """`_insert_many` for keys known to be absent (the evaluator's misses of this call,
        each once): one C-level ``update``. Returns the values not entered."""
        if self.max_bytes is not None and nbytes > self.max_bytes:
            return list(values)
        entries = self._entries
        before = len(entries)
        entries.update(zip(full_keys, values))
        if len(entries) - before != len(values):
            raise AssertionError("_enter_new was given a key the cache already holds")
        self._stats.bytes += len(values) * nbytes
        self._evict_to_limits()
        return []

    def _nbytes(self, fingerprint, value) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        store = self._stores[fingerprint]
        return store.row_bytes if type(value) is int else store.buffer.element_size()

    def _evict_to_limits(self) -> None:
        """Evict least recently used entries until both limits hold."""
        entries, stats, max_bytes, stores = self._entries, self._stats, self.max_bytes, self._stores
        capacity, popitem = self.capacity, entries.popitem
        held = stats.bytes
        evicted = 0
        fingerprint = store = None
        while len(entries) > capacity or (max_bytes is not None and held > max_bytes):
            full_key, value = popitem(last=False)
            evicted += 1
            cls = type(value)
            if cls is int or cls is float:  # the evaluator's rows and scalars: inlined `_forget`
                if full_key[0] is not fingerprint:
                    fingerprint = full_key[0]
                    store = stores[fingerprint]
                if cls is int:
                    store.free.append(value)
                    held -= store.row_bytes
                else:
                    held -= store.buffer.element_size()
            else:
                held -= self._nbytes(full_key[0], value)
        stats.bytes = held
        stats.evictions += evicted
        if held > stats.peak_bytes:
            stats.peak_bytes = held

    def _forget(self, full_key, value) -> None:
        fingerprint = full_key[0]
        self._stats.bytes -= self._nbytes(fingerprint, value)
        if type(value) is int:
            self._stores[fingerprint].free.append(value)

    def _drop(self, full_key) -> None:
        self._forget(full_key, self._entries.pop(full_key))

    def __contains__(self, full_key) -> bool:
        """``(fingerprint, key) in cache``; not counted as a lookup, recency unchanged."""
        return full_key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # --- the evaluator's row stores ---------------------------------------------------------
    def row_store(self, fingerprint: Fingerprint, columns: torch.Tensor) -> RowStore:
        """The RowStore of this data set, made on first use with ``columns`` (features x
        rows) pinned in its first rows."""
        store = self._stores.get(fingerprint)
        if store is None:
            row_bytes = columns.shape[1] * columns.element_size()
            max_rows = self.capacity
            if self.max_bytes is not None:
                max_rows = min(max_rows, self.max_bytes // max(row_bytes, 1))
            store = self._stores[fingerprint] = RowStore(columns, max_rows + 64)
            store.limit_rows = max_rows
        return store

    def make_room(self, fingerprint: Fingerprint, n_rows: int, protected: int = 0) -> None:
        """Before a batch that will take ``n_rows`` rows of the data set's row store: evict
        least recently used entries until those rows fit within the limits, so that the
        store does not grow past them (and need `trim` after). The ``protected`` most
        recently used entries are kept: the batch's own hits, which it reads."""
        store = self._stores.get(fingerprint)
        if store is None:
            return
        entries = self._entries
        room = store.limit_rows - (store.top - store.n_pinned) + len(store.free)
        evictable = len(entries) - protected
        evicted = 0
        while room < n_rows and evictable > 0:
            full_key, value = entries.popitem(last=False)
            evictable -= 1
            evicted += 1
            self._forget(full_key, value)
            if type(value) is int and full_key[0] == fingerprint:
                room += 1
        self._stats.evictions += evicted

    def trim(self, fingerprint: Fingerprint) -> int:
        """After a batch: if the data set's row store has handed out more rows than the
        limits allow (a batch bigger than `make_room` could make room for), move the rows
        of live entries to a store of the limits' size, so that what stays reserved is
        bounded by them. Returns the rows given back (0 when within the limits: the usual
        case, as it copies every live row)."""
        store = self._stores.get(fingerprint)
        if store is None or store.top - store.n_pinned <= store.limit_rows:
            return 0
        entries = self._entries
        keys = [k for k, v in entries.items() if type(v) is int and k[0] == fingerprint]
        before = store.top
        for key, row in zip(keys, store.compact([entries[k] for k in keys])):
            entries[key] = row  # an existing key: its LRU position is kept
        return before - store.top

    # --- invalidation ------------------------------------------------------------------------
    def invalidate(self, predicate: Callable[[Fingerprint, Hashable], bool] | str) -> int:
        """Drop every entry whose key matches; returns how many were dropped.

        ``predicate`` is a function ``(fingerprint, key) -> bool``, or a string: every
        expression key that starts with it is dropped (``"mul(c"`` drops the products
        whose first argument is a constant). Drops are not counted as evictions.
        """
        if isinstance(predicate, str):
            prefix = predicate
            doomed = [k for k in self._entries if isinstance(k[1], str) and k[1].startswith(prefix)]
        elif callable(predicate):
            doomed = [k for k in self._entries if predicate(k[0], k[1])]
        else:
            raise TypeError("invalidate takes a predicate (fingerprint, key) -> bool or a key prefix string")
        for k in doomed:
            self._drop(k)
        return len(doomed)

    def invalidate_data(self, fingerprint: Fingerprint) -> int:
        """Drop every value computed on the data set with this fingerprint (and its row store)."""
        dropped = self.invalidate(lambda fp, key: fp == fingerprint)
        self._stores.pop(fingerprint, None)
        return dropped

    def clear(self) -> None:
        """Drop every entry and free the row stores (the counters are kept)."""
        self._entries.clear()
        self._stores.clear()
        self._stats.bytes = 0

    def reset_stats(self) -> None:
        """Zero hits, misses and evictions; ``peak_bytes`` restarts from the current bytes."""
        self._stats = CacheStats(bytes=self._stats.bytes, peak_bytes=self._stats.bytes)

    # --- reporting ---------------------------------------------------------------------------
    @property
    def stats(self) -> CacheStats:
        """A snapshot: hits, misses, evictions, hit_rate, bytes, entries, peak_bytes, reserved_bytes."""
        s = self._stats
        reserved = sum(store.reserved_bytes for store in self._stores.values())
        return CacheStats(s.hits, s.misses, s.evictions, s.bytes, len(self._entries), s.peak_bytes, reserved)

    def __repr__(self) -> str:
        s = self.stats
        return (f"SubexpressionCache(capacity={self.capacity}, max_bytes={self.max_bytes}, "
                f"entries={s.entries}, bytes={s.bytes}, hit_rate={s.hit_rate:.3f})")
