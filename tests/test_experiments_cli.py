"""The benchmark scripts' command lines: --quick never writes over the tracked references,
--out chooses the folder, the tables a run prints are the tables it writes, and
``experiments.feynman --seeds`` takes a single seed."""
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from experiments import evaluator_throughput, feynman, search_throughput, speed_comparison
from experiments.outputs import QUICK_DIR, RESULTS_DIR, Report, output_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    # The benchmark mains set one torch thread for the whole process; give it back.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def speed_paths(argv):
    return speed_comparison.output_paths(speed_comparison.build_parser().parse_args(argv))


def evaluator_paths(argv):
    return [evaluator_throughput.output_path(evaluator_throughput.build_parser().parse_args(argv))]


def search_paths(argv):
    return [search_throughput.output_path(search_throughput.build_parser().parse_args(argv))]


SCRIPTS = {"speed_comparison": (speed_comparison, speed_paths),
           "evaluator_throughput": (evaluator_throughput, evaluator_paths),
           "search_throughput": (search_throughput, search_paths)}


def _git_ignored(paths) -> list[bool] | None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    out = []
    for path in paths:
        result = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT)
        out.append(result.returncode == 0)
    return out


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_runs_write_beside_the_references_not_over_them(name):
    module, paths = SCRIPTS[name]
    full, quick = paths([]), paths(["--quick"])
    # A full run writes the tracked references, which are there in the checkout ...
    assert all(p.parent == RESULTS_DIR for p in full)
    assert all((ROOT / p).is_file() for p in full), full
    # ... a quick run the same names under results/quick/, none of them a reference.
    assert [p.name for p in quick] == [p.name for p in full]
    assert all(p.parent == QUICK_DIR for p in quick)
    assert not set(quick) & set(full)
    ignored = _git_ignored(quick)
    if ignored is not None:
        assert all(ignored), quick
        assert not any(_git_ignored(full))
    # Each script's --help says where a quick run goes.
    assert "results/quick/" in " ".join(module.build_parser().format_help().split())


@pytest.mark.parametrize("name", SCRIPTS)
def test_out_chooses_the_folder(name, tmp_path):
    _, paths = SCRIPTS[name]
    for argv in (["--out", str(tmp_path)], ["--quick", "--out", str(tmp_path)]):
        assert all(p.parent == tmp_path for p in paths(argv))


def test_output_dir_and_report(tmp_path, capsys):
    assert output_dir(False) == RESULTS_DIR and output_dir(True) == QUICK_DIR
    assert output_dir(True, tmp_path) == tmp_path
    say = Report()
    say("| a |", "b")
    say("")
    written = say.write(tmp_path / "sub" / "t.md")
    assert capsys.readouterr().out == "| a | b\n\n"
    assert written.read_text() == "| a | b\n"


def test_evaluator_throughput_writes_what_it_prints(tmp_path, capsys):
    evaluator_throughput.main(["--formulas", "12", "--rounds", "2", "--repeats", "1", "--rows", "20",
                               "--max-size", "6", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    table = (tmp_path / "evaluator_throughput.md").read_text()
    assert "| (b) `IncrementalEvaluator` + `SubexpressionCache` |" in table
    assert printed.startswith(table) and printed[len(table):].strip().startswith("written:")


def test_search_throughput_writes_what_it_prints(tmp_path, capsys):
    assert search_throughput.main(["--equations", "I.12.1", "--max-evals", "300", "--runs", "1",
                                   "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    table = (tmp_path / "search_throughput.md").read_text()
    assert "| I.12.1 | on / off |" in table
    assert printed.startswith(table) and printed[len(table):].strip().startswith("written:")


@pytest.mark.parametrize("seeds, expected", [("0", [0]), ("1", [0]), ("3", [0, 1, 2]),
                                              ("5,", [5]), ("0,5,7", [0, 5, 7])])
def test_feynman_seeds_take_a_single_seed_a_count_or_a_list(seeds, expected):
    tasks = feynman.planned_tasks(["--method", "soft-tree", "--equations", "I.12.1", "--seeds", seeds])
    assert [t.seed for t in tasks] == expected


def test_feynman_seeds_zero_runs(tmp_path, monkeypatch):
    from experiments import feynman_methods
    from experiments.feynman_methods import MethodResult

    class Truth(feynman_methods.Method):
        name = "truth"

        def run(self, dataset, time_budget, seed):
            return MethodResult(expr=dataset.equation.sympy_expr, train_loss=0.0)

    monkeypatch.setitem(feynman_methods.METHODS, "truth", Truth)
    out = tmp_path / "t.csv"
    assert feynman.main(["--method", "truth", "--equations", "I.12.1", "--seeds", "0",
                         "--output", str(out), "--quiet"]) == 0
    (row,) = feynman.read_rows(out)
    assert row["seed"] == "0" and row["symbolic_solved"] == "True"


def test_feynman_default_output_is_not_a_reference():
    args = feynman.build_parser().parse_args(["--method", "search", "--all"])
    for method in ("search", "gplearn", "soft-tree", "optimized"):
        path = Path(args.output.replace("{method}", method))
        assert not (ROOT / path).exists() or _git_ignored([path]) in (None, [True])
        assert not path.name.endswith("_all_60s.csv")


def test_feynman_set_passes_any_estimator_parameter_to_the_search_and_keys_rows_by_it():
    def key(*sets):
        argv = ["--method", "search", "--equations", "I.12.1"]
        for item in sets:
            argv += ["--set", item]
        (task,) = feynman.planned_tasks(argv)
        return task.key()[-1]

    assert "linear_scaling=False" in key("linear_scaling=false")
    assert key("linear_scaling=false") != key()          # its rows are not taken for the default's
    with pytest.raises(ValueError, match="linear_scalin"):  # a misspelt option is not ignored
        feynman.planned_tasks(["--method", "search", "--equations", "I.12.1", "--set", "linear_scalin=false"])
    # an option one of the chosen methods takes is fine: the other ignores it
    tasks = feynman.planned_tasks(["--method", "search,soft-tree", "--equations", "I.12.1", "--set", "n_epochs=3"])
    assert "n_epochs" not in tasks[0].key()[-1] and "n_epochs=3" in tasks[1].key()[-1]
