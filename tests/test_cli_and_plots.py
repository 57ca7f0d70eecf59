"""The command line (fit a CSV, show a run) and the plots."""
import subprocess
import sys

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from enhancements import PySRRegressor  # noqa: E402
from enhancements.cli import build_parser, estimator_params, main  # noqa: E402

TINY = dict(niterations=1, populations=2, population_size=10, tournament_selection_n=5, ncycles_per_iteration=10,
            soft_tree_seed_fraction=0.0, verbosity=0, progress=False, random_state=0)


@pytest.fixture
def csv_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 3, (60, 2))
    path = tmp_path / "data.csv"
    pd.DataFrame({"mass": X[:, 0], "speed": X[:, 1], "energy": 0.5 * X[:, 0] * X[:, 1] ** 2}).to_csv(path, index=False)
    return path


def test_fit_then_show_from_the_command_line(csv_file, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["fit", str(csv_file), "--target", "energy", "--niterations", "2", "--no-progress",
                 "--output-directory", str(runs), "--run-id", "cli", "--random-state", "0",
                 "--set", "soft_tree_seed_fraction=0", "--set", "populations=4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "PySRRegressor.equations_ = [" in out and ">>>>" in out and str(runs / "cli") in out
    assert (runs / "cli" / "hall_of_fame.csv").exists()
    model = PySRRegressor.from_file(run_directory=runs / "cli")
    assert {s.name for s in model.sympy().free_symbols} <= {"mass", "speed"}
    assert model.get_params()["populations"] == 4
    assert main(["show", str(runs / "cli")]) == 0
    shown = capsys.readouterr().out
    assert shown.splitlines()[0] == "PySRRegressor.equations_ = ["
    table = out[out.index("PySRRegressor.equations_"):out.index("Results saved to")]
    assert shown == table                              # the saved run prints as the fitted model did


def test_set_values_are_data_and_unknown_names_are_refused():
    args = build_parser().parse_args(["fit", "d.csv", "--target", "y", "--set", 'constraints={"/": [-1, 9]}',
                                      "--set", "elementwise_loss=L1DistLoss()", "--batching", "auto"])
    params = estimator_params(args)
    assert params == {"constraints": {"/": [-1, 9]}, "elementwise_loss": "L1DistLoss()", "batching": "auto"}
    with pytest.raises(SystemExit, match="not a PySRRegressor parameter.*niterations"):
        estimator_params(build_parser().parse_args(["fit", "d.csv", "--target", "y", "--set", "niteration=3"]))


def test_errors_are_messages_not_tracebacks(csv_file, capsys):
    with pytest.raises(SystemExit, match="no column"):
        main(["fit", str(csv_file), "--target", "power"])
    assert main(["fit", str(csv_file), "--target", "energy", "--unary-operators", "frobnicate",
                 "--niterations", "1"]) == 2
    assert "unknown operator" in capsys.readouterr().err


def test_help_documents_every_option_and_the_module_runs():
    out = subprocess.run([sys.executable, "-m", "enhancements", "fit", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ("--target", "--binary-operators", "--unary-operators", "--niterations", "--timeout",
                 "--output-directory", "--set"):
        assert flag in out
    assert "warm_start" in out                         # --set's parameters are listed


def test_plots_return_figures():
    rng = np.random.default_rng(1)
    X = rng.uniform(1, 3, (50, 2))
    y = X[:, 0] * X[:, 1]
    model = PySRRegressor(**TINY).fit(X, y)
    fig = model.plot_pareto()
    ax = fig.axes[0]
    assert ax.get_xlabel() == "complexity" and ax.get_yscale() == "log"
    assert len(ax.lines[1].get_xdata()) == len(model.equations_)
    fig2 = model.plot_fit(X, y)
    assert fig2.axes[0].get_xlabel() == "true" and "R2" in fig2.axes[0].get_title()
    points = fig2.axes[0].lines[0]
    assert np.allclose(points.get_ydata(), model.predict(X))
