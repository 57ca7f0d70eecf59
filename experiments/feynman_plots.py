"""Plots of Feynman benchmark results: solution rates, time per equation, and predicted
versus true values for one equation.

They take the runner's rows (dicts with parsed numbers, `experiments.feynman.typed`), so
they can be redrawn from any results CSV:

    from experiments.feynman import read_rows, typed
    from experiments.feynman_plots import make_plots
    rows = [typed(r) for r in read_rows(Path("results/feynman_soft-tree.csv"))]
    make_plots(rows, Path("results"), prefix="feynman_soft-tree", scatter_equation="I.12.1")
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import sympy  # noqa: E402

from experiments.feynman_data import get_equation, make_dataset  # noqa: E402
from experiments.feynman_methods import parse_expression  # noqa: E402


def _methods(rows):
    return list(dict.fromkeys(r["method"] for r in rows))


def plot_solution_rates(rows: list[dict], path: Path) -> Path:
    """Bar chart: symbolic and accuracy (R2 > 0.999) solution rate per method."""
    methods = _methods(rows)
    sym, acc = [], []
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        sym.append(100.0 * sum(r["symbolic_solved"] for r in mine) / len(mine))
        acc.append(100.0 * sum(r["accuracy_solved"] for r in mine) / len(mine))
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(methods) + 2), 4))
    for offset, values, label in ((-0.2, sym, "symbolic solution (SRBench rule)"),
                                  (0.2, acc, "accuracy solution (R2 > 0.999)")):
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.0f%%", fontsize=8)
    ax.set_xticks(x, methods)
    ax.set_ylim(0, 125)  # headroom for the legend above the 100% bars
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("runs solved (%)")
    ax.set_title(f"Feynman equations: solution rate ({len(rows)} runs)")
    ax.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_time_per_equation(rows: list[dict], path: Path, time_budget: float | None = None) -> Path:
    """Median time per equation and method; solid bars are symbolically solved."""
    methods = _methods(rows)
    equations = list(dict.fromkeys(r["equation"] for r in rows))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(equations) * len(methods) + 2), 4.5))
    x = np.arange(len(equations))
    for i, m in enumerate(methods):
        times, solved = [], []
        for eq in equations:
            mine = [r for r in rows if r["method"] == m and r["equation"] == eq]
            finite = [r["time"] for r in mine if not math.isnan(r["time"])]
            times.append(statistics.median(finite) if finite else 0.0)
            solved.append(any(r["symbolic_solved"] for r in mine))
        color = f"C{i}"
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, times, width=width, label=m,
               color=[color if s else "none" for s in solved], edgecolor=color)
    if time_budget:
        ax.axhline(time_budget, color="grey", linestyle="--", linewidth=1, label="budget")
    ax.set_xticks(x, equations, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("time (s, median over seeds)")
    ax.set_title("Time per equation (filled: exact formula found; hollow: not)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _predictions(row: dict):
    """(y_test, y_pred) for a row's formula, redrawing its data; None if unusable."""
    eq = get_equation(row["equation"])
    data = make_dataset(eq, n_samples=row["samples"], seed=row["seed"], noise=row["noise"])
    symbols = {name: sympy.Symbol(name) for name in eq.variables}
    try:
        expr = parse_expression(row["formula"], symbols)
        func = sympy.lambdify([symbols[n] for n in eq.variables], expr, modules="numpy",
                              dummify=True)
        with np.errstate(all="ignore"):
            y_pred = np.broadcast_to(np.asarray(func(*data.X_test.T), dtype=np.float64),
                                     data.y_test.shape)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None
    return data.y_test, y_pred


def plot_predicted_vs_true(rows: list[dict], equation: str, path: Path) -> Path:
    """Per method, the best run (highest test R2) on ``equation``: predicted vs true y."""
    mine = [r for r in rows if r["equation"] == equation]
    methods = _methods(mine) or ["(no runs)"]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 4.2), squeeze=False)
    for ax, m in zip(axes[0], methods):
        runs = [r for r in mine if r["method"] == m]
        best = max(runs, key=lambda r: r["test_r2"] if math.isfinite(r["test_r2"]) else -1e300,
                   default=None)
        pair = _predictions(best) if best and best["formula"] else None
        if pair is None:
            ax.text(0.5, 0.5, "no usable formula", ha="center", va="center",
                    transform=ax.transAxes)
        else:
            y_true, y_pred = pair
            ok = np.isfinite(y_pred)
            ax.scatter(y_true[ok], y_pred[ok], s=8, alpha=0.6)
            low, high = float(np.min(y_true)), float(np.max(y_true))
            ax.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--")
            ax.set_xlabel("true y (test split)")
            ax.set_ylabel("predicted y")
        title = f"{m}: {equation}"
        if best:
            verdict = "exact" if best["symbolic_solved"] else "not exact"
            title += f"\nR2 = {best['test_r2']:.4g}, {verdict}, seed {best['seed']}"
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_plots(rows: list[dict], directory: Path, prefix: str = "feynman",
               scatter_equation: str | None = None,
               time_budget: float | None = None) -> list[Path]:
    """All three plots into ``directory`` as ``<prefix>_<plot>.png``; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not rows:
        return []
    written = [plot_solution_rates(rows, directory / f"{prefix}_solution_rates.png"),
               plot_time_per_equation(rows, directory / f"{prefix}_time_per_equation.png",
                                      time_budget)]
    if scatter_equation:
        safe = scatter_equation.replace("/", "_")
        written.append(plot_predicted_vs_true(
            rows, scatter_equation, directory / f"{prefix}_scatter_{safe}.png"))
    return written
