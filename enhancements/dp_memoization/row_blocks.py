"""Evaluation of large data sets by blocks of rows, in memory that the block bounds.

`IncrementalEvaluator` computes every distinct sub-tree of a call on all rows at once and
keeps its working rows (operand buffers, the row store) for the next call: on 1,000,000
rows one node is 8 MB, and a call's dozen-node groups held over a gigabyte. Its
sub-expression cache, capped at 256 MiB, holds only ~30 such sub-trees there, so
memoization buys little at that size. `RowBlockEvaluator` has the same interface and
values, computed block by block with a plain (unmemoized) evaluator that is dropped after
each block: what a call holds is its result plus one block's work.

    >>> import torch
    >>> from pysr_baseline.expression import Expression
    >>> X = torch.linspace(0.5, 2.0, 10, dtype=torch.float64).reshape(5, 2)
    >>> from pysr_baseline.parsing import parse_expression
    >>> f = [parse_expression("x0 * cos(x1) + 1.5")]
    >>> blocked = RowBlockEvaluator(X, block_rows=2)
    >>> torch.equal(blocked.evaluate(f), IncrementalEvaluator(X).evaluate(f))
    True
"""
from __future__ import annotations

from dataclasses import fields
from typing import Sequence

import torch

from pysr_baseline.expression import Expression
from enhancements.dp_memoization.incremental_evaluator import (EvaluatorCounters, IncrementalEvaluator, _as_data,
                                                               _check_exprs)

BLOCK_ROWS = 65_536  # 512 KB a node in float64: a block's work stays at a few MB


class RowBlockEvaluator:
    """`IncrementalEvaluator`'s ``evaluate`` / ``evaluate_with_constants`` on ``X``,
    ``block_rows`` rows at a time (see the module docstring). ``cache`` is None."""

    def __init__(self, X, block_rows: int = BLOCK_ROWS, device=None, dtype: torch.dtype = torch.float64):
        if not isinstance(block_rows, int) or isinstance(block_rows, bool) or block_rows < 1:
            raise ValueError(f"block_rows must be a positive int, got {block_rows!r}")
        self.X = _as_data(X, dtype, device)
        self.n_rows, self.n_features = self.X.shape
        self.dtype, self.device = self.X.dtype, self.X.device
        self.block_rows = block_rows
        self.memoize, self.cache = False, None
        self.counters = EvaluatorCounters()

    def reset_counters(self) -> None:
        self.counters = EvaluatorCounters()

    def _blocks(self):
        """(start, stop, evaluator) for each block; an evaluator lives for one block only."""
        for start in range(0, self.n_rows, self.block_rows):
            stop = min(start + self.block_rows, self.n_rows)
            yield start, stop, IncrementalEvaluator(self.X[start:stop], memoize=False)

    def _add(self, counters: EvaluatorCounters, first: bool) -> None:
        # Formulas and nodes are counted once (as one call over all rows would); rows add up.
        mine = self.counters
        for f in fields(EvaluatorCounters):
            if first or f.name == "node_rows_computed":
                setattr(mine, f.name, getattr(mine, f.name) + getattr(counters, f.name))

    def evaluate(self, exprs: Sequence[Expression], out: torch.Tensor | None = None) -> torch.Tensor:
        """Values of every formula on every row: shape ``(len(exprs), n_rows)``."""
        exprs = _check_exprs(exprs)
        shape = (len(exprs), self.n_rows)
        if out is not None and (not isinstance(out, torch.Tensor) or tuple(out.shape) != shape
                                or out.dtype != self.dtype or out.device != self.device):
            raise ValueError(f"out must be a {self.dtype} tensor of shape {shape} on {self.device}")
        if out is None:
            out = self.X.new_empty(shape)
        if not exprs:
            return out
        for start, stop, block in self._blocks():
            out[:, start:stop] = block.evaluate(exprs)
            self._add(block.counters, first=start == 0)
        return out

    def evaluate_blocks(self, exprs: Sequence[Expression]) -> list[torch.Tensor]:
        """The values of `evaluate`, as one ``(len(exprs), rows)`` tensor per block of rows,
        in row order (what a caller that reduces over rows needs, without a tensor of all rows)."""
        exprs = _check_exprs(exprs)
        parts = []
        for start, _, block in self._blocks():
            parts.append(block.evaluate(exprs))
            self._add(block.counters, first=start == 0)
        return parts

    def evaluate_with_constants(self, exprs: Sequence[Expression],
                                constants: Sequence[torch.Tensor]) -> torch.Tensor:
        """Like `IncrementalEvaluator.evaluate_with_constants` (differentiable in the
        constants), block by block."""
        exprs = _check_exprs(exprs)
        if not exprs:
            return self.X.new_empty((0, self.n_rows))
        parts = []
        for start, _, block in self._blocks():
            parts.append(block.evaluate_with_constants(exprs, constants))
            self._add(block.counters, first=start == 0)
        return torch.cat(parts, dim=1)
