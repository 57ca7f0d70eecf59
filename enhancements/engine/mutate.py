"""PySR's mutations and crossover on postfix programs, compiled.

Each mutation reads a program (``ops``, ``feat``, ``val``, ``length``) and writes the
new one into output rows, returning its length (-1 when the mutation does not apply).
`mutate` picks the mutation by the weights conditioned on the formula (as
SymbolicRegression.jl and `hybrid_optimization.mutations` do: no operator change on a
leaf, no growth at the size limit, ...) and retries up to 10 times until the result
is valid (`trees.is_valid`). The mutation codes follow ``options.MUTATIONS``.

    >>> import numpy as np
    >>> from enhancements.hybrid_optimization.options import Options
    >>> from enhancements.engine.programs import OperatorTable, encode
    >>> from enhancements.engine.trees import make_rules
    >>> from enhancements.engine.rng import seed_states
    >>> opts = Options(binary_operators=["+", "*"], maxsize=10, soft_tree_seed_fraction=0)
    >>> table = OperatorTable.from_options(opts); rules = make_rules(opts, table, 2, 10)
    >>> from pysr_baseline.parsing import parse_expression
    >>> block = encode([parse_expression("x0 * x1")], table, 10)
    >>> out = encode([parse_expression("x0")], table, 16)
    >>> kind, n = mutate(block.ops[0], block.feat[0], block.val[0], block.length[0], seed_states(
    ...     np.random.SeedSequence(0), 1), 0, 1.0, 10.0, mutation_params(opts), rules, out.ops[0], out.feat[0],
    ...     out.val[0], scratch(16))
    >>> 0 < n <= 10
    True
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit


from enhancements.engine.evaluate import binary_scalar, unary_scalar
from enhancements.engine.programs import CONST, VAR
from enhancements.engine.rng import below, normal, uniform
from enhancements.engine.trees import (analyse, check, child_end, complexity, copy_range, put_leaf, put_token,
                                       random_code, random_tree)
from enhancements.hybrid_optimization.options import MUTATIONS

_JIT = dict(cache=True, nogil=True, error_model="numpy")
_INLINE = dict(_JIT, inline="always")  # helpers taking the `Rules` tuple (see trees._INLINE)
MAX_ATTEMPTS = 10
(M_CONSTANT, M_OPERATOR, M_FEATURE, M_SWAP, M_ROTATE, M_ADD, M_INSERT, M_DELETE, M_SIMPLIFY, M_RANDOMIZE,
 M_NOTHING, M_OPTIMIZE, M_SOFT_TREE) = range(len(MUTATIONS))

MutationParams = namedtuple("MutationParams", ["weights", "perturbation_factor", "probability_negate_constant",
                                               "should_simplify"])


def mutation_params(options) -> MutationParams:
    w = options.mutation_weights()
    return MutationParams(np.array([w[m] for m in MUTATIONS], dtype=np.float64), float(options.perturbation_factor),
                          float(options.probability_negate_constant), bool(options.should_simplify))


@njit(**_INLINE)
def _nth(ops, length, rules, kind, k):
    """The position of the k-th token of a kind: 0 constants, 1 variables, 2 operators,
    3 binary operators, 4 leaves."""
    seen = 0
    for t in range(length):
        code = ops[t]
        a = rules.arity[code]
        hit = ((kind == 0 and code == CONST) or (kind == 1 and code == VAR) or (kind == 2 and a > 0)
               or (kind == 3 and a == 2) or (kind == 4 and a == 0))
        if hit:
            if seen == k:
                return t
            seen += 1
    return -1


@njit(**_JIT)
def _copy_all(ops, feat, val, length, o_ops, o_feat, o_val):
    return copy_range(ops, feat, val, 0, length, o_ops, o_feat, o_val, 0)


@njit(**_INLINE)
def _new_node(state, i, rules, keep_a, keep_b, ops, feat, val, o_ops, o_feat, o_val, pos):
    """A new random operator whose arguments are fresh leaves, except one (at a random
    position) that is the range ``[keep_a, keep_b)`` of the source when keep_a >= 0."""
    code = random_code(state, i, rules, 0)
    if code < 0:
        return -1
    a = rules.arity[code]
    keep_at = below(state, i, a) if keep_a >= 0 else -1
    for s in range(a):
        if s == keep_at:
            pos = copy_range(ops, feat, val, keep_a, keep_b, o_ops, o_feat, o_val, pos)
        else:
            pos = put_leaf(state, i, rules.n_features, o_ops, o_feat, o_val, pos)
    return put_token(code, 0, 0.0, o_ops, o_feat, o_val, pos)


@njit(**_JIT)
def apply_mutation(kind, ops, feat, val, length, state, i, temperature, curmax, params, rules, size, o_ops,
                   o_feat, o_val, s_ops, s_feat, s_val, n_const, n_var, n_op, n_bin):
    """One attempt of mutation ``kind``; returns the new length or -1."""
    if kind == M_CONSTANT:
        if n_const == 0:
            return -1
        t = _nth(ops, length, rules, 0, below(state, i, n_const))
        n = _copy_all(ops, feat, val, length, o_ops, o_feat, o_val)
        max_change = params.perturbation_factor * temperature + 1.1
        factor = max_change ** uniform(state, i)
        v = val[t] * factor if uniform(state, i) < 0.5 else val[t] / factor
        if uniform(state, i) < params.probability_negate_constant:
            v = -v
        o_val[t] = v
        return n
    if kind == M_OPERATOR:
        if n_op == 0:
            return -1
        t = _nth(ops, length, rules, 2, below(state, i, n_op))
        code = random_code(state, i, rules, rules.arity[ops[t]])
        if code < 0:
            return -1
        n = _copy_all(ops, feat, val, length, o_ops, o_feat, o_val)
        o_ops[t] = code
        return n
    if kind == M_FEATURE:
        if n_var == 0 or rules.n_features < 2:
            return -1
        t = _nth(ops, length, rules, 1, below(state, i, n_var))
        f = below(state, i, rules.n_features - 1)
        if f >= feat[t]:
            f += 1
        n = _copy_all(ops, feat, val, length, o_ops, o_feat, o_val)
        o_feat[t] = f
        return n
    if kind == M_SWAP:
        if n_bin == 0:
            return -1
        t = _nth(ops, length, rules, 3, below(state, i, n_bin))
        r = t - 1
        lft = r - size[r]
        start = t - size[t] + 1
        pos = copy_range(ops, feat, val, 0, start, o_ops, o_feat, o_val, 0)
        pos = copy_range(ops, feat, val, r - size[r] + 1, r + 1, o_ops, o_feat, o_val, pos)
        pos = copy_range(ops, feat, val, lft - size[lft] + 1, lft + 1, o_ops, o_feat, o_val, pos)
        return copy_range(ops, feat, val, t, length, o_ops, o_feat, o_val, pos)
    if kind == M_ROTATE:
        # R(.., P(.., c_j, ..), ..) -> P(.., R(.., c_j, ..), ..) for an operator child P of R
        n_rot = 0
        for t in range(length):
            a = rules.arity[ops[t]]
            for s in range(a):
                if rules.arity[ops[child_end(t, s, a, size)]] > 0:
                    n_rot += 1
                    break
        if n_rot == 0:
            return -1
        pick = below(state, i, n_rot)
        root = -1
        seen = 0
        for t in range(length):
            a = rules.arity[ops[t]]
            has = False
            for s in range(a):
                if rules.arity[ops[child_end(t, s, a, size)]] > 0:
                    has = True
            if has:
                if seen == pick:
                    root = t
                    break
                seen += 1
        ra = rules.arity[ops[root]]
        n_slots = 0
        for s in range(ra):
            if rules.arity[ops[child_end(root, s, ra, size)]] > 0:
                n_slots += 1
        which = below(state, i, n_slots)
        slot = -1
        seen = 0
        for s in range(ra):
            if rules.arity[ops[child_end(root, s, ra, size)]] > 0:
                if seen == which:
                    slot = s
                    break
                seen += 1
        pivot = child_end(root, slot, ra, size)
        pa = rules.arity[ops[pivot]]
        j = below(state, i, pa)
        cj = child_end(pivot, j, pa, size)
        pos = copy_range(ops, feat, val, 0, root - size[root] + 1, o_ops, o_feat, o_val, 0)
        for s in range(pa):
            if s == j:  # R with c_j in the pivot's slot
                for s2 in range(ra):
                    c = cj if s2 == slot else child_end(root, s2, ra, size)
                    pos = copy_range(ops, feat, val, c - size[c] + 1, c + 1, o_ops, o_feat, o_val, pos)
                pos = copy_range(ops, feat, val, root, root + 1, o_ops, o_feat, o_val, pos)
            else:
                c = child_end(pivot, s, pa, size)
                pos = copy_range(ops, feat, val, c - size[c] + 1, c + 1, o_ops, o_feat, o_val, pos)
        pos = copy_range(ops, feat, val, pivot, pivot + 1, o_ops, o_feat, o_val, pos)
        return copy_range(ops, feat, val, root + 1, length, o_ops, o_feat, o_val, pos)
    if kind == M_ADD:
        if uniform(state, i) < 0.5:  # append: a leaf becomes an operator on fresh leaves
            t = _nth(ops, length, rules, 4, below(state, i, length - n_op))
            pos = copy_range(ops, feat, val, 0, t, o_ops, o_feat, o_val, 0)
            pos = _new_node(state, i, rules, -1, -1, ops, feat, val, o_ops, o_feat, o_val, pos)
            return copy_range(ops, feat, val, t + 1, length, o_ops, o_feat, o_val, pos)
        return _new_node(state, i, rules, 0, length, ops, feat, val, o_ops, o_feat, o_val, 0)  # prepend
    if kind == M_INSERT:
        t = below(state, i, length)
        start = t - size[t] + 1
        pos = copy_range(ops, feat, val, 0, start, o_ops, o_feat, o_val, 0)
        pos = _new_node(state, i, rules, start, t + 1, ops, feat, val, o_ops, o_feat, o_val, pos)
        return copy_range(ops, feat, val, t + 1, length, o_ops, o_feat, o_val, pos)
    if kind == M_DELETE:
        if n_op == 0:
            return -1
        t = _nth(ops, length, rules, 2, below(state, i, n_op))
        a = rules.arity[ops[t]]
        c = child_end(t, below(state, i, a), a, size)
        pos = copy_range(ops, feat, val, 0, t - size[t] + 1, o_ops, o_feat, o_val, 0)
        pos = copy_range(ops, feat, val, c - size[c] + 1, c + 1, o_ops, o_feat, o_val, pos)
        return copy_range(ops, feat, val, t + 1, length, o_ops, o_feat, o_val, pos)
    if kind == M_SIMPLIFY:
        return fold_constants(ops, feat, val, length, rules, o_ops, o_feat, o_val)
    if kind == M_RANDOMIZE:
        top = max(1, int(curmax))
        return random_tree(state, i, 1 + below(state, i, top), rules, o_ops, o_feat, o_val, s_ops, s_feat, s_val)
    # do_nothing (and optimize / soft_tree, which the compiled engine leaves to the search)
    return _copy_all(ops, feat, val, length, o_ops, o_feat, o_val)


@njit(**_JIT)
def fold_constants(ops, feat, val, length, rules, o_ops, o_feat, o_val):
    """Constant folding: an operator whose arguments are all constants becomes their
    (finite) value. Returns the new length."""
    pos = 0
    for t in range(length):
        code = ops[t]
        a = rules.arity[code]
        if a == 0 or code >= 32:
            pos = put_token(code, feat[t], val[t], o_ops, o_feat, o_val, pos)
            continue
        consts = pos >= a
        for k in range(a):
            if consts and o_ops[pos - 1 - k] != CONST:
                consts = False
        if consts:
            v = unary_scalar(code, o_val[pos - 1]) if a == 1 else binary_scalar(code, o_val[pos - 2], o_val[pos - 1])
            if np.isfinite(v):
                pos -= a
                pos = put_token(CONST, 0, v, o_ops, o_feat, o_val, pos)
                continue
        pos = put_token(code, feat[t], val[t], o_ops, o_feat, o_val, pos)
    return pos


@njit(**_JIT)
def choose(ops, feat, length, state, i, curmax, params, rules, size, depth, counts, w):
    """A mutation code drawn by the weights conditioned on this formula (SymbolicRegression.jl's
    rules); fills ``counts`` with (constants, variables, operators, binary, rotatable)."""
    d = analyse(ops, length, rules.arity, size, depth)
    n_const = n_var = n_op = n_bin = n_rot = 0
    for t in range(length):
        code = ops[t]
        a = rules.arity[code]
        if code == CONST:
            n_const += 1
        elif code == VAR:
            n_var += 1
        else:
            n_op += 1
            if a == 2:
                n_bin += 1
            for s in range(a):
                if rules.arity[ops[child_end(t, s, a, size)]] > 0:
                    n_rot += 1
                    break
    counts[0], counts[1], counts[2], counts[3], counts[4] = n_const, n_var, n_op, n_bin, n_rot
    w[:] = params.weights
    if length == 1:
        w[M_OPERATOR] = 0.0
        w[M_SWAP] = 0.0
        w[M_DELETE] = 0.0
        w[M_SIMPLIFY] = 0.0
        w[M_ROTATE] = 0.0
    w[M_CONSTANT] *= min(8, n_const) / 8.0
    if n_const == 0:
        w[M_OPTIMIZE] = 0.0
    if n_var == 0 or rules.n_features < 2:
        w[M_FEATURE] = 0.0
    if n_bin == 0:
        w[M_SWAP] = 0.0
    if n_rot == 0:
        w[M_ROTATE] = 0.0
    full = complexity(ops, feat, length, rules) >= curmax or (rules.maxdepth >= 0 and d >= rules.maxdepth)
    if full:
        w[M_ADD] = 0.0
        w[M_INSERT] = 0.0
    if not params.should_simplify:
        w[M_SIMPLIFY] = 0.0
    w[M_OPTIMIZE] = 0.0   # constants are optimised by the search, in a batch
    w[M_SOFT_TREE] = 0.0  # the compiled engine has no soft-tree proposals inside a step
    total = w.sum()
    if total <= 0:
        return M_NOTHING
    r = uniform(state, i) * total
    acc = 0.0
    for k in range(w.shape[0]):
        acc += w[k]
        if r < acc and w[k] > 0:
            return k
    return M_NOTHING


Scratch = namedtuple("Scratch", ["size", "depth", "cum", "count", "size2", "depth2", "counts", "w", "ops", "feat",
                                 "val"])


def scratch(capacity: int) -> Scratch:
    """Work arrays for programs of up to ``capacity`` tokens (one set per search)."""
    return Scratch(np.empty(capacity, np.int64), np.empty(capacity, np.int64), np.empty(capacity + 1),
                   np.empty(capacity, np.int64), np.empty(capacity, np.int64), np.empty(capacity, np.int64),
                   np.zeros(5, np.int64), np.zeros(len(MUTATIONS)), np.zeros(capacity, np.int64),
                   np.zeros(capacity, np.int64), np.zeros(capacity))


@njit(**_JIT)
def mutate(ops, feat, val, length, state, i, temperature, curmax, params, rules, o_ops, o_feat, o_val, W):
    """One mutation: (mutation code, new length or -1 if every attempt broke a limit).
    ``W`` is a `Scratch`."""
    kind = choose(ops, feat, length, state, i, curmax, params, rules, W.size, W.depth, W.counts, W.w)
    c = W.counts
    for _ in range(MAX_ATTEMPTS):
        n = apply_mutation(kind, ops, feat, val, length, state, i, temperature, curmax, params, rules, W.size, o_ops,
                           o_feat, o_val, W.ops, W.feat, W.val, c[0], c[1], c[2], c[3])
        if n > 0 and check(o_ops, o_feat, n, curmax, rules, W.size2, W.depth2, W.cum, W.count):
            return kind, n
    return kind, -1


@njit(**_JIT)
def crossover(a_ops, a_feat, a_val, a_len, b_ops, b_feat, b_val, b_len, state, i, curmax, rules, oa_ops, oa_feat,
              oa_val, ob_ops, ob_feat, ob_val, W):
    """Swap a random sub-tree of a with one of b: (length of a's child, of b's) or (-1, -1)
    if no valid pair was found in 10 tries."""
    sa, da, sb, db = W.size, W.depth, W.size2, W.depth2
    analyse(a_ops, a_len, rules.arity, sa, da)
    analyse(b_ops, b_len, rules.arity, sb, db)
    for _ in range(MAX_ATTEMPTS):
        ia = below(state, i, a_len)
        ib = below(state, i, b_len)
        a0, b0 = ia - sa[ia] + 1, ib - sb[ib] + 1
        pos = copy_range(a_ops, a_feat, a_val, 0, a0, oa_ops, oa_feat, oa_val, 0)
        pos = copy_range(b_ops, b_feat, b_val, b0, ib + 1, oa_ops, oa_feat, oa_val, pos)
        na = copy_range(a_ops, a_feat, a_val, ia + 1, a_len, oa_ops, oa_feat, oa_val, pos)
        pos = copy_range(b_ops, b_feat, b_val, 0, b0, ob_ops, ob_feat, ob_val, 0)
        pos = copy_range(a_ops, a_feat, a_val, a0, ia + 1, ob_ops, ob_feat, ob_val, pos)
        nb = copy_range(b_ops, b_feat, b_val, ib + 1, b_len, ob_ops, ob_feat, ob_val, pos)
        if na > 0 and nb > 0 and check(oa_ops, oa_feat, na, curmax, rules, W.ops, W.feat, W.cum, W.count) and check(
                ob_ops, ob_feat, nb, curmax, rules, W.ops, W.feat, W.cum, W.count):
            return na, nb
    return -1, -1
