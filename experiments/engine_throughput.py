"""The compiled engine against the torch engine, in one run: formulas per second at the
same settings, and the formulas found at the same number of evaluations.

Throughput: for each Feynman equation, `PySRRegressor` runs the same search (seed,
``max_evals``, PySR's defaults, the Feynman unary operators, no soft-tree seeding) with
``engine="torch"`` (the search as it was before the compiled engine) and
``engine="compiled"``, ``--runs`` times each, alternating; medians. Both count every
formula scored, in steps and at the end of iterations alike.

Quality: small problems (``--problems``), several seeds, the same ``--quality-evals``
evaluations per search for both engines; a formula counts as found by SRBench's check.

    python -m experiments.engine_throughput            # ~15 min
    python -m experiments.engine_throughput --quick    # a smoke run

The tables are printed and written to ``results/engine_throughput.md``; ``--quick``
writes ``results/quick/engine_throughput.md``.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import sympy
import torch

from enhancements import PySRRegressor
from experiments.feynman_data import get_equation, make_dataset
from experiments.feynman_methods import SearchMethod
from experiments.outputs import OUT_HELP, Report, chosen_names, output_dir
from experiments.scoring import is_symbolic_solution

EQUATIONS = ("I.10.7", "I.13.12", "II.6.15a")
OUTPUT_FILE = "engine_throughput.md"
ENGINES = ("torch", "compiled")
# name -> (target of columns x0, x1, x2 in [0.5, 3]), truth
PROBLEMS = {
    "x0*x1+x2": (lambda X: X[:, 0] * X[:, 1] + X[:, 2], "x0*x1+x2"),
    "x0**2/x1": (lambda X: X[:, 0] ** 2 / X[:, 1], "x0**2/x1"),
    "cos(x0)*x1": (lambda X: np.cos(X[:, 0]) * X[:, 1], "cos(x0)*x1"),
    "exp(-x0)*x1": (lambda X: np.exp(-X[:, 0]) * X[:, 1], "exp(-x0)*x1"),
    "x0/(x1+x2)": (lambda X: X[:, 0] / (X[:, 1] + X[:, 2]), "x0/(x1+x2)"),
    "sqrt(x0)*x1**2": (lambda X: np.sqrt(X[:, 0]) * X[:, 1] ** 2, "sqrt(x0)*x1**2"),
    "x0**3-x0": (lambda X: X[:, 0] ** 3 - X[:, 0], "x0**3-x0"),
    "log(x0)+x1": (lambda X: np.log(X[:, 0]) + X[:, 1], "log(x0)+x1"),
    "x0*x1+x0": (lambda X: X[:, 0] * X[:, 1] + X[:, 0], "x0*x1+x0"),
    "cos(x0)*x1-x2": (lambda X: np.cos(X[:, 0]) * X[:, 1] - X[:, 2], "cos(x0)*x1-x2"),
}


def _model(engine: str, max_evals: int, seed: int) -> PySRRegressor:
    return PySRRegressor(max_evals=max_evals, niterations=10**6, random_state=seed, engine=engine,
                         soft_tree_seed_fraction=0.0, unary_operators=list(SearchMethod.UNARY_OPERATORS),
                         verbosity=0, progress=False, temp_equation_file=True)


def throughput(dataset, engine: str, max_evals: int, seed: int) -> dict:
    model = _model(engine, max_evals, seed)
    start = time.perf_counter()
    model.fit(dataset.X_train, dataset.y_train)
    elapsed = time.perf_counter() - start
    return {"evals": model.stats_["evaluations"], "seconds": elapsed,
            "rate": model.stats_["evaluations"] / elapsed, "iterations": model.stats_["iterations"]}


def quality(engine: str, problems: list[str], seeds: int, max_evals: int) -> dict[str, int]:
    X = np.random.default_rng(0).uniform(0.5, 3, (300, 3))
    found = {}
    for name in problems:
        target, truth = PROBLEMS[name]
        hits = 0
        for seed in range(seeds):
            model = _model(engine, max_evals, seed).fit(X, target(X))
            hits += is_symbolic_solution(model.get_best()["sympy_format"], sympy.sympify(truth), timeout=5).solved
        found[name] = hits
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.engine_throughput",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--equations", default=",".join(EQUATIONS), help="comma separated Feynman names")
    parser.add_argument("--max-evals", type=int, default=60_000, help="evaluations per throughput search")
    parser.add_argument("--runs", type=int, default=3, help="throughput runs of each engine, alternating")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help="comma separated quality problems")
    parser.add_argument("--seeds", type=int, default=6, help="seeds per quality problem")
    parser.add_argument("--quality-evals", type=int, default=30_000, help="evaluations per quality search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one equation, one problem, small budgets; "
                                                             "writes to results/quick/")
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return parser


def output_path(args) -> Path:
    return output_dir(args.quick, args.out) / OUTPUT_FILE


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.equations.split(",") if n.strip()]
    problems = chosen_names(parser, args.problems, PROBLEMS)
    if args.quick:
        names, args.max_evals, args.runs = names[:1], 10_000, 1
        problems, args.seeds, args.quality_evals = problems[:1], 2, 5_000
    torch.set_num_threads(1)
    say = Report()
    _model("compiled", 100, 0).fit(np.ones((20, 1)) + np.arange(20)[:, None], np.arange(20.0))  # compile once
    say(f"Throughput: {args.max_evals:,} evaluations per search, seed {args.seed}, PySR's defaults with the "
        f"Feynman unary operators, no soft-tree seeding, median of {args.runs} run(s) each, alternating, "
        "1 thread\n")
    say("| equation | engine | formulas/s | time (s) | iterations |")
    say("|---|---|---:|---:|---:|")
    ratios = []
    for name in names:
        data = make_dataset(get_equation(name), seed=args.seed)
        runs = {e: [] for e in ENGINES}
        for _ in range(args.runs):
            for engine in ENGINES:
                runs[engine].append(throughput(data, engine, args.max_evals, args.seed))
        medians = {}
        for engine in ENGINES:
            rs = runs[engine]
            medians[engine] = statistics.median(r["rate"] for r in rs)
            say(f"| {name} | {engine} | {medians[engine]:,.0f} | {statistics.median(r['seconds'] for r in rs):.2f} "
                f"| {rs[-1]['iterations']} |")
        ratios.append(medians["compiled"] / medians["torch"])
        say(f"| {name} | compiled / torch | {ratios[-1]:.2f}x | | |")
    say(f"\nmedian ratio (compiled / torch): {statistics.median(ratios):.2f}x\n")
    say(f"Quality: {args.quality_evals:,} evaluations per search, {args.seeds} seeds per problem, 300 rows of "
        "x0, x1, x2 in [0.5, 3]; formulas found (SRBench's check)\n")
    say("| problem | " + " | ".join(ENGINES) + " |")
    say("|---|" + "---:|" * len(ENGINES))
    found = {engine: quality(engine, problems, args.seeds, args.quality_evals) for engine in ENGINES}
    for name in problems:
        say(f"| {name} | " + " | ".join(str(found[e][name]) for e in ENGINES) + " |")
    total = {e: sum(found[e].values()) for e in ENGINES}
    say("| all | " + " | ".join(f"{total[e]} of {len(problems) * args.seeds}" for e in ENGINES) + " |")
    print(f"\nwritten: {say.write(output_path(args))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
