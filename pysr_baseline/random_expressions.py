"""Random formulas and random mutations, the way PySR's search makes them.

`random_expression` grows a tree the way SymbolicRegression.jl's ``gen_random_tree``
does: start from a leaf and repeatedly replace a random leaf by an operator whose
arguments are fresh leaves, until the tree has about ``size`` nodes. `random_mutation`
applies one of PySR's mutations (change a constant, an operator, a variable; replace a
sub-tree; insert a node; delete a node). Both draw only from the given
``numpy.random.Generator``, so a seed fixes the result.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> e = random_expression(rng, n_features=2, size=7)
    >>> m = random_mutation(e, rng, n_features=2)
    >>> m.size <= 20
    True
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pysr_baseline.expression import Expression
from pysr_baseline.operators import DEFAULT_BINARY_OPERATORS, DEFAULT_UNARY_OPERATORS, Operator
from pysr_baseline.parsing import resolve_operators

MUTATIONS = ("constant", "operator", "variable", "subtree", "insert", "delete")
# Relative frequencies, in the order of MUTATIONS. Chosen so that repeated mutation keeps
# sizes about stationary (PySR relies on selection and maxsize for that instead).
_MUTATION_WEIGHTS = np.array([0.2, 0.25, 0.1, 0.1, 0.25, 0.1])


def _ops(binary_operators, unary_operators) -> tuple[tuple[Operator, ...], tuple[Operator, ...]]:
    return resolve_operators(binary_operators, 2), resolve_operators(unary_operators, 1)


def random_leaf(rng: np.random.Generator, n_features: int, const_probability: float = 0.5) -> Expression:
    """A variable ``x0..x{n_features-1}`` or, with ``const_probability``, a N(0, 1) constant."""
    if n_features < 1 or rng.random() < const_probability:
        return Expression.const(float(rng.standard_normal()))
    return Expression.var(int(rng.integers(n_features)))


def _leaf_positions(expr: Expression) -> list[int]:
    return [i for i, node in enumerate(expr.nodes()) if node.op is None]


def _random_op(rng, binary: Sequence[Operator], unary: Sequence[Operator], room: int) -> Operator | None:
    """An operator chosen in proportion to how many of each arity there are (PySR's rule);
    only unary ones when ``room`` (nodes that may still be added) is 1."""
    choices = list(unary) + (list(binary) if room >= 2 else [])
    if not choices:
        return None
    return choices[int(rng.integers(len(choices)))]


def random_expression(rng: np.random.Generator, n_features: int, size: int,
                      binary_operators=DEFAULT_BINARY_OPERATORS, unary_operators=DEFAULT_UNARY_OPERATORS,
                      const_probability: float = 0.5) -> Expression:
    """A random formula of at most ``size`` nodes (exactly ``size`` unless only binary
    operators are available and ``size`` is even).

        >>> random_expression(np.random.default_rng(1), 3, 9).size <= 9
        True
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    binary, unary = _ops(binary_operators, unary_operators)
    expr = random_leaf(rng, n_features, const_probability)
    while expr.size < size:
        op = _random_op(rng, binary, unary, size - expr.size)
        if op is None:
            break
        leaves = _leaf_positions(expr)
        at = leaves[int(rng.integers(len(leaves)))]
        old = expr.subtree(at)
        # The old leaf stays as one argument, so growth never throws material away.
        args = [old] + [random_leaf(rng, n_features, const_probability) for _ in range(op.arity - 1)]
        if op.arity == 2 and rng.random() < 0.5:
            args.reverse()
        expr = expr.replace(at, Expression(op, tuple(args)))
    return expr


def _mutate_constant(expr, rng, n_features, binary, unary):
    positions = [i for i, n in enumerate(expr.nodes()) if n.is_constant]
    if not positions:
        return None
    at = positions[int(rng.integers(len(positions)))]
    value = expr.subtree(at).value
    # PySR scales by a random factor of up to ~2x either way, and flips the sign now and then.
    factor = (1.0 + 1.0 * rng.random()) ** (1 if rng.random() < 0.5 else -1)
    new = value * factor * (-1.0 if rng.random() < 0.1 else 1.0)
    if new == value:
        new = value + float(rng.standard_normal())
    return expr.replace(at, Expression.const(new))


def _mutate_operator(expr, rng, n_features, binary, unary):
    positions = [(i, n) for i, n in enumerate(expr.nodes()) if n.op is not None]
    if not positions:
        return None
    at, node = positions[int(rng.integers(len(positions)))]
    others = [op for op in (binary if node.op.arity == 2 else unary) if op.name != node.op.name]
    if not others:
        return None
    return expr.replace(at, Expression(others[int(rng.integers(len(others)))], node.children))


def _mutate_variable(expr, rng, n_features, binary, unary):
    positions = [(i, n) for i, n in enumerate(expr.nodes()) if n.is_variable]
    if not positions or n_features < 2:
        return None
    at, node = positions[int(rng.integers(len(positions)))]
    feature = int(rng.integers(n_features - 1))
    return expr.replace(at, Expression.var(feature + (feature >= node.feature)))


def _replace_subtree(expr, rng, n_features, binary, unary, max_size):
    at = int(rng.integers(expr.size))
    room = max_size - expr.size + expr.subtree(at).size
    size = int(rng.integers(1, max(1, min(room, 5)) + 1))
    return expr.replace(at, random_expression(rng, n_features, size, binary, unary))


def _insert_node(expr, rng, n_features, binary, unary, max_size):
    at = int(rng.integers(expr.size))
    op = _random_op(rng, binary, unary, max_size - expr.size)
    if op is None:
        return None
    below = expr.subtree(at)
    args = [below] + [random_leaf(rng, n_features) for _ in range(op.arity - 1)]
    if op.arity == 2 and rng.random() < 0.5:
        args.reverse()
    return expr.replace(at, Expression(op, tuple(args)))


def _delete_node(expr, rng, n_features, binary, unary):
    positions = [(i, n) for i, n in enumerate(expr.nodes()) if n.op is not None]
    if not positions:
        return None
    at, node = positions[int(rng.integers(len(positions)))]
    # Hoist one argument into the deleted operator's place.
    return expr.replace(at, node.children[int(rng.integers(len(node.children)))])


def random_mutation(expr: Expression, rng: np.random.Generator, n_features: int,
                    binary_operators=DEFAULT_BINARY_OPERATORS, unary_operators=DEFAULT_UNARY_OPERATORS,
                    max_size: int = 20) -> Expression:
    """One random mutation of ``expr`` whose result has at most ``max_size`` nodes.

    A mutation that does not apply (no constant to change, a result too large) is
    redrawn; in the rare case none applies a fresh leaf is returned.

        >>> rng = np.random.default_rng(0)
        >>> from pysr_baseline.parsing import parse_expression
        >>> random_mutation(parse_expression("x0 + 1.5"), rng, n_features=1).size <= 20
        True
    """
    binary, unary = _ops(binary_operators, unary_operators)
    for _ in range(20):
        kind = MUTATIONS[int(rng.choice(len(MUTATIONS), p=_MUTATION_WEIGHTS))]
        if kind == "constant":
            new = _mutate_constant(expr, rng, n_features, binary, unary)
        elif kind == "operator":
            new = _mutate_operator(expr, rng, n_features, binary, unary)
        elif kind == "variable":
            new = _mutate_variable(expr, rng, n_features, binary, unary)
        elif kind == "subtree":
            new = _replace_subtree(expr, rng, n_features, binary, unary, max_size)
        elif kind == "insert":
            new = _insert_node(expr, rng, n_features, binary, unary, max_size)
        else:
            new = _delete_node(expr, rng, n_features, binary, unary)
        if new is not None and new.size <= max_size:
            return new
    return random_leaf(rng, n_features)
