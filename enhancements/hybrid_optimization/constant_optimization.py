"""Batched BFGS on the constants of many formulas at once.

PySR runs BFGS on one formula at a time. Here every candidate's constants sit in one
padded (B, K) tensor; each BFGS iteration costs one batched forward+backward pass through
`IncrementalEvaluator.evaluate_with_constants` plus one batched forward pass per line-search
trial, for all candidates together. Each candidate keeps its own inverse-Hessian estimate
and its own step length, so the result for a formula does not depend on what else is in
the batch. Restarts (``optimizer_nrestarts``) are extra rows: the starting constants
perturbed, as in SymbolicRegression.jl (x * (1 + 0.5 * N(0, 1))).

    >>> import torch
    >>> from enhancements.hybrid_optimization.options import Options
    >>> from enhancements.hybrid_optimization.scoring import Scorer
    >>> X = torch.linspace(0, 3, 40, dtype=torch.float64).reshape(-1, 1)
    >>> scorer = Scorer(X, torch.cos(1.3 * X[:, 0]), None, Options())
    >>> from pysr_baseline.parsing import parse_expression
    >>> result = optimize_constants(scorer, [parse_expression("cos(x0 * 1.0)")], iterations=20, nrestarts=2)
    >>> str(result.exprs[0]), bool(result.improved[0]), bool(result.loss[0] < 1e-20)
    ('cos(x0 * 1.3)', True, True)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from pysr_baseline.expression import Expression

_ARMIJO = 1e-4
_MAX_LINE_SEARCH = 12


@dataclass
class OptimizedConstants:
    exprs: list[Expression]
    loss: np.ndarray           # the objective after optimisation (<= before)
    improved: np.ndarray       # bool: constants changed
    n_evals: int               # formula evaluations spent (forward passes x rows of the batch)


def optimize_constants(scorer, exprs: list[Expression], iterations: int = 8, nrestarts: int = 2,
                       seeds: list[int] | None = None, deadline: float | None = None) -> OptimizedConstants:
    """Fit the constants of every formula in ``exprs`` to minimise ``scorer.objective``.

    Formulas without constants are returned unchanged. Returns the best of the start and
    ``nrestarts`` perturbed starts per formula (perturbations drawn from ``seeds[i]``, so a
    formula's result does not depend on the rest of the batch); never a worse loss.
    ``deadline`` (a time.perf_counter() value) ends the iterations early.
    """
    seeds = list(range(len(exprs))) if seeds is None else list(seeds)
    starts = [np.asarray(e.constants, dtype=np.float64) for e in exprs]
    rows, owner = [], []
    for i, c in enumerate(starts):
        if len(c) == 0:
            continue
        rows.append(c)
        owner.append(i)
        rng = np.random.default_rng(seeds[i])
        for _ in range(nrestarts):
            rows.append(c * (1.0 + 0.5 * rng.standard_normal(len(c))))
            owner.append(i)
    out_exprs = list(exprs)
    loss = np.full(len(exprs), math.inf)
    improved = np.zeros(len(exprs), dtype=bool)
    if not rows:
        return OptimizedConstants(out_exprs, loss, improved, 0)
    row_exprs = [exprs[i] for i in owner]
    x, final, n_evals = _bfgs(scorer, row_exprs, rows, iterations, deadline)
    # The unperturbed start is the first row of each formula: its initial loss is the bar.
    first_loss = {}
    for r, i in enumerate(owner):
        first_loss.setdefault(i, final["start"][r])
    best_row = {}
    for r, i in enumerate(owner):
        if np.isfinite(final["loss"][r]) and (i not in best_row or final["loss"][r] < final["loss"][best_row[i]]):
            best_row[i] = r
    for i, start_loss in first_loss.items():
        loss[i] = start_loss
        r = best_row.get(i)
        if r is not None and final["loss"][r] < start_loss:
            k = len(starts[i])
            values = x[r, :k]
            if np.all(np.isfinite(values)):
                out_exprs[i] = exprs[i].with_constants(values.tolist())
                loss[i] = final["loss"][r]
                improved[i] = True
    return OptimizedConstants(out_exprs, loss, improved, n_evals)


def _bfgs(scorer, exprs: list[Expression], rows: list[np.ndarray], iterations: int, deadline: float | None = None):
    """BFGS with a backtracking (Armijo) line search, batched over candidates."""
    evaluator = scorer.evaluator
    dtype = scorer.y.dtype
    device = scorer.y.device
    B = len(rows)
    sizes = torch.tensor([len(r) for r in rows], device=device)
    K = int(sizes.max())
    mask = (torch.arange(K, device=device)[None, :] < sizes[:, None]).to(dtype)
    x = torch.zeros(B, K, dtype=dtype, device=device)
    for r, c in enumerate(rows):
        x[r, :len(c)] = torch.as_tensor(c, dtype=dtype, device=device)
    n_evals = 0

    def f_and_grad(params: torch.Tensor, active: torch.Tensor):
        nonlocal n_evals
        idx = active.nonzero().flatten().tolist()
        p = params[idx].clone().requires_grad_(True)
        consts = [p[j, :len(rows[r])] for j, r in enumerate(idx)]
        preds = evaluator.evaluate_with_constants([exprs[r] for r in idx], consts)
        n_evals += len(idx)
        values = scorer.objective(preds)
        finite = torch.isfinite(values)
        total = torch.where(finite, values, torch.zeros_like(values)).sum()
        grad = torch.autograd.grad(total, p, allow_unused=True)[0] if total.requires_grad else None
        if grad is None:
            grad = torch.zeros_like(p)
        v = torch.full((B,), math.inf, dtype=dtype, device=device)
        g = torch.zeros(B, K, dtype=dtype, device=device)
        v[idx] = torch.where(finite, values.detach(), torch.full_like(values.detach(), math.inf))
        g[idx] = torch.nan_to_num(grad.detach(), nan=0.0, posinf=0.0, neginf=0.0) * mask[idx]
        return v, g

    def f_only(params: torch.Tensor, active: torch.Tensor):
        nonlocal n_evals
        idx = active.nonzero().flatten().tolist()
        v = torch.full((B,), math.inf, dtype=dtype, device=device)
        if not idx:
            return v
        with torch.no_grad():
            consts = [params[j, :len(rows[r])] for j, r in zip(idx, idx)]
            preds = evaluator.evaluate_with_constants([exprs[r] for r in idx], consts)
            n_evals += len(idx)
            values = scorer.objective(preds)
        v[idx] = torch.where(torch.isfinite(values), values, torch.full_like(values, math.inf))
        return v

    all_rows = torch.ones(B, dtype=torch.bool, device=device)
    fx, g = f_and_grad(x, all_rows)
    start = fx.clone()
    H = torch.eye(K, dtype=dtype, device=device).expand(B, K, K) * (mask[:, :, None] * mask[:, None, :])
    H = H.clone()
    active = torch.isfinite(fx) & (g.abs().sum(-1) > 0)
    fresh = torch.ones(B, dtype=torch.bool, device=device)
    first = True
    for _ in range(iterations):
        if not active.any() or (deadline is not None and time.perf_counter() > deadline):
            break
        d = -(H @ g[:, :, None]).squeeze(-1)
        slope = (d * g).sum(-1)
        # Not a descent direction (curvature estimate gone bad): fall back to steepest descent.
        bad = slope >= 0
        d = torch.where(bad[:, None], -g, d)
        slope = torch.where(bad, -(g * g).sum(-1), slope)
        if first:  # the first step's length is unknown: start from a unit-length move
            d = d / d.norm(dim=-1, keepdim=True).clamp_min(1.0)
            slope = (d * g).sum(-1)
            first = False
        t = torch.ones(B, dtype=dtype, device=device)
        pending = active.clone()
        new_x = x.clone()
        new_f = fx.clone()
        for _ in range(_MAX_LINE_SEARCH):
            if not pending.any():
                break
            trial = x + t[:, None] * d
            ft = f_only(trial, pending)
            ok = pending & torch.isfinite(ft) & (ft <= fx + _ARMIJO * t * slope)
            new_x = torch.where(ok[:, None], trial, new_x)
            new_f = torch.where(ok, ft, new_f)
            pending = pending & ~ok
            t = torch.where(pending, t * 0.5, t)
        moved = active & ~pending
        active = moved  # no acceptable step: this candidate has converged (or is stuck)
        if not moved.any():
            break
        f_new, g_new = f_and_grad(new_x, moved)
        s = (new_x - x) * moved[:, None]
        yv = (g_new - g) * moved[:, None]
        sy = (s * yv).sum(-1)
        upd = moved & (sy > 1e-12 * (s.norm(dim=-1) * yv.norm(dim=-1)).clamp_min(1e-300))
        rho = torch.where(upd, 1.0 / torch.where(upd, sy, torch.ones_like(sy)), torch.zeros_like(sy))
        eye = torch.eye(K, dtype=dtype, device=device).expand(B, K, K) * (mask[:, :, None] * mask[:, None, :])
        # Before the first update, scale the identity to the observed curvature (Nocedal & Wright 6.20).
        gamma = sy / (yv * yv).sum(-1).clamp_min(1e-300)
        H = torch.where((fresh & upd)[:, None, None], gamma[:, None, None] * eye, H)
        fresh = fresh & ~upd
        V = eye - rho[:, None, None] * (s[:, :, None] * yv[:, None, :])
        H_new = V @ H @ V.transpose(1, 2) + rho[:, None, None] * (s[:, :, None] * s[:, None, :])
        H = torch.where(upd[:, None, None], H_new, H)
        x = torch.where(moved[:, None], new_x, x)
        fx = torch.where(moved, f_new, fx)
        g = torch.where(moved[:, None], g_new, g)
        active = active & torch.isfinite(fx) & (g.abs().sum(-1) > 1e-300)
    return x.cpu().numpy(), {"loss": fx.cpu().numpy(), "start": start.cpu().numpy()}, n_evals
