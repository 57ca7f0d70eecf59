"""What reaches the hall of fame, and how its front is refined.

`FrontKeeper.record` offers each scored formula f to the hall of fame; with linear
scaling also as a*f, f+b and a*f+b (closed-form a, b, written with the search's own
operators and complexity), so that each form competes at its own complexity.
`FrontKeeper.polish` scores, in one batch, every formula one node deletion away from a
new front entry, and `FrontKeeper.simplify` runs sympy (under a time limit) on a few
entries: exact but bloated formulas (x * 1.0, f + 1e-17 * x, sqrt(x^4)) thus give way to
their simpler equals, which is what SRBench's exact-recovery check rewards.

    >>> import torch
    >>> from enhancements.hybrid_optimization.mutations import Mutator
    >>> from enhancements.hybrid_optimization.population import PopMember
    >>> from enhancements.hybrid_optimization.scoring import Scorer
    >>> opts = Options(binary_operators=["+", "*"], linear_scaling=True)
    >>> X = torch.linspace(1, 2, 20, dtype=torch.float64).reshape(-1, 1); y = 3 * X[:, 0] + 1
    >>> keeper = FrontKeeper(HallOfFame(), opts, Mutator(opts, n_features=1).is_valid)
    >>> from pysr_baseline.parsing import parse_expression
    >>> f = parse_expression("x0"); s = Scorer(X, y, None, opts).score([f])
    >>> member = PopMember(f, loss=float(s.loss[0]), cost=0.0, complexity=1, birth=0)
    >>> keeper.record(member, s.variant_loss[0], s.a[0], s.b[0])   # f, a*f and a*f+b enter
    >>> [str(e.expr) for e in keeper.hof.pareto_front()]
    ['x0', '3.64045 * x0', '3.0 * x0 + 1.0']
"""
from __future__ import annotations

import math
import time
from typing import Callable

from pysr_baseline.expression import Expression

from enhancements.hybrid_optimization.hall_of_fame import HallOfFame
from enhancements.hybrid_optimization.options import Options
from enhancements.hybrid_optimization.simplification import simplify_top, simplify_tree, sympy_simplify

# Safety net only: sympy rarely stalls; the count budget (not time) keeps runs reproducible.
SYMPY_TIMEOUT = 1.0
# Larger formulas are not given to sympy. Measured (front entries of 8 searches): up to 21
# nodes it took at most 0.16 s; from 23 on, 0.15-1 s and it hit the timeout 3 times in 10,
# so that whether its answer came in time (and the run) depended on the machine's speed.
SYMPY_MAX_SIZE = 21
# Less time than this left before a deadline: not worth starting sympy.
_SYMPY_MIN_SECONDS = 0.05


class FrontKeeper:
    """Records formulas into ``hof`` and refines its front.

    ``is_valid(expr, maxsize)`` checks size/depth/constraints; ``positive`` lists the
    variables whose data are all > 0 (sympy may use it); ``on_entry(loss, complexity)``
    is told of every new hall-of-fame entry (the early-stop check).
    """

    def __init__(self, hof: HallOfFame, options: Options, is_valid: Callable, positive=(),
                 on_entry: Callable[[float, float], None] | None = None):
        self.hof = hof
        self.opts = options
        self.is_valid = is_valid
        self.positive = list(positive)
        self.on_entry = on_entry or (lambda loss, complexity: None)
        by = options.by_name
        self._mul, self._add, self._sub = by.get("mul"), by.get("add"), by.get("sub")
        leaf = Expression.const(1.0)
        self._c_mul = options.node_complexity(Expression(self._mul, (leaf, leaf))) if self._mul else None
        adder = self._add or self._sub
        self._c_add = options.node_complexity(Expression(adder, (leaf, leaf))) if adder else None
        self._sympy_tried: set[str] = set()
        self._polished: set[str] = set()
        self._refined: set[str] = set()

    # --- recording --------------------------------------------------------------------------
    def record(self, member, lv: list, av: list, bv: list) -> None:
        """Offer ``member`` to the hall of fame as f, a*f, f+b and a*f+b (``lv``, ``av``,
        ``bv``: the four forms' losses and coefficients, as `scoring.Scores` rows)."""
        f, c = member.expr, member.complexity
        maxsize = self.opts.maxsize
        if lv[0] < math.inf and c <= maxsize and self.hof.consider(f, lv[0], c, member):
            self.on_entry(lv[0], c)
        if self.opts.linear_scaling_fraction == 0:
            return
        for k in (1, 2, 3):
            loss = lv[k]
            if not loss < math.inf:
                continue
            estimate = self._form_complexity(f, c, k)
            if estimate is None or estimate > maxsize or not self.hof.would_accept(loss, estimate):
                continue
            built = self._materialize(f, k, av[k], bv[k])
            if built is not None:
                cb = self.opts.complexity(built)
                # The added a and b may break maxdepth or a constraint even where f keeps them.
                if cb <= maxsize and self.is_valid(built, maxsize) and self.hof.consider(built, loss, cb, member):
                    self.on_entry(loss, cb)

    def _form_complexity(self, f: Expression, c: float, k: int) -> float | None:
        """Complexity of form k of f without building it (a constant factor or offset that
        f already has at its root merges with a or b)."""
        cc = self.opts.complexity_of_constants
        if f.is_constant:
            return c
        c_scaled = c
        if k in (1, 3):
            if self._mul is None:
                return None
            merges = f.op is not None and f.op.name == "mul" and any(ch.is_constant for ch in f.children)
            c_scaled = c if merges else c + cc + self._c_mul
            if k == 1:
                return c_scaled
        if self._c_add is None:
            return None
        merges = k == 2 and f.op is not None and f.op.name == "add" and any(ch.is_constant for ch in f.children)
        return c_scaled if merges else c_scaled + cc + self._c_add

    def _materialize(self, f: Expression, k: int, a: float, b: float) -> Expression | None:
        """The formula a*f (k=1), f+b (k=2) or a*f+b (k=3) in the search's operators."""
        if not (math.isfinite(a) and math.isfinite(b)):
            return None
        if f.is_constant:  # folds to a constant: needs neither * nor + among the operators
            value = f.value * (a if k in (1, 3) else 1.0) + (b if k in (2, 3) else 0.0)
            return Expression.const(value) if math.isfinite(value) else None
        out = f
        if k in (1, 3):
            out = simplify_top(Expression(self._mul, (Expression.const(a), out)))
        if k in (2, 3):
            if self._add is not None:
                out = simplify_top(Expression(self._add, (out, Expression.const(b))))
            else:
                out = simplify_top(Expression(self._sub, (out, Expression.const(-b))))
        return out

    # --- refining ---------------------------------------------------------------------------
    def polish(self, score: Callable[[list], object], rounds: int = 3) -> None:
        """Score (with ``score(exprs)``, which records) every formula one node deletion away
        from a front entry not polished before: an operator replaced by one of its arguments.
        One batch per round; a round's new entries are polished in the next."""
        for _ in range(rounds):
            candidates, seen = [], set()
            for entry in self.hof.pareto_front():
                expr = entry.expr
                if expr.key in self._polished or expr.op is None:
                    continue
                self._polished.add(expr.key)
                for i, node in enumerate(expr.nodes()):
                    if node.op is None:
                        continue
                    for child in node.children:
                        cand = simplify_tree(expr.replace(i, child))
                        if cand.key not in seen and cand.key not in self._polished:
                            seen.add(cand.key)
                            if self.is_valid(cand, self.opts.maxsize):
                                candidates.append(cand)
            if not candidates:
                return
            score(candidates)

    def refine(self, optimize: Callable[[list], list], score: Callable[[list], object], limit: int) -> None:
        """Fit again, with ``optimize(exprs)`` (formulas with their constants fitted), the
        constants of up to ``limit`` front entries not refined before, the most accurate
        first, and score the results (which records them). A population's constants get a
        few BFGS steps at a time; a front entry one step from exact
        (x*(x**2 - 0.997)*(1.66*x**2 - 1.663)*0.603 for x*(x**2 - 1)**2) is worth the many
        more it needs to get there."""
        todo = []
        for entry in sorted(self.hof.pareto_front(), key=lambda e: e.loss):
            key = entry.expr.key
            if len(todo) < limit and key not in self._refined and entry.expr.constants:
                self._refined.add(key)
                todo.append(entry.expr)
        if todo:
            score(optimize(todo))

    def simplify(self, score: Callable[[list], object], limit: int, deadline: float | None = None) -> None:
        """sympy on up to ``limit`` front entries not tried before (of at most `SYMPY_MAX_SIZE`
        nodes), the most accurate first
        (exactness is where a simpler form pays); the results are scored with ``score``.
        With a ``deadline`` (a `time.perf_counter` value) no sympy call runs past it."""
        if not self.opts.should_simplify:
            return
        found = []
        for entry in sorted(self.hof.pareto_front(), key=lambda e: e.loss):
            if limit <= 0:
                break
            key = entry.expr.key
            if key in self._sympy_tried or entry.expr.op is None or entry.expr.size > SYMPY_MAX_SIZE:
                continue
            timeout = SYMPY_TIMEOUT
            if deadline is not None:
                timeout = min(timeout, deadline - time.perf_counter())
                if timeout < _SYMPY_MIN_SECONDS:
                    break
            self._sympy_tried.add(key)
            limit -= 1
            g = sympy_simplify(entry.expr, self.opts.by_name, timeout, self.positive)
            if g is not None and g.key != key and self.is_valid(g, self.opts.maxsize):
                found.append(g)
        if found:
            score(found)
