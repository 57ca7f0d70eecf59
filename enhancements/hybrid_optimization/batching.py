"""Batching (PySR's ``batching`` / ``batch_size``): the search scores mutants on a random
batch of rows, fresh every step, and the hall of fame on all of them.

    >>> batch_rows(False, 50, 100_000) is None
    True
    >>> batch_rows("auto", None, 1000), batch_rows("auto", None, 1001), batch_rows(True, None, 60_000)
    (None, 128, 512)
    >>> batch_rows(True, 2000, 1000)
    1000
"""
from __future__ import annotations

import numpy as np
import torch


def batch_rows(batching, batch_size: int | None, n_rows: int) -> int | None:
    """Rows per batch, or None when the search uses all rows. ``batching="auto"`` is on
    above 1,000 rows; ``batch_size=None`` takes PySR 2's size for the data's rows (all of
    them up to 1,000, then 128, 256 from 5,000 and 512 from 50,000); a size is capped at
    the rows there are."""
    on = n_rows > 1000 if batching == "auto" else bool(batching)
    if not on:
        return None
    if batch_size is None:
        if n_rows <= 1000:
            batch_size = n_rows
        elif n_rows < 5000:
            batch_size = 128
        elif n_rows < 50_000:
            batch_size = 256
        else:
            batch_size = 512
    return int(min(batch_size, n_rows))


class BatchSampler:
    """Draws batches of ``size`` rows (with replacement, as SymbolicRegression.jl does:
    O(size), not O(rows), per draw) from the search's own generator, and gives a scorer
    on each (`scoring.Scorer.for_rows`)."""

    def __init__(self, scorer, size: int, rng: np.random.Generator):
        self.scorer = scorer
        self.size = int(size)
        self.rng = rng
        self.n_rows = int(scorer.y.shape[0])
        self.evaluations = 0.0  # formulas scored on batches, in full-data equivalents

    def draw(self):
        rows = np.sort(self.rng.integers(0, self.n_rows, self.size))
        return self.scorer.for_rows(torch.from_numpy(rows).to(self.scorer.y.device))

    def count(self, n_formulas: int) -> None:
        """A batch evaluation of ``n_formulas`` counts as size/rows of a full one, so that
        ``max_evals`` bounds the work done whatever the batch size."""
        self.evaluations += n_formulas * self.size / self.n_rows
