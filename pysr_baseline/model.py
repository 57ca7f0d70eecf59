"""The soft-selection expression tree: a differentiable relaxation of a formula.

A complete binary tree with ``max_depth`` levels of operator nodes above a level of
leaves. Every operator node holds logits over its candidates: each binary operator
(applied to both children), each unary operator (applied to the left child) and an
identity (passing the left child through, so shallower formulas are reachable). Every
leaf holds logits over the input variables and one learnable constant. The forward
pass mixes the candidates by ``softmax(logits / temperature)``; training drives each
mixture toward one-hot, and `discretize` reads the formula off the argmax choices.

    >>> model = SymbolicRegressor(n_features=2, max_depth=3)
    >>> model(torch.rand(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))).shape
    torch.Size([10])
    >>> isinstance(model.discretize(), Expression)
    True

This is the baseline design: a tree of node modules, evaluated recursively, each node
vectorised over all samples. `enhancements.dp_memoization` evaluates the same
parameters level by level and restart by restart.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import sympy
import torch
from torch import nn

from pysr_baseline.expression import Expression
from pysr_baseline.operators import DEFAULT_BINARY_OPERATORS, DEFAULT_UNARY_OPERATORS, Operator
from pysr_baseline.parsing import resolve_operators

# Candidate outputs are clamped to +-OUTPUT_CLAMP during soft training: one exploding
# candidate (exp of a large sum, a tiny denominator) must not swamp the mixture.
OUTPUT_CLAMP = 100.0


class LeafNode(nn.Module):
    """A mixture over the input variables and one learnable constant."""

    def __init__(self, n_features: int, dtype: torch.dtype):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_features + 1, dtype=dtype))
        self.constant = nn.Parameter(torch.ones((), dtype=dtype))

    def forward(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        w = torch.softmax(self.logits / temperature, dim=0)
        return x @ w[:-1] + w[-1] * self.constant

    def choice(self) -> int:
        return int(torch.argmax(self.logits))


class OperatorNode(nn.Module):
    """A mixture over binary operators, unary operators and the identity."""

    def __init__(self, left: nn.Module, right: nn.Module, binary: Sequence[Operator], unary: Sequence[Operator],
                 dtype: torch.dtype):
        super().__init__()
        self.left, self.right = left, right
        self.binary, self.unary = tuple(binary), tuple(unary)
        self.logits = nn.Parameter(torch.zeros(len(binary) + len(unary) + 1, dtype=dtype))

    def forward(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        a = self.left(x, temperature)
        b = self.right(x, temperature)
        outputs = [op.soft(a, b) for op in self.binary] + [op.soft(a) for op in self.unary] + [a]
        stacked = torch.nan_to_num(torch.stack(outputs), nan=0.0, posinf=OUTPUT_CLAMP, neginf=-OUTPUT_CLAMP)
        stacked = stacked.clamp(-OUTPUT_CLAMP, OUTPUT_CLAMP)
        w = torch.softmax(self.logits / temperature, dim=0)
        return w @ stacked

    def choice(self) -> int:
        return int(torch.argmax(self.logits))


class SymbolicRegressor(nn.Module):
    """A soft expression tree over ``n_features`` inputs with ``max_depth`` operator levels.

    ``binary_operators`` / ``unary_operators`` take names (``"+"``, ``"cos"``), PySR
    definition strings (``"inv(x) = 1/x"``) or `Operator` objects.
    """

    def __init__(self, n_features: int, max_depth: int = 3,
                 binary_operators: Sequence = DEFAULT_BINARY_OPERATORS,
                 unary_operators: Sequence = DEFAULT_UNARY_OPERATORS,
                 temperature: float = 1.0, variable_names: Sequence[str] | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(n_features, int) or isinstance(n_features, bool) or n_features < 1:
            raise ValueError(f"n_features must be a positive int, got {n_features!r}")
        if not isinstance(max_depth, int) or isinstance(max_depth, bool) or not 1 <= max_depth <= 8:
            raise ValueError(f"max_depth must be an int between 1 and 8, got {max_depth!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        self.binary_operators = resolve_operators(binary_operators, 2)
        self.unary_operators = resolve_operators(unary_operators, 1)
        if not self.binary_operators and not self.unary_operators:
            raise ValueError("at least one operator is needed")
        if variable_names is not None and len(variable_names) != n_features:
            raise ValueError(f"{len(variable_names)} variable names given for {n_features} features")
        self.n_features = n_features
        self.max_depth = max_depth
        self.temperature = float(temperature)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        # The soft tree only has to find a formula's shape, which float32 does as well as
        # float64 at about half the cost; the discrete formula is refitted in float64.
        self.dtype = dtype
        self.variable_names = list(variable_names) if variable_names is not None else None
        self.root = self._build(max_depth)
        # Set by a trainer after fit: the chosen formula with refitted constants.
        self.fitted_expression: Expression | None = None

    def _build(self, depth: int) -> nn.Module:
        if depth == 0:
            return LeafNode(self.n_features, self.dtype)
        return OperatorNode(self._build(depth - 1), self._build(depth - 1), self.binary_operators,
                            self.unary_operators, self.dtype)

    @property
    def n_candidates(self) -> int:
        """Number of choices at an operator node (binary + unary + identity)."""
        return len(self.binary_operators) + len(self.unary_operators) + 1

    def levels(self) -> list[list[nn.Module]]:
        """Nodes level by level, root level first, leaves last, left to right."""
        levels, current = [], [self.root]
        while current:
            levels.append(current)
            current = [child for node in current if isinstance(node, OperatorNode)
                       for child in (node.left, node.right)]
        return levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Soft prediction for a (samples x features) tensor, in the model's dtype."""
        return self.root(x.to(self.dtype), self.temperature)

    # --- reading the formula off ---------------------------------------------------------
    def discretize(self, choices: Mapping[nn.Module, int] | None = None) -> Expression:
        """The argmax formula (unused branches pruned). ``choices`` overrides the choice
        of given nodes (node module -> candidate index), to read off alternatives."""
        choices = choices or {}
        n_binary = len(self.binary_operators)

        def rec(node: nn.Module) -> Expression:
            k = choices.get(node, node.choice())
            if isinstance(node, LeafNode):
                if k < self.n_features:
                    return Expression.var(k)
                return Expression.const(float(node.constant.detach()))
            if k < n_binary:
                return Expression(self.binary_operators[k], (rec(node.left), rec(node.right)))
            if k < n_binary + len(self.unary_operators):
                return Expression(self.unary_operators[k - n_binary], (rec(node.left),))
            return rec(node.left)

        return rec(self.root)

    def active_nodes(self, choices: Mapping[nn.Module, int] | None = None) -> list[nn.Module]:
        """The nodes the discretised formula uses (children of unary/identity choices on the
        right are unused)."""
        choices = choices or {}
        n_binary = len(self.binary_operators)
        active, stack = [], [self.root]
        while stack:
            node = stack.pop()
            active.append(node)
            if isinstance(node, OperatorNode):
                k = choices.get(node, node.choice())
                stack.extend([node.left, node.right] if k < n_binary else [node.left])
        return active

    def formula(self) -> Expression:
        """The fitted formula if a trainer has set one, else the argmax formula."""
        return self.fitted_expression if self.fitted_expression is not None else self.discretize()

    def simplify(self, digits: int = 6) -> sympy.Expr:
        """The formula as a simplified sympy expression, floats rounded to ``digits``
        significant digits for reading (the `Expression` keeps full precision)."""
        expr = self.formula().to_sympy(self.variable_names)
        expr = expr.xreplace({f: sympy.Float(f, digits) for f in expr.atoms(sympy.Float)})
        # The variables are real data columns: saying so lets sympy cancel log(exp(x)) to x.
        real = {s: sympy.Symbol(s.name, real=True) for s in expr.free_symbols}
        simplified = sympy.simplify(expr.xreplace(real)).xreplace({v: k for k, v in real.items()})
        return simplified.xreplace({f: _tidy_float(f, digits) for f in simplified.atoms(sympy.Float)})

    def __str__(self) -> str:
        return str(self.simplify())


def _tidy_float(value: sympy.Float, digits: int):
    """A float that is an integer to ``digits`` digits prints as that integer."""
    rounded = sympy.Float(value, digits)
    nearest = round(float(rounded))
    if nearest != 0 and abs(float(rounded) - nearest) <= 10 ** (-digits) * abs(nearest):
        return sympy.Integer(nearest)
    return rounded
