"""Soft trees in the search (issue 5, scope item 4): seeds and a residual mutation.

A proposer is any object with ``seed`` and ``propose`` (and optionally ``bind``, which
the search calls once with the data before anything else); pass it as
``soft_tree_proposer``, or leave it None for `TrainedSoftTreeProposer`.
``soft_tree_seed_fraction`` of each population is taken from its seeds, at the start and
(``soft_tree_reseed``) again every 20,000 evaluations (every iteration with PySR's
defaults), replacing the oldest members;
``weight_soft_tree`` is its mutation's weight.

`TrainedSoftTreeProposer` is the one the project ships: its seeds are the formulas of
`OptimizedSymbolicTrainer` fits on the data (every restart's discretised, refitted
soft tree), and its mutation replaces a sub-tree by a small soft tree fitted to what
that sub-tree should output for the whole formula to fit the data (the target, found by
inverting the operators on the path from the root down to the sub-tree).

Measured (first 20 Feynman equations, 30 s each, seed 0; see ``PYSR_DIFFERENCES``):
seeding with reseeding solved 9, seeding once 8, no soft trees 7; the mutation at weight
0.001 solved none more and slowed the search, hence its default weight 0.

    >>> from enhancements import PySRRegressor
    >>> X = np.random.default_rng(0).uniform(1, 5, (200, 2)); y = 0.5 * X[:, 0] * X[:, 1] ** 2
    >>> proposer = TrainedSoftTreeProposer(seed_depths=(2,), n_restarts=4, n_epochs=50)
    >>> model = PySRRegressor(soft_tree_proposer=proposer, soft_tree_seed_fraction=0.1, weight_soft_tree=0.01,
    ...                       binary_operators=["+", "-", "*", "/"], niterations=1, populations=2,
    ...                       population_size=20, ncycles_per_iteration=10, random_state=0,
    ...                       progress=False, verbosity=0).fit(X, y)
    >>> proposer.n_fits >= 1   # the seeding fit (depth 2, four restarts) ran before the search
    True
"""
from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from pysr_baseline.constant_fitting import linear_scaling, normalized_mse
from pysr_baseline.expression import Expression


@runtime_checkable
class SoftTreeProposer(Protocol):
    def seed(self, n: int, rng: np.random.Generator, deadline: float | None = None) -> list[Expression]:
        """Up to ``n`` formulas (discretised soft trees fitted to the data) to seed populations;
        ``deadline`` (a `time.perf_counter` value, or None) is when the search must move on."""

    def propose(self, expr: Expression, index: int, rng: np.random.Generator) -> Expression | None:
        """``expr`` with the sub-tree at preorder ``index`` replaced by a discretised soft tree
        fitted to what that sub-tree should produce (the residual), or None."""


# A target row is usable when finite and below this in magnitude (inverting exp or
# division near zero produces huge values that only make the fit chase outliers).
_TARGET_LIMIT = 1e8


def _path_to(expr: Expression, index: int) -> list[tuple[Expression, int]]:
    """(node, child position) pairs from the root down to the node at preorder ``index``."""
    path, node, offset = [], expr, 0
    while offset != index:
        start = offset + 1
        for position, child in enumerate(node.children):
            if index < start + child.size:
                path.append((node, position))
                node, offset = child, start
                break
            start += child.size
        else:
            raise IndexError(f"node index {index} out of range for a formula of size {expr.size}")
    return path


def _invert(name: str, position: int, target: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor | None:
    """What child ``position`` of an operator ``name`` node must output for the node to
    output ``target``, the other children keeping their ``values``; None if the operator
    is not invertible here. Rows without a solution come out NaN."""
    t = target
    if name == "add":
        return t - values[1 - position]
    if name == "sub":
        return t + values[1] if position == 0 else values[0] - t
    if name == "mul":
        return t / values[1 - position]
    if name == "div":
        return t * values[1] if position == 0 else values[0] / t
    if name == "neg":
        return -t
    if name == "inv":
        return 1.0 / t
    if name == "exp":
        return torch.log(t)
    if name == "log":
        return torch.exp(t)
    if name == "sqrt":
        return torch.where(t >= 0, t * t, torch.full_like(t, float("nan")))
    if name == "square":  # keep the sign the child has now: the closer of the two roots
        return torch.sqrt(t) * torch.where(values[0] < 0, -1.0, 1.0)
    if name == "cube":
        return torch.sign(t) * t.abs().pow(1.0 / 3.0)
    return None


def subtree_target(expr: Expression, index: int, X: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """What the sub-tree at preorder ``index`` of ``expr`` should output on ``X`` for the
    whole formula to output ``target``: each operator on the path from the root is
    inverted in turn (its other operands kept). None where an operator on the path has
    no inverse here (sin, cos, custom operators); rows with no solution are NaN.

    >>> X = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    >>> from pysr_baseline.parsing import parse_expression
    >>> subtree_target(parse_expression("x0 * (x1 + 1)"), 2, X, torch.tensor([6.0, 30.0], dtype=torch.float64))
    tensor([ 6., 10.], dtype=torch.float64)
    """
    with torch.no_grad():
        for node, position in _path_to(expr, index):
            values = [child.evaluate(X) for child in node.children]
            target = _invert(node.op.name, position, target, values)
            if target is None:
                return None
    return target


def _row_subset(n: int, k: int, seed: int) -> torch.Tensor:
    """``k`` of ``n`` row indices (sorted; all of them when ``n <= k``), fixed by ``seed``."""
    pick = np.random.default_rng(seed).choice(n, k, replace=False) if n > k else np.arange(n)
    return torch.as_tensor(np.sort(pick))


def _unscaled(expr: Expression, allowed: set) -> Expression:
    """``expr`` without the outer scaling and offset (a constant factor or term) whose
    operator is not in ``allowed``: f for a*f + b when + and * are not the search's."""
    while expr.op is not None and expr.op.name not in allowed and len(expr.children) == 2:
        left, right = expr.children
        name = expr.op.name
        if name in ("add", "sub", "mul") and left.is_constant != right.is_constant:
            expr = right if left.is_constant else left
        elif name == "div" and right.is_constant and not left.is_constant:  # f / c is a scaling, c / f is not
            expr = left
        else:
            break
    return expr


class TrainedSoftTreeProposer:
    """Seeds and residual mutations from `OptimizedSymbolicTrainer` fits.

    ``seed_depths`` are the soft trees' depths for the seeds (one fit of ``n_restarts``
    restarts each), fitted on at most ``seed_rows`` rows (a fixed subset: a fit's cost grows
    with the rows, and its formula's shape is what the search needs); ``mutation_depth``,
    ``mutation_restarts`` and ``mutation_epochs`` size the small fits of one mutation, done
    on at most ``max_rows`` rows. The soft trees use the search's operators; the scaling
    a*f+b a fit's formula carries is dropped where the search lacks its operator (the
    search's linear scaling puts it back).

        >>> proposer = TrainedSoftTreeProposer(seed_depths=(2, 3), n_restarts=8)
    """

    def __init__(self, seed_depths=(2, 3), n_restarts: int = 8, n_epochs: int = 200, mutation_depth: int = 2,
                 mutation_restarts: int = 4, mutation_epochs: int = 80, max_rows: int = 256,
                 seed_rows: int = 2000):
        depths = tuple(seed_depths)
        for d in depths + (mutation_depth,):
            if not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= 5:
                raise ValueError(f"soft tree depths must be ints from 1 to 5, got {d!r}")
        for name, value in (("n_restarts", n_restarts), ("n_epochs", n_epochs),
                            ("mutation_restarts", mutation_restarts), ("mutation_epochs", mutation_epochs),
                            ("max_rows", max_rows), ("seed_rows", seed_rows)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.seed_depths, self.n_restarts, self.n_epochs = depths, n_restarts, n_epochs
        self.mutation_depth, self.mutation_restarts = mutation_depth, mutation_restarts
        self.mutation_epochs, self.max_rows, self.seed_rows = mutation_epochs, max_rows, seed_rows
        self.X = self.y = self.weights = None
        self.n_proposals = self.n_fits = 0

    def __repr__(self) -> str:
        return (f"TrainedSoftTreeProposer(seed_depths={self.seed_depths}, n_restarts={self.n_restarts}, "
                f"n_epochs={self.n_epochs}, mutation_depth={self.mutation_depth}, "
                f"mutation_restarts={self.mutation_restarts}, mutation_epochs={self.mutation_epochs}, "
                f"max_rows={self.max_rows}, seed_rows={self.seed_rows})")

    def bind(self, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None, options) -> None:
        """Keep the data and the search's operators (called by the search before seeding)."""
        self.X, self.y = X.detach().cpu().to(torch.float64), y.detach().cpu().to(torch.float64)
        self.weights = None if weights is None else weights.detach().cpu().to(torch.float64)
        self.binary, self.unary = tuple(options.binary), tuple(options.unary)
        self._allowed = {op.name for op in self.binary + self.unary}
        # The seeds' and the mutation's rows: fixed subsets, the same for every fit (reproducible).
        self._seed_at = _row_subset(self.X.shape[0], self.seed_rows, seed=1)
        self._rows = _row_subset(self.X.shape[0], self.max_rows, seed=0)

    def _fit(self, X, y, w, depth: int, n_restarts: int, n_epochs: int, seed: int) -> list[Expression]:
        from enhancements.dp_memoization.optimized_trainer import OptimizedSymbolicTrainer
        from pysr_baseline.model import SymbolicRegressor

        model = SymbolicRegressor(X.shape[1], max_depth=depth, binary_operators=self.binary,
                                  unary_operators=self.unary)
        trainer = OptimizedSymbolicTrainer(model, n_restarts=n_restarts, random_state=seed)
        history = trainer.fit(X, y, n_epochs=n_epochs, weights=w)
        self.n_fits += 1
        return [history.formula] + list(history.restart_formulas)

    def _require_bound(self) -> None:
        if self.X is None:
            raise RuntimeError("TrainedSoftTreeProposer.bind(X, y, weights, options) must be called first")

    def seed(self, n: int, rng: np.random.Generator, deadline: float | None = None) -> list[Expression]:
        """Up to ``n`` distinct formulas: each depth's chosen formula, then its restarts'.
        Before the ``deadline``, a depth's fit starts only if the previous one would still
        have ended in time (the first runs if any time is left)."""
        self._require_bound()
        found: dict[str, Expression] = {}
        last = 0.0
        for depth in self.seed_depths:
            seed = int(rng.integers(2**31))
            start = time.perf_counter()
            if deadline is not None and start + last > deadline:
                break
            X, y = self.X[self._seed_at], self.y[self._seed_at]
            w = None if self.weights is None else self.weights[self._seed_at]
            for e in self._fit(X, y, w, depth, self.n_restarts, self.n_epochs, seed):
                e = _unscaled(e, self._allowed)
                found.setdefault(e.key, e)
            last = time.perf_counter() - start
        return list(found.values())[:n]

    def propose(self, expr: Expression, index: int, rng: np.random.Generator) -> Expression | None:
        """``expr`` with its sub-tree at ``index`` replaced by a soft tree fitted to that
        sub-tree's target (see `subtree_target`), or None if there is no usable target.

        The search scores a*f+b, so what the whole formula should output is known only up
        to a, b: two targets are tried, y itself and (y - b) / a with the formula's current
        a, b (right when only the sub-tree is wrong; the first is right when the formula's
        scale is, and a wrong sub-tree skews a, b); the better fit on the data wins."""
        self._require_bound()
        self.n_proposals += 1
        X, y = self.X[self._rows], self.y[self._rows]
        w = None if self.weights is None else self.weights[self._rows]
        with torch.no_grad():
            f = expr.evaluate(X).expand_as(y)
            if not torch.isfinite(f).all():
                return None
            roots = [y]
            a, b = (float(v) for v in linear_scaling(f, y, w))  # a = 0 for a constant f
            if abs(a) > 1e-12 and abs(a - 1) + abs(b) > 1e-9:
                roots.append((y - b) / a)
        proposals = []
        for root in roots:
            new = self._fit_subtree(expr, index, X, root, w, rng)
            if new is not None:
                proposals.append(new)
        if len(proposals) < 2:
            return proposals[0] if proposals else None
        return min(proposals, key=lambda e: _scaled_nmse(e, X, y, w))

    def _fit_subtree(self, expr, index, X, root_target, w, rng) -> Expression | None:
        target = subtree_target(expr, index, X, root_target)
        if target is None:
            return None
        usable = torch.isfinite(target) & (target.abs() < _TARGET_LIMIT)
        if int(usable.sum()) < max(8, X.shape[0] // 2):
            return None
        Xs, ts = X[usable], target[usable]
        ws = None if w is None else w[usable]
        if float(ts.std()) <= 1e-12 * (float(ts.abs().mean()) + 1e-300):
            return expr.replace(index, Expression.const(float(ts.mean())))
        formula = self._fit(Xs, ts, ws, self.mutation_depth, self.mutation_restarts, self.mutation_epochs,
                            int(rng.integers(2**31)))[0]
        return expr.replace(index, formula)


def _scaled_nmse(expr: Expression, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> float:
    """Normalized MSE of the best a*expr+b (inf if expr is not finite on X)."""
    with torch.no_grad():
        f = expr.evaluate(X).expand_as(y)
        if not torch.isfinite(f).all():
            return float("inf")
        a, b = linear_scaling(f, y, w)
        return float(normalized_mse(a * f + b, y, w))
