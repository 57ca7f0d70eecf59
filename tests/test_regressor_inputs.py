"""PySRRegressor on the inputs a new user hands it: unnamed DataFrames, calls before fit,
scikit-learn's sample_weight, and the errors for data or settings it cannot use."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import has_fit_parameter

from enhancements import PySRRegressor

# Tiny searches (well under a second each): these tests are about input handling, not recovery.
TINY = dict(niterations=1, populations=2, population_size=10, tournament_selection_n=5,
            ncycles_per_iteration=10, soft_tree_seed_fraction=0.0, verbosity=0, progress=False,
            random_state=0)
rng = np.random.default_rng(0)
X = rng.uniform(1, 4, (60, 2))
Y = X[:, 0] * X[:, 1]


def test_dataframe_without_string_columns_is_treated_as_an_array():
    m = PySRRegressor(**TINY).fit(pd.DataFrame(X), Y)          # columns 0 and 1
    assert not hasattr(m, "feature_names_in_")                 # as scikit-learn
    assert m.variable_names_ == ["x0", "x1"]
    assert {s.name for s in m.sympy().free_symbols} <= {"x0", "x1"}
    assert np.allclose(m.predict(pd.DataFrame(X)), m.predict(X))
    a = PySRRegressor(**TINY).fit(X, Y)
    assert not hasattr(a, "feature_names_in_") and list(a.equations_["equation"]) == list(m.equations_["equation"])
    # Mixed column types are not names either.
    assert not hasattr(PySRRegressor(**TINY).fit(pd.DataFrame(X, columns=["a", 1]), Y), "feature_names_in_")


def test_refit_on_an_array_forgets_the_column_names():
    m = PySRRegressor(**TINY).fit(pd.DataFrame(X, columns=["m", "a"]), Y)
    assert list(m.feature_names_in_) == ["m", "a"] and m.variable_names_ == ["m", "a"]
    m.fit(X, Y)
    assert not hasattr(m, "feature_names_in_") and m.variable_names_ == ["x0", "x1"]
    assert "x0" in repr(m) or "x1" in repr(m)


def test_column_name_that_is_not_an_identifier_is_named_in_the_error():
    df = pd.DataFrame(X, columns=["mass-kg", "accel"])
    with pytest.raises(ValueError, match=r"column 'mass-kg' of X .*identifiers.*'mass_kg'.*variable_names"):
        PySRRegressor(**TINY).fit(df, Y)
    m = PySRRegressor(**TINY).fit(df, Y, variable_names=["mass_kg", "accel"])   # the way out it names
    assert list(m.feature_names_in_) == ["mass_kg", "accel"]


@pytest.mark.parametrize("call", [
    lambda m: m.sympy(), lambda m: m.latex(), lambda m: m.get_best(), lambda m: m.get_best(0),
    lambda m: m.sympy(0), lambda m: m.predict(X), lambda m: m.score(X, Y),
], ids=["sympy", "latex", "get_best", "get_best(0)", "sympy(0)", "predict", "score"])
def test_accessors_before_fit_raise_not_fitted(call):
    with pytest.raises(NotFittedError, match="not fitted"):
        call(PySRRegressor())


def test_sample_weight_is_an_alias_of_weights():
    assert has_fit_parameter(PySRRegressor(), "sample_weight")  # what sklearn's meta-estimators look for
    w = np.where(X[:, 0] > 2.5, 3.0, 0.5)
    by_alias = PySRRegressor(**TINY).fit(X, Y + X[:, 1], sample_weight=w).equations_
    by_name = PySRRegressor(**TINY).fit(X, Y + X[:, 1], weights=w).equations_
    unweighted = PySRRegressor(**TINY).fit(X, Y + X[:, 1]).equations_
    assert list(by_alias["loss"]) == list(by_name["loss"]) != list(unweighted["loss"])
    PySRRegressor(**TINY).fit(X, Y, weights=w, sample_weight=w.copy())      # the same values: fine
    with pytest.raises(ValueError, match="weights and sample_weight"):
        PySRRegressor(**TINY).fit(X, Y, weights=w, sample_weight=np.ones(60))


@pytest.mark.parametrize("X_, y_, error, match", [
    (scipy.sparse.csr_matrix(X), Y, TypeError, r"sparse X is not supported.*dense"),
    (X, None, ValueError, r"y is required"),
    (X[:, 0], Y, ValueError, r"2-D.*X\.reshape\(-1, 1\)"),
    (X + 1j, Y, ValueError, r"Complex data not supported: X"),
    (pd.DataFrame({"a": X[:, 0] + 0j, "b": X[:, 1]}), Y, ValueError, r"Complex data not supported: X"),
    (X, Y.astype(complex), ValueError, r"Complex data not supported: y"),
    (torch.tensor(X, dtype=torch.complex128), Y, ValueError, r"Complex data not supported: X"),
], ids=["sparse", "y None", "1-D X", "complex X", "complex DataFrame", "complex y", "complex tensor"])
def test_bad_data_errors_say_what_to_do(X_, y_, error, match):
    with pytest.raises(error, match=match):
        PySRRegressor(**TINY).fit(X_, y_)


def test_predict_input_errors():
    m = PySRRegressor(**TINY).fit(X, Y)
    with pytest.raises(TypeError, match="sparse X"):
        m.predict(scipy.sparse.csr_matrix(X))
    with pytest.raises(ValueError, match=r"X\.reshape\(1, -1\)"):
        m.predict(X[0])
    one = PySRRegressor(**TINY).fit(X[:, :1], Y)
    assert one.predict(X[:, 0]).shape == (60,)                 # 1-D X is fine for one feature


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_cuda_device_without_cuda_is_a_clear_error(device):
    with pytest.raises(ValueError, match=r"device .*cuda.* CUDA is not available"):
        PySRRegressor(**{**TINY, "device": device}).fit(X, Y)


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match=r"device 'gpu' is not a torch device"):
        PySRRegressor(**{**TINY, "device": "gpu"}).fit(X, Y)
    assert PySRRegressor(**{**TINY, "device": "cpu"}).fit(X, Y).predict(X).shape == (60,)


def test_overflowing_y_error_explains_and_suggests_rescaling():
    # Refused before the search runs: every loss would be inf.
    with pytest.raises(ValueError, match=r"y reaches .*e\+20. in magnitude.*overflow float64.*rescale y"):
        PySRRegressor(**TINY).fit(X, Y * 1e200)
    with pytest.raises(ValueError, match=r"overflow float32"):
        PySRRegressor(**TINY, precision=32).fit(X, Y * 1e25)


def test_a_target_too_small_for_squared_errors_is_refused():
    with pytest.raises(ValueError, match=r"y varies by at most .*underflow float64.*rescale y"):
        PySRRegressor(**TINY).fit(X, Y * 1e-300)
    PySRRegressor(**TINY).fit(X, Y * 1e-100)  # small, but its squares are normal numbers


def test_scikit_learn_estimator_checks_pass():
    """scikit-learn's own conformance suite (input validation, messages, clone, pickle,
    sample order, 2-D y warning, ...): every check, on a tiny search."""
    import warnings

    from sklearn.utils.estimator_checks import check_estimator

    est = PySRRegressor(niterations=1, populations=2, population_size=16, tournament_selection_n=8,
                        ncycles_per_iteration=5, verbosity=0, progress=False, soft_tree_seed_fraction=0.0,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # its SkipTestWarnings and the data's RuntimeWarnings
        check_estimator(est)              # raises on the first failing check
