"""The soft tree evaluated level by level, with restarts as a leading batch dimension.

`pysr_baseline.model.SymbolicRegressor` computes node after node, each node one tensor
call per candidate operator. Here every level of every restart is one tensor call per
candidate operator. Restart ``r`` starts exactly where the sequential trainer's restart
``r`` starts (`pysr_baseline.trainer.initial_parameters`) and, since Adam is
elementwise, follows the same path up to floating-point reordering.

Two ways to train it, the same function and the same gradient (to round-off):

- ``forward`` builds an autograd graph (every guarded operator is several small tensor
  calls forward and more backward);
- ``loss_and_grad`` (the fused path) computes each candidate's value *and its
  derivative* in the forward sweep, with arithmetic masks instead of ``where``/boolean
  kernels (which are 5-20x slower per element on this CPU build), so that the backward
  sweep is three tensor calls per level and no autograd graph is recorded. Built-in
  operators have hand-written kernels; a custom operator's derivative comes from
  autograd on its soft form, so custom operators work too.

Layout: a level's nodes are stored so that the left children of the level above are
its first half and the right children its second half (``a = values[:M]``,
``b = values[M:]``, no strided copies); a tensor is (nodes, restarts, samples) and the
candidates of a level are stacked in front, (candidates, nodes, restarts, samples), so
every candidate writes one contiguous block. ``restart_parameters`` returns the usual
heap order.

    >>> from pysr_baseline.trainer import initial_parameters
    >>> model = SymbolicRegressor(n_features=2, max_depth=3)
    >>> tree = BatchedSoftTree.from_model(model, [initial_parameters(model, s, 0.5) for s in (1, 2)])
    >>> X = torch.rand(500, 2, generator=torch.Generator().manual_seed(0)) + 1
    >>> tree(X).shape          # (restarts, samples)
    torch.Size([2, 500])
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from pysr_baseline.model import OUTPUT_CLAMP, SymbolicRegressor
from pysr_baseline.operators import _EPS, _EXP_MAX, BUILTIN_OPERATORS

# step(t) = 1 for t >= 0, else 0, in float arithmetic: 2^120 * t (computed as
# 2^120 * bound + 2^120 * x, both exact scalings, so the sign is t's) is <= -1 for every
# negative t a guard can produce (the smallest is one ulp of eps = 1e-6), and overflows
# to -inf at worst; clamping to [-1, 0] and adding 1 gives exactly 0 or 1. Comparisons
# and where() cost 5-20x more per element on this CPU build.
_BIG = 2.0 ** 120


class _Scalars:
    """0-dim tensors of one dtype: a Python float in a tensor op costs a dtype
    conversion (~2.5 us) on every call; a 0-dim tensor of the same dtype does not."""

    _cache: dict = {}

    def __init__(self, like: torch.Tensor):
        self.dtype, self.device = like.dtype, like.device

    def __call__(self, value: float) -> torch.Tensor:
        key = (value, self.dtype, self.device)
        t = self._cache.get(key)
        if t is None:
            t = self._cache[key] = torch.tensor(value, dtype=self.dtype, device=self.device)
        return t


def _step_of(bound: float, x: torch.Tensor, k: _Scalars, sign: float = -1.0) -> torch.Tensor:
    """A new tensor: 1 where ``bound + sign * x >= 0``, else 0 (sign -1: x <= bound;
    +1: x >= -bound): the derivative mask of a clamp, inclusive as torch's is."""
    t = torch.add(k(bound * _BIG), x, alpha=sign * _BIG)
    return t.clamp_(-1.0, 0.0).add_(k(1.0))


class _Operands:
    """A level's children ``a`` (left) and ``b`` (right) and the intermediates several
    kernels share (|a|, the guarded a, sin a, ...), each computed once on first use."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, k: _Scalars):
        self.a, self.b, self.k, self._memo = a, b, k, {}

    def _get(self, key, make):
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = make()
        return value

    def remember(self, key, value: torch.Tensor) -> None:
        """A kernel offers a value it computed (sin a) to the kernels after it."""
        self._memo.setdefault(key, value)

    def x(self, side: str) -> torch.Tensor:
        return self.a if side == "a" else self.b

    def abs(self, side: str) -> torch.Tensor:
        return self._get(("abs", side), lambda: self.x(side).abs())

    def away(self, side: str) -> torch.Tensor:
        """The operators' ``_away_from_zero``: |x| < eps pushed out to +-eps (the sign
        of -0.0 aside, which the original maps to +eps)."""
        return self._get(("away", side), lambda: torch.copysign(self.abs(side).clamp_min(_EPS), self.x(side)))

    def away_mask(self, side: str) -> torch.Tensor:
        """d away / dx: 1 where |x| >= eps (the guard passes x through), else 0."""
        return self._get(("away_mask", side), lambda: _step_of(-_EPS, self.abs(side), self.k, 1.0))

    def floor(self) -> torch.Tensor:
        """``a.clamp_min(eps)`` (sqrt and log)."""
        return self._get("floor", lambda: self.a.clamp_min(_EPS))

    def floor_mask(self) -> torch.Tensor:
        """d floor / da: 1 where a >= eps."""
        return self._get("floor_mask", lambda: _step_of(-_EPS, self.a, self.k, 1.0))

    def sin(self) -> torch.Tensor:
        return self._get("sin", lambda: torch.sin(self.a))

    def cos(self) -> torch.Tensor:
        return self._get("cos", lambda: torch.cos(self.a))

    def square(self) -> torch.Tensor:
        return self._get("square", lambda: torch.square(self.a))


# --- kernels: write an operator's guarded value into v and, when d is given, its
# derivative with respect to a into d (and to b into e, for binary operators). Values
# are computed exactly as pysr_baseline.operators' soft forms compute them. A kernel
# whose derivative is a constant (add: 1) writes it only when ``fill`` is set: the
# buffers are reused from epoch to epoch and nothing else writes there.

def _k_add(o, v, d, e, fill):
    torch.add(o.a, o.b, out=v)
    if fill:
        d.fill_(1.0), e.fill_(1.0)


def _k_sub(o, v, d, e, fill):
    torch.sub(o.a, o.b, out=v)
    if fill:
        d.fill_(1.0), e.fill_(-1.0)


def _k_mul(o, v, d, e, fill):
    torch.mul(o.a, o.b, out=v)
    if d is not None:
        d.copy_(o.b), e.copy_(o.a)


def _k_div(o, v, d, e, fill):
    den = o.away("b")
    torch.div(o.a, den, out=v)
    if d is not None:
        torch.reciprocal(den, out=d)
        torch.mul(v, d, out=e).mul_(o.away_mask("b")).neg_()      # -a / den^2 where the guard passes b


# Where a guard's own clamp is active the guarded value lies outside +-OUTPUT_CLAMP
# (exp(30), the clamped tan 1e3, 1 / eps), so the output clamp's mask already zeroes the
# derivative there and the kernel need not compute the guard's mask.
_EXP_GUARD_HIDDEN = math.exp(_EXP_MAX) > OUTPUT_CLAMP
_TAN_GUARD_HIDDEN = 1e3 > OUTPUT_CLAMP
_INV_GUARD_HIDDEN = 1.0 / _EPS > OUTPUT_CLAMP


def _k_pow(o, v, d, e, fill):
    # soft pow: exp(min(clamp(b, -5, 5) * log(max(|a|, eps)), 30))
    k = o.k
    log_a = torch.log(o.abs("a").clamp_min(_EPS))
    b5 = o.b.clamp(-5.0, 5.0)
    z = b5 * log_a
    torch.exp(z.clamp(max=_EXP_MAX), out=v)
    if d is not None:
        live = v if _EXP_GUARD_HIDDEN else _step_of(_EXP_MAX, z, k).mul_(v)     # v where z <= 30
        # d log(max(|a|, eps)) / da = sign(a) / max(|a|, eps) where |a| >= eps: 1 / away(a)
        torch.mul(live, b5, out=d).mul_(o.away_mask("a")).div_(o.away("a"))
        torch.mul(live, log_a, out=e).mul_(_step_of(5.0, o.abs("b"), k))       # -5 <= b <= 5


def _k_neg(o, v, d, e, fill):
    torch.neg(o.a, out=v)
    if fill:
        d.fill_(-1.0)


def _k_square(o, v, d, e, fill):
    torch.square(o.a, out=v)
    o.remember("square", v)       # read by cube before the level's clamp
    if d is not None:
        torch.mul(o.a, o.k(2.0), out=d)


def _k_cube(o, v, d, e, fill):
    torch.mul(o.square(), o.a, out=v)         # (a * a) * a, as the operator rounds it
    if d is not None:
        torch.mul(o.square(), o.k(3.0), out=d)


def _k_sqrt(o, v, d, e, fill):
    torch.sqrt(o.floor(), out=v)
    if d is not None:
        torch.mul(v, o.k(2.0), out=d)
        torch.div(o.floor_mask(), d, out=d)


def _k_exp(o, v, d, e, fill):
    torch.exp(o.a.clamp(max=_EXP_MAX), out=v)
    if d is not None:
        if _EXP_GUARD_HIDDEN:
            d.copy_(v)
        else:
            torch.mul(_step_of(_EXP_MAX, o.a, o.k), v, out=d)


def _k_log(o, v, d, e, fill):
    torch.log(o.floor(), out=v)
    if d is not None:
        torch.div(o.floor_mask(), o.floor(), out=d)


def _k_abs(o, v, d, e, fill):
    v.copy_(o.abs("a"))
    if d is not None:
        torch.sign(o.a, out=d)


def _k_sin(o, v, d, e, fill):
    torch.sin(o.a, out=v)
    o.remember("sin", v)          # in [-1, 1]: the level's clamp leaves it as it is
    if d is not None:
        torch.cos(o.a, out=d)
        o.remember("cos", d)


def _k_cos(o, v, d, e, fill):
    v.copy_(o.cos())
    o.remember("cos", v)
    if d is not None:
        torch.neg(o.sin(), out=d)


def _k_tan(o, v, d, e, fill):
    t = torch.tan(o.a)
    torch.clamp(t, -1e3, 1e3, out=v)
    if d is not None:
        torch.mul(t, t, out=d).add_(o.k(1.0))
        if not _TAN_GUARD_HIDDEN:
            d.mul_(_step_of(1e3, t.abs(), o.k))


def _k_tanh(o, v, d, e, fill):
    torch.tanh(o.a, out=v)
    if d is not None:
        torch.mul(v, v, out=d).neg_().add_(o.k(1.0))


def _k_inv(o, v, d, e, fill):
    torch.reciprocal(o.away("a"), out=v)
    if d is not None:
        torch.mul(v, v, out=d).neg_()
        if not _INV_GUARD_HIDDEN:
            d.mul_(o.away_mask("a"))


def _k_identity(o, v, d, e, fill):
    v.copy_(o.a)
    if fill:
        d.fill_(1.0)


_KERNELS = {"add": _k_add, "sub": _k_sub, "mul": _k_mul, "div": _k_div, "pow": _k_pow, "neg": _k_neg,
            "square": _k_square, "cube": _k_cube, "sqrt": _k_sqrt, "exp": _k_exp, "log": _k_log, "abs": _k_abs,
            "sin": _k_sin, "cos": _k_cos, "tan": _k_tan, "tanh": _k_tanh, "inv": _k_inv}


def _generic_kernel(op):
    """A custom operator: its soft form, made finite as the model does (nan_to_num), and
    its derivatives from autograd (the operators are elementwise, so the gradient of the
    sum is the elementwise derivative); zero where the value was not finite."""

    def kernel(o, v, d, e, fill):
        args = (o.a, o.b)[:op.arity]
        if d is None:
            v.copy_(torch.nan_to_num(op.soft(*args), nan=0.0, posinf=OUTPUT_CLAMP, neginf=-OUTPUT_CLAMP))
            return
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_(True) for x in args]
            out = op.soft(*leaves)
            grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
        out = out.detach()
        v.copy_(torch.nan_to_num(out, nan=0.0, posinf=OUTPUT_CLAMP, neginf=-OUTPUT_CLAMP))
        finite = torch.isfinite(out)
        for target, grad in zip((d, e), grads):
            if grad is None:
                target.zero_()
            else:
                target.copy_(torch.where(finite, grad, 0.0))

    return kernel


def _builtin(op) -> bool:
    return BUILTIN_OPERATORS.get(op.name) is op


class _Workspace:
    """One level's buffers, allocated once and reused every epoch (fresh ~1 MB tensors
    each epoch cost page faults that made whole-tensor calls 3x slower), and the views
    of them each epoch needs, made once: the stacked candidate values (K, M, R, N), their
    derivatives, and the level's output and backward buffers."""

    def __init__(self, shape: tuple, like: torch.Tensor, n_candidates: int, n_binary: int, need_grad: bool):
        m, r, n = shape
        empty = like.new_empty
        self.shape = shape
        self.stacked = empty((n_candidates, m, r, n))
        self.values = list(self.stacked.unbind(0))
        self.batched = self.stacked.view(n_candidates, m * r, n).transpose(0, 1)     # (M*R, K, N)
        self.out = empty((m * r, 1, n))
        self.out_view = self.out.view(shape)
        self.fresh = True        # constant derivatives (add: 1) not yet written
        self.d_views = self.e_views = [None] * n_candidates
        if not need_grad:
            return
        self.da = empty((n_candidates, m, r, n))
        self.db = empty((n_binary, m, r, n))
        self.d_views = list(self.da.unbind(0))
        self.e_views = list(self.db.unbind(0)) + [None] * (n_candidates - n_binary)
        # the derivatives times the clamp's mask, which the weighted sums read
        self.inside = empty((n_candidates, m, r, n))
        self.inside_binary = self.inside[:n_binary]
        self.db_masked = empty((n_binary, m, r, n))
        self.da_batched = self.inside.view(n_candidates, m * r, n).transpose(0, 1)
        self.db_batched = self.db_masked.view(n_binary, m * r, n).transpose(0, 1)
        self.d_a, self.d_b = empty((m * r, 1, n)), empty((m * r, 1, n))
        self.d_a_view, self.d_b_view = self.d_a.view(shape), self.d_b.view(shape)
        if n_binary == 0:
            self.d_b.zero_()
        self.children = empty((2 * m, r, n))
        self.children_a, self.children_b = self.children[:m], self.children[m:]
        self.grad_w = empty((m * r, 1, n_candidates))
        self.grad_w_view = self.grad_w.view(m, r, n_candidates)
        self.transposed = self.stacked.view(n_candidates, m * r, n).permute(1, 2, 0)  # (M*R, N, K)


class BatchedSoftTree(nn.Module):
    """All restarts of one `SymbolicRegressor` layout, evaluated level by level.

    ``internal`` (R, n_operator_nodes, n_candidates), ``leaf`` (R, n_leaves, n_features + 1)
    and ``constant`` (R, n_leaves) are stacked `initial_parameters`, heap order.
    ``level_batching=False`` keeps the restart batch but computes node by node (autograd
    path only).
    """

    def __init__(self, model: SymbolicRegressor, internal: torch.Tensor, leaf: torch.Tensor, constant: torch.Tensor,
                 level_batching: bool = True):
        super().__init__()
        self.binary = model.binary_operators
        self.unary = model.unary_operators
        self.n_features = model.n_features
        self.max_depth = model.max_depth
        self.temperature = model.temperature
        self.level_batching = level_batching
        # Built-in soft forms are finite for finite inputs: nan_to_num would be a no-op.
        self.all_builtin = all(_builtin(op) for op in (*self.binary, *self.unary))
        ops = [*self.binary, *self.unary]
        self._kernels = [_KERNELS[op.name] if _builtin(op) else _generic_kernel(op) for op in ops] + [_k_identity]

        depth, n_restarts = self.max_depth, internal.shape[0]
        orders = [[0]]
        for _ in range(depth):   # a level's left children first, then its right children
            orders.append([2 * i for i in orders[-1]] + [2 * i + 1 for i in orders[-1]])
        self.register_buffer("_internal_perm", torch.tensor([2 ** d - 1 + i for d in range(depth) for i in orders[d]]),
                             persistent=False)
        self.register_buffer("_leaf_perm", torch.tensor(orders[depth]), persistent=False)
        stored = [internal[:, self._internal_perm].transpose(0, 1), leaf[:, self._leaf_perm].transpose(0, 1),
                  constant[:, self._leaf_perm].transpose(0, 1)]
        self._shapes = [tuple(t.shape) for t in stored]
        # One flat parameter: Adam updates it in one call, and a fused step writes one grad.
        self.flat = nn.Parameter(torch.cat([t.reshape(-1) for t in stored]).detach().clone())
        self._n_restarts = n_restarts

    @classmethod
    def from_model(cls, model: SymbolicRegressor, starts: Sequence[dict[str, torch.Tensor]], **kwargs):
        """Stack per-restart parameter dicts (`initial_parameters`) into one batched tree."""
        stacked = {k: torch.stack([s[k] for s in starts]) for k in ("internal", "leaf", "constant")}
        return cls(model, stacked["internal"], stacked["leaf"], stacked["constant"], **kwargs)

    # --- parameters -------------------------------------------------------------------
    def _views(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        out, offset = [], 0
        for shape in self._shapes:
            size = 1
            for s in shape:
                size *= s
            out.append(tensor[offset:offset + size].view(shape))
            offset += size
        return out

    @property
    def internal(self) -> torch.Tensor:
        """Operator-node logits, (n_operator_nodes, R, n_candidates), stored level order."""
        return self._views(self.flat)[0]

    @property
    def leaf(self) -> torch.Tensor:
        """Leaf logits, (n_leaves, R, n_features + 1), stored order."""
        return self._views(self.flat)[1]

    @property
    def constant(self) -> torch.Tensor:
        """Leaf constants, (n_leaves, R), stored order."""
        return self._views(self.flat)[2]

    @property
    def n_restarts(self) -> int:
        return self._n_restarts

    @property
    def n_candidates(self) -> int:
        return len(self.binary) + len(self.unary) + 1

    def level_slices(self) -> list[slice]:
        """Rows of ``internal`` for each operator level, root level first."""
        return [slice(2 ** d - 1, 2 ** (d + 1) - 1) for d in range(self.max_depth)]

    def restart_parameters(self, r: int) -> dict[str, torch.Tensor]:
        """Restart ``r``'s parameters in the heap layout `load_parameters` reads."""
        internal, leaf, constant = (t.detach()[:, r] for t in self._views(self.flat))
        out = {"internal": torch.empty_like(internal), "leaf": torch.empty_like(leaf),
               "constant": torch.empty_like(constant)}
        out["internal"][self._internal_perm] = internal
        out["leaf"][self._leaf_perm] = leaf
        out["constant"][self._leaf_perm] = constant
        return out

    # --- the autograd path --------------------------------------------------------------
    def _leaf_values(self, X: torch.Tensor, p_leaf: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        return torch.matmul(p_leaf[..., :-1], X.T) + (p_leaf[..., -1] * constant)[..., None]

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Soft predictions of every restart, (n_restarts, n_samples), through autograd."""
        internal, leaf, constant = self._views(self.flat)
        values = self._leaf_values(X, torch.softmax(leaf / self.temperature, dim=-1), constant)
        for rows in reversed(self.level_slices()):
            weights = torch.softmax(internal[rows] / self.temperature, dim=-1)      # (M, R, K)
            m = weights.shape[0]
            a, b = values[:m], values[m:]                                            # (M, R, N) each
            if self.level_batching:
                values = self._mix(a, b, weights)
            else:
                values = torch.cat([self._mix(a[i:i + 1], b[i:i + 1], weights[i:i + 1]) for i in range(m)])
        return values[0]

    def _mix(self, a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        outputs = [op.soft(a, b) for op in self.binary] + [op.soft(a) for op in self.unary] + [a]
        stacked = torch.stack(outputs)                                               # (K, M, R, N)
        if not self.all_builtin:
            stacked = torch.nan_to_num(stacked, nan=0.0, posinf=OUTPUT_CLAMP, neginf=-OUTPUT_CLAMP)
        stacked = stacked.clamp(-OUTPUT_CLAMP, OUTPUT_CLAMP)
        return self._weighted(weights, stacked)

    @staticmethod
    def _weighted(weights: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
        """sum_k weights[m, r, k] * stacked[k, m, r, :] as one batched matrix product."""
        k, m, r, n = stacked.shape
        out = torch.bmm(weights.reshape(m * r, 1, weights.shape[-1]), stacked.view(k, m * r, n).transpose(0, 1))
        return out.view(m, r, n)

    def entropy(self) -> torch.Tensor:
        """Mean entropy over each restart's nodes: (n_restarts,)."""
        internal, leaf, _ = self._views(self.flat)
        total = 0.0
        for logits in (internal, leaf):
            logp = torch.log_softmax(logits / self.temperature, dim=-1)
            total = total + (-(logp.exp() * logp).sum(-1)).sum(0)
        return total / (internal.shape[0] + leaf.shape[0])

    # --- the fused path -------------------------------------------------------------------
    def _workspaces(self, n_samples: int, like: torch.Tensor, need_grad: bool) -> list[_Workspace]:
        """Per operator level (root first), buffers for ``n_samples`` rows, made once."""
        key = (n_samples, like.dtype, like.device, need_grad)
        cache = self.__dict__.setdefault("_workspace_cache", {})
        if key not in cache:
            cache[key] = [_Workspace((2 ** d, self.n_restarts, n_samples), like, self.n_candidates,
                                     len(self.binary), need_grad) for d in range(self.max_depth)]
        return cache[key]

    def _mix_fused(self, ws: _Workspace, values: torch.Tensor, weights: torch.Tensor, need_grad: bool) -> torch.Tensor:
        """One level on its children ``values`` (2M, R, N): the mixture (M, R, N); with
        ``need_grad``, d mixture / d a and d mixture / d b are left in ``ws``."""
        m = ws.shape[0]
        a, b = values[:m], values[m:]
        k = _Scalars(a)
        n_binary = len(self.binary)
        operands = _Operands(a, b, k)
        fill = ws.fresh and need_grad
        for kernel, v, d, e in zip(self._kernels, ws.values, ws.d_views, ws.e_views):
            kernel(operands, v, d, e, fill)
        stacked = ws.stacked
        if need_grad:
            ws.fresh = False
            # d clamp(v) / dv = 1 where |v| <= OUTPUT_CLAMP, as a float mask, applied into
            # separate buffers: the constant derivatives (add: 1) stay in da/db for next time.
            inside = torch.abs(stacked, out=ws.inside)
            torch.add(k(OUTPUT_CLAMP * _BIG), inside, alpha=-_BIG, out=inside).clamp_(-1.0, 0.0).add_(k(1.0))
            if n_binary:
                torch.mul(ws.inside_binary, ws.db, out=ws.db_masked)
            inside.mul_(ws.da)
        stacked.clamp_(-OUTPUT_CLAMP, OUTPUT_CLAMP)
        w = weights.view(-1, 1, weights.shape[-1])
        torch.bmm(w, ws.batched, out=ws.out)
        if need_grad:
            torch.bmm(w, ws.da_batched, out=ws.d_a)
            if n_binary:
                torch.bmm(w[..., :n_binary], ws.db_batched, out=ws.d_b)
        return ws.out_view

    @staticmethod
    def _mix_backward(grad: torch.Tensor, ws: _Workspace) -> torch.Tensor:
        """Gradient of a level's weights (M, R, K); the children's gradient into ``ws.children``."""
        m, r, n = ws.shape
        torch.bmm(grad.view(m * r, 1, n), ws.transposed, out=ws.grad_w)
        torch.mul(grad, ws.d_a_view, out=ws.children_a)
        torch.mul(grad, ws.d_b_view, out=ws.children_b)
        return ws.grad_w_view

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor) -> torch.Tensor:
        """Soft predictions of every restart through the fused kernels (no gradient)."""
        internal, leaf, constant = (t.detach() for t in self._views(self.flat))
        values = self._leaf_values(X, torch.softmax(leaf / self.temperature, dim=-1), constant)
        spaces = self._workspaces(X.shape[0], X, False)
        for rows, ws in reversed(list(zip(self.level_slices(), spaces))):
            values = self._mix_fused(ws, values, torch.softmax(internal[rows] / self.temperature, -1), False)
        return values[0].clone()

    def fused_step(self, X: torch.Tensor, Y: torch.Tensor, W: torch.Tensor | None) -> "_FusedStep":
        """A callable ``step(entropy_coefficient) -> nmse per restart`` that also sets
        ``flat.grad``; everything that does not change between epochs is prepared once."""
        return _FusedStep(self, X, Y, W)

    def loss_and_grad(self, X: torch.Tensor, Y: torch.Tensor, W: torch.Tensor | None,
                      entropy_coefficient: float) -> torch.Tensor:
        """Each restart's linearly scaled NMSE, (n_restarts,); sets ``flat.grad`` to the
        gradient of ``sum(nmse + entropy_coefficient * entropy())``, the loss the
        autograd path differentiates. (A training loop should keep one `fused_step`.)"""
        return self.fused_step(X, Y, W)(entropy_coefficient)


class _FusedStep:
    """One fused training step of a `BatchedSoftTree` on fixed data: forward sweep with
    derivatives, scaled NMSE and its gradient, backward sweep, softmax and entropy
    gradients, all without autograd; about 350 tensor calls at any restart count."""

    def __init__(self, tree: BatchedSoftTree, X: torch.Tensor, Y: torch.Tensor, W: torch.Tensor | None):
        self.tree, self.X = tree, X
        flat = tree.flat.detach()                     # shares storage: sees every Adam update
        self.internal, self.leaf, self.constant = tree._views(flat)
        self.grad_flat = torch.zeros_like(flat)
        self.g_int, self.g_leaf, self.g_const = tree._views(self.grad_flat)
        self.spaces = tree._workspaces(X.shape[0], X, True)
        self.levels = list(zip(tree.level_slices(), self.spaces))
        self.n_nodes = self.internal.shape[0] + self.leaf.shape[0]
        self.target = _ScaledTarget(Y, W)

    @torch.no_grad()
    def __call__(self, entropy_coefficient: float) -> torch.Tensor:
        tree, temperature = self.tree, self.tree.temperature
        logp_int = torch.log_softmax(self.internal / temperature, dim=-1)
        p_int = logp_int.exp()
        logp_leaf = torch.log_softmax(self.leaf / temperature, dim=-1)
        p_leaf = logp_leaf.exp()
        values = tree._leaf_values(self.X, p_leaf, self.constant)
        for rows, ws in reversed(self.levels):
            values = tree._mix_fused(ws, values, p_int[rows], True)
        fit, grad = self.target.loss_and_grad(values[0])

        g_p_int = torch.empty_like(p_int)
        grad = grad[None]
        for rows, ws in self.levels:
            g_p_int[rows] = tree._mix_backward(grad, ws)
            grad = ws.children
        g_p_leaf = torch.empty_like(p_leaf)
        g_p_leaf[..., :-1] = torch.matmul(grad, self.X)
        row_sums = grad.sum(-1)
        torch.mul(row_sums, self.constant, out=g_p_leaf[..., -1])
        torch.mul(row_sums, p_leaf[..., -1], out=self.g_const)
        kappa = entropy_coefficient / self.n_nodes
        _softmax_entropy_backward(p_int, logp_int, g_p_int, kappa, temperature, self.g_int)
        _softmax_entropy_backward(p_leaf, logp_leaf, g_p_leaf, kappa, temperature, self.g_leaf)
        tree.flat.grad = self.grad_flat
        return fit


def _softmax_entropy_backward(p, logp, grad_p, kappa: float, temperature: float, out: torch.Tensor) -> None:
    """d/dlogits of (loss through p = softmax(logits / T)) + kappa * entropy(p), into out.

    Softmax: p * (g - <p, g>); entropy H = -<p, log p>: dH/dz = -p * (log p + H)."""
    entropy = -(p * logp).sum(-1, keepdim=True)
    inner = (p * grad_p).sum(-1, keepdim=True)
    g = grad_p - inner - kappa * (logp + entropy)
    torch.mul(g, p, out=out).div_(temperature)


class _ScaledTarget:
    """`normalized_mse` of the best ``a * f + b`` (`linear_scaling`) per row of ``f``
    (restarts x samples), and its gradient, with the target's statistics computed once.

    At the optimal a and b their own derivatives vanish, so d loss / d f = 2 w a r / var_y
    with r the residual: the gradient autograd gives through the closed form."""

    def __init__(self, y: torch.Tensor, weights: torch.Tensor | None):
        self.y = y
        self.w = torch.full_like(y, 1.0 / y.shape[0]) if weights is None else weights / weights.sum()
        self.mean_y = (y * self.w).sum()
        y_centred = y - self.mean_y
        self.var_y = (y_centred * y_centred * self.w).sum().clamp_min(1e-300)
        self.yc_w = y_centred * self.w

    def loss_and_grad(self, f: torch.Tensor):
        w = self.w
        mean_f = (f * w).sum(-1, keepdim=True)
        df = f - mean_f
        var_f = (df * df * w).sum(-1)
        cov = (df * self.yc_w).sum(-1)
        mean_f = mean_f.squeeze(-1)
        a = torch.where(var_f > 1e-14 * (mean_f * mean_f + 1.0), cov / torch.where(var_f > 0, var_f, 1.0),
                        torch.zeros_like(cov))
        b = self.mean_y - a * mean_f
        residual = a[:, None] * f + (b[:, None] - self.y)
        weighted = residual * w
        mse = (residual * weighted).sum(-1) / self.var_y
        mse = torch.where(torch.isfinite(mse), mse, torch.full_like(mse, float("inf")))
        grad = weighted.mul_((2.0 * a / self.var_y)[:, None])
        return mse, grad


def scaled_nmse_and_grad(f: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None):
    """Each row's linearly scaled NMSE and its gradient with respect to ``f``."""
    return _ScaledTarget(y, weights).loss_and_grad(f)
