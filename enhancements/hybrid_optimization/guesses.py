"""PySR's ``guesses``: formulas the user expects to be close, seeded into the search.

Each guess is a string (read by the whitelist parser) or a sympy expression, written in
the variables' names or as ``x0, x1, ...``; one list for one output, one list per
output for several. The search fits each guess's constants, puts it in the hall of
fame and in every population, and migrates the guesses back into the populations at
the rate ``fraction_replaced_guesses``.

    >>> from enhancements.hybrid_optimization.options import Options
    >>> opts = Options(unary_operators=["cos"], soft_tree_seed_fraction=0)
    >>> [str(g) for g in parse_guesses(["2.0 * cos(v) + m"], ["m", "v"], opts, nout=1)[0]]
    ['2.0 * cos(x1) + x0']
"""
from __future__ import annotations

import sympy

from pysr_baseline.expression import Expression
from pysr_baseline.parsing import parse_expression
from pysr_baseline.sympy_conversion import expression_from_sympy


def _shape(guesses, nout: int) -> list[list]:
    """PySR's rules for the guesses' nesting (and its error messages)."""
    if not isinstance(guesses, (list, tuple)):
        if nout == 1:
            raise ValueError("guesses must be a list for single-output regression")
        raise ValueError("For multi-output (nout > 1) guesses must be a list of lists")
    guesses = list(guesses)
    nested = bool(guesses) and all(isinstance(g, (list, tuple)) for g in guesses)
    if nout == 1:
        if not guesses:
            return [[]]
        if nested:
            if len(guesses) != 1:
                raise ValueError("For single output, provide a list of strings/dicts or a single-element list of lists")
            return [list(guesses[0])]
        return [guesses]
    if not nested:
        raise ValueError("For multi-output (nout > 1) guesses must be a list of lists")
    if len(guesses) != nout:
        raise ValueError(f"Number of guess lists ({len(guesses)}) must match number of outputs ({nout})")
    return [list(g) for g in guesses]


def _one(guess, names: list[str], options) -> Expression:
    default = [f"x{i}" for i in range(len(names))]
    if isinstance(guess, dict):
        raise ValueError("template guesses (dicts) need TemplateExpressionSpec, which is not offered; "
                         "give each guess as a formula string")
    if isinstance(guess, str):
        def read(variables):
            return parse_expression(guess, variable_names=variables, operators=options.operators)
    elif isinstance(guess, sympy.Basic):
        def read(variables):
            return expression_from_sympy(guess, variables)
    else:
        raise TypeError(f"a guess must be a formula string or a sympy expression, got {type(guess).__name__}")
    try:
        expr = read(names)
    except ValueError as first:
        if names == default:
            raise ValueError(f"guess {guess!r}: {first}") from None
        try:
            expr = read(default)
        except ValueError:
            raise ValueError(f"guess {guess!r}: {first}") from None
    allowed = {op.name for op in options.operators}
    used = sorted({n.op.name for n in expr.nodes() if n.op is not None} - allowed)
    if used:
        raise ValueError(f"guess {guess!r} uses the operator(s) {used}, which are not among the search's "
                         f"operators ({', '.join(sorted(allowed))}); add them or rewrite the guess")
    return _with_own_operators(expr, options)


def _with_own_operators(expr: Expression, options) -> Expression:
    """The guess rebuilt on the search's operator objects (same names, the user's sympy
    mappings), so that it prints and exports like the search's own formulas."""
    if expr.op is None:
        return expr
    op = options.by_name[expr.op.name]
    return Expression(op, tuple(_with_own_operators(c, options) for c in expr.children))


def parse_guesses(guesses, variable_names, options, nout: int = 1) -> list[list[Expression]]:
    """The guesses as one list of `Expression` per output (empty lists when None)."""
    if guesses is None:
        return [[] for _ in range(nout)]
    names = [str(n) for n in variable_names]
    return [[_one(g, names, options) for g in per_output] for per_output in _shape(guesses, nout)]
