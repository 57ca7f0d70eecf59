"""Operator registry: what a formula may be built from.

Every operator carries everything the rest of the system needs: its arity, an exact
torch function (domain errors give NaN/inf, never an exception), a guarded torch
function for soft training (finite for every finite input, so that one branch of a
softmax mixture cannot poison the others), a sympy function, a default complexity and
a printable form.

    >>> from pysr_baseline.operators import get_operator
    >>> get_operator("*").name, get_operator("cos").arity
    ('mul', 1)

Custom operators come from a callable plus its sympy mapping (`custom_operator`) or from
PySR's string form, ``"inv(x) = 1/x"`` (`pysr_baseline.parsing.resolve_operator`, whose
whitelist parser builds on this module and on `expression`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import sympy
import torch

# Soft-training guards: the smallest magnitude a denominator / log argument may take,
# and the largest exponent fed to exp, chosen so that every guarded output is finite.
_EPS = 1e-6
_EXP_MAX = 30.0


@dataclass(frozen=True)
class Operator:
    """One operator of the grammar.

    ``fn`` has exact semantics (used for discrete formulas); ``soft_fn`` is the guarded
    form used inside the soft tree. ``infix`` is the symbol used when printing binary
    operators such as ``+``; ``None`` prints as a call, ``name(a, b)``.
    """

    name: str
    arity: int
    fn: Callable[..., torch.Tensor] = field(compare=False, repr=False)
    sympy_fn: Callable[..., sympy.Expr] = field(compare=False, repr=False)
    complexity: int = 1
    infix: str | None = None
    soft_fn: Callable[..., torch.Tensor] | None = field(default=None, compare=False, repr=False)
    # A commutative binary operator lets the cache treat f(a, b) and f(b, a) alike.
    commutative: bool = False
    # An operator defined by a string ("cos2(x) = cos(x)^2") keeps its parsed body (an
    # Expression in x0, x1 for the arguments), so that compiled code can run it too.
    body: object = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.arity not in (1, 2):
            raise ValueError(f"operator {self.name!r}: arity must be 1 or 2, got {self.arity}")
        if not isinstance(self.complexity, (int, float)) or self.complexity < 0:
            raise ValueError(f"operator {self.name!r}: complexity must be a non-negative number")

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args)

    def soft(self, *args: torch.Tensor) -> torch.Tensor:
        """Guarded evaluation for soft training (finite for finite inputs)."""
        return (self.soft_fn or self.fn)(*args)


# --- guarded helpers -------------------------------------------------------------------

def _away_from_zero(x: torch.Tensor) -> torch.Tensor:
    """x with magnitudes below _EPS pushed out to +-_EPS (zero goes to +_EPS)."""
    sign = torch.where(x < 0, -1.0, 1.0).to(x.dtype)
    return torch.where(x.abs() < _EPS, sign * _EPS, x)


def _safe_pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # |a|^b keeps the gradient finite for negative bases; the exponent is bounded so the
    # output cannot overflow for the data ranges a soft tree sees.
    return torch.exp(torch.clamp(b.clamp(-5, 5) * torch.log(a.abs().clamp_min(_EPS)), max=_EXP_MAX))


def _exact_pow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.pow(a, b)


def _soft_tan(x: torch.Tensor) -> torch.Tensor:
    return torch.tan(x).clamp(-1e3, 1e3)


def _sym_inv(x):
    return 1 / x


_BUILTIN_DEFINITIONS = [
    # name, arity, exact fn, soft fn, sympy fn, complexity, infix, commutative
    ("add", 2, torch.add, None, lambda a, b: a + b, 1, "+", True),
    ("sub", 2, torch.sub, None, lambda a, b: a - b, 1, "-", False),
    ("mul", 2, torch.mul, None, lambda a, b: a * b, 1, "*", True),
    ("div", 2, torch.div, lambda a, b: a / _away_from_zero(b), lambda a, b: a / b, 1, "/", False),
    ("pow", 2, _exact_pow, _safe_pow, lambda a, b: a**b, 1, "^", False),
    ("neg", 1, torch.neg, None, lambda a: -a, 1, None, False),
    ("square", 1, torch.square, None, lambda a: a**2, 1, None, False),
    ("cube", 1, lambda a: a * a * a, None, lambda a: a**3, 1, None, False),
    ("sqrt", 1, torch.sqrt, lambda a: torch.sqrt(a.clamp_min(_EPS)), sympy.sqrt, 1, None, False),
    ("exp", 1, torch.exp, lambda a: torch.exp(a.clamp(max=_EXP_MAX)), sympy.exp, 1, None, False),
    ("log", 1, torch.log, lambda a: torch.log(a.clamp_min(_EPS)), sympy.log, 1, None, False),
    ("abs", 1, torch.abs, None, sympy.Abs, 1, None, False),
    ("sin", 1, torch.sin, None, sympy.sin, 1, None, False),
    ("cos", 1, torch.cos, None, sympy.cos, 1, None, False),
    ("tan", 1, torch.tan, _soft_tan, sympy.tan, 1, None, False),
    ("tanh", 1, torch.tanh, None, sympy.tanh, 1, None, False),
    ("inv", 1, torch.reciprocal, lambda a: 1.0 / _away_from_zero(a), _sym_inv, 1, None, False),
]

BUILTIN_OPERATORS: dict[str, Operator] = {
    name: Operator(name, arity, fn, sym, cplx, infix, soft, comm)
    for name, arity, fn, soft, sym, cplx, infix, comm in _BUILTIN_DEFINITIONS
}

# Names users may write for a built-in (PySR's spellings included).
ALIASES: dict[str, str] = {
    "+": "add", "plus": "add",
    "-": "sub", "minus": "sub",
    "*": "mul", "mult": "mul", "times": "mul",
    "/": "div",
    "^": "pow", "**": "pow",
    "safe_log": "log", "safe_sqrt": "sqrt", "safe_pow": "pow",
    "ln": "log",
}

DEFAULT_BINARY_OPERATORS = ("add", "sub", "mul", "div")
DEFAULT_UNARY_OPERATORS = ("neg", "square", "cube", "sqrt", "exp", "log", "sin", "cos", "inv")


def get_operator(name: str) -> Operator:
    """Look up a built-in operator by name or alias, e.g. ``get_operator("+")``."""
    if not isinstance(name, str):
        raise TypeError(f"operator name must be a string, got {type(name).__name__}")
    key = ALIASES.get(name.strip(), name.strip())
    try:
        return BUILTIN_OPERATORS[key]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_OPERATORS))
        raise ValueError(f"unknown operator {name!r}; known operators: {known}") from None


def custom_operator(name: str, fn: Callable, sympy_fn: Callable, arity: int = 1,
                    complexity: int = 1, soft_fn: Callable | None = None) -> Operator:
    """Build an operator from a torch callable and its sympy mapping.

        >>> sinc = custom_operator("sinc", lambda x: torch.sin(x) / x, lambda x: sympy.sin(x) / x)
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"operator name must be an identifier, got {name!r}")
    if not callable(fn) or not callable(sympy_fn):
        raise TypeError(f"operator {name!r}: fn and sympy_fn must be callable")
    return Operator(name, arity, fn, sympy_fn, complexity, None, soft_fn)


def lookup_operator(spec) -> Operator:
    """An Operator given as itself or by a built-in name or alias (``"+"``, ``"cos"``).
    PySR's definition strings (``"inv(x) = 1/x"``) need the parser:
    `pysr_baseline.parsing.resolve_operator` takes those too.

    >>> lookup_operator("/").name
    'div'
    """
    if isinstance(spec, Operator):
        return spec
    if isinstance(spec, str) and "=" in spec:
        raise ValueError(f"{spec!r} is an operator definition: use pysr_baseline.parsing.resolve_operator")
    if isinstance(spec, str):
        return get_operator(spec)
    raise TypeError(f"operator must be a name, a definition string or an Operator, got {spec!r}")
