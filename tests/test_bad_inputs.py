"""Generated bad input (experiments/bad_inputs.py): every case is a fit or a clear
ValueError/TypeError from this project's checks, never a crash. CI runs 300 cases;
``python -m experiments.bad_inputs`` runs 10,000."""
import numpy as np
import pandas as pd
import pytest

from experiments.bad_inputs import Recipe, build, run_case, run_many


def test_generated_cases_fit_or_are_refused_clearly():
    seen = run_many(300)
    crashes = [(str(r), d) for r, outcome, d in seen if outcome == "crash"]
    assert not crashes, crashes[:5]
    outcomes = {outcome for _, outcome, _ in seen}
    assert {"fit", "refused"} <= outcomes  # the generator makes both kinds


def _recipe(**changes):
    base = dict(target="fit", rows=12, features=2, fault="none", fault_share=0.3, dtype="float64",
                container="numpy", y_form="numpy", shape="ok", weights="none", names="none", odd_names=["a b"],
                seed=0)
    base.update(changes)
    return Recipe(**base)


@pytest.mark.parametrize("changes, expected", [
    (dict(), "fit"),
    (dict(fault="nan"), "refused"),
    (dict(dtype="datetime", container="pandas_datetime"), "refused"),
    (dict(shape="y_short"), "refused"),
    (dict(container="torch32", y_form="frame"), "fit"),
])
def test_the_classifier_tells_fits_from_refusals(changes, expected):
    assert run_case(_recipe(**changes))[0] == expected


def test_a_crash_is_reported_as_one(monkeypatch):
    # An error from deep inside a library (not our checks) must count as a crash, so
    # that the test above could fail.
    import enhancements.hybrid_optimization.regressor as regressor

    def deep(*args, **kwargs):
        return np.linalg.inv(np.zeros((2, 2)))
    monkeypatch.setattr(regressor.PySRRegressor, "fit", deep)
    outcome, detail = run_case(_recipe())
    assert outcome == "crash" and "LinAlgError" in detail


def test_messages_name_the_column_and_row():
    from enhancements import PySRRegressor
    X = pd.DataFrame({"a": np.ones(6), "b": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0]})
    with pytest.raises(ValueError, match=r"X column 'b' has missing values .* first at row 2"):
        PySRRegressor().fit(X, np.ones(6))
    arr = np.ones((6, 3))
    arr[4, 2] = np.inf
    with pytest.raises(ValueError, match=r"first at row 4 \(column 2, value inf\)"):
        PySRRegressor().fit(arr, np.ones(6))
    with pytest.raises(TypeError, match=r"X column 'a' holds a value that is not a real number at row 1: 'x'"):
        PySRRegressor().fit(pd.DataFrame({"a": [1.0, "x", 2.0]}), np.ones(3))
    with pytest.raises(ValueError, match=r"masked array with 1 masked value\(s\), first at row 0, column 1"):
        PySRRegressor().fit(np.ma.masked_array(np.ones((3, 2)), mask=[[0, 1], [0, 0], [0, 0]]), np.ones(3))


def test_build_makes_what_the_recipe_says():
    X, y, w, names = build(_recipe(container="pandas_nullable", weights="negative", names="ok"))
    assert isinstance(X, pd.DataFrame) and str(X.dtypes.iloc[0]) == "Int64" and X.iloc[0, 0] is pd.NA
    assert (w < 0).all() and names == ["v_0", "v_1"]


@pytest.mark.slow
def test_ten_thousand_generated_cases_never_crash():
    seen = run_many(10_000)
    assert len(seen) == 10_000
    assert not [(str(r), d) for r, outcome, d in seen if outcome == "crash"][:5]
