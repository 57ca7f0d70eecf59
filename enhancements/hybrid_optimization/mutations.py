"""PySR's mutations and crossover, always within ``maxsize``, ``maxdepth`` and the constraints.

A `Mutator` knows the operators and the number of features. ``mutate`` picks a mutation
by the ``weight_*`` options (conditioned on the formula, as SymbolicRegression.jl does:
no operator change on a leaf, no growth at the size limit, ...), applies it, and retries
up to 10 times when the result breaks a limit; it returns the new formula (or None) and
the mutation's name. Mutations draw only from the given ``numpy.random.Generator``.

    >>> import numpy as np
    >>> from enhancements.hybrid_optimization.options import Options
    >>> m = Mutator(Options(binary_operators=["+", "*"], maxsize=10), n_features=2)
    >>> from pysr_baseline.parsing import parse_expression
    >>> new, kind = m.mutate(parse_expression("x0 * x1"), np.random.default_rng(0), curmaxsize=10)
    >>> new.size <= 10
    True
"""
from __future__ import annotations

import bisect
import itertools
from typing import NamedTuple

import numpy as np

from pysr_baseline.expression import Expression
from pysr_baseline.random_expressions import random_expression, random_leaf

from enhancements.hybrid_optimization.options import MUTATIONS, Options
from enhancements.hybrid_optimization.simplification import simplify_tree

MAX_ATTEMPTS = 10


class _NodeInfo(NamedTuple):
    nodes: list
    leaves: list
    constants: list
    variables: list
    operators: list
    binary: list
    rotatable: list


class Mutator:
    """Mutations and crossover for one search (fixed operators and feature count)."""

    def __init__(self, options: Options, n_features: int):
        self.opts = options
        self.n_features = n_features
        self.binary = options.binary
        self.unary = options.unary
        self.base_weights = np.array([options.mutation_weights()[m] for m in MUTATIONS])
        self._index = {m: i for i, m in enumerate(MUTATIONS)}
        self._info_cache: dict[str, _NodeInfo] = {}
        self._weight_cache: dict[tuple, list] = {}

    # --- validity --------------------------------------------------------------------------
    def is_valid(self, expr: Expression, curmaxsize: float) -> bool:
        opts = self.opts
        if opts.complexity(expr) > curmaxsize:
            return False
        if opts.maxdepth is not None and expr.depth > opts.maxdepth:
            return False
        return opts.satisfies_constraints(expr)

    def uses_own_operators(self, expr: Expression) -> bool:
        """Whether every operator of ``expr`` is one of the search's: formulas from outside
        the mutations (a soft-tree proposer's) are checked before they join a population."""
        by_name = self.opts.by_name
        return all(n.op is None or n.op.name in by_name for n in expr.nodes())

    # --- random pieces ---------------------------------------------------------------------
    def random_leaf(self, rng) -> Expression:
        return random_leaf(rng, self.n_features)

    def random_op(self, rng, arity: int | None = None):
        """An operator, binary vs unary in proportion to how many of each there are."""
        pool = self.binary if arity == 2 else self.unary if arity == 1 else self.binary + self.unary
        return pool[int(rng.integers(len(pool)))] if pool else None

    def random_tree(self, rng, size: int) -> Expression:
        """A random formula of about ``size`` nodes (SymbolicRegression.jl's fixed-size generator)."""
        return random_expression(rng, self.n_features, max(1, int(size)), self.binary, self.unary)

    def _new_node(self, rng, keep: Expression | None) -> Expression | None:
        """A new operator node; ``keep`` (if given) becomes one of its arguments."""
        op = self.random_op(rng)
        if op is None:
            return None
        args = [self.random_leaf(rng) for _ in range(op.arity)]
        if keep is not None:
            args[int(rng.integers(op.arity))] = keep
        return Expression(op, tuple(args))

    # --- the mutations (each returns a formula or None when it does not apply) ----------------
    def mutate_constant(self, expr, rng, temperature):
        info = self._info(expr)
        pos = info.constants
        if not pos:
            return None
        at = pos[int(rng.integers(len(pos)))]
        value = info.nodes[at].value
        # SymbolicRegression.jl's factor: up to (1 + perturbation_factor*T + 0.1), either way.
        max_change = self.opts.perturbation_factor * temperature + 1.1
        factor = max_change ** rng.random()
        value = value * factor if rng.random() < 0.5 else value / factor
        if rng.random() < self.opts.probability_negate_constant:
            value = -value
        return expr.replace(at, Expression.const(value))

    def mutate_operator(self, expr, rng, temperature):
        info = self._info(expr)
        if not info.operators:
            return None
        at = info.operators[int(rng.integers(len(info.operators)))]
        node = info.nodes[at]
        op = self.random_op(rng, node.op.arity)
        return None if op is None else expr.replace(at, Expression(op, node.children))

    def mutate_feature(self, expr, rng, temperature):
        info = self._info(expr)
        if not info.variables or self.n_features < 2:
            return None
        at = info.variables[int(rng.integers(len(info.variables)))]
        node = info.nodes[at]
        f = int(rng.integers(self.n_features - 1))
        return expr.replace(at, Expression.var(f + (f >= node.feature)))

    def swap_operands(self, expr, rng, temperature):
        info = self._info(expr)
        if not info.binary:
            return None
        at = info.binary[int(rng.integers(len(info.binary)))]
        node = info.nodes[at]
        return expr.replace(at, Expression(node.op, node.children[::-1]))

    def rotate_tree(self, expr, rng, temperature):
        """Tree rotation: an operator child P of an operator node R takes R's place, and R
        takes P's place below P with P's j-th argument in P's old slot: R(.., P(.., c_j, ..), ..)
        -> P(.., R(.., c_j, ..), ..). With R = a*(b+c) this gives (a*b)+c."""
        info = self._info(expr)
        if not info.rotatable:
            return None
        at = info.rotatable[int(rng.integers(len(info.rotatable)))]
        root = info.nodes[at]
        slots = [k for k, c in enumerate(root.children) if c.op is not None]
        i = slots[int(rng.integers(len(slots)))]
        pivot = root.children[i]
        j = int(rng.integers(pivot.op.arity))
        root_kids = list(root.children)
        root_kids[i] = pivot.children[j]
        pivot_kids = list(pivot.children)
        pivot_kids[j] = Expression(root.op, tuple(root_kids))
        return expr.replace(at, Expression(pivot.op, tuple(pivot_kids)))

    def add_node(self, expr, rng, temperature):
        """Half the time replace a leaf by a new operator on fresh leaves (append), half the
        time put a new operator above the root (prepend)."""
        if rng.random() < 0.5:
            leaves = self._info(expr).leaves
            at = leaves[int(rng.integers(len(leaves)))]
            new = self._new_node(rng, None)
            return None if new is None else expr.replace(at, new)
        return self._new_node(rng, expr)

    def insert_node(self, expr, rng, temperature):
        at = int(rng.integers(expr.size))
        new = self._new_node(rng, self._info(expr).nodes[at])
        return None if new is None else expr.replace(at, new)

    def delete_node(self, expr, rng, temperature):
        info = self._info(expr)
        if not info.operators:
            return None
        at = info.operators[int(rng.integers(len(info.operators)))]
        node = info.nodes[at]
        return expr.replace(at, node.children[int(rng.integers(node.op.arity))])

    def simplify(self, expr, rng, temperature):
        return simplify_tree(expr)

    def randomize(self, expr, rng, temperature, curmaxsize=None):
        top = int(curmaxsize if curmaxsize is not None else self.opts.maxsize)
        return self.random_tree(rng, int(rng.integers(1, max(1, top) + 1)))

    def do_nothing(self, expr, rng, temperature):
        return expr

    def optimize(self, expr, rng, temperature):
        return expr  # constants are optimised by the search, in a batch

    def soft_tree(self, expr, rng, temperature):
        proposer = self.opts.soft_tree_proposer
        if proposer is None:
            return None
        at = int(rng.integers(expr.size))
        new = proposer.propose(expr, at, rng)
        return new if new is not None and self.uses_own_operators(new) else None

    # --- choosing and applying ------------------------------------------------------------
    def conditioned_weights(self, expr: Expression, curmaxsize: float) -> np.ndarray:
        """The mutation weights for this formula (SymbolicRegression.jl's conditioning)."""
        w = self.base_weights.copy()
        ix = self._index
        info = self._info(expr)
        n_const, n_var, n_binary, n_rotatable = (len(info.constants), len(info.variables), len(info.binary),
                                                 len(info.rotatable))
        if expr.op is None:
            for name in ("mutate_operator", "swap_operands", "delete_node", "simplify", "rotate_tree"):
                w[ix[name]] = 0.0
        w[ix["mutate_constant"]] *= min(8, n_const) / 8.0
        if n_const == 0:
            w[ix["optimize"]] = 0.0
        if n_var == 0 or self.n_features < 2:
            w[ix["mutate_feature"]] = 0.0
        if n_binary == 0:
            w[ix["swap_operands"]] = 0.0
        if n_rotatable == 0:
            w[ix["rotate_tree"]] = 0.0
        full = self.opts.complexity(expr) >= curmaxsize or (
            self.opts.maxdepth is not None and expr.depth >= self.opts.maxdepth)
        if full:
            w[ix["add_node"]] = 0.0
            w[ix["insert_node"]] = 0.0
        if not self.opts.should_simplify:
            w[ix["simplify"]] = 0.0
        return w

    def _info(self, expr: Expression) -> "_NodeInfo":
        """Preorder nodes and the positions of each kind, memoized by formula: tournament
        winners are mutated again and again."""
        info = self._info_cache.get(expr.key)
        if info is None:
            # An entry keeps its formula's nodes alive (~1-2 KB): 10,000 covers a dozen
            # iterations of PySR's default populations at a few MB.
            if len(self._info_cache) > 10_000:
                self._info_cache.clear()
            nodes = list(expr.nodes())
            kinds = {"constants": [], "variables": [], "operators": [], "binary": [], "rotatable": []}
            for i, n in enumerate(nodes):
                if n.op is None:
                    kinds["constants" if n.is_constant else "variables"].append(i)
                else:
                    kinds["operators"].append(i)
                    if n.op.arity == 2:
                        kinds["binary"].append(i)
                    if any(c.op is not None for c in n.children):
                        kinds["rotatable"].append(i)
            leaves = sorted(kinds["constants"] + kinds["variables"])
            info = self._info_cache[expr.key] = _NodeInfo(nodes, leaves=leaves, **kinds)
        return info

    def choose(self, expr: Expression, rng, curmaxsize: float) -> str:
        """A mutation name drawn by the conditioned weights (cumulative sums memoized)."""
        full = self.opts.complexity(expr) >= curmaxsize or (
            self.opts.maxdepth is not None and expr.depth >= self.opts.maxdepth)
        key = (expr.key, full)
        cumulative = self._weight_cache.get(key)
        if cumulative is None:
            if len(self._weight_cache) > 50_000:
                self._weight_cache.clear()
            w = self.conditioned_weights(expr, curmaxsize).tolist()
            cumulative = self._weight_cache[key] = list(itertools.accumulate(w))
        total = cumulative[-1]
        if total <= 0:
            return "do_nothing"
        # the first mutation whose cumulative weight exceeds r (zero weights never win)
        return MUTATIONS[min(bisect.bisect_right(cumulative, rng.random() * total), len(cumulative) - 1)]

    def mutate(self, expr: Expression, rng, temperature: float = 1.0, curmaxsize: float | None = None
               ) -> tuple[Expression | None, str]:
        """One mutation of ``expr``: (new formula or None if every attempt failed, its name)."""
        curmaxsize = self.opts.maxsize if curmaxsize is None else curmaxsize
        kind = self.choose(expr, rng, curmaxsize)
        for _ in range(MAX_ATTEMPTS):
            if kind == "randomize":
                new = self.randomize(expr, rng, temperature, curmaxsize)
            else:
                new = getattr(self, kind)(expr, rng, temperature)
            if new is not None and self.is_valid(new, curmaxsize):
                return new, kind
        return None, kind

    def crossover(self, a: Expression, b: Expression, rng, curmaxsize: float | None = None
                  ) -> tuple[Expression, Expression] | None:
        """Swap a random sub-tree of ``a`` with one of ``b``; None if no valid pair was found."""
        curmaxsize = self.opts.maxsize if curmaxsize is None else curmaxsize
        for _ in range(MAX_ATTEMPTS):
            i, j = int(rng.integers(a.size)), int(rng.integers(b.size))
            child_a = a.replace(i, self._info(b).nodes[j])
            child_b = b.replace(j, self._info(a).nodes[i])
            if self.is_valid(child_a, curmaxsize) and self.is_valid(child_b, curmaxsize):
                return child_a, child_b
        return None
