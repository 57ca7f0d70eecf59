"""The hall of fame: the best formula seen at each complexity, and its Pareto front.

    >>> from pysr_baseline.expression import Expression
    >>> hof = HallOfFame()
    >>> from pysr_baseline.parsing import parse_expression
    >>> hof.consider(parse_expression("x0"), loss=1.0, complexity=1)
    True
    >>> hof.consider(parse_expression("x0 * 2.0"), loss=2.0, complexity=3)   # kept at 3 ...
    True
    >>> [e.complexity for e in hof.pareto_front()]                           # ... but dominated
    [1]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from pysr_baseline.expression import Expression


@dataclass
class HallOfFameEntry:
    """``expr`` is the formula as reported (linear scaling written out); ``member`` the
    population member it came from (what migrates back into populations), if any."""

    expr: Expression
    loss: float
    complexity: float
    member: object = None


class HallOfFame:
    """Best (lowest-loss) formula per complexity. Entries with a non-finite loss are refused."""

    def __init__(self):
        self.entries: dict[float, HallOfFameEntry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def would_accept(self, loss: float, complexity: float) -> bool:
        if not math.isfinite(loss):
            return False
        current = self.entries.get(complexity)
        return current is None or loss < current.loss

    def consider(self, expr: Expression | Callable[[], Expression], loss: float, complexity: float,
                 member=None) -> bool:
        """Keep ``expr`` if it beats the entry at its complexity. ``expr`` may be a
        zero-argument callable, built only when the formula is kept. Returns whether kept."""
        if not self.would_accept(loss, complexity):
            return False
        if callable(expr) and not isinstance(expr, Expression):
            expr = expr()
        self.entries[complexity] = HallOfFameEntry(expr, float(loss), complexity, member)
        return True

    def pareto_front(self) -> list[HallOfFameEntry]:
        """Entries by increasing complexity, each strictly better than every simpler one."""
        front, best = [], math.inf
        for c in sorted(self.entries):
            entry = self.entries[c]
            if entry.loss < best:
                front.append(entry)
                best = entry.loss
        return front

    def best_loss(self) -> float:
        return min((e.loss for e in self.entries.values()), default=math.inf)

    def merge(self, other: "HallOfFame") -> None:
        for e in other.entries.values():
            self.consider(e.expr, e.loss, e.complexity, e.member)


def front_scores(losses, complexities, floor: float = 0.0) -> list[float]:
    """PySR's score for each row of a front: -d log(loss) / d complexity against the
    previous row (0 for the first). Losses are floored at ``floor`` so that round-off below
    it cannot rank formulas that are equally exact."""
    scores, prev = [], None
    for loss, c in zip(losses, complexities):
        value = math.log(max(loss, floor, 1e-300))
        if prev is None:
            scores.append(0.0)
        else:
            dc = c - prev[1]
            scores.append(-(value - prev[0]) / dc if dc > 0 else 0.0)
        prev = (value, c)
    return scores


def select_index(losses, complexities, model_selection: str = "best", floor: float = 0.0) -> int:
    """Row picked from a front (sorted by complexity) by PySR's ``model_selection``:
    "accuracy" the lowest loss, "score" the highest score, "best" the highest score among
    rows whose loss is within 1.5x of the lowest."""
    if not len(losses):
        raise ValueError("the front is empty")
    floored = [max(loss, floor) for loss in losses]
    if model_selection == "accuracy":
        return min(range(len(floored)), key=lambda i: (floored[i], complexities[i]))
    scores = front_scores(losses, complexities, floor)
    if model_selection == "score":
        candidates = range(len(scores))
    elif model_selection == "best":
        threshold = 1.5 * min(floored)
        candidates = [i for i, loss in enumerate(floored) if loss <= threshold]
    else:
        raise ValueError(f"model_selection must be 'best', 'accuracy' or 'score', got {model_selection!r}")
    return max(candidates, key=lambda i: (scores[i], -i))
