"""Input checks: what data users may hand in, and the messages when they hand in something else."""
import numpy as np
import pandas as pd
import pytest
import torch

from pysr_baseline.validation import check_x, check_xy, check_y

X_LIST = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.5]]
Y_LIST = [1.0, 2.0, 3.0]


@pytest.mark.parametrize("make_x, make_y", [
    (np.array, np.array),
    (lambda v: torch.tensor(v, dtype=torch.float64), lambda v: torch.tensor(v, dtype=torch.float64)),
    (lambda v: torch.tensor(v, dtype=torch.float32), lambda v: torch.tensor(v, dtype=torch.float32)),
    (lambda v: pd.DataFrame(v, columns=["a", "b"]), pd.Series),
    (list, list),
    (lambda v: np.array(v, dtype=np.float32), lambda v: np.array(v, dtype=np.float16)),
    (lambda v: np.asfortranarray(np.array(v)), lambda v: np.array(v)[::-1][::-1]),
])
def test_accepts_numpy_torch_pandas_lists(make_x, make_y):
    X, y, w = check_xy(make_x(X_LIST), make_y(Y_LIST))
    assert isinstance(X, torch.Tensor) and isinstance(y, torch.Tensor) and w is None
    assert X.dtype == torch.float64 and y.dtype == torch.float64
    assert X.shape == (3, 2) and y.shape == (3,)
    assert X.tolist() == X_LIST and y.tolist() == Y_LIST


def test_integer_data_becomes_float():
    X, y, _ = check_xy(np.arange(6).reshape(3, 2), torch.arange(3))
    assert X.dtype == y.dtype == torch.float64 and y.tolist() == [0.0, 1.0, 2.0]


def test_dtype_and_device_options():
    X, y, w = check_xy(X_LIST, Y_LIST, weights=[1, 1, 2], dtype=torch.float32, device="cpu")
    assert X.dtype == y.dtype == w.dtype == torch.float32 and X.device.type == "cpu"


def test_torch_input_is_detached_and_not_aliased_for_new_dtype():
    x = torch.tensor(X_LIST, dtype=torch.float32, requires_grad=True)
    X, _, _ = check_xy(x, Y_LIST)
    assert not X.requires_grad


def test_pandas_mixed_numeric_columns_and_object_numbers():
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})
    X, y, _ = check_xy(df, pd.Series([1, 2, 3], dtype="int32"))
    assert X.tolist() == [[1.0, 0.5], [2.0, 1.5], [3.0, 2.5]]
    X, _, _ = check_xy(np.array([[1, 2.0], [3, 4]], dtype=object)[:, :1].repeat(3, 0)[:3], Y_LIST)
    assert X.dtype == torch.float64


def test_y_column_vector_is_flattened():
    _, y, _ = check_xy(X_LIST, np.array(Y_LIST).reshape(-1, 1))
    assert y.shape == (3,)


def test_single_feature_1d_x_allowed_only_when_n_features_is_1():
    X = check_x(np.arange(4.0), n_features=1)
    assert X.shape == (4, 1)
    with pytest.raises(ValueError, match="X must be 2-D"):
        check_x(np.arange(4.0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_x_names_x_and_row(bad):
    X = np.ones((5, 2))
    X[3, 1] = bad
    with pytest.raises(ValueError, match=r"X contains NaN or inf in 1 row\(s\), first at row 3"):
        check_xy(X, np.ones(5))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_y_names_y(bad):
    y = np.ones(5)
    y[2] = bad
    y[4] = bad
    with pytest.raises(ValueError, match=r"y contains NaN or inf at 2 position\(s\), first at 2"):
        check_xy(np.ones((5, 2)), y)


def test_nan_in_torch_and_pandas_inputs():
    with pytest.raises(ValueError, match="X contains NaN"):
        check_xy(torch.tensor([[1.0], [float("nan")]]), [1.0, 2.0])
    with pytest.raises(ValueError, match="y contains NaN"):
        check_xy(pd.DataFrame({"a": [1.0, 2.0]}), pd.Series([1.0, None]))
    with pytest.raises(ValueError, match="X contains NaN"):
        check_xy([[1.0], [None]], [1.0, 2.0])


@pytest.mark.parametrize("x, y, fragment", [
    (np.ones((2, 3, 4)), np.ones(2), "X must be 2-D"),
    (np.ones(5), np.ones(5), "X must be 2-D"),
    (np.float64(3.0), np.ones(1), "X must be 2-D"),
    (np.ones((5, 2)), np.ones((5, 2)), "y must be 1-D"),
    (np.ones((5, 2)), np.ones((5, 1, 1)), "y must be 1-D"),
    (np.ones((5, 2)), np.ones(4), "X has 5 samples but y has 4"),
    (np.ones((5, 2)), np.ones(6), "X has 5 samples but y has 6"),
    (np.ones((0, 2)), np.ones(0), "X is empty"),
    (np.ones((5, 0)), np.ones(5), "no feature columns"),
    ([], [], "X must be 2-D"),
])
def test_wrong_shapes_and_empty(x, y, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_xy(x, y)


def test_n_features_mismatch():
    with pytest.raises(ValueError, match="X has 2 feature column\\(s\\), expected 3"):
        check_xy(np.ones((4, 2)), np.ones(4), n_features=3)
    X, _, _ = check_xy(np.ones((4, 3)), np.ones(4), n_features=3)
    assert X.shape == (4, 3)


@pytest.mark.parametrize("x, y, name", [
    (np.array([["a", "b"], ["c", "d"]]), [1.0, 2.0], "X"),
    ([["1.0", "2.0"]], [1.0], "X"),
    (np.array([[1.0, {}], [2.0, 3.0]], dtype=object), [1.0, 2.0], "X"),
    (pd.DataFrame({"a": ["x", "y"], "b": [1.0, 2.0]}), [1.0, 2.0], "X"),
    (np.ones((2, 1)), ["a", "b"], "y"),
    (np.ones((2, 1)), np.array([object(), object()]), "y"),
    (np.ones((2, 2), dtype=bool), [1.0, 2.0], "X"),
    (torch.ones(2, 2, dtype=torch.bool), [1.0, 2.0], "X"),
    (torch.ones(2, 2, dtype=torch.complex64), [1.0, 2.0], "X"),
    (np.ones((2, 2), dtype=complex), [1.0, 2.0], "X"),
    (np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]").reshape(2, 1), [1.0, 2.0], "X"),
    ([[1.0, 2.0], [3.0]], [1.0, 2.0], "X"),
])
def test_non_numeric_data_raises_type_error_naming_the_argument(x, y, name):
    with pytest.raises(TypeError, match=f"^{name} "):
        check_xy(x, y)


def test_weights_accepted_and_converted():
    _, _, w = check_xy(X_LIST, Y_LIST, weights=np.array([1, 0, 2]))
    assert w.dtype == torch.float64 and w.tolist() == [1.0, 0.0, 2.0]
    _, _, w = check_xy(X_LIST, Y_LIST, weights=pd.Series([0.5, 0.5, 0.5]))
    assert w.tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("weights, fragment", [
    ([1.0, -0.5, 1.0], "non-negative"),
    ([0.0, 0.0, 0.0], "all be zero"),
    ([1.0, np.nan, 1.0], "weights contains NaN"),
    ([1.0, np.inf, 1.0], "weights contains NaN or inf"),
    ([1.0, 1.0], "X has 3 samples but weights has 2"),
    ([[1.0, 1.0, 1.0]], "weights must be 1-D"),
])
def test_bad_weights(weights, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_xy(X_LIST, Y_LIST, weights=weights)


def test_non_numeric_weights():
    with pytest.raises(TypeError, match="^weights "):
        check_xy(X_LIST, Y_LIST, weights=["a", "b", "c"])


def test_check_y_alone():
    assert check_y([1, 2], 2).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="target"):
        check_y([1.0, float("nan")], 2, name="target")


def test_pandas_input_gives_no_warning_and_inputs_are_not_aliased():
    import warnings

    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about read-only (copy-on-write) arrays
        X, y, _ = check_xy(df, df["a"])
    X[0, 0] = 99.0
    assert df.iloc[0, 0] == 1.0
    arr = np.ones((3, 2))
    X, _, _ = check_xy(arr, Y_LIST)
    X[1, 1] = -5.0
    assert arr[1, 1] == 1.0


def test_sparse_data_is_refused_with_what_to_do():
    import scipy.sparse

    with pytest.raises(TypeError, match=r"sparse X is not supported.*toarray"):
        check_xy(scipy.sparse.csr_matrix(np.ones((3, 2))), np.ones(3))
