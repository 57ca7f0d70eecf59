"""The Feynman runner: rows, resume, failures, parallel runs, budget loop, plots."""
import csv
import itertools
import types

import numpy as np
import pytest
import sympy

from experiments import feynman, feynman_methods, feynman_rescore
from experiments.feynman import COLUMNS, main, parse_seeds, select_equations
from experiments.feynman_data import get_equation, make_dataset
from experiments.feynman_methods import (MethodResult, SoftTreeMethod, gplearn_to_sympy,
                                         parse_expression, pick_best)

EQUATIONS = "I.12.1,I.25.13"  # mu*Nn and q/C: two variables, small ranges
# One fit of one short restart per equation: a budget this small never allows a second.
TINY = ["--equations", EQUATIONS, "--time-budget", "0.01", "--samples", "100",
        "--epochs", "30", "--restarts-per-fit", "1", "--quiet"]


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_smoke_rows_summary_and_resume(tmp_path, capsys):
    out = tmp_path / "soft.csv"
    assert main(["--method", "soft-tree", "--output", str(out)] + TINY) == 0
    printed = capsys.readouterr().out
    rows = read(out)
    assert len(rows) == 2 and list(rows[0]) == COLUMNS
    assert {r["equation"] for r in rows} == set(EQUATIONS.split(","))
    for r in rows:
        assert r["method"] == "soft-tree" and r["seed"] == "0" and r["error"] == ""
        assert r["formula"] and float(r["time"]) > 0 and r["n_fits"] == "1"
        assert np.isfinite(float(r["test_r2"])) and float(r["train_loss"]) >= 0
        assert r["symbolic_solved"] in ("True", "False")
    assert "| soft-tree | 2 | 2 |" in printed and "Unsolved by soft-tree" in printed
    assert "SRBench" in printed  # the samples deviation note
    assert "Rerun with --samples 10000" in printed and "n_samples=" not in printed

    # A rerun finds every row done: nothing is appended, the summary is the same.
    assert main(["--method", "soft-tree", "--output", str(out)] + TINY) == 0
    assert read(out) == rows
    assert "| soft-tree | 2 | 2 |" in capsys.readouterr().out
    # Another budget is another experiment: new rows.
    args = [a if a != "0.01" else "0.02" for a in TINY]
    assert main(["--method", "soft-tree", "--output", str(out), "--equations", "I.12.1"]
                + args[2:]) == 0
    assert len(read(out)) == 3


class Flaky(feynman_methods.Method):
    """Crashes on I.12.1, answers an unscorable formula on II.3.24, the truth elsewhere."""

    name = "flaky"

    def run(self, dataset, time_budget, seed):
        name = dataset.equation.name
        if name == "I.12.1":
            raise RuntimeError("boom on purpose")
        if name == "II.3.24":
            return MethodResult(expr=object())  # sympify cannot read this
        return MethodResult(expr=dataset.equation.sympy_expr, train_loss=0.0)


def test_failures_become_rows_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(feynman_methods.METHODS, "flaky", Flaky)
    out = tmp_path / "flaky.csv"
    assert main(["--method", "flaky", "--equations", "I.12.1,II.3.24,I.25.13",
                 "--output", str(out), "--quiet"]) == 0
    rows = {r["equation"]: r for r in read(out)}
    assert "RuntimeError: boom on purpose" in rows["I.12.1"]["error"]
    assert rows["I.12.1"]["error"].startswith("method:")
    assert rows["II.3.24"]["symbolic_solved"] == "False"
    assert rows["II.3.24"]["error"].startswith("scoring: SympifyError")
    assert rows["I.25.13"]["symbolic_solved"] == "True" and rows["I.25.13"]["error"] == ""
    printed = capsys.readouterr().out
    assert "| flaky | 3 | 3 | 1/3 (33%)" in printed and "boom on purpose" in printed

    # Crashes are not redone by a plain rerun, only with --retry-failed.
    main(["--method", "flaky", "--equations", "I.12.1", "--output", str(out), "--quiet"])
    assert len(read(out)) == 3
    main(["--method", "flaky", "--equations", "I.12.1", "--output", str(out), "--quiet",
          "--retry-failed"])
    assert len(read(out)) == 4


class Missing(feynman_methods.Method):
    name = "missing"

    def unavailable(self):
        return "not available: cannot import Something"


def test_unavailable_method_gives_failure_rows_that_a_rerun_redoes(tmp_path, monkeypatch):
    monkeypatch.setitem(feynman_methods.METHODS, "missing", Missing)
    out = tmp_path / "m.csv"
    for expected in (1, 2):
        main(["--method", "missing", "--equations", "I.12.1", "--output", str(out), "--quiet"])
        rows = read(out)
        assert len(rows) == expected and rows[-1]["error"].startswith("not available")


def test_a_cut_off_last_line_is_skipped_and_redone(tmp_path, monkeypatch):
    monkeypatch.setitem(feynman_methods.METHODS, "flaky", Flaky)
    out = tmp_path / "cut.csv"
    main(["--method", "flaky", "--equations", "I.25.13,I.14.3", "--output", str(out), "--quiet"])
    text = out.read_text()
    out.write_text(text[: text.rstrip().rfind("\n") + 40])  # half of the last row
    assert len(feynman.read_rows(out)) == 1  # the cut row is skipped, not misread
    main(["--method", "flaky", "--equations", "I.25.13,I.14.3", "--output", str(out), "--quiet"])
    rows = feynman.read_rows(out)
    assert sorted(r["equation"] for r in rows) == ["I.14.3", "I.25.13"]


def test_jobs_two_gives_the_rows_of_jobs_one(tmp_path):
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    assert main(["--method", "soft-tree", "--output", str(one), "--jobs", "1"] + TINY) == 0
    assert main(["--method", "soft-tree", "--output", str(two), "--jobs", "2"] + TINY) == 0

    def comparable(path):
        return sorted(tuple(v for k, v in r.items() if k != "time") for r in read(path))
    assert comparable(one) == comparable(two)


def test_bad_arguments_are_reported(capsys):
    for argv in (["--method", "nope", "--first", "1"], ["--equations", "I.99.9"],
                 ["--first", "2", "--seeds", "x"], []):
        with pytest.raises(SystemExit):
            main(argv)
    assert "unknown Feynman equation" in capsys.readouterr().err


def test_seed_and_equation_selection():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,5,7") == [0, 5, 7] and parse_seeds("7,") == [7]
    assert parse_seeds("0") == [0] and parse_seeds("1") == [0]  # 0: seed 0, not zero seeds
    for bad in ("-1", "x", "", ",", "1,-2"):
        with pytest.raises(ValueError):
            parse_seeds(bad)
    ns = types.SimpleNamespace
    assert len(select_equations(ns(equations=None, all=True, first=None, bonus=False))) == 100
    assert len(select_equations(ns(equations=None, all=False, first=None, bonus=True))) == 20
    assert len(select_equations(ns(equations=None, all=True, first=None, bonus=True))) == 120
    assert select_equations(ns(equations=None, all=False, first=2, bonus=False)) == \
        ["I.6.2a", "I.6.2"]
    with pytest.raises(ValueError, match="close names"):
        select_equations(ns(equations="I.12.l", all=False, first=None, bonus=False))


class FakeTrainer:
    """Takes one fake second per restart; losses come from a shared script."""

    clock = 0.0
    losses = None
    calls = []

    def __init__(self, model, random_state, n_restarts):
        self.model, self.random_state, self.n_restarts = model, random_state, n_restarts

    def fit(self, X, y, n_epochs):
        FakeTrainer.clock += self.n_restarts
        FakeTrainer.calls.append((self.random_state, self.n_restarts))
        loss, feature = next(FakeTrainer.losses)
        from pysr_baseline.expression import Expression
        expr = Expression.var(0)
        for _ in range(feature):  # bigger formulas for later features
            expr = Expression.apply("*", Expression.var(0), expr)
        self.model.fitted_expression = expr
        return types.SimpleNamespace(nmse=loss)


class FakeSoftTree(SoftTreeMethod):
    def trainer_class(self):
        return FakeTrainer


@pytest.fixture
def fake_trainer():
    FakeTrainer.clock, FakeTrainer.calls = 0.0, []
    return FakeSoftTree(restarts_per_fit=4, clock=lambda: FakeTrainer.clock)


def test_budget_loop_stops_before_overrunning(fake_trainer):
    FakeTrainer.losses = itertools.repeat((0.5, 0))
    data = make_dataset(get_equation("I.12.1"), n_samples=20, seed=0)
    result = fake_trainer.run(data, time_budget=10.0, seed=3)
    # A one-restart probe, 4 + 4 restarts, then only 1 fits in what is left; the budget
    # is used and never exceeded.
    assert FakeTrainer.calls == [(3, 1), (1003, 4), (2003, 4), (3003, 1)]
    assert FakeTrainer.clock == 10.0 and result.n_fits == 4
    # A budget smaller than one restart still gets the probe.
    FakeTrainer.calls = []
    fake_trainer.run(data, time_budget=0.001, seed=0)
    assert FakeTrainer.calls == [(0, 1)]


def test_budget_loop_stops_at_an_exact_fit_and_prefers_simple(fake_trainer):
    data = make_dataset(get_equation("I.12.1"), n_samples=20, seed=0)
    FakeTrainer.losses = iter([(0.5, 0), (1e-13, 3), (0.0, 0)])
    result = fake_trainer.run(data, time_budget=100.0, seed=0)
    assert result.n_fits == 2 and result.train_loss == 1e-13
    FakeTrainer.losses = iter([(0.10, 4), (0.11, 1), (0.2, 0), (0.3, 0)])
    result = fake_trainer.run(data, time_budget=13.0, seed=0)  # 1 + 4 + 4 + 4 restarts
    assert result.train_loss == 0.11 and result.expr == sympy.Symbol("mu") ** 2
    assert pick_best([(float("inf"), 1), (float("nan"), 2)]) == 0


def test_whitelist_converter():
    assert gplearn_to_sympy("add(mul(X0, X1), -0.5)", ["a", "b"]) == \
        sympy.Symbol("a") * sympy.Symbol("b") - 0.5
    x = sympy.Symbol("x")
    assert parse_expression("sqrt(Abs(x))/E + 1.5e-3", {"x": x}) == \
        sympy.sqrt(sympy.Abs(x)) / sympy.E + 1.5e-3
    for bad in ("__import__('os')", "x.real", "open(x)", "add(X0)", "x**999", "lambda: 1",
                "X2"):
        with pytest.raises(ValueError):
            if bad.startswith(("add", "X")):
                gplearn_to_sympy(bad, ["a", "b"])
            else:
                parse_expression(bad, {"x": x})


def test_plots_are_written(tmp_path):
    from experiments.feynman_plots import make_plots
    rows = [feynman.typed({
        "method": m, "equation": eq, "seed": "0", "samples": "100", "noise": "0.0",
        "time_budget": "1.0", "settings": "", "time": t, "train_loss": "0.0",
        "test_r2": r2, "accuracy_solved": str(float(r2) > 0.999), "symbolic_solved": s,
        "reason": "", "formula": f, "complexity": "3", "n_fits": "1", "error": ""})
        for m, eq, t, r2, s, f in [
            ("a", "I.12.1", "1.5", "1.0", "True", "mu*Nn"),
            ("a", "I.25.13", "2.0", "0.5", "False", "q + C"),
            ("b", "I.12.1", "", "-inf", "False", ""),
            ("b", "I.25.13", "0.5", "0.2", "False", "zoo*q")]]
    paths = make_plots(rows, tmp_path, prefix="t", scatter_equation="I.12.1", time_budget=1.0)
    assert [p.name for p in paths] == ["t_solution_rates.png", "t_time_per_equation.png",
                                       "t_scatter_I.12.1.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


# --- rescoring from the formula column, under both rounding rules -------------------------------

RESULTS = __import__("pathlib").Path(__file__).resolve().parents[1] / "results"
TRACKED = [RESULTS / "feynman_search_all_60s.csv", RESULTS / "feynman_gplearn_all_60s.csv"]
VERDICTS = ("symbolic_solved", "reason", "symbolic_solved_significant", "reason_significant")


def _sample_rows():
    """A few tracked rows of each file: solved by difference, by ratio, and not solved."""
    picked = []
    for path in TRACKED:
        rows = read(path)
        for reason in ("difference constant", "ratio constant", "not equivalent"):
            picked += [r for r in rows if r["reason"] == reason][:1]
    return picked


def test_tracked_csvs_carry_both_rules_and_rescoring_rows_gives_their_verdicts():
    for path in TRACKED:
        assert list(read(path)[0]) == COLUMNS
    rows = _sample_rows()
    assert {r["method"] for r in rows} == {"search", "gplearn"} and len(rows) >= 5
    for row in rows:
        again = feynman_rescore.rescore_row(row)
        assert {k: str(again[k]) for k in VERDICTS} == {k: row[k] for k in VERDICTS}, row["equation"]
        assert {k: str(v) for k, v in again.items() if k not in VERDICTS} == \
            {k: v for k, v in row.items() if k not in VERDICTS}


def test_rescoring_an_older_file_adds_the_second_rule(tmp_path, capsys):
    old = [c for c in COLUMNS if c not in ("symbolic_solved_significant", "reason_significant")]
    assert feynman.LEGACY_COLUMNS == old
    rows = _sample_rows()[:3]
    path = tmp_path / "old.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=old, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            # An older runner wrote the 3-significant-digit verdict as symbolic_solved.
            writer.writerow({**{c: r[c] for c in old}, "symbolic_solved": r["symbolic_solved_significant"],
                             "reason": r["reason_significant"]})
    with pytest.raises(ValueError, match="--rescore"):
        feynman.read_rows(path)
    assert main(["--rescore", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "3 rows rescored; 0 of its 3-significant-digit verdicts changed" in printed
    assert "symbolic solutions (SRBench: 3 decimal places)" in printed
    new = feynman.read_rows(path)
    assert [{k: r[k] for k in VERDICTS} for r in new] == [{k: r[k] for k in VERDICTS} for r in rows]
    assert not list(tmp_path.glob("*.rescoring"))  # the temporary file was renamed into place


def test_summary_counts_both_rules(tmp_path, capsys):
    base = {"method": "m", "seed": "0", "samples": "100", "noise": "0.0", "time_budget": "1.0",
            "settings": "", "time": "1.0", "train_loss": "0.0", "test_r2": "1.0",
            "accuracy_solved": "True", "formula": "x", "complexity": "1", "n_fits": "1", "error": ""}
    rows = [feynman.typed({**base, "equation": eq, "symbolic_solved": a, "reason": "",
                           "symbolic_solved_significant": b, "reason_significant": ""})
            for eq, a, b in [("I.12.1", "True", "False"), ("I.25.13", "True", "True"),
                             ("I.14.3", "False", "True")]]
    text = feynman.summarize(rows, ["m"])
    assert "| m | 3 | 3 | 2/3 (67%) | 2/3 (67%) |" in text
    assert "Solved by m under SRBench: 3 decimal places only (1): I.12.1 seed 0" in text
    assert "Solved by m under 3 significant digits only (1): I.14.3 seed 0" in text
    assert "Unsolved by m under SRBench: 3 decimal places (1): I.14.3" in text


def test_new_rows_carry_both_verdicts(tmp_path, monkeypatch):
    class Spurious(feynman_methods.Method):
        """The truth plus a 0.0004*(first variable) term: solved under SRBench's 3 decimal
        places, not under 3 significant digits."""
        name = "spurious"

        def run(self, dataset, time_budget, seed):
            eq = dataset.equation
            return MethodResult(expr=eq.sympy_expr + 0.0004 * eq.symbols[0], train_loss=0.0)

    monkeypatch.setitem(feynman_methods.METHODS, "spurious", Spurious)
    out = tmp_path / "s.csv"
    assert main(["--method", "spurious", "--equations", "I.12.1", "--seeds", "0",
                 "--output", str(out), "--quiet"]) == 0
    (row,) = read(out)
    assert row["seed"] == "0"
    assert (row["symbolic_solved"], row["symbolic_solved_significant"]) == ("True", "False")
    assert row["reason"] == "difference constant" and row["reason_significant"] == "not equivalent"
    assert {k: str(v) for k, v in feynman_rescore.rescore_row(row).items()} == row
