"""The Feynman benchmark runner: does a method find the true formula, and how fast?

One CSV row per (method, equation, seed), scored SRBench-style on the test split
(`experiments.scoring`), appended as it finishes, so that an interrupted run resumes
where it stopped; a markdown summary at the end.

Every row carries the symbolic verdict under two rounding rules for the model's
constants: ``symbolic_solved``/``reason`` under SRBench's (3 decimal places), the one to
compare with SRBench's figures, and ``symbolic_solved_significant``/``reason_significant``
under 3 significant digits; the summary counts both. ``--rescore`` recomputes both from
a CSV's ``formula`` column without running any method (also for files written before the
second rule existed; `experiments.feynman_rescore`), and ``--summarize`` only prints a
CSV's summary.

    python -m experiments.feynman --method soft-tree --first 20 --time-budget 30 --jobs 2
    python -m experiments.feynman --method soft-tree,optimized --equations I.12.1,I.14.4 \\
        --seeds 3 --plot
    python -m experiments.feynman --rescore results/feynman_search_all_60s.csv

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
from experiments.scoring import (ACCURACY_THRESHOLD, ROUNDING_NAMES, ROUNDING_RULES,
                                 SRBENCH_ROUNDING, score_model)

# The columns of a row's symbolic verdict under each rounding rule (SRBench's first).
VERDICT_COLUMNS = {"decimals": ("symbolic_solved", "reason"),
                   "significant": ("symbolic_solved_significant", "reason_significant")}
assert tuple(VERDICT_COLUMNS) == ROUNDING_RULES and ROUNDING_RULES[0] == SRBENCH_ROUNDING
COLUMNS = ["method", "equation", "seed", "samples", "noise", "time_budget", "settings",
           "time", "train_loss", "test_r2", "accuracy_solved", "symbolic_solved", "reason",
           "symbolic_solved_significant", "reason_significant",
           "formula", "complexity", "n_fits", "error"]
# Files written before the second rule: one verdict, under 3 significant digits.
LEGACY_COLUMNS = [c for c in COLUMNS if c not in VERDICT_COLUMNS["significant"]]
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
               settings=task.settings, test_r2=float("-inf"), accuracy_solved=False)
    for solved, reason in VERDICT_COLUMNS.values():
        row[solved], row[reason] = False, "failed"
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
        score = score_model(result.expr, eq, data.X_test, data.y_test, predict=result.predict,
                            rounding=ROUNDING_RULES)
    except Exception as err:
        row["formula"] = _safe_str(result.expr)
        row["error"] = (row["error"] + "; " if row["error"] else "") + "scoring: " + describe_error(err)
        return row
    # complexity: SRBench's node count of the sympy formula, the same for every method.
    row.update(test_r2=score["test_r2"], accuracy_solved=score["accuracy_solved"],
               formula=score["model"] if score["model"] is not None else _safe_str(result.expr),
               complexity=score["complexity"] if score["complexity"] is not None else "")
    for rule, (solved, reason) in VERDICT_COLUMNS.items():
        row[solved], row[reason] = score["symbolic"][rule].solved, score["symbolic"][rule].reason
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

def read_rows(path: Path, legacy: bool = False) -> list[dict]:
    """Rows of a results CSV (none if it does not exist); malformed ones are skipped with
    a warning on stderr. A file with other columns is an error, not a silent mix; one with
    an older runner's columns too, unless ``legacy`` (its rows then lack the columns of
    the second rounding rule)."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    rows, bad = [], 0
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = COLUMNS
        if legacy and reader.fieldnames == LEGACY_COLUMNS:
            columns = LEGACY_COLUMNS
        elif reader.fieldnames == LEGACY_COLUMNS:
            raise ValueError(f"{path} has the columns of an older runner (one symbolic verdict, "
                             f"constants rounded to 3 significant digits); add both rules' "
                             f"verdicts with: python -m experiments.feynman --rescore {path}")
        if reader.fieldnames != columns:
            raise ValueError(f"{path} has columns {reader.fieldnames}, expected {COLUMNS}; "
                             "choose another --output")
        for row in reader:
            try:
                if None in row or any(row[c] is None for c in columns):
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
    for column in ("accuracy_solved",) + tuple(solved for solved, _ in VERDICT_COLUMNS.values()):
        out[column] = str(row.get(column, "")).strip() == "True"
    return out


def summarize(rows: list[dict], methods: list[str]) -> str:
    """Markdown: one line per method, symbolic solutions counted under each rounding rule
    (SRBench's first), then each method's unsolved equations and failures."""
    names = {rule: ROUNDING_NAMES[rule] for rule in ROUNDING_RULES}
    lines = ["| method | equations | runs | "
             + " | ".join(f"symbolic solutions ({names[rule]})" for rule in ROUNDING_RULES)
             + f" | accuracy solutions (R2 > {ACCURACY_THRESHOLD}) | median time (s) "
             "| median time to solution (s) | failures |",
             "|---|---|---|" + "---|" * len(ROUNDING_RULES) + "---|---|---|---|"]
    notes = []
    empty = " | ".join("-" for _ in ROUNDING_RULES)
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            lines.append(f"| {method} | 0 | 0 | {empty} | - | - | - | - |")
            continue
        n = len(mine)
        solved_by = {rule: [r for r in mine if r[VERDICT_COLUMNS[rule][0]]]
                     for rule in ROUNDING_RULES}
        symbolic = solved_by[SRBENCH_ROUNDING]
        accurate = [r for r in mine if r["accuracy_solved"]]
        failures = [r for r in mine if r["error"]]
        times = [r["time"] for r in mine if not math.isnan(r["time"])]
        solved_times = [r["time"] for r in symbolic if not math.isnan(r["time"])]
        equations = list(dict.fromkeys(r["equation"] for r in mine))
        lines.append(
            f"| {method} | {len(equations)} | {n} | "
            + " | ".join(_rate(len(solved_by[rule]), n) for rule in ROUNDING_RULES)
            + f" | {_rate(len(accurate), n)} | {_median(times)} | {_median(solved_times)} | "
            f"{len(failures)} |")
        solved_eqs = {r["equation"] for r in symbolic}
        unsolved = [e for e in equations if e not in solved_eqs]
        notes.append(f"Unsolved by {method} under {names[SRBENCH_ROUNDING]} ({len(unsolved)}): "
                     + (", ".join(unsolved) if unsolved else "none"))
        for rule in ROUNDING_RULES:
            others = [other for other in ROUNDING_RULES if other != rule]
            only = [f"{r['equation']} seed {r['seed']}" for r in solved_by[rule]
                    if not any(r[VERDICT_COLUMNS[o][0]] for o in others)]
            if only:
                notes.append(f"Solved by {method} under {names[rule]} only ({len(only)}): "
                             + ", ".join(only))
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
    """``"3"`` -> [0, 1, 2] (a count); ``"0"`` -> [0] (a count of none would run nothing, so
    0 is seed 0); ``"0,5,7"`` or ``"7,"`` -> those seeds.

    >>> parse_seeds("3"), parse_seeds("0"), parse_seeds("5,"), parse_seeds("0,5,7")
    ([0, 1, 2], [0], [5], [0, 5, 7])
    """
    text = str(text).strip()
    try:
        if "," not in text:
            count = int(text)
            if count < 0:
                raise ValueError
            return list(range(max(count, 1)))
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--seeds takes a count (3 = seeds 0,1,2), 0 (seed 0 alone) or a "
                         f"list (0,5,7; 5, = seed 5 alone), got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"--seeds needs non-negative seeds, got {text!r}")
    return list(dict.fromkeys(seeds))


def parse_settings(items: list[str]) -> dict:
    """``["weight_soft_tree=0.01", "stop_on_exact=false", "engine=torch"]`` -> {name: number,
    bool or word}; no eval.

    >>> parse_settings(["a=1", "b=0.5", "c=false", "engine=torch"])
    {'a': 1, 'b': 0.5, 'c': False, 'engine': 'torch'}
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
                if not text.isidentifier():
                    raise ValueError(f"--set {name}: {text!r} is not a number, true/false or a word") from None
                out[name] = text
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
    p.add_argument("--seeds", default="1",
                   help="a count (3 = seeds 0,1,2; 0 or 1 = seed 0) or a list (0,5,7; '5,' = seed 5 "
                        "alone); default 1")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help=f"rows drawn per equation, split 75/25 (default {DEFAULT_SAMPLES})")
    p.add_argument("--noise", type=float, default=0.0,
                   help="Gaussian noise on y, sigma = level * RMS(y) (default 0)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--output", default=DEFAULT_OUTPUT,
                   help="CSV path; '{method}' in it gives one file per method "
                        f"(default {DEFAULT_OUTPUT}; the tracked reference results, "
                        "results/*_all_60s.csv, are never a default)")
    p.add_argument("--retry-failed", action="store_true",
                   help="redo rows that failed with an error instead of skipping them")
    p.add_argument("--epochs", type=int, default=200, help="soft tree: epochs per fit")
    p.add_argument("--restarts-per-fit", type=int, default=4,
                   help="soft tree: restarts per fit; fits repeat until the budget is spent")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a method option (a number, true/false or a word), e.g. --set weight_soft_tree=0.01 "
                        "or --set engine=torch; "
                        "repeatable; methods without that option ignore it (an option no chosen "
                        "method takes is an error); the search method takes any PySRRegressor parameter")
    p.add_argument("--plot", action="store_true", help="save PNG plots beside the CSV")
    p.add_argument("--scatter-equation", metavar="NAME",
                   help="equation of the predicted-vs-true plot (default: the first)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; the summary only")
    p.add_argument("--rescore", nargs="+", metavar="CSV",
                   help="run nothing: recompute every row's symbolic verdicts from its formula "
                        "under both rounding rules (3 decimal places, SRBench's; 3 significant "
                        "digits), rewrite the CSV in place, print its summary")
    p.add_argument("--summarize", nargs="+", metavar="CSV",
                   help="run nothing: print the summary of these results CSVs")
    return p


@dataclass
class Plan:
    """What a command line asks for: methods, equations, seeds and the methods' options."""

    methods: list[str]
    equations: list[str]
    seeds: list[int]
    options: dict
    adapters: dict

    def tasks(self, args, methods: list[str] | None = None) -> list[Task]:
        """One task per (equation, seed, method), in that order; each carries the key its
        CSV row will have."""
        return [Task(m, eq, seed, args.samples, float(args.noise), float(args.time_budget),
                     tuple(sorted(self.options.items())), self.adapters[m].settings())
                for eq in self.equations for seed in self.seeds for m in (methods or self.methods)]


def plan_run(args) -> Plan:
    """Check a parsed command line and say what it would run; ValueError if it is wrong."""
    methods = list(dict.fromkeys(m.strip() for m in args.method.split(",") if m.strip()))
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
    settings = parse_settings(args.set)
    unused = [name for name in settings if not any(METHODS[m].takes(name) for m in methods)]
    if unused:
        raise ValueError(f"--set {', '.join(unused)}: no chosen method takes it ({', '.join(methods)})")
    options = {"n_epochs": args.epochs, "restarts_per_fit": args.restarts_per_fit, **settings}
    adapters = {m: get_method(m, **options) for m in methods}
    return Plan(methods, equations, seeds, options, adapters)


def planned_tasks(argv: list[str]) -> list[Task]:
    """The tasks ``python -m experiments.feynman ARGV`` would run, without running or
    writing anything (their ``key()`` is the key of the CSV rows it would write)."""
    args = build_parser().parse_args(argv)
    return plan_run(args).tasks(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rescore or args.summarize:
        from experiments.feynman_rescore import rescore_or_summarize  # it imports this module
        return rescore_or_summarize(parser, args)
    try:
        plan = plan_run(args)
    except ValueError as err:
        parser.error(str(err))
    methods, equations, seeds, adapters = plan.methods, plan.equations, plan.seeds, plan.adapters
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
    tasks = plan.tasks(args, methods)
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
