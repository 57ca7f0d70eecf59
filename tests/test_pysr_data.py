"""The drop-in's data handling: batching, denoising, feature selection, per-variable
complexity, column names with spaces, and several outputs."""
import warnings

import numpy as np
import pandas as pd
import pytest
import sympy
import torch

from enhancements import PySRRegressor, run_feature_selection
from enhancements.hybrid_optimization.batching import batch_rows
from enhancements.hybrid_optimization.evolution import Search
from enhancements.hybrid_optimization.options import Options

TINY = dict(niterations=1, populations=2, population_size=10, tournament_selection_n=5, ncycles_per_iteration=10,
            soft_tree_seed_fraction=0.0, verbosity=0, progress=False, random_state=0)
rng = np.random.default_rng(5)
X = rng.uniform(0.5, 3, (80, 3))


# --- batching -------------------------------------------------------------------------------

def test_batching_rules_follow_pysr():
    assert batch_rows(False, 50, 10**6) is None
    assert batch_rows(True, 50, 10**6) == 50 and batch_rows(True, 500, 80) == 80
    assert [batch_rows("auto", None, n) for n in (1000, 1001, 4999, 5000, 49_999, 50_000)] == \
        [None, 128, 128, 256, 256, 512]
    with pytest.warns(UserWarning, match="`batch_size` has been increased to equal one"):
        assert Options(batch_size=0, soft_tree_seed_fraction=0).batch_size == 1


def test_batching_scores_mutants_on_batches_and_the_hall_of_fame_on_all_rows(monkeypatch):
    Xt = torch.as_tensor(X)
    yt = torch.as_tensor(X[:, 0] * X[:, 1] + X[:, 2])
    sizes = []
    from enhancements.hybrid_optimization import scoring
    original = scoring.Scorer.score

    def spy(self, exprs):
        sizes.append(int(self.y.shape[0]))
        return original(self, exprs)

    monkeypatch.setattr(scoring.Scorer, "score", spy)
    opts = Options(**{**TINY, "niterations": 2, "batching": True, "batch_size": 16})
    search = Search(Xt, yt, None, opts)
    search.run()
    assert 16 in sizes and 80 in sizes                  # batches for mutants, all rows for the hall of fame
    assert sizes.count(16) > sizes.count(80)
    for entry in search.hof.pareto_front():              # every front loss is the loss on all rows
        full = torch.mean((entry.expr.evaluate(Xt) - yt) ** 2)
        assert entry.loss == pytest.approx(float(full), rel=1e-9, abs=1e-15)


def test_batched_fit_recovers_a_formula_and_is_reproducible():
    y = X[:, 0] * X[:, 1]
    a = PySRRegressor(**{**TINY, "niterations": 3}, batching=True, batch_size=20).fit(X, y)
    b = PySRRegressor(**{**TINY, "niterations": 3}, batching=True, batch_size=20).fit(X, y)
    assert list(a.equations_["equation"]) == list(b.equations_["equation"])
    assert a.equations_["loss"].min() < 1e-20


# --- preprocessing ------------------------------------------------------------------------------

def test_select_k_features_keeps_the_informative_columns_and_their_names():
    data = np.random.default_rng(1).normal(size=(300, 8))
    y = data[:, 3] ** 2 - data[:, 6]
    assert np.flatnonzero(run_feature_selection(data, y, 2, random_state=0)).tolist() == [3, 6]
    df = pd.DataFrame(data, columns=[f"c{i}" for i in range(8)])
    model = PySRRegressor(**{**TINY, "niterations": 3}, select_k_features=2, unary_operators=["square"]).fit(df, y)
    assert model.selection_mask_.tolist() == [i in (3, 6) for i in range(8)]
    assert model.variable_names_ == ["c3", "c6"]
    assert {s.name for s in model.sympy().free_symbols} <= {"c3", "c6"}
    assert model.n_features_in_ == 8
    assert np.allclose(model.predict(df), model.predict(data[:, [3, 6]]))   # all columns, or the selected ones


def test_denoise_smooths_y_before_the_search():
    Xd = np.linspace(0, 3, 60).reshape(-1, 1)
    noisy = 2 * Xd[:, 0] + np.random.default_rng(0).normal(scale=0.2, size=60)
    model = PySRRegressor(**TINY, denoise=True).fit(Xd, noisy)
    plain = PySRRegressor(**TINY).fit(Xd, noisy)
    # the smoothed target is closer to the truth, so the best loss against it is lower
    assert model.equations_["loss"].min() < plain.equations_["loss"].min()


def test_xresampled_gives_the_points_the_smoothed_y_is_taken_at():
    Xd = np.linspace(0, 3, 40).reshape(-1, 1)
    y = 2 * Xd[:, 0]
    resampled = np.linspace(0, 3, 25).reshape(-1, 1)
    model = PySRRegressor(**TINY, denoise=True).fit(Xd, y, Xresampled=resampled)
    assert model.n_features_in_ == 1 and np.isfinite(model.predict(resampled)).all()


# --- complexities, names ----------------------------------------------------------------------

def test_complexity_of_variables_per_variable_in_fit():
    y = X[:, 0] + X[:, 1] + X[:, 2]
    model = PySRRegressor(**{**TINY, "niterations": 2}).fit(X, y, complexity_of_variables=[1, 5, 1])
    row = model.equations_.iloc[int(np.argmin(model.equations_["loss"]))]
    expr = model.expressions_[int(np.argmin(model.equations_["loss"]))]
    counts = [sum(1 for n in expr.nodes() if n.feature == i) for i in range(3)]
    n_ops = sum(1 for n in expr.nodes() if n.op is not None)
    n_const = sum(1 for n in expr.nodes() if n.is_constant)
    assert row["complexity"] == counts[0] + 5 * counts[1] + counts[2] + n_ops + n_const
    with pytest.raises(ValueError, match="cannot set `complexity_of_variables` at both"):
        PySRRegressor(**TINY, complexity_of_variables=2).fit(X, y, complexity_of_variables=[1, 1, 1])
    with pytest.raises(ValueError, match="number of elements in `complexity_of_variables`"):
        PySRRegressor(**TINY).fit(X, y, complexity_of_variables=[1, 1])


def test_dataframe_columns_with_spaces_are_accepted():
    df = pd.DataFrame(X[:, :2], columns=["mass kg", "speed"])
    with pytest.warns(UserWarning, match="Spaces in DataFrame column names are not supported"):
        model = PySRRegressor(**TINY).fit(df, X[:, 0] * X[:, 1])
    assert model.variable_names_ == ["mass_kg", "speed"]
    assert {s.name for s in model.sympy().free_symbols} <= {"mass_kg", "speed"}
    assert np.allclose(model.predict(df), model.predict(X[:, :2]))


# --- several outputs ------------------------------------------------------------------------

def test_several_outputs_get_one_front_each():
    Y = np.stack([3.0 * X[:, 0], X[:, 2] + 1.0], axis=1)
    model = PySRRegressor(**{**TINY, "niterations": 2, "linear_scaling": True}).fit(X, Y)
    assert model.nout_ == 2 and isinstance(model.equations_, list) and len(model.equations_) == 2
    pred = model.predict(X)
    assert pred.shape == (80, 2)
    assert np.allclose(pred, Y, atol=1e-8)
    exprs = model.sympy()
    assert isinstance(exprs, list) and len(exprs) == 2
    x0, x1, x2 = sympy.symbols("x0 x1 x2")
    assert sympy.simplify(exprs[0] - 3 * x0) == 0 and sympy.simplify(exprs[1] - (x2 + 1)) == 0
    assert len(model.latex()) == 2
    table = model.latex_table()
    assert table.count("\\begin{tabular}") == 2 and "y_{0} =" in table and "y_{1} =" in table
    assert [s["loss"] for s in model.get_best()] == [f["loss"].iloc[model._pick(j)]
                                                    for j, f in enumerate(model.equations_)]
    assert model.predict(X, index=[0, 0]).shape == (80, 2)
    with pytest.raises(TypeError, match="index must be a list"):
        model.predict(X, index=0)
    text = repr(model)
    assert text.count(">>>>") == 2


def test_a_one_column_y_is_one_output():
    model = PySRRegressor(**TINY).fit(X, (X[:, 0] * 2)[:, None])
    assert model.nout_ == 1 and isinstance(model.equations_, pd.DataFrame) and model.predict(X).shape == (80,)
