"""The Feynman benchmark runner: does a method find the true formula, and how fast?

One CSV row per (method, equation, seed), scored SRBench-style on the test split
(`experiments.scoring`), appended as it finishes, so that an interrupted run resumes
where it stopped; a markdown summary at the end.

    python -m experiments.feynman --method soft-tree --first 20 --time-budget 30 --jobs 2
    python -m experiments.feynman --method soft-tree,optimized --equations I.12.1,I.14.4 \\
        --seeds 3 --plot

A method that crashes, a formula that cannot be scored or an equation whose data cannot
be drawn gives a failure row carrying the error; the run goes on. Rows whose error says
the method was not available, or that its worker process died, are redone on a rerun;
other failures only with ``--retry-failed``.
"""
from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import statistics
import sys
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from experiments.feynman_data import (DEFAULT_SAMPLES, SRBENCH_SAMPLES, get_equation, load_equations,
                                      make_dataset)
from experiments.feynman_methods import METHODS, get_method
from experiments.scoring import ACCURACY_THRESHOLD, score_model

COLUMNS = ["method", "equation", "seed", "samples", "noise", "time_budget", "settings",
           "time", "train_loss", "test_r2", "accuracy_solved", "symbolic_solved", "reason",
           "formula", "complexity", "n_fits", "error"]
KEY_COLUMNS = ("method", "equation", "seed", "samples", "noise", "time_budget", "settings")
# Failures that say nothing about the method on this equation: always run again.
RETRIED_ERRORS = ("not available", "worker process")
DEFAULT_OUTPUT = "results/feynman_{method}.csv"
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Task:
    """One (method, equation, seed) to run; picklable, so a worker process can take it."""

    method: str
    equation: str
    seed: int
    samples: int
    noise: float
    time_budget: float
    options: tuple[tuple[str, object], ...]
    settings: str

    def key(self) -> tuple:
        return (self.method, self.equation, self.seed, self.samples, self.noise,
                self.time_budget, self.settings)


def row_key(row: dict) -> tuple:
    """The resume key of a CSV row (strings parsed), comparable with `Task.key`."""
    return (row["method"], row["equation"], int(row["seed"]), int(row["samples"]),
            float(row["noise"]), float(row["time_budget"]), row["settings"])


def describe_error(err: BaseException) -> str:
    """One line: the exception and where it was raised."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    text = f"{type(err).__name__}: {err}".replace("\r", " ").replace("\n", " ")
    return (text[:_MAX_ERROR_CHARS] + where)


def empty_row(task: Task) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(method=task.method, equation=task.equation, seed=task.seed,
               samples=task.samples, noise=task.noise, time_budget=task.time_budget,
               settings=task.settings, test_r2=float("-inf"), accuracy_solved=False,
               symbolic_solved=False, reason="failed")
    return row


def run_task(task: Task) -> dict:
    """Draw the data, run the method, score its formula: one CSV row, never an exception."""
    row = empty_row(task)
    try:
        eq = get_equation(task.equation)
        data = make_dataset(eq, n_samples=task.samples, seed=task.seed, noise=task.noise)
    except Exception as err:
        row["error"] = "data: " + describe_error(err)
        return row
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # The trainer's float(loss) on a graph tensor is harmless and would print once
            # per equation through the progress bar.
            warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
            method = get_method(task.method, **dict(task.options))
            result = method.run(data, task.time_budget, task.seed)
    except Exception as err:
        row["time"] = round(time.perf_counter() - start, 3)
        row["error"] = "method: " + describe_error(err)
        return row
    row.update(time=round(time.perf_counter() - start, 3), train_loss=result.train_loss,
               n_fits=result.n_fits)
    if result.error or result.expr is None:
        row["error"] = "method: " + (result.error or "no formula returned")
    try:
        score = score_model(result.expr, eq, data.X_test, data.y_test, predict=result.predict)
    except Exception as err:
        row["formula"] = _safe_str(result.expr)
        row["error"] = (row["error"] + "; " if row["error"] else "") + "scoring: " + describe_error(err)
        return row
    # complexity: SRBench's node count of the sympy formula, the same for every method.
    row.update(test_r2=score["test_r2"], accuracy_solved=score["accuracy_solved"],
               symbolic_solved=score["symbolic_solved"], reason=score["reason"],
               formula=score["model"] if score["model"] is not None else _safe_str(result.expr),
               complexity=score["complexity"] if score["complexity"] is not None else "")
    problems = [row["error"]] if row["error"] else []
    if result.expr is not None and score["reason"].startswith("error"):
        problems.append("scoring: " + score["reason"][len("error: "):])
    if "prediction_error" in score:
        problems.append("prediction: " + score["prediction_error"])
    row["error"] = "; ".join(problems)
    return row


def _safe_str(value) -> str:
    try:
        return "" if value is None else str(value)
    except Exception:
        return "<unprintable>"


def failure_row(task: Task, error: str) -> dict:
    row = empty_row(task)
    row["error"] = error
    return row


# --- running, in this process or in a pool -------------------------------------------------

def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)


def execute(tasks: list[Task], jobs: int) -> Iterator[dict]:
    """Rows of the tasks in the order they finish; ``jobs`` > 1 uses spawned processes
    (fork is unsafe once torch's thread pools exist), each with one torch thread."""
    if jobs <= 1:
        import torch
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for task in tasks:
                yield run_task(task)
        finally:
            torch.set_num_threads(previous)
        return
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                               mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(run_task, task): task for task in tasks}
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as err:  # the worker died (killed, out of memory, segfault)
                row = failure_row(futures[future], "worker process failed: " + describe_error(err))
            yield row
    except BaseException:  # interrupted: drop what has not started, do not wait
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# --- the CSV ---------------------------------------------------------------------------------

def read_rows(path: Path) -> list[dict]:
    """Rows of a results CSV (none if it does not exist); malformed ones are skipped with
    a warning on stderr. A file with other columns is an error, not a silent mix."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    rows, bad = [], 0
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != COLUMNS:
            raise ValueError(f"{path} has columns {reader.fieldnames}, expected {COLUMNS}; "
                             "choose another --output")
        for row in reader:
            try:
                if None in row or any(row[c] is None for c in COLUMNS):
                    raise ValueError("wrong number of fields")
                row_key(row)
            except (ValueError, TypeError):
                bad += 1
                continue
            rows.append(row)
    if bad:
        print(f"warning: skipped {bad} malformed row(s) in {path}", file=sys.stderr)
    return rows


class CsvAppender:
    """Appends rows to one or more CSVs, header first when new, flushed row by row."""

    def __init__(self):
        self.handles = {}

    def write(self, path: Path, row: dict) -> None:
        if path not in self.handles:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                _drop_cut_off_row(path)
            fresh = not path.exists() or path.stat().st_size == 0
            handle = open(path, "a", newline="", encoding="utf-8")
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
            if fresh:
                writer.writeheader()
            self.handles[path] = (handle, writer)
        handle, writer = self.handles[path]
        writer.writerow({c: row.get(c, "") for c in COLUMNS})
        handle.flush()

    def close(self) -> None:
        for handle, _ in self.handles.values():
            handle.close()
        self.handles.clear()


def _drop_cut_off_row(path: Path) -> None:
    """Remove a last row left without its line end (a run killed mid-write): appending
    after it would glue the next row onto it, or an open quote would swallow the rest."""
    with open(path, "rb+") as handle:
        size = handle.seek(0, 2)
        start = max(0, size - 65536)
        handle.seek(start)
        tail = handle.read()
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n")
            if cut >= 0 or start == 0:
                handle.truncate(start + cut + 1)


def latest_by_key(rows: Iterable[dict]) -> dict[tuple, dict]:
    """The last row written for each key (a redone row supersedes the earlier one)."""
    return {row_key(row): row for row in rows}


def is_done(row: dict, retry_failed: bool) -> bool:
    error = row.get("error") or ""
    if any(error.startswith(prefix) for prefix in RETRIED_ERRORS):
        return False
    return not (retry_failed and error)


# --- the summary ---------------------------------------------------------------------------

def typed(row: dict) -> dict:
    """A CSV row with numbers and booleans parsed (for the summary and the plots)."""
    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return math.nan
    out = dict(row)
    for column in ("time", "train_loss", "test_r2", "complexity", "noise", "time_budget"):
        out[column] = number(row[column])
    out["seed"], out["samples"] = int(row["seed"]), int(row["samples"])
    for column in ("accuracy_solved", "symbolic_solved"):
        out[column] = str(row[column]).strip() == "True"
    return out


def summarize(rows: list[dict], methods: list[str]) -> str:
    """Markdown: one line per method, then each method's unsolved equations and failures."""
    lines = ["| method | equations | runs | symbolic solutions | accuracy solutions "
             f"(R2 > {ACCURACY_THRESHOLD}) | median time (s) | median time to solution (s) "
             "| failures |",
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            lines.append(f"| {method} | 0 | 0 | - | - | - | - | - |")
            continue
        n = len(mine)
        symbolic = [r for r in mine if r["symbolic_solved"]]
        accurate = [r for r in mine if r["accuracy_solved"]]
        failures = [r for r in mine if r["error"]]
        times = [r["time"] for r in mine if not math.isnan(r["time"])]
        solved_times = [r["time"] for r in symbolic if not math.isnan(r["time"])]
        equations = list(dict.fromkeys(r["equation"] for r in mine))
        lines.append(
            f"| {method} | {len(equations)} | {n} | {_rate(len(symbolic), n)} | "
            f"{_rate(len(accurate), n)} | {_median(times)} | {_median(solved_times)} | "
            f"{len(failures)} |")
        solved_eqs = {r["equation"] for r in symbolic}
        unsolved = [e for e in equations if e not in solved_eqs]
        notes.append(f"Unsolved by {method} ({len(unsolved)}): "
                     + (", ".join(unsolved) if unsolved else "none"))
        for r in failures[:10]:
            notes.append(f"  failure {method} {r['equation']} seed {r['seed']}: {r['error']}")
        if len(failures) > 10:
            notes.append(f"  ... and {len(failures) - 10} more failures (see the CSV)")
    return "\n".join(lines + [""] + notes)


def _rate(k: int, n: int) -> str:
    return f"{k}/{n} ({100.0 * k / n:.0f}%)" if n else "-"


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


# --- the command line ----------------------------------------------------------------------

def parse_seeds(text: str) -> list[int]:
    """``"3"`` -> [0, 1, 2] (a count); ``"0,5,7"`` or ``"7,"`` -> those seeds."""
    text = str(text).strip()
    try:
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--seeds takes a count (3) or a list (0,5,7), got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"--seeds needs non-negative seeds, got {text!r}")
    return list(dict.fromkeys(seeds))


def parse_settings(items: list[str]) -> dict:
    """``["weight_soft_tree=0.01", "stop_on_exact=false"]`` -> {name: number or bool}; no eval.

    >>> parse_settings(["a=1", "b=0.5", "c=false"])
    {'a': 1, 'b': 0.5, 'c': False}
    """
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name.isidentifier():
            raise ValueError(f"--set takes NAME=VALUE, got {item!r}")
        if text.lower() in ("true", "false"):
            out[name] = text.lower() == "true"
            continue
        try:
            out[name] = int(text)
        except ValueError:
            try:
                out[name] = float(text)
            except ValueError:
                raise ValueError(f"--set {name}: {text!r} is not a number or true/false") from None
    return out


def select_equations(args) -> list[str]:
    """Names from --equations, or the first N / all of the main table, or the bonus one
    (``--all --bonus``: all 120)."""
    if args.equations:
        names = [n.strip() for n in args.equations.split(",") if n.strip()]
        for name in names:
            get_equation(name)  # ValueError naming close matches
        return list(dict.fromkeys(names))
    if not (args.all or args.first or args.bonus):
        raise ValueError("choose equations: --equations, --first N, --all or --bonus")
    pool = []
    if args.all or not args.bonus:
        pool += load_equations()
    if args.bonus:
        pool += load_equations(bonus=True)
    if args.first:
        pool = pool[:args.first]
    return [eq.name for eq in pool]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.feynman",
        description="Run symbolic regression methods on the AI Feynman equations and "
                    "score them SRBench-style (exact recovery, R2 > 0.999, time).")
    p.add_argument("--method", default="soft-tree",
                   help=f"one or several, comma separated, of {', '.join(METHODS)}")
    p.add_argument("--equations", help="comma separated names, e.g. I.6.2,I.12.1")
    p.add_argument("--first", type=int, metavar="N", help="the first N equations")
    p.add_argument("--all", action="store_true", help="all 100 main equations")
    p.add_argument("--bonus", action="store_true", help="the 20 bonus equations")
    p.add_argument("--time-budget", type=float, default=30.0, metavar="S",
                   help="seconds per equation and seed (default 30)")
    p.add_argument("--seeds", default="1", help="a count (3 = seeds 0,1,2) or a list (0,5,7)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help=f"rows drawn per equation, split 75/25 (default {DEFAULT_SAMPLES})")
    p.add_argument("--noise", type=float, default=0.0,
                   help="Gaussian noise on y, sigma = level * RMS(y) (default 0)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--output", default=DEFAULT_OUTPUT,
                   help="CSV path; '{method}' in it gives one file per method "
                        f"(default {DEFAULT_OUTPUT})")
    p.add_argument("--retry-failed", action="store_true",
                   help="redo rows that failed with an error instead of skipping them")
    p.add_argument("--epochs", type=int, default=200, help="soft tree: epochs per fit")
    p.add_argument("--restarts-per-fit", type=int, default=4,
                   help="soft tree: restarts per fit; fits repeat until the budget is spent")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a method option (a number or true/false), e.g. --set weight_soft_tree=0.01; "
                        "repeatable; methods without that option ignore it")
    p.add_argument("--plot", action="store_true", help="save PNG plots beside the CSV")
    p.add_argument("--scatter-equation", metavar="NAME",
                   help="equation of the predicted-vs-true plot (default: the first)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; the summary only")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    methods = list(dict.fromkeys(m.strip() for m in args.method.split(",") if m.strip()))
    try:
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
        equations = select_equations(args)
        seeds = parse_seeds(args.seeds)
        if args.time_budget <= 0 or not math.isfinite(args.time_budget):
            raise ValueError(f"--time-budget must be a positive number, got {args.time_budget}")
        if args.jobs < 1 or (args.first is not None and args.first < 1):
            raise ValueError("--jobs and --first must be at least 1")
        if args.scatter_equation:
            get_equation(args.scatter_equation)
        options = {"n_epochs": args.epochs, "restarts_per_fit": args.restarts_per_fit,
                   **parse_settings(args.set)}
        adapters = {m: get_method(m, **options) for m in methods}
    except ValueError as err:
        parser.error(str(err))
    say = (lambda *a, **k: None) if args.quiet else print

    unavailable = {}
    for name in list(methods):
        reason = adapters[name].unavailable()
        if reason and name == "gplearn":
            print(f"gplearn: {reason}; skipping it.")
            methods.remove(name)
        elif reason:
            unavailable[name] = reason
            print(f"{name}: {reason}; its rows are recorded as failures.")
    if not methods:
        print("nothing to run.")
        return 1

    paths = {m: Path(args.output.replace("{method}", m)) for m in methods}
    tasks = [Task(m, eq, seed, args.samples, float(args.noise), float(args.time_budget),
                  tuple(sorted(options.items())), adapters[m].settings())
             for eq in equations for seed in seeds for m in methods]
    try:
        existing = {path: latest_by_key(read_rows(path)) for path in set(paths.values())}
    except ValueError as err:
        parser.error(str(err))
    todo = [t for t in tasks
            if not (t.key() in existing[paths[t.method]]
                    and is_done(existing[paths[t.method]][t.key()], args.retry_failed))]
    say(f"{len(tasks)} runs ({len(methods)} method(s) x {len(equations)} equation(s) x "
        f"{len(seeds)} seed(s)); {len(tasks) - len(todo)} already in the CSV, "
        f"{len(todo)} to do; budget {args.time_budget:g} s each, {args.jobs} job(s).")

    appender = CsvAppender()
    try:
        runnable = []
        for task in todo:
            if task.method in unavailable:
                appender.write(paths[task.method], failure_row(task, unavailable[task.method]))
            else:
                runnable.append(task)
        _run_with_progress(runnable, args, paths, appender)
    finally:
        appender.close()

    wanted = {t.key() for t in tasks}
    rows = [typed(row) for path in set(paths.values())
            for key, row in latest_by_key(read_rows(path)).items() if key in wanted]
    order = {name: i for i, name in enumerate(equations)}
    rows.sort(key=lambda r: (methods.index(r["method"]), order[r["equation"]], r["seed"]))
    print()
    print(f"Feynman benchmark: {len(equations)} equation(s), seeds {seeds}, "
          f"{args.samples} samples, noise {args.noise:g}, budget {args.time_budget:g} s")
    print()
    print(summarize(rows, methods))
    if args.samples != SRBENCH_SAMPLES:
        default = " (the default)" if args.samples == DEFAULT_SAMPLES else ""
        print(f"\nNote: this run used {args.samples:,} samples per equation{default}; SRBench trains "
              f"on up to {SRBENCH_SAMPLES:,}. Rerun with --samples {SRBENCH_SAMPLES} to match it.")
    print("CSV: " + ", ".join(str(p) for p in dict.fromkeys(paths.values())))
    if args.plot:
        from experiments.feynman_plots import make_plots
        first = next(iter(paths.values()))
        written = make_plots(rows, first.parent, prefix="feynman_" + "+".join(methods),
                             scatter_equation=args.scatter_equation or equations[0],
                             time_budget=args.time_budget)
        print("plots: " + ", ".join(str(p) for p in written))
    return 0


def _run_with_progress(tasks: list[Task], args, paths, appender: CsvAppender) -> None:
    from tqdm import tqdm

    solved = 0
    with tqdm(total=len(tasks), disable=args.quiet or not tasks, desc="feynman",
              unit="run", file=sys.stderr, dynamic_ncols=True) as bar:
        for row in execute(tasks, args.jobs):
            appender.write(paths[row["method"]], row)
            solved += bool(row["symbolic_solved"])
            bar.update(1)
            bar.set_postfix(solved=solved)
            if not args.quiet:
                verdict = "SOLVED" if row["symbolic_solved"] else (
                    "accurate" if row["accuracy_solved"] else "unsolved")
                detail = row["error"] or row["formula"]
                bar.write(f"{row['method']} {row['equation']} seed {row['seed']}: {verdict}, "
                          f"R2 {float(row['test_r2']):.4g}, {row['time'] or 0:.1f} s  "
                          f"{str(detail)[:100]}")


if __name__ == "__main__":
    sys.exit(main())
