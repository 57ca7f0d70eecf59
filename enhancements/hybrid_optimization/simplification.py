"""Algebraic simplification: cheap rules for every cycle, sympy for the hall of fame.

`simplify_tree` folds constant sub-trees (``2 * 3 -> 6``) and merges constants through
``+`` and ``*`` chains (``2 * (3 * x) -> 6 * x``), like SymbolicRegression.jl's
simplify_tree/combine_operators; it is cheap enough to run on every member.
`sympy_simplify` runs sympy on a formula under a time limit and converts the result
back, rewritten (`lower_to_operators`) into the search's own operators, or None.

    >>> from pysr_baseline.expression import Expression
    >>> from pysr_baseline.parsing import parse_expression
    >>> simplify_tree(parse_expression("2.0 * (3.0 * x0) + (1.0 + 1.0)")).to_string()
    '6.0 * x0 + 2.0'
"""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager

import sympy
import torch

from pysr_baseline.expression import Expression
from pysr_baseline.operators import BUILTIN_OPERATORS as _BUILTIN, get_operator
from pysr_baseline.sympy_conversion import expression_from_sympy


def _div(a, b):
    return a / b if b != 0 else math.nan


# Python float arithmetic for the common operators (a torch call per fold costs ~10 us);
# IEEE double results equal torch's float64 ones for these.
_FAST = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": _div,
         "neg": lambda a: -a, "square": lambda a: a * a, "cube": lambda a: a * a * a}


def _fold(op, values: list[float]) -> float | None:
    fast = _FAST.get(op.name)
    try:
        out = fast(*values) if fast is not None and op is _BUILTIN.get(op.name) else None
    except OverflowError:
        out = None
    if out is None:
        args = [torch.tensor(v, dtype=torch.float64) for v in values]
        with torch.no_grad():
            out = float(op.fn(*args))
    return out if math.isfinite(out) else None


def simplify_tree(expr: Expression) -> Expression:
    """Constant folding plus constant merging through + and * (returns ``expr`` itself when
    nothing changes). NaN/inf results are not folded, so a formula's meaning never changes."""
    if expr.op is None or not any(n.is_constant for n in expr.nodes()):
        return expr
    return _simplify(expr)


def _simplify(node: Expression) -> Expression:
    if node.op is None:
        return node
    children = tuple(_simplify(c) for c in node.children)
    if all(c.is_constant for c in children):
        value = _fold(node.op, [c.value for c in children])
        if value is not None:
            return Expression.const(value)
    name = node.op.name
    identity = _identity(name, children)
    if identity is not None:
        return identity
    if name in ("add", "mul") and len(children) == 2:
        merged = _merge(node.op, children)
        if merged is not None:
            return merged
    if all(a is b for a, b in zip(children, node.children)):
        return node
    return Expression(node.op, children)


def simplify_top(node: Expression) -> Expression:
    """The rules of `simplify_tree` at the root only (its arguments are left as they are):
    cheap, for wrapping a formula as a * f + b."""
    if node.op is None:
        return node
    children = node.children
    if all(c.is_constant for c in children):
        value = _fold(node.op, [c.value for c in children])
        if value is not None:
            return Expression.const(value)
    identity = _identity(node.op.name, children)
    if identity is not None:
        return identity
    if node.op.name in ("add", "mul") and len(children) == 2:
        merged = _merge(node.op, children)
        if merged is not None:
            return merged
    return node


def _identity(name: str, children) -> Expression | None:
    """x * 1, 1 * x, x / 1, x + 0, 0 + x, x - 0 -> x: exact in floating point too."""
    if name == "mul" or name == "add":
        neutral = 1.0 if name == "mul" else 0.0
        a, b = children
        if b.is_constant and b.value == neutral:
            return a
        if a.is_constant and a.value == neutral:
            return b
    elif name in ("div", "sub"):
        a, b = children
        if b.is_constant and b.value == (1.0 if name == "div" else 0.0):
            return a
    return None


def _merge(op, children) -> Expression | None:
    """c1 op (c2 op x) -> (c1 op c2) op x for op in {+, *}, in any operand order."""
    a, b = children
    if b.is_constant and not a.is_constant:
        a, b = b, a
    if not a.is_constant or b.op is None or b.op.name != op.name:
        return None
    inner_const = [c for c in b.children if c.is_constant]
    if not inner_const:
        return None
    other = b.children[1] if b.children[0].is_constant else b.children[0]
    value = _fold(op, [a.value, inner_const[0].value])
    if value is None:
        return None
    if value == (1.0 if op.name == "mul" else 0.0):
        return other
    return Expression(op, (Expression.const(value), other))


# --- rewriting into the allowed operators -----------------------------------------------------

def lower_to_operators(expr: Expression, allowed: dict) -> Expression | None:
    """``expr`` rewritten to use only operators named in ``allowed`` (name -> Operator),
    e.g. square(x) -> x * x, inv(x) -> 1 / x, neg(x) -> -1 * x; None if impossible."""
    if expr.op is None:
        return expr
    kids = [lower_to_operators(c, allowed) for c in expr.children]
    if any(k is None for k in kids):
        return None
    name = expr.op.name
    if name in allowed:
        return Expression(allowed[name], tuple(kids))

    def make(op_name, *args):
        if op_name not in allowed:
            return None
        if any(a is None for a in args):
            return None
        return Expression(allowed[op_name], args)

    c = Expression.const
    x = kids[0]
    if name == "square":
        return make("mul", x, x) or make("pow", x, c(2.0))
    if name == "cube":
        return make("mul", make("mul", x, x), x) or make("pow", x, c(3.0))
    if name == "inv":
        return make("div", c(1.0), x) or make("pow", x, c(-1.0))
    if name == "neg":
        return make("mul", c(-1.0), x) or make("sub", c(0.0), x)
    if name == "sqrt":
        return make("pow", x, c(0.5))
    if name == "sub":
        y = kids[1]
        return make("add", x, make("mul", c(-1.0), y) or make("neg", y))
    if name == "div":
        y = kids[1]
        return make("mul", x, make("inv", y) or make("pow", y, c(-1.0)))
    if name == "pow" and kids[1].is_constant:
        e = kids[1].value
        table = {2.0: "square", 3.0: "cube", 0.5: "sqrt", -1.0: "inv"}
        if e in table:
            return lower_to_operators(Expression(get_operator(table[e]), (x,)), allowed)
    return None


# --- sympy -----------------------------------------------------------------------------------

class _Timeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: float):
    """Raise _Timeout after ``seconds`` (SIGALRM; only in the main thread on POSIX, else no limit)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def handler(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, handler)
    old_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_timer[0] > 0:  # someone else's alarm was pending: put it back
            signal.setitimer(signal.ITIMER_REAL, *old_timer)


def sympy_simplify(expr: Expression, allowed: dict, timeout: float = 0.5, positive=()) -> Expression | None:
    """sympy's simplification of ``expr`` in the operators ``allowed``; None when it fails,
    times out, or cannot be written with those operators. Variables keep their indices.
    Variables listed in ``positive`` (their data are all > 0) are declared positive, so
    that sympy may write sqrt(x**4) as x**2: equal wherever the data live."""
    names = [f"x{i}" for i in range(expr.n_features_required())]
    assume = {sympy.Symbol(names[i]): sympy.Symbol(names[i], positive=True) for i in positive if i < len(names)}
    try:
        with _time_limit(timeout):
            start = time.perf_counter()
            simplified = sympy.simplify(expr.to_sympy(names).xreplace(assume))
            if time.perf_counter() - start > timeout:  # no alarm available: still honour the budget
                return None
            if simplified.has(sympy.zoo, sympy.nan, sympy.oo, sympy.I):
                return None
            # sympy keeps 1.0*x and 2.0*x; whole-number floats become integers so that they vanish or fold
            simplified = simplified.xreplace({f: sympy.Integer(int(f)) for f in simplified.atoms(sympy.Float)
                                              if f == int(f) and abs(f) < 1e6})
            out = expression_from_sympy(simplified, names)
    except _Timeout:
        return None
    except (ValueError, TypeError, RecursionError, AttributeError, ZeroDivisionError):
        return None
    return lower_to_operators(simplify_tree(out), allowed)
