"""SRBench ground-truth-track scoring: test R2, exact symbolic recovery, complexity.

A model *recovers* an equation when, after its floats are rounded, sympy simplifies
``model - truth`` to a constant or ``model / truth`` to a non-zero constant (SRBench's
rule). How floats are rounded is ``rounding``: ``"decimals"`` (the default) is SRBench's
own rule, 3 decimal places (``round(a, 3)`` in its ``symbolic_utils.round_floats``), so
that figures compared with SRBench's use it; ``"significant"`` keeps 3 significant
digits instead (this project's rule before; it forgives 12345.678 vs 12300 and keeps
0.0004, where SRBench's rule does the opposite). Both set floats below 1e-4 to 0 first,
as SRBench does. Simplification can run for minutes on an unlucky expression, so every call runs in
a child process that is killed at a timeout; a timeout counts as not solved.

Example::

    import sympy
    from experiments.feynman_data import get_equation, make_dataset
    from experiments.scoring import score_model
    eq = get_equation("I.12.1")
    data = make_dataset(eq, n_samples=200)
    mu, Nn = sympy.symbols("mu Nn")
    score_model(2.0 * mu * Nn, eq, data.X_test, data.y_test)
    # {'test_r2': -4.56..., 'accuracy_solved': False, 'symbolic_solved': True,
    #  'reason': 'ratio constant', 'complexity': 4, 'model': '2.0*Nn*mu',
    #  'symbolic': {'decimals': SymbolicResult(solved=True, reason='ratio constant')}}
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import sympy

from experiments.feynman_data import FeynmanEquation

ACCURACY_THRESHOLD = 0.999  # SRBench's "accuracy solution": test R2 above this
DEFAULT_TIMEOUT = 10.0
# How floats are rounded before the symbolic check: SRBench's rule first.
ROUNDING_RULES = ("decimals", "significant")
SRBENCH_ROUNDING = "decimals"
ROUNDING_NAMES = {"decimals": "SRBench: 3 decimal places", "significant": "3 significant digits"}
# SRBench also sets floats below 1e-4 in magnitude to 0 before its check, so that a
# spurious 1e-7*x term does not spoil an otherwise exact formula.
SRBENCH_ZERO_BELOW = 1e-4
# Numeric pre-check: relative tolerance for "this difference/ratio is constant". It is
# loose on purpose: it may only reject models, so it must never reject a true match
# because of floating-point round-off.
_NUMERIC_RTOL = 1e-5
_MIN_VALID_POINTS = 5
_N_POINTS = 32


class SymbolicResult(NamedTuple):
    """Outcome of ``is_symbolic_solution``; unpacks as ``solved, reason``."""

    solved: bool
    reason: str  # difference constant | ratio constant | not equivalent | timeout | error: ...


def r2_score(y_true, y_pred) -> float:
    """Coefficient of determination; -inf (not an exception) for non-finite predictions.

    A constant ``y_true`` gives 1.0 for a perfect prediction and 0.0 otherwise, as in
    scikit-learn.

    >>> r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 3.5])
    0.875
    """
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred)
    if np.iscomplexobj(y_pred):
        y_pred = np.where(np.imag(y_pred) == 0, np.real(y_pred), np.nan)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_pred.ndim == 0:  # a constant model predicts one number for every row
        y_pred = np.full(y_true.shape, float(y_pred))
    y_pred = y_pred.ravel()
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty with one shape; got "
                         f"{y_true.shape} and {y_pred.shape}")
    if not np.all(np.isfinite(y_true)):
        raise ValueError("y_true contains NaN or inf")
    if not np.all(np.isfinite(y_pred)):
        return float("-inf")
    with np.errstate(over="ignore", invalid="ignore"):
        ss_res = float(np.sum((y_true - y_pred) ** 2))
        ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    if not np.isfinite(ss_res):
        return float("-inf")
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def round_floats(expr: sympy.Basic, digits: int = 3,
                 zero_below: float | None = None,
                 rounding: str = SRBENCH_ROUNDING) -> sympy.Basic:
    """Round every Float in ``expr``: to ``digits`` decimal places (``rounding="decimals"``,
    SRBench's rule) or to ``digits`` significant digits (``rounding="significant"``).

    Integers and Rationals are left alone; a Float that rounds to zero becomes the Integer
    0. With ``zero_below``, Floats smaller than it in magnitude become 0 (SRBench uses
    1e-4).

    >>> x = sympy.Symbol("x")
    >>> round_floats(0.50004 * x + 3.14159)
    0.5*x + 3.142
    >>> round_floats(0.50004 * x + 3.14159, rounding="significant")
    0.5*x + 3.14
    >>> round_floats(12345.678 * x + 0.0004), round_floats(12345.678 * x + 0.0004, rounding="significant")
    (12345.678*x, 12300.0*x + 0.0004)
    """
    if digits < 1:
        raise ValueError(f"digits must be at least 1, got {digits}")
    _check_rounding(rounding)
    expr = sympy.sympify(expr)
    replace = {}
    for number in expr.atoms(sympy.Float):
        value = float(number)
        if zero_below is not None and abs(value) < zero_below:
            replace[number] = sympy.Integer(0)
        elif np.isfinite(value):
            # '%.3f' is "3 decimal places", '%.3g' "3 significant digits", both rounded from
            # the float's exact value; Float(str) keeps the short decimal value.
            text = f"{value:.{digits}{'f' if rounding == 'decimals' else 'g'}}"
            rounded = sympy.Float(text)
            replace[number] = sympy.Integer(0) if rounded == 0 else rounded
    return expr.xreplace(replace)


def _check_rounding(rounding) -> None:
    if rounding not in ROUNDING_RULES:
        raise ValueError(f"rounding must be one of {ROUNDING_RULES}, got {rounding!r}")


def complexity(expr: sympy.Basic) -> int:
    """Number of nodes in the sympy expression tree (SRBench's model size).

    >>> complexity(sympy.Symbol("x") * 2 + 1)
    5
    """
    return sum(1 for _ in sympy.preorder_traversal(sympy.sympify(expr)))


def _by_name(expr: sympy.Basic) -> sympy.Basic:
    """Replace every symbol by a plain Symbol of the same name (assumptions dropped)."""
    return expr.xreplace({s: sympy.Symbol(s.name) for s in expr.free_symbols
                          if isinstance(s, sympy.Symbol)})


def _whole_floats_to_integers(expr: sympy.Basic) -> sympy.Basic:
    # After rounding, x**2.00 is x**2 to SRBench's precision, but sympy cannot cancel
    # x**2.0 against x**2; making such Floats Integers lets it.
    return expr.xreplace({f: sympy.Integer(int(f)) for f in expr.atoms(sympy.Float)
                          if float(f).is_integer() and abs(float(f)) < 2**53})


def _constant_verdict(expr: sympy.Basic, kind: str) -> SymbolicResult | None:
    """SymbolicResult if ``expr`` (a simplified difference or ratio) is a valid
    constant, None if it still has free symbols or is nan/zoo/0-ratio/complex."""
    if expr.free_symbols:
        return None
    try:
        value = complex(sympy.N(expr))
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (np.isfinite(value.real) and np.isfinite(value.imag)):
        return None
    if abs(value.imag) > 1e-12 * max(1.0, abs(value)):  # a real model cannot differ by i
        return None
    if kind == "ratio" and value == 0:
        return None
    return SymbolicResult(True, f"{kind} constant")


def _simplify_worker(conn, expr, kind):
    try:
        verdict = _constant_verdict(sympy.simplify(expr), kind)
        conn.send(("ok", verdict is not None))
    except BaseException as err:  # report everything; the parent decides
        conn.send(("error", f"{type(err).__name__}: {err}"[:300]))
    finally:
        conn.close()


def _mp_context():
    # fork is cheap and needs nothing pickled; elsewhere spawn (arguments are picklable).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _simplify_is_constant(expr: sympy.Basic, kind: str, timeout: float) -> SymbolicResult:
    """Run sympy.simplify(expr) in a child process, killed after ``timeout`` seconds."""
    ctx = _mp_context()
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_simplify_worker, args=(child_conn, expr, kind), daemon=True)
    proc.start()
    child_conn.close()
    try:
        if not parent_conn.poll(timeout):
            return SymbolicResult(False, "timeout")
        try:
            status, payload = parent_conn.recv()
        except EOFError:
            return SymbolicResult(False, f"error: simplify worker exited ({proc.exitcode})")
        if status == "error":
            return SymbolicResult(False, f"error: {payload}")
        return SymbolicResult(True, f"{kind} constant") if payload \
            else SymbolicResult(False, "not equivalent")
    finally:
        parent_conn.close()
        if proc.is_alive():
            proc.kill()
        proc.join()


def _numeric_candidates(model, truth, points, rng) -> tuple[bool, bool] | None:
    """Which of difference/ratio look constant at sample points; None if unclear."""
    symbols = sorted(model.free_symbols | truth.free_symbols, key=lambda s: s.name)
    n = len(next(iter(points.values()))) if points else _N_POINTS
    columns = []
    for s in symbols:
        if s.name in points:
            columns.append(np.asarray(points[s.name], dtype=np.float64)[:n])
        else:  # a symbol the data does not cover: any generic values will do
            columns.append(rng.uniform(0.5, 2.0, size=n))
    values = []
    for expr in (model, truth):
        func = sympy.lambdify(symbols, expr, modules="numpy", dummify=True)
        with np.errstate(all="ignore"):
            out = np.asarray(func(*columns))
        if np.iscomplexobj(out):
            out = np.where(np.imag(out) == 0, np.real(out), np.nan)
        values.append(np.broadcast_to(np.asarray(out, dtype=np.float64), (n,)))
    m, t = values
    ok = np.isfinite(m) & np.isfinite(t)
    if np.count_nonzero(ok) < _MIN_VALID_POINTS:
        return None
    m, t = m[ok], t[ok]
    with np.errstate(all="ignore"):
        d = m - t
        d_ref = np.median(d)
        diff_const = bool(np.all(np.abs(d - d_ref) <= _NUMERIC_RTOL * (
            np.abs(m) + np.abs(t) + abs(d_ref)) + 1e-300))
        nz = t != 0
        ratio_const = False
        if np.count_nonzero(nz) >= _MIN_VALID_POINTS:
            r = m[nz] / t[nz]
            r_ref = np.median(r)
            ratio_const = bool(r_ref != 0 and np.all(np.isfinite(r)) and
                               np.all(np.abs(r - r_ref) <= _NUMERIC_RTOL * abs(r_ref)))
    return diff_const, ratio_const


def is_symbolic_solution(model_expr, true_expr, timeout: float = DEFAULT_TIMEOUT,
                         points: Mapping[str, Sequence[float]] | None = None,
                         digits: int = 3,
                         zero_below: float | None = SRBENCH_ZERO_BELOW,
                         seed: int = 0,
                         domain: Mapping[str, str] | None = None,
                         rounding: str = SRBENCH_ROUNDING) -> SymbolicResult:
    """SRBench's exact-recovery check, each sympy.simplify bounded by ``timeout`` s.

    The model's floats are first rounded by ``rounding`` (see `round_floats`): SRBench's
    3 decimal places by default, or 3 significant digits.

    Symbols are matched by name. ``points`` (name -> values, e.g. the test rows) feed a
    cheap numeric pre-check that rejects clearly different models without sympy; when
    absent, random values in [0.5, 2] are used. "Solved" always comes from sympy.
    ``domain`` (name -> "positive" or "nonnegative") gives sympy the sign a variable has
    wherever the data lives, so that ``sqrt(q**2)`` can count as ``q``.

    >>> x, y = sympy.symbols("x y")
    >>> is_symbolic_solution(3.0 * x * y**2, x * y**2)
    SymbolicResult(solved=True, reason='ratio constant')
    """
    _check_rounding(rounding)
    if model_expr is None:
        return SymbolicResult(False, "error: no model")
    try:
        model = _by_name(sympy.sympify(model_expr))
        truth = _by_name(sympy.sympify(true_expr))
        model = _whole_floats_to_integers(round_floats(model, digits, zero_below, rounding))
        if domain:
            assume = {sympy.Symbol(name): sympy.Symbol(name, **{sign: True})
                      for name, sign in domain.items()}
            model, truth = model.xreplace(assume), truth.xreplace(assume)
    except (sympy.SympifyError, TypeError, ValueError) as err:
        return SymbolicResult(False, f"error: {type(err).__name__}: {err}"[:300])
    # nan/zoo/oo that survive sympy's own evaluation make the model undefined everywhere.
    if model.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return SymbolicResult(False, "not equivalent")
    truth_is_zero = truth == 0
    kinds = ["difference"] if truth_is_zero else ["difference", "ratio"]

    # 1. sympy's automatic evaluation already cancels identical or scaled formulas.
    for kind in kinds:
        verdict = _constant_verdict(model - truth if kind == "difference" else model / truth,
                                    kind)
        if verdict is not None:
            return verdict

    # 2. Numeric pre-check: skip simplify for what is clearly not constant.
    try:
        flags = _numeric_candidates(model, truth, dict(points or {}),
                                    np.random.default_rng(seed))
    except Exception:  # an expression numpy cannot evaluate: leave it to sympy
        flags = None
    if flags is not None:
        kinds = [k for k, flag in zip(["difference", "ratio"], flags) if flag and k in kinds]
        if not kinds:
            return SymbolicResult(False, "not equivalent")

    # 3. sympy decides, each simplification in its own killable process.
    last = SymbolicResult(False, "not equivalent")
    for kind in kinds:
        expr = model - truth if kind == "difference" else model / truth
        result = _simplify_is_constant(expr, kind, timeout)
        if result.solved:
            return result
        if result.reason != "not equivalent":
            last = result  # keep a timeout/error visible in the report
    return last


def symbolic_checks(model_expr, eq: FeynmanEquation, X_test,
                    roundings: Sequence[str] = ROUNDING_RULES, *,
                    timeout: float = DEFAULT_TIMEOUT,
                    assume_domain: bool = True) -> dict[str, SymbolicResult]:
    """`is_symbolic_solution` of a model over the equation's variable names under each
    rounding rule in ``roundings`` (rule -> verdict); a rule that rounds the model to
    the same formula as an earlier one shares its verdict instead of simplifying again.

    The first rows of ``X_test`` feed the numeric pre-check; with ``assume_domain``, a
    variable sampled from a range with low > 0 (>= 0) is taken as positive
    (non-negative).

    >>> from experiments.feynman_data import get_equation, make_dataset
    >>> eq = get_equation("I.12.1"); d = make_dataset(eq, n_samples=40)
    >>> mu, Nn = eq.symbols
    >>> checks = symbolic_checks(mu * Nn + 0.0004 * mu, eq, d.X_test)
    >>> checks["decimals"].solved, checks["significant"].solved
    (True, False)
    """
    for rule in roundings:
        _check_rounding(rule)
    X_test = np.asarray(X_test, dtype=np.float64)
    points = {name: X_test[:_N_POINTS, j] for j, name in enumerate(eq.variables)}
    domain = None
    if assume_domain:
        domain = {name: "positive" if low > 0 else "nonnegative"
                  for name, (low, _) in zip(eq.variables, eq.ranges) if low >= 0}
    verdicts, seen = {}, {}
    for rule in dict.fromkeys(roundings):
        try:
            rounded = round_floats(sympy.sympify(model_expr), 3, SRBENCH_ZERO_BELOW, rule)
        except (sympy.SympifyError, TypeError, ValueError):
            rounded = None
        if rounded is not None and rounded in seen:
            verdicts[rule] = seen[rounded]
            continue
        verdicts[rule] = is_symbolic_solution(model_expr, eq.sympy_expr, timeout=timeout,
                                              points=points, domain=domain, rounding=rule)
        if rounded is not None:
            seen[rounded] = verdicts[rule]
    return verdicts


def score_model(model_expr, eq: FeynmanEquation, X_test, y_test,
                predict: Callable[[np.ndarray], np.ndarray] | None = None, *,
                feature_names: Sequence[str] | None = None,
                timeout: float = DEFAULT_TIMEOUT, assume_domain: bool = True,
                rounding: str | Sequence[str] = SRBENCH_ROUNDING) -> dict:
    """Score one fitted model on one equation, SRBench ground-truth style.

    ``model_expr`` is a sympy expression over the equation's variable names (or over
    ``feature_names``, the names the model used for the columns of X_test, in order), or
    None for a failed run. ``predict`` (X -> y) replaces evaluating the expression for R2.
    With ``assume_domain``, a variable sampled from a range with low > 0 (>= 0) is taken
    as positive (non-negative) in the symbolic check: on the data's domain
    ``sqrt(q**2/C**2)`` *is* ``q/C``, though SRBench's assumption-free check says no.
    ``rounding`` is a rule of `round_floats` (SRBench's 3 decimal places by default) or
    several: ``symbolic_solved`` and ``reason`` are the first rule's, ``symbolic`` maps
    every rule to its `SymbolicResult`.

    >>> from experiments.feynman_data import get_equation, make_dataset
    >>> eq = get_equation("I.12.1"); d = make_dataset(eq, n_samples=40)
    >>> mu, Nn = eq.symbols
    >>> score_model(mu * Nn + 1.0, eq, d.X_test, d.y_test)["reason"]
    'difference constant'
    """
    roundings = [rounding] if isinstance(rounding, str) else list(rounding)
    if not roundings:
        raise ValueError("rounding needs at least one rule")
    for rule in roundings:
        _check_rounding(rule)
    failed = SymbolicResult(False, "error: no model")
    result = {"test_r2": float("-inf"), "accuracy_solved": False,
              "symbolic_solved": False, "reason": failed.reason, "complexity": None,
              "model": None, "symbolic": dict.fromkeys(roundings, failed)}
    if model_expr is None:
        return result
    X_test = np.asarray(X_test, dtype=np.float64)
    y_test = np.asarray(y_test, dtype=np.float64).ravel()
    if X_test.ndim != 2 or X_test.shape != (y_test.size, eq.n_variables):
        raise ValueError(f"{eq.name}: X_test must have shape ({y_test.size}, "
                         f"{eq.n_variables}), got {X_test.shape}")
    try:
        model = _by_name(sympy.sympify(model_expr))
    except (sympy.SympifyError, TypeError) as err:
        failed = SymbolicResult(False, f"error: {type(err).__name__}: {err}"[:300])
        result["reason"], result["symbolic"] = failed.reason, dict.fromkeys(roundings, failed)
        return result
    if feature_names is not None:
        if len(feature_names) != eq.n_variables:
            raise ValueError(f"feature_names needs {eq.n_variables} names, "
                             f"got {len(feature_names)}")
        model = model.xreplace({sympy.Symbol(old): sympy.Symbol(new)
                                for old, new in zip(feature_names, eq.variables)})
    result["model"] = str(model)
    result["complexity"] = complexity(model)

    try:
        if predict is not None:
            y_pred = predict(X_test)
        else:
            unknown = {s.name for s in model.free_symbols} - set(eq.variables)
            if unknown:
                raise ValueError(f"model uses unknown symbols {sorted(unknown)}")
            func = sympy.lambdify(eq.symbols, model, modules="numpy", dummify=True)
            with np.errstate(all="ignore"):
                y_pred = func(*X_test.T)
        result["test_r2"] = r2_score(y_test, y_pred)
    except Exception as err:  # a model that cannot be evaluated scores -inf, no crash
        result["prediction_error"] = f"{type(err).__name__}: {err}"[:300]
    result["accuracy_solved"] = bool(result["test_r2"] > ACCURACY_THRESHOLD)

    result["symbolic"] = symbolic_checks(model, eq, X_test, roundings, timeout=timeout,
                                         assume_domain=assume_domain)
    first = result["symbolic"][roundings[0]]
    result["symbolic_solved"], result["reason"] = first.solved, first.reason
    return result
