"""Formulas as arrays: each one a postfix program of fixed-length token rows.

A program is three rows of length ``L`` plus its length: ``ops`` (the token's opcode),
``feat`` (a variable's column) and ``val`` (a constant's value). Postfix order keeps
every sub-tree contiguous (it ends at its root), which is what the compiled mutations
and the stack-machine evaluator need. Many programs live in one ``Programs`` block
(``ops[m, t]`` ...), so a whole population set is a handful of numpy arrays rather than
one Python object per formula; `Expression` stays the public type and is converted at
the edges (`encode`, `decode`).

Opcodes: ``VAR`` and ``CONST`` for leaves, a fixed code per built-in operator (the
kernels branch on them), and ``CUSTOM + k`` for the k-th operator defined by a string
(``"cos2(x) = cos(x)^2"``), whose body is itself a small program over its arguments.

    >>> from enhancements.hybrid_optimization.options import Options
    >>> table = OperatorTable.from_options(Options(unary_operators=["cos"], soft_tree_seed_fraction=0))
    >>> block = Programs.empty(2, 8)
    >>> from pysr_baseline.parsing import parse_expression
    >>> block.set(0, parse_expression("x0 * cos(x1) + 2.5"), table)
    True
    >>> block.ops[0, :block.length[0]].tolist() == [VAR, VAR, COS, MUL, CONST, ADD]
    True
    >>> block.get(0, table).to_string()
    'x0 * cos(x1) + 2.5'
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pysr_baseline.expression import Expression
from pysr_baseline.operators import BUILTIN_OPERATORS, Operator

VAR, CONST = 0, 1
ADD, SUB, MUL, DIV, POW = 2, 3, 4, 5, 6
NEG, SQUARE, CUBE, SQRT, EXP, LOG, ABS, SIN, COS, TAN, TANH, INV = 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18
CUSTOM = 32  # CUSTOM + k: the k-th custom operator
N_CODES = 64  # the size of the per-opcode tables (arity, complexity)

BUILTIN_CODES = {"add": ADD, "sub": SUB, "mul": MUL, "div": DIV, "pow": POW, "neg": NEG, "square": SQUARE,
                 "cube": CUBE, "sqrt": SQRT, "exp": EXP, "log": LOG, "abs": ABS, "sin": SIN, "cos": COS,
                 "tan": TAN, "tanh": TANH, "inv": INV}
MAX_CUSTOM = N_CODES - CUSTOM


class NotCompilable(ValueError):
    """An operator the compiled engine cannot run (a Python callable without a string body)."""


@dataclass
class OperatorTable:
    """The search's operators as opcodes: ``codes[i]`` for ``operators[i]``, the arity and
    complexity of every opcode, the bodies of custom operators, and the codes the
    mutations draw from."""

    operators: tuple
    codes: np.ndarray            # (n_ops,) int64, in the order of `operators`
    arity: np.ndarray            # (N_CODES,) int64; 0 for leaves and unused codes
    complexity: np.ndarray       # (N_CODES,) float64, the operators' complexities (leaves: unused)
    binary_codes: np.ndarray
    unary_codes: np.ndarray
    body_ops: np.ndarray         # (MAX_CUSTOM, B) postfix bodies of the custom operators
    body_feat: np.ndarray        # argument index for VAR tokens of a body
    body_val: np.ndarray
    body_length: np.ndarray      # (MAX_CUSTOM,)
    by_code: dict
    variables: dict = field(default_factory=dict)  # index -> its variable node (`decode` shares them)
    code_by_name: dict = field(init=False)

    def __post_init__(self):
        self.code_by_name = {op.name: code for code, op in self.by_code.items()}

    def code_of(self, op: Operator) -> int:
        """The opcode of one of the search's operators (`NotCompilable` for any other)."""
        code = self.code_by_name.get(op.name)
        if code is None:
            raise NotCompilable(f"operator {op.name!r} is not among the search's operators")
        return code

    @staticmethod
    def from_options(options) -> "OperatorTable":
        ops = tuple(options.operators)
        codes, customs = [], []
        arity = np.zeros(N_CODES, dtype=np.int64)
        complexity = np.zeros(N_CODES, dtype=np.float64)
        by_code = {}
        for op in ops:
            builtin = BUILTIN_OPERATORS.get(op.name)
            if builtin is not None and op.fn is builtin.fn:  # a built-in (perhaps with the user's sympy form)
                code = BUILTIN_CODES[op.name]
            else:
                body = op.body
                if body is None:
                    raise NotCompilable(f"operator {op.name!r} is a Python callable; the compiled engine runs only "
                                        "built-in operators and ones defined by a formula string")
                if len(customs) >= MAX_CUSTOM:
                    raise NotCompilable(f"more than {MAX_CUSTOM} custom operators")
                code = CUSTOM + len(customs)
                customs.append(body)
            codes.append(code)
            arity[code] = op.arity
            complexity[code] = options._op_complexity.get(op.name, op.complexity)
            by_code[code] = op
        longest = max([b.size for b in customs], default=1)
        body_ops = np.zeros((MAX_CUSTOM, longest), dtype=np.int64)
        body_feat = np.zeros((MAX_CUSTOM, longest), dtype=np.int64)
        body_val = np.zeros((MAX_CUSTOM, longest), dtype=np.float64)
        body_length = np.zeros(MAX_CUSTOM, dtype=np.int64)
        for k, body in enumerate(customs):
            tokens = _postfix(body, None)
            for t, (code, feat, val) in enumerate(tokens):
                body_ops[k, t], body_feat[k, t], body_val[k, t] = code, feat, val
            body_length[k] = len(tokens)
        codes = np.asarray(codes, dtype=np.int64)
        return OperatorTable(ops, codes, arity, complexity, codes[arity[codes] == 2], codes[arity[codes] == 1],
                             body_ops, body_feat, body_val, body_length, by_code)


def _postfix(expr: Expression, table: OperatorTable | None) -> list[tuple[int, int, float]]:
    """(code, feature, value) tokens in postfix order. With ``table`` None, operators must
    be built-ins (a custom operator's body)."""
    out: list = []
    _emit(expr, out, _builtin_code if table is None else table.code_of)
    return out


def _emit(node: Expression, out: list, code_of) -> None:
    """Append ``node``'s tokens to ``out`` (recursion: a formula is at most maxdepth deep)."""
    op = node.op
    if op is None:
        out.append((VAR, node.feature, 0.0) if node.feature is not None else (CONST, 0, node.value))
        return
    for child in node.children:
        _emit(child, out, code_of)
    out.append((code_of(op), 0, 0.0))


def _builtin_code(op: Operator) -> int:
    """The opcode of a built-in operator (the only kind a custom operator's body may use)."""
    builtin = BUILTIN_OPERATORS.get(op.name)
    if builtin is None or op.fn is not builtin.fn:
        raise NotCompilable(f"operator {op.name!r} inside a custom operator's body")
    return BUILTIN_CODES[op.name]


class Programs:
    """A block of ``n`` programs of at most ``L`` tokens (see the module docstring)."""

    def __init__(self, ops: np.ndarray, feat: np.ndarray, val: np.ndarray, length: np.ndarray):
        self.ops, self.feat, self.val, self.length = ops, feat, val, length

    @staticmethod
    def empty(n: int, L: int) -> "Programs":
        return Programs(np.zeros((n, L), dtype=np.int64), np.zeros((n, L), dtype=np.int64),
                        np.zeros((n, L), dtype=np.float64), np.zeros(n, dtype=np.int64))

    @property
    def capacity(self) -> int:
        return self.ops.shape[1]

    def set(self, m: int, expr: Expression, table: OperatorTable) -> bool:
        """Write ``expr`` as program ``m``; False (nothing written) if it is longer than L."""
        if expr.size > self.capacity:
            return False
        tokens = _postfix(expr, table)
        n = len(tokens)
        codes, feats, vals = zip(*tokens)
        self.ops[m, :n], self.feat[m, :n], self.val[m, :n] = codes, feats, vals
        self.length[m] = n
        return True

    def get(self, m: int, table: OperatorTable) -> Expression:
        """Program ``m`` as an `Expression` (on the search's operator objects)."""
        return decode(self.ops[m], self.feat[m], self.val[m], int(self.length[m]), table)


def decode(ops, feat, val, length: int, table: OperatorTable) -> Expression:
    """Program tokens back as an `Expression` (on the search's operator objects)."""
    stack: list[Expression] = []
    by_code, leaves = table.by_code, table.variables
    node_of, const = Expression.node_of, Expression.const
    codes, features, values = ops[:length].tolist(), feat[:length].tolist(), val[:length].tolist()
    for code, f, v in zip(codes, features, values):
        if code == VAR:
            leaf = leaves.get(f)
            if leaf is None:  # variables are immutable: one node per index serves every formula
                leaf = leaves[f] = Expression.var(f)
            stack.append(leaf)
        elif code == CONST:
            stack.append(const(v))
        else:
            op = by_code[code]
            if len(stack) < op.arity:
                raise ValueError("a malformed program: an operator without its arguments")
            if op.arity == 2:
                b = stack.pop()
                stack.append(node_of(op, (stack.pop(), b)))
            else:
                stack.append(node_of(op, (stack.pop(),)))
    if len(stack) != 1:
        raise ValueError(f"a malformed program: {len(stack)} values left on the stack")
    return stack[0]


def encode(exprs, table: OperatorTable, L: int) -> Programs:
    """A block holding ``exprs`` (each must fit in ``L`` tokens)."""
    block = Programs.empty(len(exprs), L)
    for m, e in enumerate(exprs):
        if not block.set(m, e, table):
            raise ValueError(f"formula {e} has {e.size} nodes, more than the {L} a program holds")
    return block
