"""Re-scoring a Feynman results CSV from its formulas, without running any method.

Each row's ``formula`` column holds the found formula at full precision (sympy's text
over the equation's variables). It is read back with the whitelist parser, the row's test
points are drawn again from its key (equation, seed, samples, noise), and the symbolic
check runs under every rounding rule (`experiments.scoring.ROUNDING_RULES`): SRBench's 3
decimal places into ``symbolic_solved``/``reason``, 3 significant digits into
``symbolic_solved_significant``/``reason_significant``. Files of an older runner (one
verdict, under 3 significant digits) are upgraded to the current columns.

    python -m experiments.feynman --rescore results/feynman_search_all_60s.csv
    python -m experiments.feynman --summarize results/feynman_search_all_60s.csv
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import sympy

from experiments.feynman import (COLUMNS, LEGACY_COLUMNS, VERDICT_COLUMNS, describe_error,
                                 latest_by_key, read_rows, summarize, typed)
from experiments.feynman_data import get_equation, make_dataset
from experiments.feynman_methods import SYMPY_CONSTANTS, SYMPY_FUNCTIONS, parse_expression
from experiments.scoring import (DEFAULT_TIMEOUT, ROUNDING_NAMES, ROUNDING_RULES, SymbolicResult,
                                 symbolic_checks)

# What str() of a sympy formula may hold besides the equation's variables; read back with
# the whitelist parser, never sympy's string parser.
_FORMULA_CONSTANTS = {**SYMPY_CONSTANTS, "zoo": sympy.zoo, "nan": sympy.nan, "oo": sympy.oo}


def formula_of(row: dict) -> sympy.Expr:
    """A row's ``formula`` (sympy text over its equation's variables) as sympy."""
    eq = get_equation(row["equation"])
    symbols = {name: sympy.Symbol(name) for name in eq.variables}
    return parse_expression(row["formula"], symbols, SYMPY_FUNCTIONS, _FORMULA_CONSTANTS)


def rescore_row(row: dict, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """The row (current or older columns) with its symbolic verdicts recomputed from its
    ``formula`` under every rounding rule, on the test points its key draws again; the
    other columns as they were. A row without a formula keeps its reason, unsolved."""
    out = {c: row.get(c, "") for c in COLUMNS}
    if not str(row.get("formula") or "").strip():
        for solved, reason in VERDICT_COLUMNS.values():
            out[solved], out[reason] = False, row.get(reason) or row.get("reason") or "failed"
        return out
    try:
        eq = get_equation(row["equation"])
        data = make_dataset(eq, n_samples=int(row["samples"]), seed=int(row["seed"]),
                            noise=float(row["noise"]))
        expr = formula_of(row)
    except Exception as err:
        failed = SymbolicResult(False, "error: rescoring: " + describe_error(err))
        verdicts = dict.fromkeys(ROUNDING_RULES, failed)
    else:
        verdicts = symbolic_checks(expr, eq, data.X_test, ROUNDING_RULES, timeout=timeout)
    for rule, (solved, reason) in VERDICT_COLUMNS.items():
        out[solved], out[reason] = verdicts[rule].solved, verdicts[rule].reason
    return out


def rescore_file(path: Path, timeout: float = DEFAULT_TIMEOUT, say=print) -> list[dict]:
    """Rescore every row of a results CSV (`rescore_row`) and rewrite it in place with the
    current columns (atomically: a temporary file, then a rename). Returns the new rows.
    Rows that an older runner scored under 3 significant digits are compared with the
    new ``symbolic_solved_significant``; the differences are reported."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        legacy = next(csv.reader(handle), None) == LEGACY_COLUMNS
    rows = read_rows(path, legacy=True)
    if not rows:
        raise ValueError(f"{path}: no rows to rescore")
    new_rows, changed = [], []
    for i, row in enumerate(rows, 1):
        new = rescore_row(row, timeout)
        new_rows.append(new)
        before = {"significant": row["symbolic_solved"]} if legacy else {
            rule: row[solved] for rule, (solved, _) in VERDICT_COLUMNS.items()}
        for rule, old in before.items():
            if str(old) != str(new[VERDICT_COLUMNS[rule][0]]):
                changed.append(f"{row['method']} {row['equation']} seed {row['seed']} "
                               f"({ROUNDING_NAMES[rule]}): {old} -> {new[VERDICT_COLUMNS[rule][0]]}")
        if sys.stdout.isatty():
            say(f"\rrescored {i}/{len(rows)}", end="", flush=True)
    if sys.stdout.isatty():
        say()
    tmp = path.with_name(path.name + ".rescoring")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(new_rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    previous = "its 3-significant-digit verdicts" if legacy else "its verdicts"
    say(f"{path}: {len(new_rows)} rows rescored; {len(changed)} of {previous} changed"
        + ("".join("\n  " + c for c in changed) if changed else ""))
    return new_rows


def rescore_or_summarize(parser, args) -> int:
    """``--rescore`` (rewrite each CSV's verdicts, then summarize it) and ``--summarize``."""
    say = (lambda *a, **k: None) if args.quiet else print
    for name in args.rescore or []:
        try:
            rescore_file(Path(name), say=say)
        except (OSError, ValueError) as err:
            parser.error(str(err))
    for name in list(dict.fromkeys((args.rescore or []) + (args.summarize or []))):
        try:
            rows = [typed(r) for r in latest_by_key(read_rows(Path(name))).values()]
        except (OSError, ValueError) as err:
            parser.error(str(err))
        if not rows:
            parser.error(f"{name}: no rows")
        methods = list(dict.fromkeys(r["method"] for r in rows))
        keys = sorted({(r["samples"], r["noise"], r["time_budget"]) for r in rows})
        seeds = sorted({r["seed"] for r in rows})
        print(f"\n{name}: {len(rows)} row(s), seeds {seeds}, (samples, noise, budget s) "
              f"{', '.join(f'({k[0]}, {k[1]:g}, {k[2]:g})' for k in keys)}\n")
        print(summarize(rows, methods))
    return 0
