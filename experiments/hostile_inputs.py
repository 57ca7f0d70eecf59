"""Hostile strings and files, tried against every place a user's text or a saved run
enters: operator definitions, losses, early-stop conditions, variable names, guesses,
sympy mappings, constraint keys, the hall-of-fame CSV's cells, ``checkpoint.json`` and
PySR's ``checkpoint.pkl``.

The payloads try to run code (``__import__``, attribute access, lambdas, format strings,
``exec``, a pickle whose loading calls ``os.system``) or to exhaust resources (a million
characters, 100,000 nested parentheses, a 10,000-digit number, a huge exponent, deeply
nested JSON). A case counts as executed if its sentinel file appears or if Python's audit
hooks see ``os.system``, a subprocess, ``pickle.find_class`` or the compilation of a
payload; the goal is none. Otherwise it was refused (ValueError, TypeError or OSError
from this project's checks) or accepted as inert data (a variable named ``__import__``
is a symbol, nothing more). Each case's time and memory are reported.

    python -m experiments.hostile_inputs      # ~1 min; tests/test_hostile_inputs.py runs it all

The table is printed and written to ``results/hostile_inputs.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from experiments.bad_inputs import raised_by_us
from experiments.outputs import OUT_HELP, Report, output_dir

OUTPUT_FILE = "hostile_inputs.md"
MARKER = "hostile_marker_7f3a"
_SEARCH = dict(niterations=1, populations=2, population_size=10, tournament_selection_n=5, ncycles_per_iteration=2,
               maxsize=10, soft_tree_seed_fraction=0.0, progress=False, verbosity=0, random_state=0)


def payloads(sentinel: str) -> list[str]:
    """Strings that would run code (each would create ``sentinel`` if evaluated)."""
    touch = f"__import__('os').system('touch {sentinel}')"
    return [
        touch,
        f"exec(\"open('{sentinel}', 'w')\")",
        f"eval('{MARKER}')",
        f"(lambda: {touch})()",
        "x0.__class__.__mro__[1].__subclasses__()",
        "().__class__.__bases__[0]",
        "{0.__class__}".replace("0", "x0"),
        f"f'{{{touch}}}'",
        f"x0; {touch}",
        f"x0\n{touch}",
        "globals()",
        "getattr(x0, '__dict__')",
        f"open('{sentinel}', 'w')",
    ]


def exhausting() -> list[str]:
    """Strings that would exhaust time or memory if read naively."""
    return [
        "x0+" * 333_333 + "x0",
        "(" * 100_000 + "x0" + ")" * 100_000,
        "cos(" * 50_000 + "x0" + ")" * 50_000,
        "9" * 10_000,
        "x0 ** 99999999999",
        "1e999999",
        "x0" * 1_000_000,
    ]


@dataclass
class Case:
    where: str          # the entry point
    text: str           # the hostile value (shortened in reports)
    run: Callable       # run(workdir) raises or returns


def _data():
    X = np.random.default_rng(0).uniform(1, 2, (20, 2))
    return X, X[:, 0] * 2 + X[:, 1]


def _fit(**params):
    def run(work: Path):
        from enhancements import PySRRegressor

        X, y = _data()
        fit_args = {k: v for k, v in params.items() if k == "variable_names"}
        model_args = {k: v for k, v in params.items() if k != "variable_names"}
        PySRRegressor(**_SEARCH, **model_args, temp_equation_file=True).fit(X, y, **fit_args)
    return run


def _valid_run(work: Path) -> Path:
    from enhancements import PySRRegressor

    X, y = _data()
    model = PySRRegressor(**_SEARCH, output_directory=str(work), run_id="run").fit(X, y)
    return model.run_directory_


def _edited_run(edit: Callable[[dict, Path], None]):
    def run(work: Path):
        from enhancements import PySRRegressor

        run_dir = _valid_run(work)
        data = json.loads((run_dir / "checkpoint.json").read_text())
        edit(data, run_dir)
        if data is not None:
            (run_dir / "checkpoint.json").write_text(json.dumps(data))
        PySRRegressor.from_file(run_directory=run_dir).predict(_data()[0])
    return run


def _csv_cell(text: str):
    def run(work: Path):
        from enhancements import PySRRegressor

        run_dir = _valid_run(work)
        (run_dir / "checkpoint.json").unlink()
        row = '1,0.5,"' + text.replace('"', '""') + '"'
        for name in ("hall_of_fame.csv", "hall_of_fame.csv.bak"):
            (run_dir / name).write_text("Complexity,Loss,Equation\n" + row + "\n")
        PySRRegressor.from_file(run_directory=run_dir, binary_operators=["+", "*"], n_features_in=2)
    return run


class _Payload:
    """A pickle whose loading would run os.system."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _pickled_run(sentinel: str):
    def run(work: Path):
        from enhancements import PySRRegressor

        run_dir = _valid_run(work)
        (run_dir / "checkpoint.json").unlink()
        (run_dir / "checkpoint.pkl").write_bytes(pickle.dumps(_Payload(f"touch {sentinel}")))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            PySRRegressor.from_file(run_directory=run_dir, binary_operators=["+", "*"], n_features_in=2)
    return run


def _json_nested(data, run_dir):
    data.clear()
    (run_dir / "checkpoint.json").write_text("[" * 200_000 + "]" * 200_000)


def _json_huge(data, run_dir):
    data.clear()
    with open(run_dir / "checkpoint.json", "w") as f:
        f.write('{"format": "')
        chunk = "a" * 1_000_000
        for _ in range(200):
            f.write(chunk)
        f.write('"}')


def catalogue(sentinel: str) -> list[Case]:
    """Every hostile case (``sentinel``: the file a successful payload would create)."""
    texts = payloads(sentinel) + exhausting()
    cases = []
    for t in texts:
        cases += [
            Case("unary_operators", t, _fit(unary_operators=[t])),
            Case("unary_operators f(x) = ...", t, _fit(unary_operators=[f"f(x) = {t}"])),
            Case("binary_operators g(x, y) = ...", t, _fit(binary_operators=["+", f"g(x, y) = {t}"])),
            Case("elementwise_loss", t, _fit(elementwise_loss=t)),
            Case("elementwise_loss loss(x, y) = ...", t, _fit(elementwise_loss=f"loss(x, y) = {t}")),
            Case("loss_function", t, _fit(loss_function=t)),
            Case("early_stop_condition", t, _fit(early_stop_condition=f"f(loss, complexity) = {t}")),
            Case("guesses", t, _fit(guesses=[t])),
            Case("variable_names", t, _fit(variable_names=[t, "b"])),
            Case("extra_sympy_mappings", t, _fit(unary_operators=["cos"], extra_sympy_mappings={"cos": t})),
            Case("constraints key", t, _fit(constraints={t: 3})),
            Case("complexity_of_operators key", t, _fit(complexity_of_operators={t: 2})),
            Case("hall_of_fame.csv cell", t, _csv_cell(t)),
            Case("checkpoint.json equation", t, _edited_run(
                lambda d, _, t=t: d["fitted"]["outputs"][0][0].update(equation=t))),
            Case("checkpoint.json unary_operators", t, _edited_run(
                lambda d, _, t=t: d["params"].update(unary_operators=[t]))),
            Case("checkpoint.json elementwise_loss", t, _edited_run(
                lambda d, _, t=t: d["params"].update(elementwise_loss=t))),
            Case("checkpoint.json variable_names", t, _edited_run(
                lambda d, _, t=t: d["fitted"].update(variable_names=[t, "b"]))),
            Case("checkpoint.json population member", t, _edited_run(
                lambda d, _, t=t: d["state"][0]["populations"][0].insert(0, t))),
        ]
    cases += [
        Case("checkpoint.pkl", "pickle calling os.system", _pickled_run(sentinel)),
        Case("checkpoint.json", "200,000 nested lists", _edited_run(_json_nested)),
        Case("checkpoint.json", "a 200 MB file", _edited_run(_json_huge)),
        Case("checkpoint.json rng state", "bit_generator os.system", _edited_run(
            lambda d, _: d["state"][0].update(rng_states=[{"bit_generator": "os.system", "state": {}}]))),
        Case("checkpoint.json params", "a parameter of another name", _edited_run(
            lambda d, _: d["params"].update(__class__="os.system"))),
        Case("checkpoint.json output_directory", "a path outside the run", _edited_run(
            lambda d, _: d["params"].update(run_id="../../escape"))),
    ]
    return cases


class _Audit:
    """Counts audit events that mean code ran (installed once per process: audit hooks
    cannot be removed; ``armed`` turns the counting on)."""

    EVENTS = ("os.system", "subprocess.Popen", "os.exec", "os.posix_spawn")
    # Unpickling is normal (numba reads its compiled code from a cache that way); a class
    # from these modules is what a malicious pickle needs.
    DANGEROUS_BUILTINS = ("eval", "exec", "compile", "getattr", "setattr", "__import__", "open", "globals", "vars",
                          "input", "breakpoint", "delattr")
    DANGEROUS = ("os", "posix", "nt", "subprocess", "builtins", "sys", "shutil", "importlib", "runpy", "pty")
    installed = None

    def __init__(self):
        self.armed, self.events = False, []

    def __call__(self, event, args):
        if not self.armed:
            return
        if event in self.EVENTS:
            self.events.append(event)
        elif event == "pickle.find_class" and str(args[0]).split(".")[0] in self.DANGEROUS and (
                args[0] != "builtins" or args[1] in self.DANGEROUS_BUILTINS):
            self.events.append(f"pickle.find_class {args[0]}.{args[1]}")
        elif event == "compile" and args and isinstance(args[0], (str, bytes)) and (
                MARKER in str(args[0]) or "touch " in str(args[0])):
            self.events.append("compile of a payload")

    @classmethod
    def get(cls) -> "_Audit":
        if cls.installed is None:
            cls.installed = cls()
            sys.addaudithook(cls.installed)
        return cls.installed


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(case: Case, sentinel: Path) -> dict:
    """One case in a fresh temporary folder: outcome "refused", "inert" or "executed"."""
    audit = _Audit.get()
    work = Path(tempfile.mkdtemp(prefix="hostile_"))
    before, start = _peak_mib(), time.perf_counter()
    error = None
    audit.events.clear()
    audit.armed = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            case.run(work)
    except (ValueError, TypeError, OSError) as err:
        error = err
    except Exception as err:  # counted: a hostile input must be refused cleanly
        error = err
    finally:
        audit.armed = False
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - start
    executed = sentinel.exists() or bool(audit.events)
    if sentinel.exists():
        sentinel.unlink()
    if executed:
        outcome = "executed"
    elif error is None:
        outcome = "inert"
    elif isinstance(error, (ValueError, TypeError, OSError)) and raised_by_us(error):
        outcome = "refused"
    else:
        outcome = "unclear error"
    return {"where": case.where, "text": case.text, "outcome": outcome, "seconds": seconds,
            "memory_mib": max(0.0, _peak_mib() - before), "events": list(audit.events),
            "error": "" if error is None else f"{type(error).__name__}: {str(error)[:200]}"}


def run_all() -> list[dict]:
    sentinel = Path(tempfile.gettempdir()) / f"{MARKER}_sentinel"
    if sentinel.exists():
        sentinel.unlink()
    warm = Path(tempfile.mkdtemp(prefix="hostile_warm_"))
    try:  # imports and compiled code loaded before the first case is timed
        _valid_run(warm)
    finally:
        shutil.rmtree(warm, ignore_errors=True)
    return [run_case(c, sentinel) for c in catalogue(str(sentinel))]


def _short(text: str) -> str:
    text = text.replace("\n", "\\n").replace("|", "\\|")
    return text if len(text) <= 50 else f"{text[:40]}... ({len(text):,} chars)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.hostile_inputs",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    results = run_all()
    say = Report()
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    say(f"Hostile strings and files: {len(results)} cases\n")
    say("| outcome | cases |")
    say("|---|---:|")
    for outcome in ("refused", "inert", "executed", "unclear error"):
        say(f"| {outcome} | {counts.get(outcome, 0)} |")
    slow = max(results, key=lambda r: r["seconds"])
    big = max(results, key=lambda r: r["memory_mib"])
    say(f"\nSlowest case: {slow['seconds']:.2f} s ({slow['where']}: `{_short(slow['text'])}`); largest memory "
        f"growth of one case: {big['memory_mib']:.0f} MiB ({big['where']}: `{_short(big['text'])}`; the process's "
        "peak, which only grows, so later cases show 0).\n")
    inert = sorted({(r["where"], _short(r["text"])) for r in results if r["outcome"] == "inert"})
    if inert:
        say("Accepted as inert data (nothing run):\n")
        for where, text in inert:
            say(f"- {where}: `{text}`")
    bad = [r for r in results if r["outcome"] in ("executed", "unclear error")]
    if bad:
        say("\nExecuted or unclear:\n")
        for r in bad:
            say(f"- {r['where']}: `{_short(r['text'])}`: {r['outcome']} {r['events']} {r['error']}")
    print(f"\nwritten: {say.write(output_dir(False, args.out) / OUTPUT_FILE)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
