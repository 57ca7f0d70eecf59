"""The cheap simplifications on programs, compiled: `hybrid_optimization.simplification.
simplify_tree`'s rules, run on every member of every population in one call.

The rules, bottom up (a node's arguments are simplified first):

- folding: an operator whose arguments are all constants becomes their value, when that
  is finite (built-in operators; a custom operator's constant arguments stay as they are);
- identities: ``x * 1``, ``1 * x``, ``x / 1``, ``x + 0``, ``0 + x``, ``x - 0`` -> ``x``;
- merging: ``c1 op (c2 op x)`` -> ``(c1 op c2) op x`` for op in {+, *}, in any operand
  order, the constant written first (and ``x`` alone when ``c1 op c2`` is neutral).

The output is written token by token; ``size`` holds the sub-tree size of every token
written, so a node's arguments are found from its end (postfix: the last argument ends
just before the operator). The end-of-iteration work of the compiled search uses this
instead of decoding every member to simplify it in Python (~60 us a member there).

    >>> import numpy as np
    >>> from enhancements.engine.evaluate import empty_bodies
    >>> from enhancements.engine.programs import ADD, CONST, MUL, VAR
    >>> ops = np.array([[CONST, CONST, VAR, MUL, MUL, CONST, ADD]])   # 2 * (3 * x0) + 0
    >>> val = np.array([[2.0, 3.0, 0, 0, 0, 0.0, 0]]); feat = np.zeros((1, 7), np.int64)
    >>> out = simplify_programs(ops, feat, val, np.array([7]), empty_bodies()[0])
    >>> out.length.tolist(), out.ops[0, :3].tolist(), float(out.val[0, 0]), out.changed.tolist()
    ([3], [1, 0, 4], 6.0, [True])
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from enhancements.engine.evaluate import binary_scalar, unary_scalar
from enhancements.engine.programs import ADD, CONST, CUSTOM, DIV, MUL, SUB

_JIT = dict(cache=True, nogil=True, error_model="numpy")

Simplified = namedtuple("Simplified", ["ops", "feat", "val", "length", "changed"])


def simplify_programs(ops, feat, val, length, arity) -> Simplified:
    """Every program of the block simplified (new arrays); ``changed``: which differ."""
    n, L = ops.shape
    out = Simplified(np.zeros_like(ops), np.zeros_like(feat), np.zeros_like(val), np.zeros(n, np.int64),
                     np.zeros(n, np.bool_))
    _simplify_all(ops, feat, val, length, arity, out.ops, out.feat, out.val, out.length, out.changed,
                  np.zeros(L, np.int64), np.zeros(L, np.int64), np.zeros(L, np.int64), np.zeros(L))
    return out


@njit(**_JIT)
def _simplify_all(ops, feat, val, length, arity, o_ops, o_feat, o_val, o_length, changed, size, t_ops, t_feat,
                  t_val):
    for k in range(ops.shape[0]):
        n = simplify_program(ops[k], feat[k], val[k], length[k], arity, o_ops[k], o_feat[k], o_val[k], size,
                             t_ops, t_feat, t_val)
        o_length[k] = n
        same = n == length[k]
        t = 0
        while same and t < n:
            same = ops[k, t] == o_ops[k, t] and feat[k, t] == o_feat[k, t] and (
                val[k, t] == o_val[k, t] or ops[k, t] != CONST)
            t += 1
        changed[k] = not same


@njit(**_JIT)
def _is_const(o_ops, size, root):
    return o_ops[root] == CONST and size[root] == 1


@njit(**_JIT)
def _move(o_ops, o_feat, o_val, size, a, b, dest, t_ops, t_feat, t_val):
    """Tokens [a, b) of the output (with their sizes) to ``dest``, through a scratch copy
    (the ranges may overlap either way); returns the end of the copy."""
    n = b - a
    for j in range(n):
        t_ops[j], t_feat[j], t_val[j] = o_ops[a + j], o_feat[a + j], o_val[a + j]
    sizes = size[a:b].copy()
    for j in range(n):
        o_ops[dest + j], o_feat[dest + j], o_val[dest + j] = t_ops[j], t_feat[j], t_val[j]
        size[dest + j] = sizes[j]
    return dest + n


@njit(**_JIT)
def _put(o_ops, o_feat, o_val, size, pos, code, f, v, s):
    o_ops[pos], o_feat[pos], o_val[pos], size[pos] = code, f, v, s
    return pos + 1


@njit(**_JIT)
def simplify_program(ops, feat, val, length, arity, o_ops, o_feat, o_val, size, t_ops, t_feat, t_val):
    """One program simplified into ``o_*`` (see the module docstring); returns its length."""
    pos = 0
    for t in range(length):
        code = ops[t]
        a = arity[code]
        if a == 0:
            pos = _put(o_ops, o_feat, o_val, size, pos, code, feat[t], val[t], 1)
            continue
        if a == 1:
            c = pos - 1
            if code < CUSTOM and _is_const(o_ops, size, c):
                v = unary_scalar(code, o_val[c])
                if np.isfinite(v):
                    o_val[c] = v
                    continue
            pos = _put(o_ops, o_feat, o_val, size, pos, code, 0, 0.0, 1 + size[c])
            continue
        right = pos - 1                      # the right argument's root, its range [rs, pos)
        rs = pos - size[right]
        left = rs - 1                        # the left argument's root, its range [ls, rs)
        ls = rs - size[left]
        l_const, r_const = _is_const(o_ops, size, left), _is_const(o_ops, size, right)
        if l_const and r_const and code < CUSTOM:
            v = binary_scalar(code, o_val[left], o_val[right])
            if np.isfinite(v):
                pos = _put(o_ops, o_feat, o_val, size, ls, CONST, 0, v, 1)
                continue
        if code == MUL or code == ADD or code == DIV or code == SUB:
            neutral = 1.0 if (code == MUL or code == DIV) else 0.0
            if r_const and o_val[right] == neutral:          # x op neutral -> x
                pos = rs
                continue
            if (code == MUL or code == ADD) and l_const and o_val[left] == neutral:  # neutral op x -> x
                pos = _move(o_ops, o_feat, o_val, size, rs, pos, ls, t_ops, t_feat, t_val)
                continue
        if (code == MUL or code == ADD) and (l_const or r_const):
            # the outer constant c1 and the other argument b, which must be (c2 op x) or (x op c2)
            c1 = left if l_const else right
            b_root = pos - 1 if l_const else rs - 1
            if not (l_const and r_const) and o_ops[b_root] == code:
                b_right = b_root - 1
                b_rs = b_root - size[b_right]
                b_left = b_rs - 1
                b_ls = b_rs - size[b_left]
                if _is_const(o_ops, size, b_left):
                    c2, x_start, x_end = b_left, b_rs, b_root
                elif _is_const(o_ops, size, b_right):
                    c2, x_start, x_end = b_right, b_ls, b_rs
                else:
                    c2 = -1
                    x_start = x_end = 0
                if c2 >= 0:
                    v = binary_scalar(code, o_val[c1], o_val[c2])
                    if np.isfinite(v):
                        if v == (1.0 if code == MUL else 0.0):
                            pos = _move(o_ops, o_feat, o_val, size, x_start, x_end, ls, t_ops, t_feat, t_val)
                            continue
                        x_size = x_end - x_start
                        end = _move(o_ops, o_feat, o_val, size, x_start, x_end, ls + 1, t_ops, t_feat, t_val)
                        _put(o_ops, o_feat, o_val, size, ls, CONST, 0, v, 1)
                        pos = _put(o_ops, o_feat, o_val, size, end, code, 0, 0.0, 2 + x_size)
                        continue
        pos = _put(o_ops, o_feat, o_val, size, pos, code, 0, 0.0, 1 + size[left] + size[right])
    return pos
