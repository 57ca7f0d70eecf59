"""Compiled helpers on postfix programs: sub-tree extents, complexity, depth, the
validity rules (maxsize, maxdepth, PySR's constraints and nested constraints),
random leaves and trees, and copying token ranges.

In postfix order the sub-tree rooted at token ``t`` is the contiguous range
``[t - size[t] + 1, t]``; a binary node's right child ends at ``t - 1`` and its left
child just before the right child starts. `analyse` fills ``size`` and ``depth`` for
every token in one pass.

`Rules` bundles what these need (a namedtuple, which numba passes as one argument):
the arity and complexity of every opcode, the operators to draw from, variable and
constant complexities, ``maxdepth`` (-1: none), argument limits per opcode (-1: none)
and the nested-constraint triples.

    >>> from enhancements.hybrid_optimization.options import Options
    >>> from enhancements.engine.programs import OperatorTable, encode
    >>> opts = Options(unary_operators=["cos"], constraints={"cos": 3}, soft_tree_seed_fraction=0)
    >>> table = OperatorTable.from_options(opts); rules = make_rules(opts, table, n_features=2, L=30)
    >>> from pysr_baseline.parsing import parse_expression
    >>> block = encode([parse_expression("cos(x0 * x1)"), parse_expression("cos(x0 * x1 + x0)")], table, 30)
    >>> [is_valid(block.ops[m], block.feat[m], block.length[m], 30.0, rules) for m in range(2)]
    [True, False]
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit


from enhancements.engine.programs import CONST, N_CODES, VAR
from enhancements.engine.rng import below, normal, uniform

_JIT = dict(cache=True, nogil=True, error_model="numpy")
# Helpers that take `Rules` are inlined: passing the whole tuple to a call per token
# costs ~0.2 us (measured: complexity() of a 15-token program took 2.7 us, 0.05 inlined).
_INLINE = dict(_JIT, inline="always")

Rules = namedtuple("Rules", [
    "arity", "op_cplx", "binary_codes", "unary_codes", "all_codes", "var_cplx", "const_cplx", "n_features",
    "maxdepth", "arg_limit", "nest_outer", "nest_inner", "nest_limit", "L",
])


def make_rules(options, table, n_features: int, L: int) -> Rules:
    """The validity rules of ``options`` for programs of at most ``L`` tokens."""
    cv = options.complexity_of_variables
    var_cplx = np.asarray(cv if isinstance(cv, tuple) else [cv] * n_features, dtype=np.float64)
    arg_limit = -np.ones((N_CODES, 2), dtype=np.float64)
    for name, limits in options._arg_limits.items():
        code = table.code_of(options.by_name[name])
        for i, lim in enumerate(limits):
            arg_limit[code, i] = lim
    outer, inner, limit = [], [], []
    for name, table_in in options._nested.items():
        for name2, lim in table_in.items():
            outer.append(table.code_of(options.by_name[name]))
            inner.append(table.code_of(options.by_name[name2]))
            limit.append(lim)
    return Rules(table.arity, table.complexity, table.binary_codes, table.unary_codes, table.codes, var_cplx,
                 float(options.complexity_of_constants), int(n_features),
                 -1 if options.maxdepth is None else int(options.maxdepth), arg_limit,
                 np.asarray(outer, dtype=np.int64), np.asarray(inner, dtype=np.int64),
                 np.asarray(limit, dtype=np.int64), int(L))


@njit(**_JIT)
def analyse(ops, length, arity, size, depth):
    """Sub-tree size and depth of every token; returns the root's depth."""
    for t in range(length):
        a = arity[ops[t]]
        if a == 0:
            size[t] = 1
            depth[t] = 1
        elif a == 1:
            size[t] = 1 + size[t - 1]
            depth[t] = 1 + depth[t - 1]
        else:
            r = t - 1
            lft = r - size[r]
            size[t] = 1 + size[lft] + size[r]
            depth[t] = 1 + max(depth[lft], depth[r])
    return depth[length - 1] if length > 0 else 0


@njit(**_JIT)
def child_end(t, s, arity_t, size):
    """Where child ``s`` (0 or 1) of the node at ``t`` ends."""
    if arity_t == 1 or s == 1:
        return t - 1
    return t - 1 - size[t - 1]


@njit(**_INLINE)
def token_cplx(code, f, rules):
    if code == VAR:
        return rules.var_cplx[f]
    if code == CONST:
        return rules.const_cplx
    return rules.op_cplx[code]


@njit(**_INLINE)
def complexity(ops, feat, length, rules):
    var_cplx, op_cplx, cc = rules.var_cplx, rules.op_cplx, rules.const_cplx
    total = 0.0
    for t in range(length):
        code = ops[t]
        total += var_cplx[feat[t]] if code == VAR else (cc if code == CONST else op_cplx[code])
    return total


@njit(**_JIT)
def is_valid(ops, feat, length, curmax, rules):
    """Within ``curmax`` complexity, ``maxdepth``, ``L`` tokens and the constraints."""
    n = max(length, 1)
    return check(ops, feat, length, curmax, rules, np.empty(n, np.int64), np.empty(n, np.int64),
                 np.empty(n + 1), np.empty(n, np.int64))


@njit(**_JIT)
def check(ops, feat, length, curmax, rules, size, depth, cum, count):
    """`is_valid` with scratch arrays (at least ``length`` long; ``cum`` one more) given,
    so that the search's hot loop allocates nothing."""
    if length < 1 or length > rules.L:
        return False
    d = analyse(ops, length, rules.arity, size, depth)
    if rules.maxdepth >= 0 and d > rules.maxdepth:
        return False
    cum[0] = 0.0
    var_cplx, op_cplx, cc = rules.var_cplx, rules.op_cplx, rules.const_cplx
    for t in range(length):
        code = ops[t]
        cum[t + 1] = cum[t] + (var_cplx[feat[t]] if code == VAR else (cc if code == CONST else op_cplx[code]))
    if cum[length] > curmax:
        return False
    limits = rules.arg_limit
    for t in range(length):
        code = ops[t]
        a = rules.arity[code]
        if a == 0:
            continue
        for s in range(a):
            lim = limits[code, s]
            if lim >= 0:
                c = child_end(t, s, a, size)
                if cum[c + 1] - cum[c - size[c] + 1] > lim:
                    return False
    for k in range(rules.nest_outer.shape[0]):
        outer, inner, lim = rules.nest_outer[k], rules.nest_inner[k], rules.nest_limit[k]
        for t in range(length):
            code = ops[t]
            a = rules.arity[code]
            below_ = 0
            for s in range(a):
                c = child_end(t, s, a, size)
                if code == outer and count[c] > lim:
                    return False
                if count[c] > below_:
                    below_ = count[c]
            count[t] = below_ + (1 if code == inner else 0)
    return True


@njit(**_JIT)
def copy_range(ops, feat, val, a, b, o_ops, o_feat, o_val, pos):
    """Tokens ``[a, b)`` to the output from ``pos``; returns the new position (or -1 when
    the output would overflow)."""
    n = b - a
    if pos < 0 or pos + n > o_ops.shape[0]:
        return -1
    for k in range(n):
        o_ops[pos + k] = ops[a + k]
        o_feat[pos + k] = feat[a + k]
        o_val[pos + k] = val[a + k]
    return pos + n


@njit(**_INLINE)
def put_leaf(state, i, n_features, o_ops, o_feat, o_val, pos):
    """A random leaf (PySR's: a N(0, 1) constant half the time, else a variable)."""
    if pos < 0 or pos >= o_ops.shape[0]:
        return -1
    if n_features < 1 or uniform(state, i) < 0.5:
        o_ops[pos] = CONST
        o_feat[pos] = 0
        o_val[pos] = normal(state, i)
    else:
        o_ops[pos] = VAR
        o_feat[pos] = below(state, i, n_features)
        o_val[pos] = 0.0
    return pos + 1


@njit(**_JIT)
def put_token(code, f, v, o_ops, o_feat, o_val, pos):
    if pos < 0 or pos >= o_ops.shape[0]:
        return -1
    o_ops[pos] = code
    o_feat[pos] = f
    o_val[pos] = v
    return pos + 1


@njit(**_INLINE)
def random_code(state, i, rules, arity):
    """An operator code: of the given arity, or (arity 0) any, binary vs unary in
    proportion to how many of each there are; -1 if there is none."""
    pool = rules.all_codes if arity == 0 else (rules.binary_codes if arity == 2 else rules.unary_codes)
    if pool.shape[0] == 0:
        return -1
    return pool[below(state, i, pool.shape[0])]


@njit(**_JIT)
def random_tree(state, i, size_target, rules, o_ops, o_feat, o_val, scratch_ops, scratch_feat, scratch_val):
    """A random program of about ``size_target`` tokens (SymbolicRegression.jl's
    fixed-size generator: grow a random leaf into an operator until the size is
    reached; the old leaf stays an argument). Returns its length."""
    n = put_leaf(state, i, rules.n_features, o_ops, o_feat, o_val, 0)
    cap = o_ops.shape[0]
    while n < size_target:
        room = size_target - n
        n_un = rules.unary_codes.shape[0]
        n_bin = rules.binary_codes.shape[0] if room >= 2 else 0
        if n_un + n_bin == 0:
            break
        pick = below(state, i, n_un + n_bin)
        code = rules.unary_codes[pick] if pick < n_un else rules.binary_codes[pick - n_un]
        n_leaves = 0
        for t in range(n):
            if rules.arity[o_ops[t]] == 0:
                n_leaves += 1
        target = below(state, i, n_leaves)
        at = -1
        seen = 0
        for t in range(n):
            if rules.arity[o_ops[t]] == 0:
                if seen == target:
                    at = t
                    break
                seen += 1
        a = rules.arity[code]
        if n + a > cap:
            break
        pos = copy_range(o_ops, o_feat, o_val, 0, at, scratch_ops, scratch_feat, scratch_val, 0)
        if a == 1:
            pos = copy_range(o_ops, o_feat, o_val, at, at + 1, scratch_ops, scratch_feat, scratch_val, pos)
        elif uniform(state, i) < 0.5:
            pos = copy_range(o_ops, o_feat, o_val, at, at + 1, scratch_ops, scratch_feat, scratch_val, pos)
            pos = put_leaf(state, i, rules.n_features, scratch_ops, scratch_feat, scratch_val, pos)
        else:
            pos = put_leaf(state, i, rules.n_features, scratch_ops, scratch_feat, scratch_val, pos)
            pos = copy_range(o_ops, o_feat, o_val, at, at + 1, scratch_ops, scratch_feat, scratch_val, pos)
        pos = put_token(code, 0, 0.0, scratch_ops, scratch_feat, scratch_val, pos)
        pos = copy_range(o_ops, o_feat, o_val, at + 1, n, scratch_ops, scratch_feat, scratch_val, pos)
        if pos < 0:
            break
        n = copy_range(scratch_ops, scratch_feat, scratch_val, 0, pos, o_ops, o_feat, o_val, 0)
    return n
