"""Evaluation of large data sets by blocks of rows, in memory that the block bounds.

`IncrementalEvaluator` computes every distinct sub-tree of a call on all rows at once and
keeps its working rows (operand buffers, the row store) for the next call: on 1,000,000
rows one node is 8 MB, and a call's dozen-node groups held over a gigabyte. Its
sub-expression cache, capped at 256 MiB, holds only ~30 such sub-trees there, so
memoization buys little at that size. `RowBlockEvaluator` has the same interface and
values, computed block by block with a plain (unmemoized) evaluator that is dropped after
each block: what a call holds is its result plus one block's work. A block's work is a
row of values for every node of the call's formulas, so a block has fewer rows the more
nodes a call has (`WORK_VALUES` values at most, `MIN_BLOCK_ROWS` rows at least): with a
fixed 65,536 rows, one block of a 20-formula call held ~130 MiB of node rows, and a
search on 200,000 rows peaked 345-427 MiB over its start (225-244 MiB now).

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

BLOCK_ROWS = 65_536  # data of more rows than this is evaluated by blocks
WORK_VALUES = 2**21  # node values a block holds at most: 16 MiB in float64
MIN_BLOCK_ROWS = 2_048  # fewer rows a block and the per-call planning would outweigh the arithmetic


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

    def block_rows_for(self, exprs: Sequence[Expression]) -> int:
        """Rows a block of a call on ``exprs`` has: its formulas' nodes (an upper bound on
        the rows of values a block computes) times the rows stay within `WORK_VALUES`.

            >>> from pysr_baseline.parsing import parse_expression
            >>> blocked = RowBlockEvaluator(torch.zeros(100_000, 1, dtype=torch.float64))
            >>> blocked.block_rows_for([parse_expression("x0 + 1")]), blocked.block_rows_for(
            ...     [parse_expression("cos(x0) * x0 + 1")] * 300)
            (65536, 2048)
        """
        nodes = sum(e.size for e in exprs)
        return min(self.block_rows, max(MIN_BLOCK_ROWS, WORK_VALUES // max(1, nodes)))

    def _each_block(self, exprs: Sequence[Expression], compute) -> list:
        """``compute(evaluator, start)`` on each block of rows (``start`` its first row), in
        row order. Each block's evaluator is made after the last one is dropped, so one
        block's work is held at a time."""
        step, parts = self.block_rows_for(exprs), []
        for start in range(0, self.n_rows, step):
            block = IncrementalEvaluator(self.X[start:start + step], memoize=False)
            parts.append(compute(block, start))
            self._add(block.counters, first=start == 0)
            del block
        return parts

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

        def into_out(block, start):
            out[:, start:start + block.n_rows] = block.evaluate(exprs)

        self._each_block(exprs, into_out)
        return out

    def evaluate_blocks(self, exprs: Sequence[Expression]) -> list[torch.Tensor]:
        """The values of `evaluate`, as one ``(len(exprs), rows)`` tensor per block of rows,
        in row order (what a caller that reduces over rows needs, without a tensor of all rows)."""
        exprs = _check_exprs(exprs)
        return self._each_block(exprs, lambda block, _: block.evaluate(exprs)) if exprs else []

    def evaluate_with_constants(self, exprs: Sequence[Expression],
                                constants: Sequence[torch.Tensor]) -> torch.Tensor:
        """Like `IncrementalEvaluator.evaluate_with_constants` (differentiable in the
        constants), block by block."""
        exprs = _check_exprs(exprs)
        if not exprs:
            return self.X.new_empty((0, self.n_rows))
        parts = self._each_block(exprs, lambda block, _: block.evaluate_with_constants(exprs, constants))
        return torch.cat(parts, dim=1)
