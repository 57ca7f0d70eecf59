"""Search state: members, populations, and the complexity statistics behind adaptive parsimony.

A `PopMember` is a formula with its loss, cost (normalised loss plus parsimony),
complexity and birth order (regularized evolution replaces the oldest member). A
`Population` is a list of members with tournament selection. `RunningSearchStatistics`
counts how often each complexity was seen recently, so that tournaments can penalise
sizes that crowd the search (PySR's adaptive parsimony).

    >>> import numpy as np
    >>> from pysr_baseline.expression import Expression
    >>> from pysr_baseline.parsing import parse_expression
    >>> m = PopMember(parse_expression("x0 * x1"), loss=0.5, cost=0.5, complexity=3, birth=0)
    >>> pop = Population([m]); pop.best().expr
    Expression('x0 * x1')
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from pysr_baseline.expression import Expression

_refs = itertools.count(1)


@dataclass(slots=True)
class PopMember:
    """One formula in a population.

    ``loss`` is the data loss (after linear scaling when that is on, whose coefficients
    are ``scale``), ``cost`` what selection compares (loss / baseline + parsimony *
    complexity), ``birth`` a counter value used to find the oldest member.
    """

    expr: Expression
    loss: float
    cost: float
    complexity: float
    birth: int
    scale: tuple[float, float] | None = None
    parent: int = 0
    ref: int = field(default_factory=lambda: next(_refs))
    log_cost: float = field(init=False, repr=False, default=0.0)

    def __post_init__(self):
        c = self.cost
        if c > 0:
            self.log_cost = math.log(c) if c != math.inf else math.inf
        else:  # negative costs cannot occur; NaN ranks last
            self.log_cost = -math.inf if c == 0 else math.inf

    def copy(self, birth: int) -> "PopMember":
        return PopMember(self.expr, self.loss, self.cost, self.complexity, birth, self.scale, self.ref)


class Population:
    """A list of members with PySR's tournament selection."""

    def __init__(self, members: list[PopMember]):
        self.members = list(members)

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self):
        return iter(self.members)

    def oldest(self, exclude: set[int] | None = None) -> int:
        """Index of the member born first (ties: the first one), skipping ``exclude``."""
        best, best_birth = -1, math.inf
        for i, m in enumerate(self.members):
            if m.birth < best_birth and (not exclude or i not in exclude):
                best, best_birth = i, m.birth
        return best

    def best(self) -> PopMember:
        return min(self.members, key=lambda m: (m.cost, m.complexity))

    def best_k(self, k: int) -> list[PopMember]:
        return sorted(self.members, key=lambda m: (m.cost, m.complexity))[:k]

    def selection_keys(self, stats: "RunningSearchStatistics | None" = None, scaling: float = 0.0
                       ) -> list[tuple[float, float]]:
        """Each member's tournament rank key: log(cost) + scaling * frequency of its complexity
        (PySR's cost * exp(scaling * frequency), in log space: exp(1040 * f) overflows),
        then complexity. Valid until the population or the statistics change."""
        if stats is None or not scaling:
            return [(m.log_cost, m.complexity) for m in self.members]
        penalty = stats.penalties(scaling)
        top = len(penalty)
        return [(m.log_cost + (penalty[b] if 0 <= (b := int(m.complexity + 0.5) - 1) < top else 0.0), m.complexity)
                for m in self.members]

    def tournament(self, rng: np.random.Generator, n: int, p: float,
                   stats: "RunningSearchStatistics | None" = None, scaling: float = 0.0,
                   keys: list | None = None) -> PopMember:
        """Sample ``n`` members, rank them by `selection_keys` (pass ``keys`` to reuse them),
        pick the k-th best with probability proportional to p(1-p)^k."""
        members = self.members
        if keys is None:
            keys = self.selection_keys(stats, scaling)
        idx = rng.permutation(len(members))[:n].tolist() if n < len(members) else list(range(len(members)))
        k = 0
        if p < 1.0:  # a geometric draw, redrawn when out of range
            while True:
                k = int(rng.geometric(p)) - 1
                if k < len(idx):
                    break
        if k == 0:  # the usual case (p = 0.982): no need to sort
            return members[min(idx, key=keys.__getitem__)]
        return members[sorted(idx, key=keys.__getitem__)[k]]


class RunningSearchStatistics:
    """How often each complexity 1..maxsize was seen, over a sliding window of sightings.

    ``normalized(c)`` is the share of complexity ``c`` (summing to 1 over all sizes).
    """

    def __init__(self, maxsize: int, window_size: int = 100_000):
        self.maxsize = maxsize
        self.window_size = window_size
        self.frequencies = np.ones(maxsize, dtype=np.float64)
        self._normalized = self.frequencies / self.frequencies.sum()
        self._penalties: dict = {}

    def _bin(self, complexity: float) -> int:
        return int(complexity + 0.5) - 1

    def update(self, complexity: float, count: float = 1.0) -> None:
        i = self._bin(complexity)
        if 0 <= i < self.maxsize:
            self.frequencies[i] += count

    def move_window(self) -> None:
        """Forget old sightings evenly once the window is full (no bin drops below 1)."""
        excess = self.frequencies.sum() - self.window_size
        for _ in range(100):
            if excess <= 1e-9:
                break
            above = self.frequencies > 1
            if not above.any():
                break
            step = min(excess / above.sum(), (self.frequencies[above] - 1).min())
            self.frequencies[above] -= step
            excess -= step * above.sum()

    def normalize(self) -> None:
        self._normalized = self.frequencies / self.frequencies.sum()
        self._penalties = {}

    def penalties(self, scaling: float) -> list[float]:
        """scaling * normalized frequency for complexities 1..maxsize (a list, for speed)."""
        table = self._penalties.get(scaling)
        if table is None:
            table = self._penalties[scaling] = (scaling * self._normalized).tolist()
        return table

    def normalized(self, complexity: float) -> float:
        i = self._bin(complexity)
        return float(self._normalized[i]) if 0 <= i < self.maxsize else 0.0
