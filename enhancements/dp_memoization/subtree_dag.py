"""The DAG of one evaluation batch: formulas hash-consed into unique sub-trees.

`build_memoized` and `build_plain` walk a batch of `Expression` trees once and give
every distinct sub-tree (by `Expression.key`) one node of a `SubtreeDag`, so that a
sub-tree met twice is computed once. A sub-tree the `SubexpressionCache` already holds
becomes a known node and is not walked into: a mutant, which shares all but one path
with its parent, costs a walk of that path and of the path's direct children. Nodes
still to compute are grouped by (level, operator, operand pattern); the evaluator
(`incremental_evaluator`) computes each group with one tensor call.

    >>> from pysr_baseline.expression import Expression
    >>> dag = SubtreeDag()
    >>> from pysr_baseline.parsing import parse_expression
    >>> build_plain(dag, [parse_expression("x0 * cos(x1) + 1.5")], n_features=2, constants=None, memoize=True)
    >>> sorted((level, name) for level, name, pattern in dag.groups)
    [(1, 'cos'), (2, 'mul'), (3, 'add')]
"""
from __future__ import annotations

import re

# A constant leaf inside a key: "c" + repr(float) right after "(" or "," or at the start,
# and ending at "," or ")" or the end (so operator names such as "cos" never match).
_CONSTANT_IN_KEY = re.compile(r"(?:^|[(,])c(?:-?inf|nan|-?[0-9][0-9.e+-]*)(?=[,)]|$)")

# Group patterns: what the operands are (R: rows, S: scalars).
R, S, RR, RS, SR, SS = range(6)


class SubtreeDag:
    """The unique sub-trees of one batch.

    Node ``i`` has ``info[i] = 2 * level + is_scalar`` (level 0: known without compute)
    and ``val[i]``: for a row-valued node, its row in the data set's `RowStore` (a
    variable: its pinned column), or None until computed; for a scalar node, its slot
    in ``scalars`` (a constant's or a cached scalar's value; a computed scalar's slot is
    given when it is computed). A tensor a caller stored with `SubexpressionCache.put`
    is kept in ``val`` and listed in ``external`` until the evaluator moves it into the
    store. ``groups`` maps (level, operator name, pattern) to ``[op, id, first operand,
    second operand (-1 for unary), cache key (None: do not cache), id, ...]``: four
    entries per node in one flat list (one ``extend`` per node while walking; see
    `group_columns`). ``counts``: nodes requested, from the cache, shared, leaves;
    cache hits, misses; of the nodes from the cache, those met again after a hit.
    """

    __slots__ = ("val", "info", "scalars", "groups", "roots", "counts", "external", "borrowed")

    def __init__(self):
        self.val, self.info, self.scalars, self.groups, self.roots, self.external = [], [], [], {}, [], []
        self.borrowed = []  # store rows lent to `put` tensors for this call
        self.counts = [0, 0, 0, 0, 0, 0, 0]

    @property
    def nodes_computed(self) -> int:
        return sum(len(g) >> 2 for g in self.groups.values())


def group_columns(group: list) -> tuple:
    """A group's (op, node ids, first operands, second operands, cache keys)."""
    return group[0], group[1::4], group[2::4], group[3::4], group[4::4]


def build_memoized(dag: SubtreeDag, exprs, fp, entries, n_features: int, n_rows: int) -> None:
    """Hash-cons ``exprs`` into ``dag``, taking known sub-trees from the cache's
    ``entries`` (``(fp, key) -> row | float | tensor``) and not walking into them.

    The cache keys of the nodes to compute are the ``(fp, key)`` pairs looked up here,
    ready for the evaluator to enter. The hot loop of the search, hence one specialised
    function with everything local.
    """
    val, info, scalars, groups, external = dag.val, dag.info, dag.scalars, dag.groups, dag.external
    if val:
        raise ValueError("build_memoized needs an empty SubtreeDag")
    val.extend(range(n_features))  # node f is variable f: the store's pinned row f
    info.extend([0] * n_features)
    index = {}
    index_get, entries_get, touch, groups_get = index.get, entries.get, entries.move_to_end, groups.get
    append_val, append_info, append_scalar = val.append, info.append, scalars.append
    row_shape = (n_rows,)
    from_cache = again = shared = leaves = hits = 0

    def visit(node):
        nonlocal from_cache, again, shared, leaves, hits
        op = node.op
        if op is None:  # a leaf: served without compute, every time it is met
            leaves += 1
            feature = node.feature
            if feature is not None:
                if feature < n_features:
                    return feature
                raise ValueError(f"formula uses x{feature} but X has {n_features} column(s)")
            append_val(len(scalars))
            append_scalar(node.value)
            append_info(1)
            return len(val) - 1
        key = node.key
        i = index_get(key)
        if i is not None:
            if info[i] < 2:  # met before in this call as a cache hit: served by the cache again
                from_cache += node.size
                again += node.size
            else:
                shared += node.size
            return i
        i = len(val)
        index[key] = i
        full_key = (fp, key)
        value = entries_get(full_key)
        if value is not None:
            cls = type(value)
            if cls is int:
                touch(full_key)
                hits += 1
                from_cache += node.size
                append_val(value)
                append_info(0)
                return i
            if cls is float:
                touch(full_key)
                hits += 1
                from_cache += node.size
                append_val(len(scalars))
                append_scalar(value)
                append_info(1)
                return i
            if value.ndim == 0 or value.shape == row_shape:  # a tensor stored with `put`
                touch(full_key)
                hits += 1
                from_cache += node.size
                if value.ndim == 0:
                    append_val(len(scalars))
                    append_scalar(float(value))
                    append_info(1)
                else:
                    append_val(value)
                    append_info(0)
                    external.append(i)
                return i
            full_key = None  # a `put` value of another shape holds the key: compute, do not replace
        append_val(None)  # reserves id i: a parent's id comes before its children's
        append_info(0)
        children = node.children
        if len(children) == 1:
            c0 = visit(children[0])
            a = info[c0]
            c1 = -1
            pattern = a & 1
            this = a + 2  # one level up; scalar iff the child is
        else:
            c0 = visit(children[0])
            c1 = visit(children[1])
            a = info[c0]
            b = info[c1]
            pattern = 2 + ((a & 1) << 1) + (b & 1)
            this = ((((a if a > b else b) >> 1) + 1) << 1) | (a & b & 1)
            if pattern == SR and op.commutative:  # c + x as x + c: one group fewer, same bits
                c0, c1, pattern = c1, c0, RS
        info[i] = this
        gk = (this >> 1, op.name, pattern)
        group = groups_get(gk)
        if group is None:
            groups[gk] = group = [op]
        group.extend((i, c0, c1, full_key))
        return i

    requested = 0
    roots = dag.roots
    for e in exprs:
        roots.append(visit(e))
        requested += e.size
    misses = len(index) - hits  # every operator node added is a hit or a miss
    dag.counts = [requested, from_cache, shared, leaves, hits, misses, again]


def build_plain(dag: SubtreeDag, exprs, n_features: int, constants, memoize: bool, fp=None, entries=None,
                n_rows: int | None = None) -> None:
    """Build the DAG node by node (``memoize=False``: nothing shared, nothing cached), or,
    on the constants path (``constants[f]``: formula f's constants in preorder), with
    only the constant-free sub-trees shared between formulas and taken from the cache
    ``entries`` (when given; only row values of ``n_rows`` are taken)."""
    val, info, scalars, groups, counts = dag.val, dag.info, dag.scalars, dag.groups, dag.counts
    index = {}
    row_shape = (n_rows,)
    has_constant = _CONSTANT_IN_KEY.search
    const_iter = None

    def visit(node):
        key = node.key
        shareable = memoize and has_constant(key) is None
        if shareable:
            i = index.get(key)
            if i is not None:
                counts[2] += node.size
                return i
        i = len(val)
        if shareable:
            index[key] = i
        op = node.op
        full_key = (fp, key) if shareable and fp is not None else None
        if op is not None and full_key is not None and entries is not None:
            value = entries.get(full_key)
            if type(value) is int or (value is not None and type(value) is not float and value.shape == row_shape):
                entries.move_to_end(full_key)
                counts[4] += 1
                counts[1] += node.size
                val.append(value)  # a row, or a tensor stored with `put` (used as it is)
                info.append(0)
                return i
            counts[5] += 1
            if value is not None:
                full_key = None  # held by a value of another kind: do not replace it
        if op is None:
            counts[3] += 1
            feature = node.feature
            if feature is None:
                val.append(len(scalars))
                scalars.append(next(const_iter) if constants is not None else node.value)
                info.append(1)
            elif feature < n_features:
                val.append(feature)
                info.append(0)
            else:
                raise ValueError(f"formula uses x{feature} but X has {n_features} column(s)")
            return i
        val.append(None)
        info.append(0)
        c0 = visit(node.children[0])
        a = info[c0]
        if op.arity == 1:
            c1, pattern, this = -1, a & 1, a + 2
        else:
            c1 = visit(node.children[1])
            b = info[c1]
            pattern = 2 + ((a & 1) << 1) + (b & 1)
            this = ((((a if a > b else b) >> 1) + 1) << 1) | (a & b & 1)
        info[i] = this
        groups.setdefault((this >> 1, op.name, pattern), [op]).extend((i, c0, c1, full_key))
        return i

    requested = 0
    for f, e in enumerate(exprs):
        if constants is not None:
            const_iter = iter(constants[f])
        dag.roots.append(visit(e))
        requested += e.size
    counts[0] = requested
