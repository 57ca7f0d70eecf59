"""Constant optimisation on the compiled engine: BFGS with analytic gradients.

The gradient of the loss with respect to every constant of a postfix program comes
from one forward pass that keeps each token's value and one reverse (adjoint) pass.
With linear scaling the loss is that of a*f + b with a, b fitted in closed form; at
that optimum the derivatives with respect to a and b vanish, so the gradient is the
plain squared-error gradient at (a, b) (the envelope theorem). Each formula runs its
own BFGS (backtracking Armijo line search, the identity scaled to the curvature seen
before the first update), as `hybrid_optimization.constant_optimization` does batched
in torch; `optimize_constants` takes the same arguments and returns the same record.
Formulas with custom operators go to the torch optimiser.

    >>> import torch
    >>> from enhancements.hybrid_optimization.options import Options
    >>> from enhancements.hybrid_optimization.scoring import Scorer
    >>> X = torch.linspace(0, 3, 40, dtype=torch.float64).reshape(-1, 1)
    >>> scorer = Scorer(X, torch.cos(1.3 * X[:, 0]), None, Options(unary_operators=["cos"], soft_tree_seed_fraction=0))
    >>> from pysr_baseline.parsing import parse_expression
    >>> result = optimize_constants(scorer, [parse_expression("cos(x0 * 1.0)")], iterations=20, nrestarts=2)
    >>> str(result.exprs[0]), bool(result.loss[0] < 1e-20)
    ('cos(x0 * 1.3)', True)
"""
from __future__ import annotations

import math
import time

import numpy as np
from numba import njit

from pysr_baseline.expression import Expression

from enhancements.engine.programs import (ABS, ADD, CONST, COS, CUBE, CUSTOM, DIV, EXP, INV, LOG, MUL, NEG, POW,
                                          SIN, SQRT, SQUARE, SUB, TAN, TANH, VAR, NotCompilable, OperatorTable,
                                          Programs)
from enhancements.engine.evaluate import HUGE, binary_scalar, scaling_from_sums, unary_rows, unary_scalar
from enhancements.engine.vector_math import cos_rows, sin_rows
from enhancements.hybrid_optimization import constant_optimization as torch_optimizer

_JIT = dict(cache=True, nogil=True, error_model="numpy")
_ARMIJO = 1e-4
_MAX_LINE_SEARCH = 12


@njit(**_JIT)
def _forward(ops, feat, val, length, arity, X, size, V, flag, sv):
    """Every token's value: row ``V[t]`` or, when ``flag[t]``, scalar ``sv[t]``."""
    n = X.shape[1]
    for t in range(length):
        code = ops[t]
        a = arity[code]
        if code == VAR:
            size[t] = 1
            flag[t] = False
            V[t, :n] = X[feat[t], :n]
        elif code == CONST:
            size[t] = 1
            flag[t] = True
            sv[t] = val[t]
        elif a == 1:
            c = t - 1
            size[t] = 1 + size[c]
            if flag[c]:
                flag[t] = True
                sv[t] = unary_scalar(code, sv[c])
            else:
                flag[t] = False
                unary_rows(code, V[c], V[t], n)
        else:
            rc = t - 1
            lc = rc - size[rc]
            size[t] = 1 + size[lc] + size[rc]
            if flag[lc] and flag[rc]:
                flag[t] = True
                sv[t] = binary_scalar(code, sv[lc], sv[rc])
            else:
                flag[t] = False
                for r in range(n):
                    x = sv[lc] if flag[lc] else V[lc, r]
                    y = sv[rc] if flag[rc] else V[rc, r]
                    V[t, r] = binary_scalar(code, x, y)


@njit(**_JIT)
def _d_unary(code, x, out):
    """d op(x) / dx, given the input x and the output value out."""
    if code == NEG:
        return -1.0
    if code == SQUARE:
        return 2.0 * x
    if code == CUBE:
        return 3.0 * x * x
    if code == SQRT:
        return 0.5 / out
    if code == EXP:
        return out
    if code == LOG:
        return 1.0 / x
    if code == ABS:
        return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)
    if code == SIN:
        return np.cos(x)
    if code == COS:
        return -np.sin(x)
    if code == TAN:
        return 1.0 + out * out
    if code == TANH:
        return 1.0 - out * out
    if code == INV:
        return -out * out
    return np.nan


@njit(**_JIT)
def _d_binary(code, x, y, out, which):
    """d op(x, y) / dx (which 0) or / dy (which 1)."""
    if code == ADD:
        return 1.0
    if code == SUB:
        return 1.0 if which == 0 else -1.0
    if code == MUL:
        return y if which == 0 else x
    if code == DIV:
        return 1.0 / y if which == 0 else -x / (y * y)
    if code == POW:
        if which == 0:
            return y * np.power(x, y - 1.0)
        return out * np.log(x) if x > 0 else (0.0 if out == 0.0 else np.nan)
    return np.nan


@njit(**_JIT)
def _root_loss(V, flag, sv, root, y, w, w_sum, linear_scaling, A, with_grad):
    """The squared error of a*f + b (a, b in closed form, as `evaluate.losses_of`) or, without
    linear scaling, of f, where f is the root's value (``sv[root]`` or the row ``V[root]``);
    ``with_grad``: dL/df per row into ``A[root]``. Infinite where f is not finite or huge
    (|f| >= 1e100) on some row, as `evaluate.losses_of` scores it."""
    n = y.shape[0]
    weighted = w.shape[0] > 0
    norm = w_sum if weighted else float(n)
    s_f = s_y = s_fy = s_ff = 0.0
    for r in range(n):
        f = sv[root] if flag[root] else V[root, r]
        if not (np.isfinite(f) and np.abs(f) < HUGE):
            return np.inf
        wr = w[r] if weighted else 1.0
        s_f += f * wr
        s_y += y[r] * wr
        s_fy += f * y[r] * wr
        s_ff += f * f * wr
    a, b = scaling_from_sums(s_f, s_y, s_fy, s_ff, norm) if linear_scaling else (1.0, 0.0)
    loss = 0.0
    for r in range(n):
        f = sv[root] if flag[root] else V[root, r]
        wr = w[r] if weighted else 1.0
        d = a * f + b - y[r]
        loss += d * d * wr
        if with_grad:
            A[root, r] = 2.0 * d * wr * a / norm
    loss /= norm
    return loss if np.isfinite(loss) else np.inf


@njit(**_JIT)
def _loss_grad(ops, feat, val, length, arity, X, y, w, w_sum, linear_scaling, size, V, flag, sv, A, sa, grad):
    """The loss of the program (with linear scaling: of a*f + b) and its gradient with
    respect to each token's value ``val[t]`` for the CONST tokens (``grad[t]``)."""
    n = X.shape[1]
    _forward(ops, feat, val, length, arity, X, size, V, flag, sv)
    root = length - 1
    for t in range(length):
        grad[t] = 0.0
    loss = _root_loss(V, flag, sv, root, y, w, w_sum, linear_scaling, A, True)
    if not loss < np.inf:
        return np.inf
    if flag[root]:
        total = 0.0
        for r in range(n):
            total += A[root, r]
        sa[root] = total
    # the adjoints, from the root down (postfix reversed: parents before children)
    for t in range(length):
        if t != root:
            sa[t] = 0.0
            if not flag[t]:
                for r in range(n):
                    A[t, r] = 0.0
    for t in range(root, -1, -1):
        code = ops[t]
        k = arity[code]
        if code == CONST:
            grad[t] = sa[t]
            continue
        if k == 0:
            continue
        if k == 1:
            c = t - 1
            if flag[t]:
                sa[c] += sa[t] * _d_unary(code, sv[c], sv[t])
            elif code == SIN or code == COS:    # cos and -sin by the row kernels, not libm per element
                d = np.empty(n)
                if code == SIN:
                    cos_rows(V[c], d, n)
                    for r in range(n):
                        A[c, r] += A[t, r] * d[r]
                else:
                    sin_rows(V[c], d, n)
                    for r in range(n):
                        A[c, r] -= A[t, r] * d[r]
            else:
                for r in range(n):
                    A[c, r] += A[t, r] * _d_unary(code, V[c, r], V[t, r])
            continue
        rc = t - 1
        lc = rc - size[rc]
        if flag[t]:
            sa[lc] += sa[t] * _d_binary(code, sv[lc], sv[rc], sv[t], 0)
            sa[rc] += sa[t] * _d_binary(code, sv[lc], sv[rc], sv[t], 1)
            continue
        for ch, which in ((lc, 0), (rc, 1)):
            if flag[ch]:
                total = 0.0
                for r in range(n):
                    x = sv[lc] if flag[lc] else V[lc, r]
                    yy = sv[rc] if flag[rc] else V[rc, r]
                    total += A[t, r] * _d_binary(code, x, yy, V[t, r], which)
                sa[ch] += total
            else:
                for r in range(n):
                    x = sv[lc] if flag[lc] else V[lc, r]
                    yy = sv[rc] if flag[rc] else V[rc, r]
                    A[ch, r] += A[t, r] * _d_binary(code, x, yy, V[t, r], which)
    return loss


@njit(**_JIT)
def _bfgs_one(ops, feat, val, length, arity, X, y, w, w_sum, linear_scaling, iterations, out_val):
    """BFGS on the program's constants, starting from ``val``; the best values go to
    ``out_val``. Returns (start loss, final loss, forward passes)."""
    n = X.shape[1]
    L = length
    size = np.empty(L, np.int64)
    V = np.empty((L, n))
    flag = np.zeros(L, np.bool_)
    sv = np.zeros(L)
    A = np.empty((L, n))
    sa = np.zeros(L)
    gfull = np.zeros(L)
    pos = np.empty(L, np.int64)
    K = 0
    for t in range(L):
        out_val[t] = val[t]
        if ops[t] == CONST:
            pos[K] = t
            K += 1
    passes = 1
    fx = _loss_grad(ops, feat, out_val, L, arity, X, y, w, w_sum, linear_scaling, size, V, flag, sv, A, sa, gfull)
    start = fx
    if K == 0 or not np.isfinite(fx):
        return start, fx, passes
    x = np.empty(K)
    g = np.empty(K)
    for k in range(K):
        x[k] = out_val[pos[k]]
        g[k] = gfull[pos[k]] if np.isfinite(gfull[pos[k]]) else 0.0
    H = np.eye(K)
    fresh = True
    first = True
    trial_val = out_val.copy()
    for _ in range(iterations):
        if np.abs(g).sum() == 0.0:
            break
        d = -(H @ g)
        slope = (d * g).sum()
        if slope >= 0:
            d = -g.copy()
            slope = -(g * g).sum()
        if first:
            norm_d = np.sqrt((d * d).sum())
            if norm_d > 1.0:
                d = d / norm_d
            slope = (d * g).sum()
            first = False
        step = 1.0
        accepted = False
        new_x = x.copy()
        new_f = fx
        for _ls in range(_MAX_LINE_SEARCH):
            for k in range(K):
                trial_val[pos[k]] = x[k] + step * d[k]
            ft = _loss_only(ops, feat, trial_val, L, arity, X, y, w, w_sum, linear_scaling, V, flag, sv, size)
            passes += 1
            if np.isfinite(ft) and ft <= fx + _ARMIJO * step * slope:
                for k in range(K):
                    new_x[k] = trial_val[pos[k]]
                new_f = ft
                accepted = True
                break
            step *= 0.5
        if not accepted:
            break
        for k in range(K):
            trial_val[pos[k]] = new_x[k]
        f_new = _loss_grad(ops, feat, trial_val, L, arity, X, y, w, w_sum, linear_scaling, size, V, flag, sv, A, sa,
                           gfull)
        passes += 1
        g_new = np.empty(K)
        for k in range(K):
            g_new[k] = gfull[pos[k]] if np.isfinite(gfull[pos[k]]) else 0.0
        s = new_x - x
        yv = g_new - g
        sy = (s * yv).sum()
        if sy > 1e-12 * max(np.sqrt((s * s).sum()) * np.sqrt((yv * yv).sum()), 1e-300):
            rho = 1.0 / sy
            if fresh:
                H = np.eye(K) * (sy / max((yv * yv).sum(), 1e-300))
                fresh = False
            V_ = np.eye(K) - rho * np.outer(s, yv)
            H = V_ @ H @ V_.T + rho * np.outer(s, s)
        x = new_x
        g = g_new
        fx = f_new if np.isfinite(f_new) else new_f
    for k in range(K):
        out_val[pos[k]] = x[k]
    return start, fx, passes


@njit(**_JIT)
def _loss_only(ops, feat, val, length, arity, X, y, w, w_sum, linear_scaling, V, flag, sv, size):
    """`_loss_grad`'s loss without the gradient (the line search's trial points)."""
    _forward(ops, feat, val, length, arity, X, size, V, flag, sv)
    return _root_loss(V, flag, sv, length - 1, y, w, w_sum, linear_scaling, V, False)


@njit(**_JIT)
def bfgs_batch(ops, feat, val, length, arity, X, y, w, w_sum, linear_scaling, iterations, out_val, start, final):
    """`_bfgs_one` for every program of a block; returns the forward passes spent."""
    passes = 0
    for m in range(ops.shape[0]):
        s, f, p = _bfgs_one(ops[m], feat[m], val[m], length[m], arity, X, y, w, w_sum, linear_scaling,
                            iterations, out_val[m])
        start[m] = s
        final[m] = f
        passes += p
    return passes


def optimize_constants(scorer, exprs: list[Expression], iterations: int = 8, nrestarts: int = 2,
                       seeds: list[int] | None = None, deadline: float | None = None, table=None):
    """`hybrid_optimization.constant_optimization.optimize_constants` on the compiled
    engine (same arguments, same record); formulas it cannot compile go to the torch one."""
    seeds = list(range(len(exprs))) if seeds is None else list(seeds)
    if table is None:
        table = OperatorTable.from_options(scorer.opts)
    out_exprs = list(exprs)
    loss = np.full(len(exprs), math.inf)
    improved = np.zeros(len(exprs), dtype=bool)
    compiled, rest = [], []
    for i, e in enumerate(exprs):
        if not e.constants:
            continue
        try:
            has_custom = any(n.op is not None and table.code_of(n.op) >= CUSTOM for n in e.nodes())
        except NotCompilable:
            has_custom = True
        (rest if has_custom else compiled).append(i)
    n_evals = 0
    if rest:
        sub = torch_optimizer.optimize_constants(scorer, [exprs[i] for i in rest], iterations, nrestarts,
                                                 [seeds[i] for i in rest], deadline)
        for j, i in enumerate(rest):
            out_exprs[i], loss[i], improved[i] = sub.exprs[j], sub.loss[j], sub.improved[j]
        n_evals += sub.n_evals
    if not compiled or (deadline is not None and time.perf_counter() > deadline):
        return torch_optimizer.OptimizedConstants(out_exprs, loss, improved, n_evals)
    L = max(exprs[i].size for i in compiled)
    rows = Programs.empty(len(compiled) * (1 + nrestarts), L)
    owner = []
    for i in compiled:
        rng = np.random.default_rng(seeds[i])
        rows.set(len(owner), exprs[i], table)
        owner.append(i)
        for _ in range(nrestarts):
            r = len(owner)
            rows.set(r, exprs[i], table)
            is_const = np.flatnonzero(rows.ops[r, :rows.length[r]] == CONST)
            # the torch optimiser's perturbation, c * (1 + 0.5 N(0, 1)); leaves keep their left-to-right
            # order in postfix as in preorder, so the constants line up with Expression.constants
            rows.val[r, is_const] = np.asarray(exprs[i].constants) * (1.0 + 0.5 * rng.standard_normal(len(is_const)))
            owner.append(i)
    ev = scorer.evaluator
    X = np.ascontiguousarray(ev.X.T.cpu().numpy())
    y = scorer.y.cpu().numpy()
    w = np.zeros(0) if scorer.w is None else scorer.w.cpu().numpy()
    w_sum = 0.0 if scorer.w is None else float(scorer.w.sum())
    out_val = np.zeros_like(rows.val)
    start = np.empty(len(owner))
    final = np.empty(len(owner))
    passes = bfgs_batch(rows.ops, rows.feat, rows.val, rows.length, table.arity, X, y, w, w_sum,
                        bool(scorer.linear_scaling), int(iterations), out_val, start, final)
    n_evals += int(passes)
    by_formula: dict[int, list[int]] = {}
    for r, i in enumerate(owner):
        by_formula.setdefault(i, []).append(r)
    for i, rs in by_formula.items():
        start_loss = start[rs[0]]
        loss[i] = start_loss
        best = min((r for r in rs if np.isfinite(final[r])), key=lambda r: final[r], default=None)
        if best is not None and final[best] < start_loss and np.all(np.isfinite(out_val[best, :rows.length[best]])):
            from enhancements.engine.programs import decode

            out_exprs[i] = decode(rows.ops[best], rows.feat[best], out_val[best], int(rows.length[best]), table)
            loss[i] = final[best]
            improved[i] = True
    return torch_optimizer.OptimizedConstants(out_exprs, loss, improved, n_evals)
