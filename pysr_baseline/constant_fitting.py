"""Fitting a discrete formula's constants to data.

The soft tree finds a formula's shape; its constants are then refitted exactly. The
output is fitted as ``a * f(x) + b`` with ``a`` and ``b`` solved in closed form
(linear scaling, as in Operon), and the constants inside ``f`` by L-BFGS on the
residual that remains: the search looks for shape, not scale.

    >>> X = torch.rand(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 1
    >>> y = 0.5 * X[:, 0] * X[:, 1] ** 2
    >>> from pysr_baseline.parsing import parse_expression
    >>> fitted = fit_formula(parse_expression("x0 * square(x1)"), X, y)
    >>> str(fitted.expression), fitted.nmse < 1e-20
    ('0.5 * (x0 * square(x1))', True)
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import torch

from pysr_baseline.expression import Expression
from pysr_baseline.operators import get_operator

_ADD, _MUL = get_operator("add"), get_operator("mul")


def linear_scaling(f: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None):
    """Closed-form ``a, b`` minimising the (weighted) squared error of ``a * f + b``.

    Works on a leading batch of candidates: ``f`` of shape (..., n), ``y`` of shape (n,).
    A constant ``f`` gets ``a = 0`` and ``b`` the mean of ``y``.
    """
    w = torch.ones_like(y) if weights is None else weights
    w = w / w.sum()
    mean_f = (f * w).sum(-1, keepdim=True)
    mean_y = (y * w).sum()
    df = f - mean_f
    var_f = (df * df * w).sum(-1)
    cov = (df * (y - mean_y) * w).sum(-1)
    # Relative threshold: var_f may be ~1e-30 from round-off on a constant f.
    scale = (mean_f.squeeze(-1) ** 2 + 1.0)
    a = torch.where(var_f > 1e-14 * scale, cov / torch.where(var_f > 0, var_f, 1.0), torch.zeros_like(cov))
    b = mean_y - a * mean_f.squeeze(-1)
    return a, b


def normalized_mse(pred: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean squared error divided by the weighted variance of ``y``; NaN -> inf."""
    w = torch.ones_like(y) if weights is None else weights
    w = w / w.sum()
    var_y = ((y - (y * w).sum()) ** 2 * w).sum().clamp_min(1e-300)
    mse = ((pred - y) ** 2 * w).sum(-1) / var_y
    return torch.where(torch.isfinite(mse), mse, torch.full_like(mse, float("inf")))


@dataclass
class FittedFormula:
    """A formula with refitted constants, its normalized MSE and its complexity."""

    expression: Expression
    nmse: float

    @property
    def complexity(self) -> int:
        return self.expression.complexity()


def _refit_inner_constants(f: Expression, X: torch.Tensor, y: torch.Tensor, weights, max_iter: int) -> Expression:
    """L-BFGS on the constants inside ``f``, with a and b eliminated in closed form."""

    def loss_and_backward(params):
        out = f.evaluate(X, constants=params)
        a, b = linear_scaling(out, y, weights)
        loss = normalized_mse(a * out + b, y, weights)
        if not torch.isfinite(loss):
            return loss.detach()  # no gradient step out of an undefined region
        loss.backward()
        return loss

    return refit_constants_lbfgs(f, X, y, weights, max_iter, loss_and_backward)


def refit_constants_lbfgs(f: Expression, X: torch.Tensor, y: torch.Tensor, weights, max_iter: int,
                          loss_and_backward) -> Expression:
    """Run L-BFGS on ``f``'s constants; ``loss_and_backward(params)`` returns the loss of
    ``f`` with constants ``params`` after filling ``params.grad`` (or a detached non-finite
    loss). Keeps the start when the result fits no better. Callers with a faster way to
    compute the loss (a memoized evaluator) pass their own ``loss_and_backward``."""
    if not f.constants:
        return f
    params = torch.tensor(f.constants, dtype=X.dtype).requires_grad_(True)
    if not _bfgs(params, loss_and_backward, max_iter):
        return f
    candidate = f.with_constants(params.detach().tolist())
    before = _scaled_nmse(f, X, y, weights)
    return candidate if _scaled_nmse(candidate, X, y, weights) <= before else f


def _bfgs(params: torch.Tensor, loss_and_backward, max_iter: int) -> bool:
    """Minimise ``loss_and_backward`` over ``params`` in place: BFGS with a backtracking
    (Armijo) line search, at most ``max_iter`` iterations. Written here rather than
    taken from ``torch.optim.LBFGS``, whose first use imports ``torch._dynamo`` (~1.6 s).
    Returns False when the start has no finite loss (``params`` untouched)."""

    def value_and_grad(x: torch.Tensor):
        with torch.no_grad():
            params.copy_(x)
        params.grad = None
        loss = loss_and_backward(params)
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        grad = params.grad
        if grad is None or not math.isfinite(value):
            return value, None
        return value, torch.nan_to_num(grad.detach().clone(), nan=0.0, posinf=0.0, neginf=0.0)

    x = params.detach().clone()
    fx, g = value_and_grad(x)
    if g is None:
        with torch.no_grad():
            params.copy_(x)
        return math.isfinite(fx)
    n = x.numel()
    H = torch.eye(n, dtype=x.dtype)
    fresh = True
    for iteration in range(max_iter):
        if float(g.abs().max()) < 1e-12:
            break
        d = -(H @ g)
        slope = float(d @ g)
        if slope >= 0:
            d, slope = -g, -float(g @ g)
        if iteration == 0:  # the first step's length is unknown: a unit-length move at most
            d = d / max(1.0, float(d.norm()))
            slope = float(d @ g)
        t, accepted = 1.0, None
        for _ in range(20):
            x_new = x + t * d
            f_new, g_new = value_and_grad(x_new)
            if g_new is not None and f_new <= fx + 1e-4 * t * slope:
                accepted = (x_new, f_new, g_new)
                break
            t *= 0.5
        if accepted is None:
            break
        x_new, f_new, g_new = accepted
        s, yv = x_new - x, g_new - g
        sy = float(s @ yv)
        if sy > 1e-12 * max(float(s.norm() * yv.norm()), 1e-300):
            if fresh:  # scale the identity to the curvature seen (Nocedal & Wright 6.20)
                H = H * (sy / max(float(yv @ yv), 1e-300))
                fresh = False
            rho = 1.0 / sy
            V = torch.eye(n, dtype=x.dtype) - rho * torch.outer(s, yv)
            H = V @ H @ V.T + rho * torch.outer(s, s)
        change = abs(fx - f_new)
        x, fx, g = x_new, f_new, g_new
        if change <= 1e-14 * max(1.0, abs(fx)):
            break
    with torch.no_grad():
        params.copy_(x)
    return True


def _zero_negligible_constants(f: Expression, X, y, weights, tolerance: float) -> Expression:
    """Set constants that are ~0 to exactly 0 when the fit does not suffer: an optimiser
    leaves 1e-7 where the truth has nothing, and that blocks exact simplification."""
    values = list(f.constants)
    if not values:
        return f
    current = _scaled_nmse(f, X, y, weights)
    for i, v in enumerate(values):
        if v == 0.0 or abs(v) > 1e-3:
            continue
        trial = values.copy()
        trial[i] = 0.0
        candidate = f.with_constants(trial)
        loss = _scaled_nmse(candidate, X, y, weights)
        if loss <= current * (1 + tolerance) + 1e-14:
            values, f, current = trial, candidate, min(current, loss)
    return f


def _scaled_nmse(f: Expression, X, y, weights) -> float:
    with torch.no_grad():
        out = f.evaluate(X)
        a, b = linear_scaling(out, y, weights)
        return float(normalized_mse(a * out + b, y, weights))


def fit_formula(f: Expression, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None,
                max_iter: int = 50, tolerance: float = 1e-6, values: torch.Tensor | None = None) -> FittedFormula:
    """Refit ``f``'s constants and wrap it as ``a * f + b``, dropping ``a`` or ``b`` when
    they do not improve the fit by more than a relative ``tolerance``.

    ``values``, for a formula without constants, are its already computed outputs on
    ``X`` (a caller that evaluated many formulas in one batch passes them in).
    """
    if f.constants:
        f = _refit_inner_constants(f, X, y, weights, max_iter)
        f = _zero_negligible_constants(f, X, y, weights, tolerance)
        values = None
    return scale_formula(f, X, y, weights, tolerance, values)


def scale_formula(f: Expression, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None,
                  tolerance: float = 1e-6, values: torch.Tensor | None = None) -> FittedFormula:
    """The simplest of ``f``, ``a * f``, ``f + b`` and ``a * f + b`` (closed-form a, b)
    whose loss is within a relative ``tolerance`` of the best; ``values`` are ``f``'s
    outputs on ``X`` if already computed. The last step of `fit_formula`."""
    with torch.no_grad():
        out = f.evaluate(X) if values is None else values
        if not torch.isfinite(out).all():
            return FittedFormula(f, float("inf"))
        a, b = linear_scaling(out, y, weights)
        w = torch.ones_like(y) if weights is None else weights
        a_only = float((w * out * y).sum() / (w * out * out).sum().clamp_min(1e-300))
        b_only = float(((y - out) * w).sum() / w.sum())
        options = [  # simplest first
            (f, out),
            (_scaled(f, a_only, None), a_only * out),
            (_scaled(f, None, b_only), out + b_only),
            (_scaled(f, float(a), float(b)), a * out + b),
        ]
        losses = [float(normalized_mse(pred, y, weights)) for _, pred in options]
    best = min(losses)
    for (expr, _), loss in zip(options, losses):
        if loss <= best * (1 + tolerance) + 1e-14:
            return FittedFormula(expr, loss)
    raise AssertionError("unreachable: the best option always qualifies")


def _scaled(f: Expression, a: float | None, b: float | None) -> Expression:
    out = f
    if a is not None:
        out = Expression(_MUL, (Expression.const(a), out))
    if b is not None:
        out = Expression(_ADD, (out, Expression.const(b)))
    return out
