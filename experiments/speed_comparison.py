"""Baseline vs optimized soft-tree training: the same formulas, how much faster, and why.

For every case, `SymbolicTrainer` (the baseline: a tree of node modules, restarts one
after another) and `OptimizedSymbolicTrainer` fit the same data with the same seed,
epochs and restarts, ``--runs`` times each, alternating. Printed (and written to
``results/speed_comparison.md``, with a bar chart ``results/speed_comparison.png`` and
the numbers in ``results/speed_comparison.json``; a ``--quick`` run writes them to
``results/quick/`` instead, so that it never replaces the tracked reference):

1. per case: the formula each found, whether it is the true one (SRBench's symbolic
   check), test NMSE, median seconds of each, speedup and the cache's hit rate;
2. an ablation on the three reference cases, one technique added per row;
3. seconds per recovered formula: fits with fresh seeds until a time budget ends,
   the total time divided by the number of fits that recovered the formula.

The three reference cases are those of the published PySR replication we compare with
(E = 0.5 m v^2: 9.82 s vs 2.60 s; E = q / r^2: 16.51 s vs 2.55 s; k = omega / c:
24.56 s vs 2.44 s); the others come from the AI Feynman table.

    python -m experiments.speed_comparison              # full: 5 runs, ~25 minutes
    python -m experiments.speed_comparison --quick      # a smoke run, ~1 minute, to results/quick/
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from enhancements.dp_memoization import OptimizedSymbolicTrainer
from experiments.feynman_data import FeynmanEquation, get_equation, make_dataset
from experiments.outputs import OUT_HELP, output_dir
from experiments.scoring import round_floats, score_model
from pysr_baseline.model import SymbolicRegressor
from pysr_baseline.trainer import SymbolicTrainer

OUTPUT_FILES = ("speed_comparison.md", "speed_comparison.json", "speed_comparison.png")


def _reference(name: str, output: str, formula: str, variables, ranges) -> FeynmanEquation:
    return FeynmanEquation(name=name, output=output, formula=formula, variables=tuple(variables),
                           ranges=tuple(ranges), bonus=False)


# The published comparison's cases; ranges as the Feynman table gives them for the same
# quantities (I.13.4's m, v; I.12.2's q, r; I.29.4 is omega / c itself).
REFERENCE_CASES = [
    _reference("E = 0.5 m v^2", "E", "0.5*m*v**2", ("m", "v"), ((1, 5), (1, 5))),
    _reference("E = q / r^2", "E", "q/r**2", ("q", "r"), ((1, 5), (1, 5))),
    _reference("k = omega / c", "k", "omega/c", ("omega", "c"), get_equation("I.29.4").ranges),
]
FEYNMAN_CASES = ["I.12.1", "I.14.3", "I.39.1", "II.3.24", "II.27.16", "I.6.2a"]
PUBLISHED = {"E = 0.5 m v^2": (9.82, 2.60), "E = q / r^2": (16.51, 2.55), "k = omega / c": (24.56, 2.44)}

# The ablation: each row adds one technique to the one above it.
ABLATION = [
    ("baseline (node by node, restarts sequential)", None),
    ("+ level batching (restarts sequential, batch of 1)",
     dict(restart_batch_size=1, fused=False, memoize=False, early_stop=False)),
    ("+ restart batching (all restarts one batch)", dict(fused=False, memoize=False, early_stop=False)),
    ("+ fused level kernels (analytic derivatives)", dict(memoize=False, early_stop=False)),
    ("+ memoization (cached local search and refit)", dict(early_stop=False)),
    ("+ early stop = optimized", dict()),
]


@dataclass
class Fit:
    seconds: float
    cpu_seconds: float
    formula: str
    recovered: bool
    test_nmse: float
    hit_rate: float | None = None
    epochs: list = field(default_factory=list)


def _data(eq: FeynmanEquation, n_samples: int, seed: int):
    """``n_samples`` training rows and as many test rows, sampled as SRBench does."""
    d = make_dataset(eq, n_samples=2 * n_samples, seed=seed, test_fraction=0.5)
    return d.X_train, d.y_train, d.X_test, d.y_test


def _fit(eq, data, trainer_kwargs: dict | None, n_restarts: int, n_epochs: int, seed: int) -> Fit:
    """One timed fit; ``trainer_kwargs`` None is the baseline, a dict the optimized trainer's switches."""
    X, y, X_test, y_test = data
    model = SymbolicRegressor(eq.n_variables, max_depth=3, variable_names=list(eq.variables))
    if trainer_kwargs is None:
        trainer = SymbolicTrainer(model, n_restarts=n_restarts, random_state=seed)
    else:
        trainer = OptimizedSymbolicTrainer(model, cache_capacity=1000, n_restarts=n_restarts, random_state=seed,
                                           **trainer_kwargs)
    wall, cpu = time.perf_counter(), time.process_time()
    history = trainer.fit(X, y, n_epochs=n_epochs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    expr = history.formula.to_sympy(list(eq.variables))
    score = score_model(expr, eq, X_test, y_test)  # recovered: SRBench's rule (3 decimal places)
    # The formula shown: constants to 3 significant digits, for reading.
    return Fit(wall, cpu, str(round_floats(expr, 3, rounding="significant")), bool(score["symbolic_solved"]), 1.0 - score["test_r2"],
               None if trainer_kwargs is None else trainer.cache.stats.hit_rate, list(history.n_epochs_run))


def _median(fits: list[Fit], attr: str = "seconds") -> float:
    return statistics.median(getattr(f, attr) for f in fits)


def _formula_of(fits: list[Fit]) -> str:
    formulas = {f.formula for f in fits}
    return fits[0].formula if len(formulas) == 1 else fits[0].formula + f" ({len(formulas)} different over runs)"


def _warm_up() -> None:
    """One tiny fit of each trainer: the first torch optimizer of a process imports
    torch._dynamo (~2 s), which must not be charged to whichever trainer runs first."""
    X = np.random.default_rng(0).uniform(1, 2, size=(20, 2))
    for trainer_class in (SymbolicTrainer, OptimizedSymbolicTrainer):
        trainer_class(SymbolicRegressor(2, 2), n_restarts=1, random_state=0).fit(X, X[:, 0], n_epochs=2)


def compare(cases, runs: int, n_restarts: int, n_epochs: int, n_samples: int, seed: int) -> dict:
    """Baseline and optimized on every case, ``runs`` times each, alternating."""
    out = {}
    for eq in cases:
        data = _data(eq, n_samples, seed)
        base, opt = [], []
        for _ in range(runs):
            base.append(_fit(eq, data, None, n_restarts, n_epochs, seed))
            opt.append(_fit(eq, data, {}, n_restarts, n_epochs, seed))
        out[eq.name] = {"truth": eq.formula, "baseline": base, "optimized": opt}
        print(f"  {eq.name}: baseline {_median(base):.2f} s, optimized {_median(opt):.2f} s", flush=True)
    return out


def ablation(cases, compared: dict, runs: int, n_restarts: int, n_epochs: int, n_samples: int, seed: int) -> dict:
    """The ablation's rows on each case; the first and last rows are the comparison's
    baseline and optimized runs (the same configurations), the others run alternating."""
    out = {}
    for eq in cases:
        data = _data(eq, n_samples, seed)
        rows = {label: [] for label, _ in ABLATION}
        for _ in range(runs):
            for label, kwargs in ABLATION[1:-1]:
                rows[label].append(_fit(eq, data, kwargs, n_restarts, n_epochs, seed))
        rows[ABLATION[0][0]] = compared[eq.name]["baseline"]
        rows[ABLATION[-1][0]] = compared[eq.name]["optimized"]
        out[eq.name] = rows
        print(f"  ablation {eq.name}: " + ", ".join(f"{_median(f):.2f}" for f in rows.values()) + " s", flush=True)
    return out


def per_recovered(cases, budget: float, n_restarts: int, n_epochs: int, n_samples: int, seed: int) -> dict:
    """Fits with seeds seed+1000, seed+1001, ... until ``budget`` seconds are spent (the
    fit under way is finished), per trainer; the seconds per recovered formula."""
    out = {}
    for eq in cases:
        data = _data(eq, n_samples, seed)
        out[eq.name] = {}
        for name, kwargs in (("baseline", None), ("optimized", {})):
            spent, fits = 0.0, []
            while spent < budget:
                fits.append(_fit(eq, data, kwargs, n_restarts, n_epochs, seed + 1000 + len(fits)))
                spent += fits[-1].seconds
            found = sum(f.recovered for f in fits)
            out[eq.name][name] = {"fits": len(fits), "recovered": found, "seconds": spent,
                                  "per_recovered": spent / found if found else float("inf")}
        print(f"  per recovered {eq.name}: " + ", ".join(
            f"{k} {v['recovered']}/{v['fits']}" for k, v in out[eq.name].items()), flush=True)
    return out


# --- reporting ---------------------------------------------------------------------------------

def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def comparison_table(compared: dict) -> str:
    lines = ["| case | truth | baseline formula | optimized formula | recovered (B / O) | test NMSE (B / O) "
             "| baseline median s | optimized median s | speedup | CPU s (B / O) | cache hit rate |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for case, r in compared.items():
        b, o = r["baseline"], r["optimized"]
        lines.append(f"| {case} | `{r['truth']}` | `{_formula_of(b)}` | `{_formula_of(o)}` "
                     f"| {_yes(b[0].recovered)} / {_yes(o[0].recovered)} "
                     f"| {b[0].test_nmse:.3g} / {o[0].test_nmse:.3g} "
                     f"| {_median(b):.2f} | {_median(o):.2f} | {_median(b) / _median(o):.1f}x "
                     f"| {_median(b, 'cpu_seconds'):.2f} / {_median(o, 'cpu_seconds'):.2f} "
                     f"| {statistics.median(f.hit_rate for f in o):.1%} |")
    return "\n".join(lines)


def ablation_table(rows_by_case: dict) -> str:
    lines = ["| case | configuration | median s | vs baseline | vs row above | formula | recovered |",
             "|---|---|---|---|---|---|---|"]
    for case, rows in rows_by_case.items():
        base, previous = None, None
        for label, fits in rows.items():
            t = _median(fits)
            base = base or t
            step = f"{previous / t:.2f}x" if previous else ""
            lines.append(f"| {case} | {label} | {t:.2f} | {base / t:.1f}x | {step} | `{_formula_of(fits)}` "
                         f"| {_yes(fits[0].recovered)} |")
            previous = t
    return "\n".join(lines)


def recovered_table(result: dict) -> str:
    lines = ["| case | trainer | fits | recovered | seconds | seconds per recovered formula |",
             "|---|---|---|---|---|---|"]
    for case, by_trainer in result.items():
        for name, r in by_trainer.items():
            per = f"{r['per_recovered']:.1f}" if np.isfinite(r["per_recovered"]) else "none recovered"
            lines.append(f"| {case} | {name} | {r['fits']} | {r['recovered']} | {r['seconds']:.1f} | {per} |")
    return "\n".join(lines)


def plot(compared: dict, rows_by_case: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5))
    cases = list(compared)
    xs = np.arange(len(cases))
    for offset, name, color in ((-0.2, "baseline", "tab:gray"), (0.2, "optimized", "tab:blue")):
        left.bar(xs + offset, [_median(compared[c][name]) for c in cases], 0.4, label=name, color=color)
    left.set_xticks(xs, cases, rotation=30, ha="right")
    left.set_yscale("log")
    left.set_ylabel("median seconds per fit (log)")
    left.set_title("SymbolicTrainer vs OptimizedSymbolicTrainer")
    left.legend()
    labels = [label for label, _ in ABLATION]
    width = 0.8 / max(len(rows_by_case), 1)
    for i, (case, rows) in enumerate(rows_by_case.items()):
        right.bar(np.arange(len(labels)) + (i - (len(rows_by_case) - 1) / 2) * width,
                  [_median(rows[label]) for label in labels], width, label=case)
    right.set_xticks(np.arange(len(labels)), [f"{i}" for i in range(len(labels))])
    right.set_xlabel("ablation row: " + "; ".join(f"{i} {label.split(' (')[0]}" for i, label in enumerate(labels)),
                     fontsize=7, wrap=True)
    right.set_yscale("log")
    right.set_ylabel("median seconds per fit (log)")
    right.set_title("Ablation: one technique added per row")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _jsonable(obj):
    if isinstance(obj, Fit):
        return obj.__dict__
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.speed_comparison",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="reference cases, 1 run, 4 restarts, 100 epochs; writes to results/quick/")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per trainer and case (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--restarts", type=int, default=None, help="restarts per fit, both trainers (default 8)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per restart (default 200)")
    parser.add_argument("--samples", type=int, default=500, help="training rows (default 500)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds per trainer and case for 'seconds per recovered formula' (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return parser


def output_paths(args) -> list[Path]:
    """The files a run with these arguments writes: the .md table, .json and .png."""
    folder = output_dir(args.quick, args.out)
    return [folder / name for name in OUTPUT_FILES]


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 5)
    n_restarts = args.restarts or (4 if args.quick else 8)
    n_epochs = args.epochs or (100 if args.quick else 200)
    budget = args.budget if args.budget is not None else (5.0 if args.quick else 60.0)
    if min(runs, n_restarts, n_epochs, args.samples, args.threads) < 1:
        parser.error("--runs, --restarts, --epochs, --samples and --threads must be positive")
    torch.set_num_threads(args.threads)
    cases = REFERENCE_CASES + ([] if args.quick else [get_equation(name) for name in FEYNMAN_CASES])

    header = (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}; "
              f"{args.samples} training rows, max_depth=3, default operators, n_restarts={n_restarts} for both "
              f"trainers, n_epochs={n_epochs}, seed {args.seed}, {runs} run(s) each, alternating; wall-clock seconds")
    print(header, flush=True)
    _warm_up()
    compared = compare(cases, runs, n_restarts, n_epochs, args.samples, args.seed)
    rows = ablation(REFERENCE_CASES, compared, runs, n_restarts, n_epochs, args.samples, args.seed)
    recovered = per_recovered(REFERENCE_CASES, budget, n_restarts, n_epochs, args.samples, args.seed)

    sections = [
        "## Baseline vs optimized\n\n" + header + "\n\n" + comparison_table(compared),
        "Published replication (baseline s / memoized s): " + "; ".join(
            f"{c}: {b} / {o} ({b / o:.1f}x)" for c, (b, o) in PUBLISHED.items()),
        "## Ablation (reference cases)\n\n" + ablation_table(rows),
        f"## Seconds per recovered formula (budget {budget:.0f} s per trainer and case, fresh seeds)\n\n"
        + recovered_table(recovered),
    ]
    text = "\n\n".join(sections)
    print("\n" + text)
    md, js, png = output_paths(args)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text + "\n")
    js.write_text(json.dumps(_jsonable(
        {"header": header, "comparison": compared, "ablation": rows, "per_recovered": recovered}), indent=1))
    plot(compared, rows, png)
    print(f"\nwritten: {md}, {png}, {js}")


if __name__ == "__main__":
    main()
