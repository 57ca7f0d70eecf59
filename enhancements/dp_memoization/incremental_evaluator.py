"""Evaluate many formulas at once, computing each distinct sub-tree once.

The evaluator turns a batch of formulas into one DAG of unique sub-trees (hash-consing
on `Expression.key`; see `subtree_dag`), takes every sub-tree it can from the
`SubexpressionCache`, and computes the rest grouped by (level, operator): all nodes of
a group are one tensor call on their children's stacked rows. Python's per-call
overhead (~5-20 us) is thus paid per group, not per node, and a mutant, which shares
all but one path with its parent, costs only that path.

    >>> import torch
    >>> from pysr_baseline.expression import Expression
    >>> X = torch.linspace(0.5, 2.0, 6, dtype=torch.float64).reshape(3, 2)
    >>> ev = IncrementalEvaluator(X)
    >>> from pysr_baseline.parsing import parse_expression
    >>> f, g = parse_expression("x0 * cos(x1)"), parse_expression("x0 * cos(x1) + 1.5")
    >>> ev.evaluate([f, g]).shape
    torch.Size([2, 3])
    >>> ev.counters.nodes_computed       # cos(x1), x0 * cos(x1) and the +: three nodes
    3

Values equal `Expression.evaluate` on the same data, bit for bit, NaN and inf included:
the same torch kernels see the same numbers, only stacked. A constant-only sub-tree is
computed on scalars, as the plain evaluation does, and broadcast.

How it stays fast: row values live in the data set's `RowStore` (one 2-D tensor), so a
level reads its groups' operands with one ``index_select`` per operand position into a
reused buffer, and each group writes its rows in place with the operator's ``out=``
form; the scalars of a call live in one vector the same way. Nothing is allocated per
node, and per call only the returned tensor (pass ``out=`` to reuse one).
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch

from pysr_baseline.expression import Expression
from pysr_baseline.operators import BUILTIN_OPERATORS
from enhancements.dp_memoization.cache import RowStore, SubexpressionCache, data_fingerprint
from enhancements.dp_memoization.subtree_dag import (R, RR, RS, S, SR, SS, SubtreeDag, build_memoized, build_plain,
                                                     group_columns)


def _cube_out(a, out):
    torch.mul(a, a, out=out)
    return torch.mul(out, a, out=out)  # (a * a) * a: rounds as the operator's a * a * a


def _periodic_out(fn):
    """``fn(a, out=out)`` for sin, cos and tan, without the vector library's slow path.

    MKL's sin/cos/tan take a slow path (2-4x) for every NaN or infinite input, and a
    search stream is full of NaN. Those inputs are computed as 0 and made NaN again by
    adding ``0 * a`` (NaN exactly where ``a`` is NaN or infinite, otherwise a zero of
    ``a``'s sign, which leaves every value, -0.0 included, as it was). The other
    elements go through the same kernel as ``fn(a)``: the same bits.
    """
    def out_fn(a, out):
        torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0, out=out)
        fn(out, out=out)
        return out.add_(a, alpha=0.0)
    out_fn.__name__ = f"{fn.__name__}_out"
    return out_fn


# The built-in operators' exact functions in their ``out=`` form (the same kernels as op.fn).
_OUT_FUNCTIONS = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "neg": torch.neg, "square": torch.square, "cube": _cube_out, "sqrt": torch.sqrt,
    "exp": torch.exp, "log": torch.log, "abs": torch.abs, "sin": _periodic_out(torch.sin),
    "cos": _periodic_out(torch.cos), "tan": _periodic_out(torch.tan), "tanh": torch.tanh,
    "inv": torch.reciprocal,
}


@dataclass
class EvaluatorCounters:
    """Work done since the last `IncrementalEvaluator.reset_counters`.

    Every node of every requested formula is accounted for exactly once:
    ``nodes_requested = nodes_from_cache + nodes_shared + leaves_loaded + nodes_computed``.
    A sub-tree whose value the cache held when the call began counts all its nodes as
    served from the cache, each time the batch holds it (a one-at-a-time evaluation with
    the same cache would be served each time); ``nodes_from_cache_again`` says how many
    of those were repeats within a call. A sub-tree computed in the call and met again
    in it counts all its nodes as shared. Every leaf met outside those counts as loaded.
    """

    formulas: int = 0
    nodes_requested: int = 0     # what a plain, one-at-a-time evaluation visits
    nodes_from_cache: int = 0    # served by the SubexpressionCache
    nodes_shared: int = 0        # computed in the same call, met again (hash-consing)
    leaves_loaded: int = 0       # variables and constants: served without compute
    nodes_computed: int = 0      # operator nodes computed
    node_rows_computed: int = 0  # rows computed, summed over computed nodes (a scalar: 1)
    tensor_calls: int = 0        # operator calls (one per group)
    nodes_from_cache_again: int = 0  # of nodes_from_cache: a cached sub-tree met again in a call

    @property
    def cache_share(self) -> float:
        """Share of the requested node evaluations served from the cache."""
        return self.nodes_from_cache / self.nodes_requested if self.nodes_requested else 0.0

    @property
    def reuse_share(self) -> float:
        """Share of the requested node evaluations not recomputed (cache or in-batch sharing)."""
        reused = self.nodes_from_cache + self.nodes_shared
        return reused / self.nodes_requested if self.nodes_requested else 0.0

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(cache_share=self.cache_share, reuse_share=self.reuse_share)
        return d


# Built-in operators whose kernel is not the same function on every element: PyTorch's
# pow runs the vectorised pow on contiguous runs and the scalar std::pow elsewhere (a
# strided data column, a 0-dim scalar, the tail of a row), which differ in the last
# bit. Their nodes are computed one at a time on operands laid out as the plain
# evaluation lays them out (a column of X, a row, a 0-dim scalar): the same bits.
_ONE_AT_A_TIME = frozenset({"pow"})


def _out_function(op):
    """A built-in operator's ``out=`` function, or None (any other operator)."""
    return _OUT_FUNCTIONS.get(op.name) if BUILTIN_OPERATORS.get(op.name) is op else None


def _apply(op, fast, args, dest: torch.Tensor) -> None:
    """``dest[:] = op(*args)``: a built-in operator (``fast``, its `_out_function`) writes
    in place, any other operator runs its own function and is copied (broadcast)."""
    if fast is not None:
        fast(*args, out=dest)
    else:
        dest.copy_(op.fn(*args).expand(dest.shape))


def _long_tensor(values: list, device) -> torch.Tensor:
    """``torch.tensor(values, dtype=torch.long)``, 3-4x faster for long lists (through
    an ``array``, whose conversion from a list runs in C)."""
    t = torch.frombuffer(array("q", values), dtype=torch.long) if values else torch.empty(0, dtype=torch.long)
    return t if t.device == device else t.to(device)


def _as_data(X, dtype, device) -> torch.Tensor:
    if isinstance(X, np.ndarray):
        if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
            raise TypeError(f"X must be real-valued, got numpy dtype {X.dtype}")
        X = torch.from_numpy(X)
    elif not isinstance(X, torch.Tensor):
        raise TypeError(f"X must be a torch.Tensor or numpy array, got {type(X).__name__}")
    if X.is_complex() or X.dtype == torch.bool:
        raise TypeError(f"X must be real-valued, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples x features), got shape {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError("X has no rows")
    return X.detach().to(device=device if device is not None else X.device, dtype=dtype).clone()


def _check_exprs(exprs) -> list:
    if isinstance(exprs, Expression):
        raise TypeError("pass a sequence of Expressions; wrap a single formula in a list")
    exprs = list(exprs)
    for i, e in enumerate(exprs):
        if not isinstance(e, Expression):
            raise TypeError(f"exprs[{i}] is a {type(e).__name__}, not an Expression")
    return exprs


class IncrementalEvaluator:
    """Batched, memoized evaluation of discrete formulas on one data set ``X``.

    ``evaluate(exprs)`` returns a ``(len(exprs), n_rows)`` tensor equal to
    ``torch.stack([e.evaluate(X) for e in exprs])``. ``cache`` (a `SubexpressionCache`,
    which may be shared with evaluators on other data: entries are keyed by a
    fingerprint of ``X``) keeps sub-tree values between calls; by default a private one
    is made. ``memoize=False`` computes every node of every formula (still batched by
    group): the ablation baseline for the cache. ``X`` is copied (to ``dtype`` on
    ``device``), so later changes to the caller's tensor do not reach the evaluator.
    Operators are identified by name (as in `Expression.key`).

        >>> ev = IncrementalEvaluator(torch.ones(4, 1, dtype=torch.float64))
        >>> from pysr_baseline.parsing import parse_expression
        >>> ev.evaluate([parse_expression("x0 + 1")])
        tensor([[2., 2., 2., 2.]], dtype=torch.float64)
    """

    def __init__(self, X, cache: SubexpressionCache | None = None, memoize: bool = True,
                 device=None, dtype: torch.dtype = torch.float64):
        if cache is not None and not isinstance(cache, SubexpressionCache):
            raise TypeError(f"cache must be a SubexpressionCache, got {type(cache).__name__}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        self.X = _as_data(X, dtype, device)
        self.n_rows, self.n_features = self.X.shape
        self.dtype, self.device = self.X.dtype, self.X.device
        self.fingerprint = data_fingerprint(self.X)
        self.memoize = bool(memoize)
        if cache is None and self.memoize:
            cache = SubexpressionCache(capacity=100_000, max_bytes=256 * 2**20)
        self.cache = cache if self.memoize else None
        self._columns = self.X.T.contiguous()
        self._own_store = None if self.memoize else RowStore(self._columns)
        self._buffers = [self.X.new_empty((0, self.n_rows)) for _ in range(3)]  # 2 operands, 1 result
        self.counters = EvaluatorCounters()

    def reset_counters(self) -> None:
        self.counters = EvaluatorCounters()

    def _store(self) -> RowStore:
        if self.cache is None:
            return self._own_store
        return self.cache.row_store(self.fingerprint, self._columns)

    # --- public entry points --------------------------------------------------------------
    def evaluate(self, exprs: Sequence[Expression], out: torch.Tensor | None = None) -> torch.Tensor:
        """Values of every formula on every row: shape ``(len(exprs), n_rows)``.

        ``out``, if given, is a contiguous tensor of that shape and dtype that receives
        the result (reusing one spares allocating fresh memory on every call).
        """
        exprs = _check_exprs(exprs)
        shape = (len(exprs), self.n_rows)
        if out is not None and (not isinstance(out, torch.Tensor) or tuple(out.shape) != shape
                                or out.dtype != self.dtype or out.device != self.device
                                or not out.is_contiguous()):
            raise ValueError(f"out must be a contiguous {self.dtype} tensor of shape {shape} on {self.device}")
        if not exprs:
            return self.X.new_empty(shape) if out is None else out
        store = self._store()
        dag = SubtreeDag()
        if self.cache is not None:
            build_memoized(dag, exprs, self.fingerprint, self.cache._entries, self.n_features, self.n_rows)
        else:
            build_plain(dag, exprs, self.n_features, None, memoize=False)
        return self._execute(dag, store, out)

    def evaluate_with_constants(self, exprs: Sequence[Expression],
                                constants: Sequence[torch.Tensor]) -> torch.Tensor:
        """Like `evaluate`, with formula i's constants (preorder, as `Expression.constants`)
        replaced by the 1-D tensor ``constants[i]``, which may require grad.

        Sub-trees that contain constants are neither cached nor shared between formulas
        (each formula has its own parameters); constant-free sub-trees are both. The
        constants are cast to the evaluator's dtype.

            >>> ev = IncrementalEvaluator(torch.ones(2, 1, dtype=torch.float64))
            >>> c = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
            >>> from pysr_baseline.parsing import parse_expression
            >>> ev.evaluate_with_constants([parse_expression("x0 * 3.0")], [c]).sum().backward()
            >>> c.grad
            tensor([2.], dtype=torch.float64)
        """
        exprs = _check_exprs(exprs)
        if len(constants) != len(exprs):
            raise ValueError(f"got {len(constants)} constant vector(s) for {len(exprs)} formula(s)")
        per_formula = []
        for i, (e, c) in enumerate(zip(exprs, constants)):
            c = torch.as_tensor(c)
            n_const = sum(1 for n in e.nodes() if n.is_constant)
            if c.ndim != 1 or c.shape[0] != n_const:
                raise ValueError(f"constants[{i}] must be 1-D with {n_const} value(s) (formula {i}'s "
                                 f"constants), got shape {tuple(c.shape)}")
            per_formula.append(c.to(device=self.device, dtype=self.dtype).unbind(0))
        if not exprs:
            return self.X.new_empty((0, self.n_rows))
        store = self._store()
        dag = SubtreeDag()
        entries = self.cache._entries if self.cache is not None else None
        build_plain(dag, exprs, self.n_features, per_formula, self.memoize, self.fingerprint, entries,
                    self.n_rows)
        return self._execute_autograd(dag, store)

    # --- computing, no grad -------------------------------------------------------------------
    def _execute(self, dag: SubtreeDag, store: RowStore, out: torch.Tensor | None) -> torch.Tensor:
        """Compute the groups level by level: per level one gather per operand kind (for
        all its groups at once), then one operator call per group on slices of it, writing
        into the group's store rows (row values) or slots of one scalar vector."""
        groups, n_rows = dag.groups, self.n_rows
        order = sorted(groups)  # by level
        n_fresh = sum(len(groups[gk]) >> 2 for gk in order if gk[2] != S and gk[2] != SS) + len(dag.external)
        if self.cache is not None:
            self.cache.make_room(self.fingerprint, n_fresh, protected=dag.counts[4])
        store.reserve(n_fresh)
        self._copy_external(dag, store)
        n_known = len(dag.scalars)
        plans, flat, fresh = [], [], _Fresh(n_known)
        start = 0
        while start < len(order):
            end, level = start, order[start][0]
            while end < len(order) and order[end][0] == level:
                end += 1
            plans.append(_plan_level(order[start:end], dag, store, flat, fresh))
            start = end
        index = _long_tensor(flat, self.device)
        # Known scalars, then a slot for each scalar to compute (frombuffer refuses an empty buffer).
        scalars = torch.frombuffer(array("d", dag.scalars + [0.0] * (fresh.slot - n_known)) or array("d", [0.0]),
                                   dtype=torch.float64).to(self.dtype).to(self.device)
        g_a, g_b, scratch = self._reserve(max((max(p[1], p[3]) for p in plans), default=0))
        buffer = store.buffer  # fixed from here on: the store does not grow below
        columns = [self.X[:, f] for f in range(self.n_features)]
        for plan in plans:
            _run_level(plan, buffer, scalars, index, g_a, g_b, scratch, columns)
        result = self._assemble(dag, buffer, scalars, out)
        self._remember(dag, store, fresh, scalars, n_known)
        if self.cache is not None:
            self.cache.trim(self.fingerprint)
        self._count(dag, fresh.n_rows_nodes * n_rows + fresh.slot - n_known)
        return result

    def _copy_external(self, dag: SubtreeDag, store: RowStore) -> None:
        """Row tensors someone stored with `put` join this call as store rows."""
        val = dag.val
        for i in dag.external:
            row = store.take(1)[0]
            store.buffer[row] = val[i]
            val[i] = row
            dag.borrowed.append(row)

    def _reserve(self, k: int) -> list:
        """The reused operand and result buffers, grown (by doubling) to ``k`` rows."""
        if self._buffers[0].shape[0] < k:
            k = max(k, 2 * self._buffers[0].shape[0])
            self._buffers = [self.X.new_empty((k, self.n_rows)) for _ in range(3)]
        return self._buffers

    def _assemble(self, dag: SubtreeDag, buffer: torch.Tensor, scalars: torch.Tensor,
                  out: torch.Tensor | None) -> torch.Tensor:
        """The roots' rows (one gather); scalar roots broadcast from their slots."""
        val, info = dag.val, dag.info
        rows, scalar_at = [], []
        for j, r in enumerate(dag.roots):
            if info[r] & 1:
                rows.append(0)
                scalar_at.append(j)
            else:
                rows.append(val[r])
        index = _long_tensor(rows, self.device)
        if out is None:
            out = buffer.index_select(0, index)
        else:
            torch.index_select(buffer, 0, index, out=out)
        if scalar_at:
            roots = dag.roots
            slots = torch.tensor([val[roots[j]] for j in scalar_at], dtype=torch.long, device=self.device)
            out.index_copy_(0, torch.tensor(scalar_at, dtype=torch.long, device=self.device),
                            scalars.index_select(0, slots).unsqueeze(1).expand(len(scalar_at), self.n_rows))
        return out

    def _remember(self, dag: SubtreeDag, store: RowStore, fresh: "_Fresh", scalars: torch.Tensor,
                  n_known: int) -> None:
        """Enter the computed values in the cache; give back the store rows not kept."""
        unused = dag.borrowed
        cache = self.cache
        if cache is None:
            unused.extend(fresh.rows)
        else:
            keys, rows = fresh.row_keys, fresh.rows
            if None in keys:  # not to be cached (a `put` value of another shape holds the key)
                unused.extend(row for key, row in zip(keys, rows) if key is None)
                keys, rows = _without_none(keys, rows)
            unused.extend(cache._enter_new(keys, rows, store.row_bytes))
            if fresh.scalar_keys:
                keys, values = fresh.scalar_keys, scalars[n_known:].tolist()
                if None in keys:
                    keys, values = _without_none(keys, values)
                cache._enter_new(keys, values, scalars.element_size())
        if unused:
            store.free.extend(unused)

    def _count(self, dag: SubtreeDag, node_rows: int) -> None:
        requested, from_cache, shared, leaves, hits, misses, again = dag.counts
        c = self.counters
        c.nodes_from_cache_again += again
        c.formulas += len(dag.roots)
        c.nodes_requested += requested
        c.nodes_from_cache += from_cache
        c.nodes_shared += shared
        c.leaves_loaded += leaves
        c.nodes_computed += dag.nodes_computed
        c.node_rows_computed += node_rows
        c.tensor_calls += len(dag.groups)
        if self.cache is not None:
            self.cache._stats.hits += hits
            self.cache._stats.misses += misses

    # --- computing with grad ------------------------------------------------------------------
    def _execute_autograd(self, dag: SubtreeDag, store: RowStore) -> torch.Tensor:
        """The constants path: functional tensor calls, so that autograd sees them."""
        val, info, groups, sc = dag.val, dag.info, dag.groups, dag.scalars
        dtype, device, n_rows = self.dtype, self.device, self.n_rows
        buffer = store.buffer
        stack = torch.stack
        node_rows = 0

        def rows(ids):
            return stack([buffer[val[j]] if type(val[j]) is int else val[j] for j in ids])

        def scalars(ids):
            vs = [sc[val[j]] for j in ids]
            if all(type(v) is float for v in vs):
                return torch.tensor(vs, dtype=dtype, device=device)
            return stack([torch.as_tensor(v, dtype=dtype, device=device) for v in vs])

        new_keys, new_parts = [], []
        for gk in sorted(groups, key=lambda g: g[0]):
            op, ids, c0, c1, keys = group_columns(groups[gk])
            pattern, k = gk[2], len(ids)
            if pattern == R:
                res = op.fn(rows(c0))
            elif pattern == S:
                res = op.fn(scalars(c0))
            elif pattern == RR:
                res = op.fn(rows(c0), rows(c1))
            elif pattern == RS:
                res = op.fn(rows(c0), scalars(c1).unsqueeze(1))
            elif pattern == SR:
                res = op.fn(scalars(c0).unsqueeze(1), rows(c1))
            else:
                res = op.fn(scalars(c0), scalars(c1))
            if pattern == S or pattern == SS:
                node_rows += k
                for i, part in zip(ids, res.expand(k).unbind(0)):
                    val[i] = len(sc)
                    sc.append(part)
            else:
                node_rows += k * n_rows
                for i, part, key in zip(ids, res.expand(k, n_rows).unbind(0), keys):
                    val[i] = part
                    if key is not None:
                        new_keys.append(key)
                        new_parts.append(part)

        out = stack([(buffer[val[r]] if type(val[r]) is int else val[r]) if not info[r] & 1
                     else torch.as_tensor(sc[val[r]], dtype=dtype, device=device).expand(n_rows)
                     for r in dag.roots])
        if self.cache is not None and new_keys:
            # Constant-free sub-trees do not depend on the constants: keep them.
            self.cache.make_room(self.fingerprint, len(new_keys), protected=dag.counts[4])
            store.reserve(len(new_keys))
            taken = store.take(len(new_keys))
            store.buffer.index_copy_(0, torch.tensor(taken, device=device),
                                     stack([part.detach() for part in new_parts]))
            refused = self.cache._insert_many(zip(new_keys, taken), store.row_bytes)
            store.free.extend(refused)
            self.cache.trim(self.fingerprint)
        self._count(dag, node_rows)
        return out


def _without_none(keys, values) -> tuple[list, list]:
    pairs = [(k, v) for k, v in zip(keys, values) if k is not None]
    return [k for k, _ in pairs], [v for _, v in pairs]


class _Fresh:
    """What one call computes: store rows and cache keys of the row-valued nodes, and of
    the scalar ones (their slots run from ``n_known`` to ``slot``), in group order."""

    __slots__ = ("slot", "rows", "row_keys", "scalar_keys", "n_rows_nodes")

    def __init__(self, n_known: int):
        self.slot, self.rows, self.row_keys, self.scalar_keys, self.n_rows_nodes = n_known, [], [], [], 0


def _plan_level(level_groups, dag: SubtreeDag, store: RowStore, flat: list, fresh: _Fresh) -> tuple:
    """Give a level's nodes their store rows or scalar slots, and append to ``flat`` the
    indices its gathers need: the row operands (the first, then the second of r op r),
    the scalar operands of mixed groups, the operands of scalar groups, and the rows of
    groups whose rows are not one contiguous run (those compute into scratch and are
    copied back with one ``index_copy_``)."""
    groups, val = dag.groups, dag.val
    row_groups, scalar_groups, singles = [], [], []
    for gk in level_groups:
        pattern = gk[2]
        g = group_columns(groups[gk])
        fast = _out_function(g[0])
        if fast is not None and g[0].name in _ONE_AT_A_TIME:
            singles.append(_plan_singles(pattern, g, fast, val, store, fresh))
        else:
            (scalar_groups if pattern == S or pattern == SS else row_groups).append((pattern, g[0], fast, g))
    a_at, a_sizes = len(flat), []
    for pattern, _, _, g in row_groups:  # operands that are rows: the first (the second for s op r) ...
        flat.extend([val[j] for j in (g[3] if pattern == SR else g[2])])
        a_sizes.append(len(g[1]))
    b_at = len(flat)
    for pattern, _, _, g in row_groups:  # ... and the second of r op r
        if pattern == RR:
            flat.extend([val[j] for j in g[3]])
    s_at, s_sizes = len(flat), []
    for pattern, _, _, g in row_groups:  # the scalar operand of r op s and s op r
        if pattern == RS or pattern == SR:
            flat.extend([val[j] for j in (g[3] if pattern == RS else g[2])])
            s_sizes.append(len(g[1]))
    n_a, n_b = sum(a_sizes), s_at - b_at
    firsts, d_at = [], len(flat)
    if row_groups:
        rows = store.take(n_a)  # ascending
        at = 0
        for (_, _, _, g), k in zip(row_groups, a_sizes):
            mine = rows[at:at + k]
            at += k
            for i, row in zip(g[1], mine):
                val[i] = row
            if mine[-1] - mine[0] == k - 1:  # ascending and distinct: a contiguous run
                firsts.append(mine[0])
            else:
                firsts.append(-1)
                flat.extend(mine)
        fresh.rows.extend(rows)
        for _, _, _, g in row_groups:
            fresh.row_keys.extend(g[4])
        fresh.n_rows_nodes += n_a
    n_scratch = len(flat) - d_at
    sa_at, sa_sizes = len(flat), []
    for _, _, _, g in scalar_groups:
        flat.extend([val[j] for j in g[2]])
        sa_sizes.append(len(g[1]))
    sb_at = len(flat)
    for pattern, _, _, g in scalar_groups:
        if pattern == SS:
            flat.extend([val[j] for j in g[3]])
    slot, slots = fresh.slot, []
    for _, _, _, g in scalar_groups:
        slots.append(slot)
        for i in g[1]:
            val[i] = slot
            slot += 1
        fresh.scalar_keys.extend(g[4])
    fresh.slot = slot
    return (row_groups, n_a, a_at, n_b, b_at, a_sizes, s_at, s_sizes, firsts, d_at, n_scratch,
            scalar_groups, sa_at, sa_sizes, sb_at, slots, singles)


def _plan_singles(pattern, g, fast, val, store: RowStore, fresh: _Fresh) -> tuple:
    """A group of an `_ONE_AT_A_TIME` operator: its nodes' store rows or scalar slots,
    and each operand as (is a row, row or slot)."""
    op, ids, c0, c1, keys = g
    a_row, b_row = pattern in (R, RR, RS), pattern in (RR, SR)
    if pattern == S or pattern == SS:
        dests = list(range(fresh.slot, fresh.slot + len(ids)))
        fresh.slot += len(ids)
        fresh.scalar_keys.extend(keys)
    else:
        dests = store.take(len(ids))
        fresh.rows.extend(dests)
        fresh.row_keys.extend(keys)
        fresh.n_rows_nodes += len(ids)
    a = [(a_row, val[j]) for j in c0]
    b = [(b_row, val[j]) for j in c1] if pattern not in (R, S) else [None] * len(ids)
    for i, d in zip(ids, dests):
        val[i] = d
    return fast, pattern != S and pattern != SS, a, b, dests


def _run_singles(singles, buffer, scalars, columns) -> None:
    """Compute `_plan_singles` groups node by node, each operand as the plain evaluation
    has it: a data column as a column of X, a row, a scalar as a 0-dim tensor."""
    n_pinned = len(columns)

    def operand(ref):
        is_row, at = ref
        if not is_row:
            return scalars[at]
        return columns[at] if at < n_pinned else buffer[at]

    for fast, row_out, a_refs, b_refs, dests in singles:
        for a, b, d in zip(a_refs, b_refs, dests):
            args = (operand(a),) if b is None else (operand(a), operand(b))
            fast(*args, out=buffer[d] if row_out else scalars[d])


def _run_level(plan, buffer, scalars, index, g_a, g_b, scratch, columns) -> None:
    """Compute one planned level (see `_plan_level`); ``columns``: the data's columns as
    the plain evaluation sees them (views of X)."""
    (row_groups, n_a, a_at, n_b, b_at, a_sizes, s_at, s_sizes, firsts, d_at, n_scratch,
     scalar_groups, sa_at, sa_sizes, sb_at, slots, singles) = plan
    if singles:
        _run_singles(singles, buffer, scalars, columns)
    if row_groups:
        a_parts = torch.index_select(buffer, 0, index[a_at:a_at + n_a], out=g_a[:n_a]).split(a_sizes)
        b_parts = torch.index_select(buffer, 0, index[b_at:b_at + n_b], out=g_b[:n_b]).split_with_sizes(
            [len(g[1]) for p, _, _, g in row_groups if p == RR]) if n_b else ()
        s_parts = (scalars.index_select(0, index[s_at:s_at + sum(s_sizes)]).unsqueeze(1).split(s_sizes)
                   if s_sizes else ())
        ib = js = at = 0
        for (pattern, op, fast, g), a, first in zip(row_groups, a_parts, firsts):
            k = a.shape[0]
            if first >= 0:  # a group's own rows if contiguous, else scratch
                d = buffer[first:first + k]
            else:
                d = scratch[at:at + k]
                at += k
            if pattern == RR:
                args = (a, b_parts[ib])
                ib += 1
            elif pattern == RS:
                args = (a, s_parts[js])
                js += 1
            elif pattern == SR:
                args = (s_parts[js], a)
                js += 1
            else:
                args = (a,)
            _apply(op, fast, args, d)
        if n_scratch:
            buffer.index_copy_(0, index[d_at:d_at + n_scratch], scratch[:n_scratch])
    if scalar_groups:
        n_sa = sum(sa_sizes)
        a_parts = scalars.index_select(0, index[sa_at:sa_at + n_sa]).split(sa_sizes)
        b_sizes = [len(g[1]) for p, _, _, g in scalar_groups if p == SS]
        b_parts = scalars.index_select(0, index[sb_at:sb_at + sum(b_sizes)]).split(b_sizes) if b_sizes else ()
        ib = 0
        for (pattern, op, fast, g), a, slot in zip(scalar_groups, a_parts, slots):
            if pattern == SS:
                args = (a, b_parts[ib])
                ib += 1
            else:
                args = (a,)
            _apply(op, fast, args, scalars[slot:slot + a.shape[0]])
