"""The search's evaluation throughput with and without memoization, in one run.

For each Feynman equation, `PySRRegressor` runs the same search on the torch engine
(same seed, same ``max_evals``) with ``memoize=True`` and with ``memoize=False``, ``--runs`` times each,
alternating. Memoization changes no result (the same front, the same number of
evaluations: a test checks it), only how the evaluations are computed, so the two
timings compare the same work. Printed: formulas evaluated per second (median), the
sub-expression cache's hit rate and the share of node evaluations served from it, the
share of formulas answered by the loss memo (a formula seen before), and the ratio.

    python -m experiments.search_throughput                  # 3 equations, 3 runs each
    python -m experiments.search_throughput --quick          # a smoke run

The table is printed and written to ``results/search_throughput.md`` (the tracked
reference); a ``--quick`` run writes ``results/quick/search_throughput.md`` instead.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from enhancements import PySRRegressor
from experiments.feynman_data import get_equation, make_dataset
from experiments.feynman_methods import SearchMethod
from experiments.outputs import OUT_HELP, Report, output_dir

EQUATIONS = ("I.10.7", "I.13.12", "II.6.15a")
OUTPUT_FILE = "search_throughput.md"


def run_search(dataset, memoize: bool, max_evals: int, seed: int, engine: str = "torch") -> dict:
    # soft_tree_seed_fraction=0: the evaluations alone (soft-tree fits would add the same seconds to both);
    # the torch engine: memoization is that engine's (the compiled one has no sub-expression cache)
    model = PySRRegressor(max_evals=max_evals, niterations=10**6, random_state=seed, memoize=memoize, engine=engine,
                          soft_tree_seed_fraction=0.0,
                          unary_operators=list(SearchMethod.UNARY_OPERATORS), verbosity=0, progress=False,
                          temp_equation_file=True)
    start = time.perf_counter()
    model.fit(dataset.X_train, dataset.y_train)
    elapsed = time.perf_counter() - start
    ev = model.stats_.get("evaluator", {})
    return {"evals": model.stats_["evaluations"], "seconds": elapsed,
            "evals_per_second": model.stats_["evaluations"] / elapsed,
            "cache_hit_rate": ev.get("cache", {}).get("hit_rate"),
            "node_share_from_cache": ev.get("cache_share", float("nan")),
            "loss_memo_share": ev.get("formulas_served_from_loss_memo", 0) / max(1, model.stats_["evaluations"]),
            "front": [str(e) for e in model.equations_["equation"]]}


def _percent(value) -> str:
    return "-" if value is None or value != value else f"{value:.1%}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.search_throughput",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--equations", default=",".join(EQUATIONS), help="comma separated Feynman names")
    parser.add_argument("--max-evals", type=int, default=60_000, help="evaluations per search")
    parser.add_argument("--runs", type=int, default=3, help="runs of each setting, alternating")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="one equation, 5,000 evaluations, 1 run; writes to results/quick/")
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return parser


def output_path(args) -> Path:
    """The markdown file a run with these arguments writes."""
    return output_dir(args.quick, args.out) / OUTPUT_FILE


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    say = Report()  # every line printed is also kept for the markdown file
    names = [n.strip() for n in args.equations.split(",") if n.strip()]
    if args.quick:
        names, args.max_evals, args.runs = names[:1], 5_000, 1
    if args.runs < 1 or args.max_evals < 1 or not names:
        parser.error("--runs and --max-evals must be at least 1, and one equation is needed")
    torch.set_num_threads(1)
    say(f"Search throughput: {args.max_evals} evaluations per search, seed {args.seed}, "
        f"median of {args.runs} run(s) each, memoize on/off alternating, 1 thread\n")
    say("| equation | memoize | formulas/s | time (s) | cache hit rate | node evaluations from cache "
        "| formulas from loss memo | same front |")
    say("|---|---|---:|---:|---:|---:|---:|---|")
    ratios = []
    for name in names:
        data = make_dataset(get_equation(name), seed=args.seed)
        runs = {True: [], False: []}
        for _ in range(args.runs):
            for memoize in (True, False):
                runs[memoize].append(run_search(data, memoize, args.max_evals, args.seed))
        same = runs[True][0]["front"] == runs[False][0]["front"]
        medians = {}
        for memoize in (True, False):
            rs = runs[memoize]
            medians[memoize] = statistics.median(r["evals_per_second"] for r in rs)
            last = rs[-1]
            say(f"| {name} | {'on' if memoize else 'off'} | {medians[memoize]:,.0f} "
                f"| {statistics.median(r['seconds'] for r in rs):.2f} "
                f"| {_percent(last['cache_hit_rate'])} | {_percent(last['node_share_from_cache'])} "
                f"| {last['loss_memo_share']:.1%} | {'yes' if same else 'NO'} |")
        ratios.append(medians[True] / medians[False])
        say(f"| {name} | on / off | {ratios[-1]:.2f}x | | | | | |")
    if len(ratios) > 1:
        say(f"\nmedian ratio (memoize on / off): {statistics.median(ratios):.2f}x")
    print(f"\nwritten: {say.write(output_path(args))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
