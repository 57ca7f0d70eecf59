"""The drop-in's saved runs: the run directory, its files rewritten atomically after
every iteration, from_file, refresh, warm_start, SIGKILL, and crafted files that must
execute nothing."""
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from enhancements import PySRRegressor
from enhancements.hybrid_optimization import run_directory as rundir

FAST = dict(niterations=3, populations=4, population_size=20, ncycles_per_iteration=40, soft_tree_seed_fraction=0.0,
            verbosity=0, progress=False, random_state=0)
rng = np.random.default_rng(11)
X = rng.uniform(1, 3, (80, 2))
Y = X[:, 0] ** 2 + 2.0 * X[:, 1]


def test_run_directory_files_as_pysr(tmp_path):
    model = PySRRegressor(**FAST, output_directory=str(tmp_path), run_id="my_run").fit(X, Y)
    run = tmp_path / "my_run"
    assert model.run_id_ == "my_run" and model.output_directory_ == str(tmp_path)
    assert {p.name for p in run.iterdir()} == {"hall_of_fame.csv", "hall_of_fame.csv.bak", "checkpoint.json"}
    lines = (run / "hall_of_fame.csv").read_text().splitlines()
    assert lines[0] == "Complexity,Loss,Equation"
    assert len(lines) == len(model.equations_) + 1 and all(line.count('"') >= 2 for line in lines[1:])
    table = rundir.read_hall_of_fame(run)
    assert list(table["equation"]) == list(model.equations_["equation"])
    assert np.allclose(table["loss"], model.equations_["loss"], rtol=1e-15, atol=0)
    saved = json.loads((run / "checkpoint.json").read_text())
    assert saved["status"] == "finished" and saved["params"]["niterations"] == 3


def test_default_run_id_is_pysrs_format(tmp_path):
    model = PySRRegressor(**{**FAST, "niterations": 1}, output_directory=str(tmp_path)).fit(X, Y)
    stamp, clock, suffix = model.run_id_.split("_")
    assert len(stamp) == 8 and len(clock) == 6 and len(suffix) == 6 and suffix.isalnum()


def test_the_csv_is_rewritten_atomically_after_every_iteration(tmp_path, monkeypatch):
    writes = []
    original = rundir.write_atomic

    def spy(path, text):
        writes.append(path.name)
        assert not path.exists() or path.read_text()       # the old file is complete until replaced
        return original(path, text)

    monkeypatch.setattr(rundir, "write_atomic", spy)
    PySRRegressor(**FAST, output_directory=str(tmp_path), run_id="r").fit(X, Y)
    # every iteration writes the .bak, then the CSV; the final write after the search once more
    assert writes.count("hall_of_fame.csv") == FAST["niterations"] + 1
    assert writes.count("hall_of_fame.csv.bak") == FAST["niterations"] + 1
    assert writes[0] == "checkpoint.json"                  # the saved model, before the search
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_a_failing_write_leaves_the_last_good_file(tmp_path, monkeypatch):
    path = tmp_path / "hall_of_fame.csv"
    rundir.write_hall_of_fame(tmp_path, [(1, 1.0, "x0")])
    good = path.read_text()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        rundir.write_hall_of_fame(tmp_path, [(1, 0.5, "x1")])
    assert path.read_text() == good
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_from_file_round_trips_a_finished_run(tmp_path):
    model = PySRRegressor(**FAST, unary_operators=["cos", "myinv(x) = 1/x"], output_directory=str(tmp_path),
                          run_id="done").fit(X, Y, variable_names=["a", "b"])
    loaded = PySRRegressor.from_file(run_directory=tmp_path / "done")
    assert list(loaded.equations_["equation"]) == list(model.equations_["equation"])
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert loaded.get_params()["unary_operators"] == ["cos", "myinv(x) = 1/x"]
    assert str(loaded.sympy()) == str(model.sympy())
    assert loaded.variable_names_ == ["a", "b"]


def test_from_file_rebuilds_a_run_without_checkpoint_from_its_csv(tmp_path):
    model = PySRRegressor(**FAST, output_directory=str(tmp_path), run_id="csv").fit(X, Y)
    (tmp_path / "csv" / "checkpoint.json").unlink()
    with pytest.raises(ValueError, match="you must provide either `operators`"):
        PySRRegressor.from_file(run_directory=tmp_path / "csv")
    loaded = PySRRegressor.from_file(run_directory=tmp_path / "csv", binary_operators=["+", "-", "*", "/"],
                                     n_features_in=2)
    assert np.allclose(loaded.predict(X), model.predict(X))


def test_refresh_rereads_the_csv(tmp_path):
    model = PySRRegressor(**FAST, output_directory=str(tmp_path), run_id="r").fit(X, Y)
    rundir.write_hall_of_fame(model.run_directory_, [(1, 9.0, "x0"), (3, 1.0, "x0 * x1")])
    model.refresh()
    assert list(model.equations_["equation"]) == ["x0", "x0 * x1"]
    assert np.allclose(model.predict(X, index=1), X[:, 0] * X[:, 1])


def test_warm_start_continues_the_last_search(tmp_path):
    model = PySRRegressor(**{**FAST, "niterations": 1}, output_directory=str(tmp_path), warm_start=True)
    model.fit(X, Y)
    first = model.search_state_[0]
    best_first = model.equations_["loss"].min()
    run_id = model.run_id_
    model.fit(X, Y)
    assert model.search_state_[0].iterations == first.iterations + 1
    assert model.run_id_ == run_id
    assert model.equations_["loss"].min() <= best_first
    cold = PySRRegressor(**{**FAST, "niterations": 1}, output_directory=str(tmp_path)).fit(X, Y)
    assert cold.search_state_[0].iterations == 1


def test_warm_start_after_from_file(tmp_path):
    PySRRegressor(**{**FAST, "niterations": 1}, output_directory=str(tmp_path), run_id="w").fit(X, Y)
    loaded = PySRRegressor.from_file(run_directory=tmp_path / "w", warm_start=True)
    before = loaded.equations_["loss"].min()
    loaded.fit(X, Y)
    assert loaded.search_state_[0].iterations == 2 and loaded.equations_["loss"].min() <= before


def test_temporary_run_files_are_deleted(tmp_path):
    model = PySRRegressor(**{**FAST, "niterations": 1}, temp_equation_file=True, tempdir=str(tmp_path)).fit(X, Y)
    assert not os.path.exists(model.output_directory_)
    kept = PySRRegressor(**{**FAST, "niterations": 1}, temp_equation_file=True, tempdir=str(tmp_path),
                         delete_tempfiles=False).fit(X, Y)
    assert (kept.run_directory_ / "hall_of_fame.csv").exists()


def test_an_unwritable_output_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot create the run directory"):
        PySRRegressor(**FAST, output_directory=str(blocker)).fit(X, Y)


_CHILD = textwrap.dedent("""
    import numpy as np, sys
    from enhancements import PySRRegressor
    X = np.random.default_rng(0).uniform(1, 3, (100, 2)); y = X[:, 0] * X[:, 1] + np.cos(X[:, 0])
    PySRRegressor(niterations=10**6, populations=4, population_size=20, ncycles_per_iteration=40,
                  unary_operators=["cos"], progress=False, verbosity=1, random_state=0,
                  soft_tree_seed_fraction=0, output_directory=sys.argv[1], run_id="killed").fit(X, y)
""")


def test_a_run_killed_with_sigkill_loads_and_continues(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in child.stdout:
            if line.startswith("iteration 3:"):
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=600)                             # a guard against a hang, not a speed limit
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    run = tmp_path / "killed"
    table = rundir.read_hall_of_fame(run)
    assert len(table) >= 1
    model = PySRRegressor.from_file(run_directory=run)       # the checkpoint written after iteration 3
    assert model.search_state_[0].iterations >= 3
    assert np.isfinite(model.predict(X)).all()
    model.set_params(niterations=1, warm_start=True)
    before = model.equations_["loss"].min()
    model.fit(*_child_data())
    assert model.search_state_[0].iterations >= 4 and model.equations_["loss"].min() <= before


def _child_data():
    X = np.random.default_rng(0).uniform(1, 3, (100, 2))
    return X, X[:, 0] * X[:, 1] + np.cos(X[:, 0])


# --- crafted files ----------------------------------------------------------------------------

class _Boom:
    def __reduce__(self):
        return (os.system, ("touch HACKED",))


def _valid_run(tmp_path):
    model = PySRRegressor(**{**FAST, "niterations": 1}, output_directory=str(tmp_path), run_id="ok").fit(X, Y)
    return model.run_directory_


@pytest.mark.parametrize("equation", ["__import__('os').system('touch HACKED')", "x0.__class__",
                                      "(lambda: 1)()", "{x0}", "x0; import os", "f'{x0}'", "x0" + "+x0" * 20000,
                                      "(" * 5000 + "x0" + ")" * 5000])
def test_crafted_equations_in_a_saved_run_execute_nothing(tmp_path, equation):
    run = _valid_run(tmp_path)
    data = json.loads((run / "checkpoint.json").read_text())
    data["fitted"]["outputs"][0][0]["equation"] = equation
    (run / "checkpoint.json").write_text(json.dumps(data))
    with pytest.raises(ValueError):
        PySRRegressor.from_file(run_directory=run)
    (run / "checkpoint.json").unlink()
    text = (run / "hall_of_fame.csv").read_text().splitlines()
    text[1] = f'1,1.0,"{equation}"'
    (run / "hall_of_fame.csv").write_text("\n".join(text) + "\n")
    (run / "hall_of_fame.csv.bak").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError):
        PySRRegressor.from_file(run_directory=run, binary_operators=["+", "*"], n_features_in=2)
    assert not os.path.exists("HACKED") and not (tmp_path / "HACKED").exists()


def test_a_pickle_in_a_run_directory_is_never_loaded(tmp_path):
    run = _valid_run(tmp_path)
    (run / "checkpoint.json").unlink()
    (run / "checkpoint.pkl").write_bytes(pickle.dumps(_Boom()))
    with pytest.warns(UserWarning, match="not loaded"):
        model = PySRRegressor.from_file(run_directory=run, binary_operators=["+", "-", "*", "/"], n_features_in=2)
    assert len(model.equations_) >= 1
    assert not os.path.exists("HACKED")


@pytest.mark.parametrize("edit", [
    lambda d: d.update(format="something else"),
    lambda d: d.update(version=99),
    lambda d: d["params"].update(binary_operators=["__import__"]),
    lambda d: d["params"].update(elementwise_loss="f(x, y) = __import__(x)"),
    lambda d: d["params"].update(unary_operators=["evil(x) = exec(x)"]),
    lambda d: d["fitted"].update(variable_names=["os.system", "b"]),
    lambda d: d.update(state=[{"populations": [["x0.__class__"]]}]),
    lambda d: d.update(state=[{"populations": [], "rng_states": [{"bit_generator": "os.system"}]}]),
])
def test_crafted_checkpoints_are_refused(tmp_path, edit):
    run = _valid_run(tmp_path)
    data = json.loads((run / "checkpoint.json").read_text())
    edit(data)
    (run / "checkpoint.json").write_text(json.dumps(data))
    with pytest.raises((ValueError, TypeError)):
        PySRRegressor.from_file(run_directory=run).fit(X, Y)
    assert not os.path.exists("HACKED")


def test_a_checkpoint_that_is_not_json_or_too_deep_is_refused(tmp_path):
    run = _valid_run(tmp_path)
    (run / "checkpoint.json").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        PySRRegressor.from_file(run_directory=run)
    (run / "checkpoint.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError):
        PySRRegressor.from_file(run_directory=run)
    assert not os.path.exists("HACKED")


def test_a_full_disk_mid_run_warns_keeps_the_last_good_csv_and_the_results(tmp_path, monkeypatch):
    import errno

    written = []
    real = rundir.write_atomic

    def filling_up(path, text):
        if len(written) >= 3:  # the disk fills after three files
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)
        written.append((Path(path).name, text))

    monkeypatch.setattr(rundir, "write_atomic", filling_up)
    with pytest.warns(UserWarning, match="No space left on device.*last complete files there are left"):
        model = PySRRegressor(**{**FAST, "niterations": 4}, output_directory=str(tmp_path), run_id="full").fit(X, Y)
    run = tmp_path / "full"
    last_csv = [text for name, text in written if name == "hall_of_fame.csv"][-1]
    assert (run / "hall_of_fame.csv").read_text() == last_csv           # the last good file, whole
    assert not list(run.glob(".*.tmp"))                                  # no half-written leftovers
    assert len(rundir.read_hall_of_fame(run)) >= 1
    assert model.stats_["iterations"] == 4 and np.isfinite(model.predict(X)).all()
