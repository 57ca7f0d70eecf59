"""Compiled evaluation of postfix programs (numba), with the loss fused in.

`run_program` is a stack machine over rows: each token computes one whole row (all
samples) in one tight loop, so the per-token cost is a branch, and the per-element cost
is the arithmetic itself. Constant sub-trees stay scalars (no row is filled for them).
`score_programs` evaluates a batch and, in the same pass over each result, takes the
squared-error loss of f, a*f, f+b and a*f+b with a, b fitted in closed form: the same
numbers as `hybrid_optimization.scoring.Scorer` (to round-off), without handing
predictions back to Python.

Semantics are those of the torch operators: domain errors give NaN/inf (``error_model=
"numpy"``: no exception on a division by zero), and a formula with a non-finite or huge
(|f| >= 1e100) value anywhere scores an infinite loss.

    >>> import numpy as np
    >>> from enhancements.engine.programs import CONST, MUL, VAR
    >>> ops = np.array([[VAR, CONST, MUL]]); feat = np.zeros((1, 3), np.int64)
    >>> val = np.array([[0.0, 2.0, 0.0]]); length = np.array([3])
    >>> X = np.arange(4.0).reshape(1, 4)                # features x rows
    >>> out = np.empty((1, 4))
    >>> _ = evaluate_programs(ops, feat, val, length, X, out, *empty_bodies())
    >>> out.tolist()
    [[0.0, 2.0, 4.0, 6.0]]
"""
from __future__ import annotations

import numpy as np
from numba import njit

from enhancements.engine.programs import (ABS, ADD, CONST, COS, CUBE, CUSTOM, DIV, EXP, INV, LOG, MAX_CUSTOM, MUL,
                                          N_CODES, NEG, POW, SIN, SQRT, SQUARE, SUB, TAN, TANH, VAR)
from enhancements.engine.vector_math import cos_rows, exp_rows, log_rows, sin_rows

HUGE = 1e100
_JIT = dict(cache=True, error_model="numpy", nogil=True)


def empty_bodies():
    """The arity and body tables of a search without custom operators."""
    arity = np.zeros(N_CODES, np.int64)
    arity[ADD:POW + 1] = 2
    arity[NEG:INV + 1] = 1
    return (arity, np.zeros((MAX_CUSTOM, 1), np.int64), np.zeros((MAX_CUSTOM, 1), np.int64),
            np.zeros((MAX_CUSTOM, 1), np.float64), np.zeros(MAX_CUSTOM, np.int64))


def tables(table):
    """The arity and body tables of an `OperatorTable`, as the kernels take them."""
    return table.arity, table.body_ops, table.body_feat, table.body_val, table.body_length


@njit(**_JIT)
def unary_scalar(code, a):
    if code == NEG:
        return -a
    if code == SQUARE:
        return a * a
    if code == CUBE:
        return a * a * a
    if code == SQRT:
        return np.sqrt(a)
    if code == EXP:
        return np.exp(a)
    if code == LOG:
        return np.log(a)
    if code == ABS:
        return np.abs(a)
    if code == SIN:
        return np.sin(a)
    if code == COS:
        return np.cos(a)
    if code == TAN:
        return np.tan(a)
    if code == TANH:
        return np.tanh(a)
    if code == INV:
        return 1.0 / a
    return np.nan


@njit(**_JIT)
def binary_scalar(code, a, b):
    if code == ADD:
        return a + b
    if code == SUB:
        return a - b
    if code == MUL:
        return a * b
    if code == DIV:
        return a / b
    if code == POW:
        return np.power(a, b)
    return np.nan


# One loop per operator, the branch outside it: each loop compiles to a tight (and where
# the arithmetic allows, vectorised) kernel over the rows; a branch per element would not.
@njit(**_JIT)
def unary_rows(code, a, out, n):
    if code == NEG:
        for r in range(n):
            out[r] = -a[r]
    elif code == SQUARE:
        for r in range(n):
            out[r] = a[r] * a[r]
    elif code == CUBE:
        for r in range(n):
            out[r] = a[r] * a[r] * a[r]
    elif code == SQRT:
        for r in range(n):
            out[r] = np.sqrt(a[r])
    elif code == EXP:
        exp_rows(a, out, n)
    elif code == LOG:
        log_rows(a, out, n)
    elif code == ABS:
        for r in range(n):
            out[r] = np.abs(a[r])
    elif code == SIN:
        sin_rows(a, out, n)
    elif code == COS:
        cos_rows(a, out, n)
    elif code == TAN:
        for r in range(n):
            out[r] = np.tan(a[r])
    elif code == TANH:
        for r in range(n):
            out[r] = np.tanh(a[r])
    elif code == INV:
        for r in range(n):
            out[r] = 1.0 / a[r]
    else:
        for r in range(n):
            out[r] = np.nan


@njit(**_JIT)
def _binary_rows(code, a, b, out, n):
    """out = a op b for rows a, b (out may be a)."""
    if code == ADD:
        for r in range(n):
            out[r] = a[r] + b[r]
    elif code == SUB:
        for r in range(n):
            out[r] = a[r] - b[r]
    elif code == MUL:
        for r in range(n):
            out[r] = a[r] * b[r]
    elif code == DIV:
        for r in range(n):
            out[r] = a[r] / b[r]
    elif code == POW:
        for r in range(n):
            out[r] = np.power(a[r], b[r])
    else:
        for r in range(n):
            out[r] = np.nan


@njit(**_JIT)
def _binary_row_scalar(code, a, b, out, n):
    """out = a op b for a row a and a scalar b."""
    if code == ADD:
        for r in range(n):
            out[r] = a[r] + b
    elif code == SUB:
        for r in range(n):
            out[r] = a[r] - b
    elif code == MUL:
        for r in range(n):
            out[r] = a[r] * b
    elif code == DIV:
        for r in range(n):
            out[r] = a[r] / b
    elif code == POW:
        for r in range(n):
            out[r] = np.power(a[r], b)
    else:
        for r in range(n):
            out[r] = np.nan


@njit(**_JIT)
def _binary_scalar_row(code, a, b, out, n):
    """out = a op b for a scalar a and a row b (out may be b)."""
    if code == ADD:
        for r in range(n):
            out[r] = a + b[r]
    elif code == SUB:
        for r in range(n):
            out[r] = a - b[r]
    elif code == MUL:
        for r in range(n):
            out[r] = a * b[r]
    elif code == DIV:
        for r in range(n):
            out[r] = a / b[r]
    elif code == POW:
        for r in range(n):
            out[r] = np.power(a, b[r])
    else:
        for r in range(n):
            out[r] = np.nan


@njit(**_JIT)
def _apply(code, arity, stack, flag, sval, sp, n):
    """Apply a built-in operator to the top of the stack; returns the new stack pointer."""
    if arity == 1:
        i = sp - 1
        if flag[i]:
            sval[i] = unary_scalar(code, sval[i])
        else:
            unary_rows(code, stack[i], stack[i], n)
        return sp
    i, j = sp - 2, sp - 1
    if flag[i] and flag[j]:
        sval[i] = binary_scalar(code, sval[i], sval[j])
    elif flag[j]:
        _binary_row_scalar(code, stack[i], sval[j], stack[i], n)
    elif flag[i]:
        _binary_scalar_row(code, sval[i], stack[j], stack[i], n)
        flag[i] = False
    else:
        _binary_rows(code, stack[i], stack[j], stack[i], n)
    return sp - 1


@njit(**_JIT)
def _run_body(k, body_ops, body_feat, body_val, body_length, args, arg_flag, arg_val, stack, flag, sval, n):
    """A custom operator's body on its arguments (rows ``args[i]`` or scalars), leaving
    the result at the bottom of ``stack``/``flag``/``sval``."""
    sp = 0
    for t in range(body_length[k]):
        code = body_ops[k, t]
        if code == VAR:
            a = body_feat[k, t]
            if arg_flag[a]:
                flag[sp] = True
                sval[sp] = arg_val[a]
            else:
                flag[sp] = False
                stack[sp, :n] = args[a, :n]
            sp += 1
        elif code == CONST:
            flag[sp] = True
            sval[sp] = body_val[k, t]
            sp += 1
        else:
            sp = _apply(code, 2 if code <= POW else 1, stack, flag, sval, sp, n)


@njit(**_JIT)
def run_program(ops, feat, val, length, X, stack, flag, sval, arity_of, body_ops, body_feat, body_val, body_length,
                body_stack, body_flag, body_sval, args, arg_flag, arg_val):
    """Evaluate one program on the rows of ``X`` (features x rows). The result is
    ``stack[0]`` (a row) or, when ``flag[0]``, the scalar ``sval[0]``."""
    n = X.shape[1]
    sp = 0
    for t in range(length):
        code = ops[t]
        if code == VAR:
            flag[sp] = False
            stack[sp, :n] = X[feat[t], :n]
            sp += 1
        elif code == CONST:
            flag[sp] = True
            sval[sp] = val[t]
            sp += 1
        elif code < CUSTOM:
            sp = _apply(code, 2 if code <= POW else 1, stack, flag, sval, sp, n)
        else:
            k = code - CUSTOM
            arity = arity_of[code]
            base = sp - arity
            for a in range(arity):
                arg_flag[a] = flag[base + a]
                arg_val[a] = sval[base + a]
                if not flag[base + a]:
                    args[a, :n] = stack[base + a, :n]
            _run_body(k, body_ops, body_feat, body_val, body_length, args, arg_flag, arg_val, body_stack,
                      body_flag, body_sval, n)
            flag[base] = body_flag[0]
            sval[base] = body_sval[0]
            if not body_flag[0]:
                stack[base, :n] = body_stack[0, :n]
            sp = base + 1
    return sp


@njit(**_JIT)
def workspace(L, n_rows, body_len):
    """Scratch arrays for `run_program`: the stack (rows, scalar flags and values), the
    custom-operator body's stack, and its two arguments."""
    L, body_len = max(L, 1), max(body_len, 1)
    return (np.empty((L, n_rows)), np.zeros(L, np.bool_), np.zeros(L), np.empty((body_len, n_rows)),
            np.zeros(body_len, np.bool_), np.zeros(body_len), np.empty((2, n_rows)), np.zeros(2, np.bool_),
            np.zeros(2))


@njit(**_JIT)
def evaluate_programs(ops, feat, val, length, X, out, arity_of, body_ops, body_feat, body_val, body_length):
    """Values of every program on every row, into ``out`` (programs x rows)."""
    n = X.shape[1]
    stack, flag, sval, bstack, bflag, bsval, args, aflag, aval = workspace(ops.shape[1], n, body_ops.shape[1])
    for m in range(ops.shape[0]):
        run_program(ops[m], feat[m], val[m], length[m], X, stack, flag, sval, arity_of, body_ops, body_feat,
                    body_val, body_length, bstack, bflag, bsval, args, aflag, aval)
        if flag[0]:
            for r in range(n):
                out[m, r] = sval[0]
        else:
            out[m, :] = stack[0, :n]
    return out


@njit(**_JIT)
def scaling_from_sums(s_f, s_y, s_fy, s_ff, norm):
    """a, b of the least-squares a*f + b from the (weighted) sums of f, y, f*y, f*f and
    the weights' total ``norm`` (a = 0 where f is constant, to round-off)."""
    mean_f, mean_y, fy, ff = s_f / norm, s_y / norm, s_fy / norm, s_ff / norm
    var_f = ff - mean_f * mean_f
    cov = fy - mean_f * mean_y
    a = cov / var_f if var_f > 1e-13 * (ff + 1e-300) else 0.0
    return a, mean_y - a * mean_f


@njit(**_JIT)
def losses_of(f, is_scalar, scalar, y, w, w_sum, linear_scaling, lv, av, bv):
    """The squared-error losses of f, a*f, f+b, a*f+b into ``lv`` (and a, b into ``av``,
    ``bv``), as `Scorer.score_predictions` computes them; returns the search's loss (the
    best form with linear scaling, else f's). ``w`` empty: unweighted."""
    n = y.shape[0]
    weighted = w.shape[0] > 0
    inf = np.inf
    for k in range(4):
        lv[k] = inf
        av[k] = 1.0
        bv[k] = 0.0
    # finite and not huge everywhere, else infinite
    if is_scalar:
        if not (np.isfinite(scalar) and np.abs(scalar) < HUGE):
            return inf
    else:
        for r in range(n):
            v = f[r]
            if not (np.isfinite(v) and np.abs(v) < HUGE):
                return inf
    norm = w_sum if weighted else float(n)
    s_f = 0.0
    s_y = 0.0
    s_fy = 0.0
    s_ff = 0.0
    raw = 0.0
    for r in range(n):
        v = scalar if is_scalar else f[r]
        wr = w[r] if weighted else 1.0
        d = v - y[r]
        raw += d * d * wr
        s_f += v * wr
        s_y += y[r] * wr
        s_fy += v * y[r] * wr
        s_ff += v * v * wr
    raw = raw / norm
    lv[0] = raw if np.isfinite(raw) else inf
    if not linear_scaling:
        av[1] = av[2] = av[3] = 1.0
        return lv[0]
    a, b = scaling_from_sums(s_f, s_y, s_fy, s_ff, norm)
    ff = s_ff / norm
    a_only = s_fy / norm / ff if ff > 1e-300 else 0.0
    b_only = s_y / norm - s_f / norm
    l1 = 0.0
    l2 = 0.0
    l3 = 0.0
    for r in range(n):
        v = scalar if is_scalar else f[r]
        wr = w[r] if weighted else 1.0
        d1 = a_only * v - y[r]
        d2 = v + b_only - y[r]
        d3 = a * v + b - y[r]
        l1 += d1 * d1 * wr
        l2 += d2 * d2 * wr
        l3 += d3 * d3 * wr
    l1 /= norm
    l2 /= norm
    l3 /= norm
    lv[1] = l1 if np.isfinite(l1) else inf
    lv[2] = l2 if np.isfinite(l2) else inf
    lv[3] = l3 if np.isfinite(l3) else inf
    av[1] = a_only
    bv[2] = b_only
    av[3] = a
    bv[3] = b
    best = lv[0]
    for k in range(1, 4):
        if lv[k] < best:
            best = lv[k]
    return best


@njit(**_JIT)
def score_programs(ops, feat, val, length, X, y, w, w_sum, linear_scaling, arity_of, body_ops, body_feat, body_val,
                   body_length, loss, lv, av, bv):
    """Loss of every program (``loss[m]``; the four forms' in ``lv[m]``, their a and b in
    ``av[m]``, ``bv[m]``), evaluated and scored in one pass each."""
    n = X.shape[1]
    stack, flag, sval, bstack, bflag, bsval, args, aflag, aval = workspace(ops.shape[1], n, body_ops.shape[1])
    for m in range(ops.shape[0]):
        run_program(ops[m], feat[m], val[m], length[m], X, stack, flag, sval, arity_of, body_ops, body_feat,
                    body_val, body_length, bstack, bflag, bsval, args, aflag, aval)
        loss[m] = losses_of(stack[0], flag[0], sval[0], y, w, w_sum, linear_scaling, lv[m], av[m], bv[m])
