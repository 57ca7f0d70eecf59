"""The discrete formula: an immutable expression tree.

A node is an operator applied to children, a variable (a column of the data) or a
constant. Nodes never change after construction, so sub-trees can be shared freely
between formulas, and each node carries a stable structural ``key`` (a string, so its
hash is computed once) that the memoization layer uses to recognise shared sub-trees.

    >>> import torch
    >>> from pysr_baseline.parsing import parse_expression
    >>> e = parse_expression("0.5 * x0 * square(x1)")
    >>> e.evaluate(torch.tensor([[2.0, 3.0]], dtype=torch.float64))
    tensor([9.], dtype=torch.float64)
    >>> e.complexity(), e.depth
    (6, 3)
"""
from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import sympy
import torch

from pysr_baseline.operators import Operator, lookup_operator


class Expression:
    """An immutable formula node: ``op(children)``, a variable ``x{feature}``, or a constant.

    Build with the constructors ``Expression.var(i)``, ``Expression.const(v)`` and
    ``Expression.apply(op, *children)`` (``op`` a name like ``"+"`` or an Operator), or
    parse a string with `pysr_baseline.parsing.parse_expression`
    (and convert from sympy with `pysr_baseline.sympy_conversion.expression_from_sympy`).
    """

    __slots__ = ("op", "children", "feature", "value", "key", "_hash", "size", "depth", "_shape_key")

    def __init__(self, op: Operator | None = None, children: tuple = (), feature: int | None = None,
                 value: float | None = None):
        self.op = op
        self.children = tuple(children)
        self.feature = feature
        self.value = value
        if op is not None:
            if len(self.children) != op.arity:
                raise ValueError(f"operator {op.name!r} takes {op.arity} argument(s), got {len(self.children)}")
            self.key = op.name + "(" + ",".join(c.key for c in self.children) + ")"
            self.size = 1 + sum(c.size for c in self.children)
            self.depth = 1 + max(c.depth for c in self.children)
        elif feature is not None:
            if not isinstance(feature, int) or isinstance(feature, bool) or feature < 0:
                raise ValueError(f"variable index must be a non-negative int, got {feature!r}")
            self.key = f"x{feature}"
            self.size, self.depth = 1, 1
        else:
            if value is None:
                raise ValueError("a node needs an operator, a variable index or a constant value")
            self.value = float(value)
            self.key = "c" + repr(self.value)
            self.size, self.depth = 1, 1
        self._hash = hash(self.key)
        self._shape_key = None

    # --- constructors ---------------------------------------------------------------------
    @staticmethod
    def var(feature: int) -> "Expression":
        return Expression(feature=feature)

    @staticmethod
    def const(value: float) -> "Expression":
        return Expression(value=value)

    @staticmethod
    def apply(op, *children: "Expression") -> "Expression":
        return Expression(op=lookup_operator(op), children=children)

    @staticmethod
    def node_of(op: Operator, children: tuple) -> "Expression":
        """``Expression(op, children)`` without its checks: for code that builds the tuple
        of ``op.arity`` children itself (decoding compiled programs, ~0.8 M nodes a
        minute), where the checks and generic key building were half of the cost.

            >>> from pysr_baseline.operators import get_operator
            >>> x = Expression.var(0)
            >>> Expression.node_of(get_operator("mul"), (x, x)) == Expression(get_operator("mul"), (x, x))
            True
        """
        e = object.__new__(Expression)
        e.op, e.children, e.feature, e.value, e._shape_key = op, children, None, None, None
        if len(children) == 2:
            a, b = children
            e.key = op.name + "(" + a.key + "," + b.key + ")"
            e.size = 1 + a.size + b.size
            e.depth = 1 + (a.depth if a.depth >= b.depth else b.depth)
        elif len(children) == 1:
            a = children[0]
            e.key = op.name + "(" + a.key + ")"
            e.size, e.depth = 1 + a.size, 1 + a.depth
        else:
            return Expression(op, children)
        e._hash = hash(e.key)
        return e

    # --- kinds ----------------------------------------------------------------------------
    @property
    def is_operator(self) -> bool:
        return self.op is not None

    @property
    def is_variable(self) -> bool:
        return self.feature is not None

    @property
    def is_constant(self) -> bool:
        return self.op is None and self.feature is None

    # --- identity ---------------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        return isinstance(other, Expression) and self.key == other.key

    def __hash__(self) -> int:
        return self._hash

    @property
    def shape_key(self) -> str:
        """The structural key with every constant's value blanked out (``c``)."""
        if self._shape_key is None:
            if self.op is not None:
                self._shape_key = self.op.name + "(" + ",".join(c.shape_key for c in self.children) + ")"
            else:
                self._shape_key = "c" if self.is_constant else self.key
        return self._shape_key

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self, X: torch.Tensor, constants: torch.Tensor | None = None, soft: bool = False) -> torch.Tensor:
        """Evaluate on a 2-D tensor of samples (rows) x features; returns one value per row.

        ``constants``, if given, replaces the tree's constants in preorder (see
        `constants`), so that gradients can flow to them. ``soft=True`` uses the operators'
        guarded forms. Domain errors give NaN/inf.
        """
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (samples x features), got shape {tuple(X.shape)}")
        if not X.is_floating_point():  # constants take X's dtype: 0.5 must not become 0
            X = X.to(torch.float64)
        n_features = self.n_features_required()
        if n_features > X.shape[1]:
            raise ValueError(f"formula uses x{n_features - 1} but X has {X.shape[1]} column(s)")
        columns = [X[:, i] for i in range(X.shape[1])]
        out = self.evaluate_columns(columns, constants, soft)
        return out.expand(X.shape[0]) if out.ndim == 0 else out

    def evaluate_columns(self, columns: Sequence[torch.Tensor], constants: torch.Tensor | None = None,
                         soft: bool = False) -> torch.Tensor:
        """Evaluate with variable i bound to ``columns[i]`` (any broadcastable tensors)."""
        ref = columns[0] if len(columns) else torch.zeros(())
        counter = [0]

        def rec(node: Expression) -> torch.Tensor:
            if node.op is not None:
                args = [rec(c) for c in node.children]
                return node.op.soft(*args) if soft else node.op.fn(*args)
            if node.feature is not None:
                return columns[node.feature]
            if constants is not None:
                value = constants[counter[0]]
                counter[0] += 1
                return value
            return torch.tensor(node.value, dtype=ref.dtype, device=ref.device)

        return rec(self)

    # --- measures ---------------------------------------------------------------------------
    def complexity(self, complexity_of_operators: Mapping[str, float] | None = None,
                   complexity_of_constants: float = 1, complexity_of_variables: float = 1) -> float:
        """PySR's complexity: the sum of per-node weights (by default every node counts 1).

        ``complexity_of_operators`` maps operator names or aliases (``{"/": 2, "exp": 3}``)
        to weights; operators not listed use their own default complexity.
        """
        weights = {}
        for name, w in (complexity_of_operators or {}).items():
            try:  # aliases ("/") and Operators map to the canonical name
                key = lookup_operator(name).name
            except (ValueError, TypeError):  # a custom operator's own name
                key = name
            weights[key] = w

        def rec(node: Expression) -> float:
            if node.op is not None:
                return weights.get(node.op.name, node.op.complexity) + sum(rec(c) for c in node.children)
            return complexity_of_variables if node.feature is not None else complexity_of_constants

        total = rec(self)
        return int(total) if float(total).is_integer() else total

    def n_features_required(self) -> int:
        """One more than the largest variable index used (0 if no variable is used)."""
        return max((n.feature + 1 for n in self.nodes() if n.feature is not None), default=0)

    # --- traversal and editing ---------------------------------------------------------------
    def nodes(self) -> Iterator["Expression"]:
        """All nodes in preorder (root first)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def subtree(self, index: int) -> "Expression":
        """The node at preorder position ``index``."""
        for i, node in enumerate(self.nodes()):
            if i == index:
                return node
        raise IndexError(f"node index {index} out of range for a formula of size {self.size}")

    def replace(self, index: int, new: "Expression") -> "Expression":
        """A copy with the node at preorder ``index`` replaced by ``new`` (other nodes shared)."""
        if not 0 <= index < self.size:
            raise IndexError(f"node index {index} out of range for a formula of size {self.size}")
        if index == 0:
            return new
        offset = 1
        children = list(self.children)
        for i, child in enumerate(children):
            if index < offset + child.size:
                children[i] = child.replace(index - offset, new)
                return Expression(self.op, tuple(children))
            offset += child.size
        raise AssertionError("unreachable: sizes are consistent")

    @property
    def constants(self) -> tuple[float, ...]:
        """The constants' values in preorder."""
        return tuple(n.value for n in self.nodes() if n.is_constant)

    def with_constants(self, values: Sequence[float]) -> "Expression":
        """A copy whose constants (in preorder) take ``values``."""
        values = [float(v) for v in values]
        n_const = sum(1 for n in self.nodes() if n.is_constant)
        if len(values) != n_const:
            raise ValueError(f"formula has {n_const} constant(s), got {len(values)} value(s)")
        it = iter(values)

        def rec(node: Expression) -> Expression:
            if node.op is not None:
                return Expression(node.op, tuple(rec(c) for c in node.children))
            return Expression.const(next(it)) if node.is_constant else node

        return rec(self)

    # --- sympy, strings, LaTeX ----------------------------------------------------------------
    def to_sympy(self, variable_names: Sequence[str] | None = None) -> sympy.Expr:
        """The formula as a sympy expression; variables become Symbols named ``x0, x1, ...``
        or by ``variable_names``."""
        names = _names_for(self, variable_names)
        symbols = [sympy.Symbol(n) for n in names]

        def rec(node: Expression):
            if node.op is not None:
                return node.op.sympy_fn(*[rec(c) for c in node.children])
            if node.feature is not None:
                return symbols[node.feature]
            return sympy.Float(node.value)

        return rec(self)

    def to_string(self, variable_names: Sequence[str] | None = None, precision: int | None = None) -> str:
        """Infix text that `parsing.parse_expression` reads back; ``precision`` rounds constants to
        that many significant digits (default: exact)."""
        names = _names_for(self, variable_names)
        return _format(self, names, precision)[0]

    def __str__(self) -> str:
        return self.to_string(precision=6)

    def __repr__(self) -> str:
        return f"Expression({self.to_string(precision=6)!r})"

    def to_latex(self, variable_names: Sequence[str] | None = None) -> str:
        return sympy.latex(self.to_sympy(variable_names))


# Binding strength of the infix operators, for printing with as few parentheses as needed.
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "^": 3}


def _names_for(expr: Expression, variable_names: Sequence[str] | None) -> list[str]:
    needed = expr.n_features_required()
    if variable_names is None:
        return [f"x{i}" for i in range(needed)]
    names = [str(n) for n in variable_names]
    if len(names) < needed:
        raise ValueError(f"formula uses x{needed - 1} but only {len(names)} variable name(s) were given")
    return names


def _format_number(value: float, precision: int | None) -> str:
    if precision is None:
        return repr(value)
    text = f"{value:.{precision}g}"
    return text if any(ch in text for ch in ".eni") else text + ".0"


def _format(node: Expression, names: list[str], precision: int | None) -> tuple[str, int]:
    """Text of ``node`` and the precedence of its outermost operator (4 = atomic)."""
    if node.feature is not None:
        return names[node.feature], 4
    if node.is_constant:
        text = _format_number(node.value, precision)
        return text, (4 if not text.startswith("-") else 0)
    op = node.op
    parts = [_format(c, names, precision) for c in node.children]
    if op.infix is not None and op.arity == 2:
        prec = _PRECEDENCE.get(op.infix, 0)
        (lt, lp), (rt, rp) = parts
        # pow is right-associative; the others group to the left, so a right operand of the
        # same precedence keeps its parentheses (even for + and *: a + (b + c) is another
        # tree, and another rounding, than a + b + c).
        left_needs = lp < prec or (op.infix == "^" and lp <= prec)
        right_needs = rp < prec or (rp == prec and op.infix != "^")
        if lt.startswith("-") and lp == 4:
            left_needs = left_needs or op.infix == "^"
        lt = f"({lt})" if left_needs else lt
        rt = f"({rt})" if right_needs else rt
        return f"{lt} {op.infix} {rt}", prec
    return f"{op.name}({', '.join(t for t, _ in parts)})", 4


def evaluate_batch(exprs: Sequence[Expression], X: torch.Tensor) -> torch.Tensor:
    """Evaluate several formulas one after another (the plain path); returns (len(exprs), rows)."""
    return torch.stack([e.evaluate(X) for e in exprs]) if exprs else X.new_zeros((0, X.shape[0]))

