"""Exact recovery in a short wall time: one- and two-variable polynomials, trigonometric
sums and products, and sums of logarithms, several seeds each.

The problems are the published Nguyen and Koza benchmarks (Uy et al. 2011; Koza 1992),
sampled at ``--rows`` points (1,000 by default, not the original 20), without noise.
Each search is `PySRRegressor` with PySR's defaults but for the operators (+, -, *, /,
sin, cos, exp, log) and ``timeout_in_seconds``; a problem counts as recovered when the
formula `get_best` picks passes SRBench's exact-recovery check, and "on the front" when
any front entry does. Wall time: the fit to the end of the search, imports excluded.

    python -m experiments.recovery                 # ~10 min: 12 problems x 5 seeds x 10 s
    python -m experiments.recovery --quick         # a smoke run, results/quick/
    python -m experiments.recovery --set '{"linear_scaling": true}' --label linear_scaling_true

The table is printed and written to ``results/recovery.md`` (``--label L``: recovery_L.md).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import sympy

from enhancements import PySRRegressor
from experiments.outputs import OUT_HELP, Report, chosen_names, output_dir
from experiments.scoring import is_symbolic_solution

OUTPUT_FILE = "recovery.md"
# name -> (truth in x0, x1, number of variables, sampling range)
PROBLEMS = {
    "Nguyen-1": ("x0**3 + x0**2 + x0", 1, (-1, 1)),
    "Nguyen-2": ("x0**4 + x0**3 + x0**2 + x0", 1, (-1, 1)),
    "Nguyen-3": ("x0**5 + x0**4 + x0**3 + x0**2 + x0", 1, (-1, 1)),
    "Nguyen-4": ("x0**6 + x0**5 + x0**4 + x0**3 + x0**2 + x0", 1, (-1, 1)),
    "Koza-2": ("x0**5 - 2*x0**3 + x0", 1, (-1, 1)),
    "Koza-3": ("x0**6 - 2*x0**4 + x0**2", 1, (-1, 1)),
    "Nguyen-5": ("sin(x0**2)*cos(x0) - 1", 1, (-1, 1)),
    "Nguyen-6": ("sin(x0) + sin(x0 + x0**2)", 1, (-1, 1)),
    "Nguyen-9": ("sin(x0) + sin(x1**2)", 2, (0, 1)),
    "Nguyen-10": ("2*sin(x0)*cos(x1)", 2, (0, 1)),
    "Nguyen-7": ("log(x0 + 1) + log(x0**2 + 1)", 1, (0, 2)),
    "Nguyen-8": ("sqrt(x0)", 1, (0, 4)),
}


def make_problem(name: str, rows: int, seed: int = 0):
    """(X, y, truth) for a problem: X uniform in its range, y from the truth (numpy)."""
    truth, n_vars, (low, high) = PROBLEMS[name]
    X = np.random.default_rng(seed).uniform(low, high, (rows, n_vars))
    symbols = sympy.symbols([f"x{i}" for i in range(n_vars)])
    expr = sympy.sympify(truth)
    y = sympy.lambdify(symbols, expr, "numpy")(*X.T) * np.ones(rows)
    return X, y, expr


def _model(seconds: float, seed: int, **params) -> PySRRegressor:
    settings = dict(binary_operators=["+", "-", "*", "/"], unary_operators=["sin", "cos", "exp", "log"],
                    niterations=10**6, timeout_in_seconds=seconds, random_state=seed, verbosity=0,
                    progress=False, temp_equation_file=True)
    return PySRRegressor(**{**settings, **params})


def run_one(name: str, rows: int, seconds: float, seed: int, **params) -> dict:
    """One search; whether `get_best` and the front hold the truth, and its wall time."""
    X, y, truth = make_problem(name, rows)
    model = _model(seconds, seed, **params)
    start = time.perf_counter()
    model.fit(X, y)
    elapsed = time.perf_counter() - start
    best = model.get_best()
    # sqrt(x) written exp(log(x)/2) is sqrt(x) where the data live (x > 0): sympy is told so
    domain = {f"x{i}": "positive" for i in range(X.shape[1])} if PROBLEMS[name][2][0] >= 0 else None
    solved = is_symbolic_solution(best["sympy_format"], truth, timeout=5, domain=domain).solved
    on_front = solved or any(is_symbolic_solution(e, truth, timeout=5, domain=domain).solved
                             for e in model.equations_["sympy_format"])
    return {"solved": solved, "on_front": on_front, "seconds": elapsed, "best": str(best["equation"]),
            "evals": model.stats_["evaluations"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.recovery", description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default=",".join(PROBLEMS), help="comma separated problem names")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per problem (0, 1, ...)")
    parser.add_argument("--seconds", type=float, default=10.0, help="timeout_in_seconds of each search")
    parser.add_argument("--rows", type=int, default=1000, help="points per problem")
    parser.add_argument("--set", default="{}", type=json.loads, metavar="JSON",
                        help='PySRRegressor parameters to change, e.g. \'{"linear_scaling": false}\'')
    parser.add_argument("--label", default="", help="written to recovery_LABEL.md instead (another setting's table)")
    parser.add_argument("--quick", action="store_true", help="two problems, two seeds, 3 s; results/quick/")
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problems = chosen_names(parser, args.problems, PROBLEMS)
    if args.quick:
        problems, args.seeds, args.seconds = problems[:2], 2, 3.0
    _model(1.0, 0).fit(*make_problem(problems[0], 50)[:2])  # compile and import once, outside the timings
    say = Report()
    changed = f", {json.dumps(args.set)}" if args.set else ""
    say(f"Recovery: {args.rows:,} points, no noise, timeout_in_seconds={args.seconds:g}, seeds 0-{args.seeds - 1}, "
        f"PySR's defaults, operators + - * / sin cos exp log{changed}; SRBench's check on `get_best` (recovered) "
        "and on every front entry (on the front)\n")
    say("| problem | truth | recovered | on the front | median s | median evaluations | a formula of seed 0 |")
    say("|---|---|---:|---:|---:|---:|---|")
    total = front_total = 0
    met = []  # problems recovered in at least 4 of 5 seeds (80%)
    for name in problems:
        runs = [run_one(name, args.rows, args.seconds, seed, **args.set) for seed in range(args.seeds)]
        solved = sum(r["solved"] for r in runs)
        front = sum(r["on_front"] for r in runs)
        total += solved
        front_total += front
        if solved >= 0.8 * args.seeds:
            met.append(name)
        seconds, evals = (statistics.median(r[k] for r in runs) for k in ("seconds", "evals"))
        say(f"| {name} | `{PROBLEMS[name][0]}` | {solved}/{args.seeds} | {front}/{args.seeds} | {seconds:.1f} "
            f"| {evals:,.0f} | `{runs[0]['best']}` |")
    n = len(problems) * args.seeds
    say(f"\nall: {total} of {n} runs recovered, {front_total} of {n} on the front; "
        f"{len(met)} of {len(problems)} problems recovered in at least 80% of seeds")
    name = OUTPUT_FILE if not args.label else OUTPUT_FILE.replace(".md", f"_{args.label}.md")
    path = say.write(output_dir(args.quick, args.out) / name)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
