"""A whitelist parser for formula strings and PySR-style operator definitions.

Users hand us strings (``"inv(x) = 1/x"``, ``"0.5*x0*x1^2"``); these are never given to
eval/exec or to sympy's string parser. The grammar accepts only numbers, known variable
names, known operator names called like functions, ``+ - * / ^ **`` and parentheses;
anything else raises ValueError naming the offending text and its position.

    >>> from pysr_baseline.parsing import parse_expression, parse_operator_definition
    >>> parse_expression("m * v^2 / 2", variable_names=["m", "v"]).to_string(["m", "v"])
    'm * v ^ 2.0 / 2.0'
    >>> parse_operator_definition("inv(x) = 1/x").arity
    1

Grammar (usual precedence, ``^`` right-associative and binding tighter than unary minus)::

    sum     := product (('+' | '-') product)*
    product := unary (('*' | '/') unary)*
    unary   := '-' unary | power
    power   := atom (('^' | '**') unary)?
    atom    := NUMBER | NAME | NAME '(' sum (',' sum)* ')' | '(' sum ')'
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import sympy
import torch

from pysr_baseline.expression import Expression
from pysr_baseline.operators import ALIASES, BUILTIN_OPERATORS, Operator, get_operator, lookup_operator

_TOKEN = re.compile(r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
                    r"|(?P<op>\*\*|[-+*/^(),=]))")
_NAMED_CONSTANTS = {"pi": math.pi, "e": math.e}
_MAX_LENGTH = 10_000  # a formula longer than this is not a formula a user meant to write
_MAX_NESTING = 100  # deeper nesting would exhaust Python's recursion limit in the parser


def tokenize(text: str) -> list[tuple[str, str, int]]:
    """Split into (kind, text, position) tokens; any other character raises ValueError."""
    if not isinstance(text, str):
        raise TypeError(f"formula must be a string, got {type(text).__name__}")
    if len(text) > _MAX_LENGTH:
        raise ValueError(f"formula string is too long ({len(text)} characters, at most {_MAX_LENGTH})")
    tokens, pos = [], 0
    stripped_end = len(text.rstrip())
    while pos < stripped_end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            rest = text[pos:].lstrip()
            bad_pos = len(text) - len(rest)  # the character itself, not the blanks before it
            raise ValueError(f"unexpected character {rest[:1]!r} at position {bad_pos} in {text!r}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str, variables: dict[str, int], operators: dict[str, Operator]):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.variables = variables
        self.operators = operators
        self.nesting = 0

    def error(self, message: str) -> ValueError:
        return ValueError(f"{message} in formula {self.text!r}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end" + (f", expected {expected!r}" if expected else ""))
        if expected is not None and tok[1] != expected:
            raise self.error(f"expected {expected!r} at position {tok[2]}, found {tok[1]!r}")
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "op" and tok[1] in texts

    def binary(self, symbol: str, left: Expression, right: Expression) -> Expression:
        name = {"+": "add", "-": "sub", "*": "mul", "/": "div", "^": "pow", "**": "pow"}[symbol]
        op = self.operators.get(name) or get_operator(name)
        return Expression(op, (left, right))

    def parse(self) -> Expression:
        if not self.tokens:
            raise ValueError("empty formula string")
        expr = self.sum()
        if self.peek() is not None:
            tok = self.peek()
            raise self.error(f"unexpected {tok[1]!r} at position {tok[2]}")
        return expr

    def sum(self) -> Expression:
        left = self.product()
        while self.at("+", "-"):
            left = self.binary(self.take()[1], left, self.product())
        return left

    def product(self) -> Expression:
        left = self.unary()
        while self.at("*", "/"):
            left = self.binary(self.take()[1], left, self.unary())
        return left

    def unary(self) -> Expression:
        # Every recursive path of the grammar passes through here: count the nesting so that
        # "((((...x0...))))" or "- - - ... x0" is a ValueError, not a RecursionError.
        self.nesting += 1
        try:
            if self.nesting > _MAX_NESTING:
                tok = self.peek()
                where = f" at position {tok[2]}" if tok else ""
                raise self.error(f"formula nested more than {_MAX_NESTING} levels deep{where}")
            return self._unary()
        finally:
            self.nesting -= 1

    def _unary(self) -> Expression:
        if self.at("-"):
            self.take()
            operand = self.unary()
            if operand.is_constant:  # "-2" is a number, not neg(2)
                return Expression.const(-operand.value)
            return Expression(self.operators.get("neg") or get_operator("neg"), (operand,))
        if self.at("+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Expression:
        base = self.atom()
        if self.at("^", "**"):
            self.take()
            return self.binary("^", base, self.unary())
        return base

    def atom(self) -> Expression:
        kind, text, pos = self.take()
        if kind == "number":
            return Expression.const(float(text))
        if kind == "name":
            if self.at("("):
                return self.call(text, pos)
            if text in self.variables:
                return Expression.var(self.variables[text])
            if text in _NAMED_CONSTANTS:
                return Expression.const(_NAMED_CONSTANTS[text])
            raise self.error(f"unknown name {text!r} at position {pos}")
        if text == "(":
            inner = self.sum()
            self.take(")")
            return inner
        raise self.error(f"unexpected {text!r} at position {pos}")

    def call(self, name: str, pos: int) -> Expression:
        op = self.operators.get(name)
        if op is None:
            raise self.error(f"unknown function {name!r} at position {pos}")
        self.take("(")
        args = [self.sum()]
        while self.at(","):
            self.take()
            args.append(self.sum())
        self.take(")")
        if len(args) != op.arity:
            raise self.error(f"{name}() takes {op.arity} argument(s), got {len(args)} at position {pos}")
        return Expression(op, tuple(args))


def _operator_table(operators: Iterable | None) -> dict[str, Operator]:
    """Names callable in a formula: all built-ins (with aliases) plus any custom operators."""
    table: dict[str, Operator] = dict(BUILTIN_OPERATORS)
    table.update({alias: BUILTIN_OPERATORS[name] for alias, name in ALIASES.items() if alias.isidentifier()})
    for spec in operators or ():
        op = resolve_operator(spec)
        table[op.name] = op
    return table


def parse_expression(text: str, variable_names: Sequence[str] | None = None, operators: Iterable | None = None
                     ) -> Expression:
    """Parse a formula. Variables are ``x0, x1, ...`` or the given ``variable_names``;
    ``operators`` adds custom operators (Operator objects or definition strings)."""
    table = _operator_table(operators)
    if variable_names is None:
        variables = {name: int(name[1:]) for _, name, _ in tokenize(text) if re.fullmatch(r"x\d+", name)}
    else:
        variables = {}
        for i, name in enumerate(variable_names):
            name = str(name)
            if not name.isidentifier():
                raise ValueError(f"variable name {name!r} is not an identifier")
            if name in variables:
                raise ValueError(f"variable name {name!r} given twice")
            if name in table:
                raise ValueError(f"variable name {name!r} clashes with an operator name")
            variables[name] = i
    return _Parser(text, variables, table).parse()


def _restates(body: Expression, arity: int, builtin: Operator) -> bool:
    if arity != builtin.arity:
        return False
    grid = torch.tensor([-2.5, -1.0, -0.3, -0.0, 0.0, 0.7, 1.0, 3.2, 40.0], dtype=torch.float64)
    cols = [grid, grid.flip(0)][:arity]
    with torch.no_grad():
        mine = body.evaluate_columns(cols).expand(grid.shape)
        return bool(torch.allclose(mine, builtin.fn(*cols), rtol=1e-12, atol=0.0, equal_nan=True))


_DEFINITION = re.compile(r"^\s*(?P<name>[A-Za-z_][A-Za-z_0-9]*)\s*\((?P<params>[^()]*)\)\s*=(?P<body>.*)$", re.S)


def parse_operator_definition(text: str, complexity: int = 1) -> Operator:
    """Build an Operator from PySR's string form, ``"name(x) = body"`` or ``"name(x, y) = body"``.

    The body may use the parameters, numbers, ``+ - * / ^`` and built-in operators. The
    resulting operator's torch, guarded and sympy functions all come from the parsed tree.
    """
    if not isinstance(text, str):
        raise TypeError(f"operator definition must be a string, got {type(text).__name__}")
    m = _DEFINITION.match(text)
    if m is None:
        raise ValueError(f"malformed operator definition {text!r}: expected 'name(x) = body' or 'name(x, y) = body'")
    name = m.group("name")
    params = [p.strip() for p in m.group("params").split(",")]
    if not 1 <= len(params) <= 2 or not all(p.isidentifier() for p in params):
        raise ValueError(f"operator definition {text!r}: expected one or two parameter names, got {m.group('params')!r}")
    if len(set(params)) != len(params):
        raise ValueError(f"operator definition {text!r}: parameter names must differ")
    if name.startswith("__"):
        raise ValueError(f"operator name {name!r} is not allowed")
    body = parse_expression(m.group("body"), variable_names=params)
    builtin = BUILTIN_OPERATORS.get(ALIASES.get(name, name))
    if builtin is not None:
        # PySR users write "inv(x) = 1/x": a definition that restates a built-in (checked
        # numerically, NaN/inf included) means the built-in; any other meaning is refused.
        if not _restates(body, len(params), builtin):
            raise ValueError(f"operator definition {text!r} redefines the built-in operator {name!r} "
                             "with another meaning; choose another name")
        return builtin

    def fn(*args):
        return body.evaluate_columns(args)

    def soft_fn(*args):
        return body.evaluate_columns(args, soft=True)

    def sympy_fn(*args):
        return body.to_sympy(params).subs(dict(zip(sympy.symbols(params), args)), simultaneous=True)

    return Operator(name, len(params), fn, sympy_fn, complexity, None, soft_fn, body=body)


# --- operators as users write them ------------------------------------------------------
def resolve_operator(spec, arity: int | None = None) -> Operator:
    """Turn what a user wrote into an Operator.

    ``spec`` may be an Operator, a built-in name or alias (``"+"``, ``"cos"``), or PySR's
    definition string ``"inv(x) = 1/x"`` / ``"special(x, y) = x^2 + y"``. When ``arity``
    is given, an operator of another arity raises ValueError (a unary operator listed
    among the binary ones, say).
    """
    if isinstance(spec, str) and "=" in spec:
        op = parse_operator_definition(spec)
    else:
        op = lookup_operator(spec)
    if arity is not None and op.arity != arity:
        kind = {1: "unary", 2: "binary"}[arity]
        raise ValueError(f"operator {op.name!r} has arity {op.arity}, but was given as a {kind} operator")
    return op


def resolve_operators(specs: Iterable, arity: int) -> tuple[Operator, ...]:
    """Resolve a list of operator specs of one arity; duplicate names raise ValueError."""
    if isinstance(specs, (str, Operator)):
        specs = [specs]
    ops = tuple(resolve_operator(s, arity) for s in specs)
    names = [op.name for op in ops]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"operator(s) listed twice: {', '.join(duplicates)}")
    return ops
