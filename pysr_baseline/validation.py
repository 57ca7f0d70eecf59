"""Input checks for data handed in by users.

Every public entry point that takes data calls `check_xy` (or `check_x`) so that a bad
table fails early with a message naming the problem, instead of failing deep inside
torch or, worse, training on garbage.

    >>> X, y, w = check_xy(np.ones((5, 2)), np.arange(5.0))
    >>> X.dtype, tuple(X.shape), w is None
    (torch.float64, (5, 2), True)
"""
from __future__ import annotations

import numpy as np
import scipy.sparse
import torch


def _to_tensor(name: str, value, dtype: torch.dtype, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must hold real numbers, got a {value.dtype} tensor")
        return value.detach().to(device=device, dtype=dtype)
    if scipy.sparse.issparse(value):  # np.asarray would make it a 0-d object array
        raise TypeError(f"sparse {name} is not supported (formulas are evaluated on dense data); "
                        f"pass a dense array, e.g. {name}.toarray()")
    if hasattr(value, "dtypes") and hasattr(value, "columns"):  # a DataFrame: name the bad column
        _check_columns(name, value)
    if hasattr(value, "to_numpy"):  # pandas DataFrame / Series
        if getattr(value, "hasnans", False) and str(value.dtype) in _NULLABLE:
            value = value.astype("float64")  # pd.NA as NaN, which the checks below name
        value = value.to_numpy()
    if isinstance(value, np.ma.MaskedArray):
        if np.ma.getmaskarray(value).any():
            where = np.argwhere(np.ma.getmaskarray(value))[0]
            raise ValueError(f"{name} is a masked array with {int(np.ma.count_masked(value))} masked value(s), "
                             f"first at {_position(where)}; fill or drop them first (e.g. {name}.filled(...) "
                             "or removing those rows)")
        value = value.data
    try:
        array = np.asarray(value)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"{name} could not be read as a numeric array: {err}") from None
    if array.dtype == object:
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be numeric; it holds non-numeric values (each argument must be a "
                            "real number, not a string or other object that is not a number)") from None
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be numeric, got dtype {array.dtype}")
    # A copy: pandas hands out read-only arrays (torch warns on those), and the caller's
    # array must not change if the tensor is later modified in place.
    return torch.tensor(array.astype(np.float64, copy=False), device=device).to(dtype)


_NULLABLE = {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float32", "Float64",
             "boolean"}


def _position(where) -> str:
    return f"row {int(where[0])}" + (f", column {int(where[1])}" if len(where) > 1 else "")


def _check_columns(name: str, frame) -> None:
    """A DataFrame's non-numeric or missing values, named by column and row."""
    for position, (column, dtype) in enumerate(zip(frame.columns, frame.dtypes)):
        label = f"{name} column {column!r}"
        kind = getattr(dtype, "kind", "O")
        text = str(dtype)
        if text in _NULLABLE or kind in "iuf":
            missing = np.asarray(frame.iloc[:, position].isna())
            if missing.any():
                raise ValueError(f"{label} has missing values (NaN/NA) in {int(missing.sum())} row(s), first at row "
                                 f"{int(np.flatnonzero(missing)[0])}; drop or impute them first")
            continue
        if kind == "b" or text == "boolean":
            raise TypeError(f"{label} is boolean; convert it to numbers first (e.g. .astype(float))")
        if kind in "Mm" or text.startswith(("datetime", "timedelta", "period")):
            raise TypeError(f"{label} holds dates or times ({text}); convert it to numbers first (e.g. seconds "
                            "since a reference time)")
        if text == "category":
            raise TypeError(f"{label} is categorical; encode it as numbers first (e.g. one column per category)")
        values = frame.iloc[:, position]
        try:
            values.to_numpy().astype(np.float64)  # numbers, numeric strings: what the conversion reads
            continue
        except (TypeError, ValueError):
            pass
        for row, v in enumerate(values):
            if v is None or type(v).__name__ == "NAType":
                raise ValueError(f"{label} has a missing value ({v!r}) at row {row}; drop or impute it first")
            if not _is_number(v):
                raise TypeError(f"{label} holds a value that is not a real number at row {row}: {_short(v)}; "
                                f"{name} must be numeric")


def _is_number(v) -> bool:
    """Whether the conversion to float64 reads ``v`` (booleans are not numbers here)."""
    if isinstance(v, (bool, np.bool_)):
        return False
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_x(x, n_features: int | None = None, dtype: torch.dtype = torch.float64, device=None,
            name: str = "X") -> torch.Tensor:
    """Validate a 2-D table of samples x features and return it as a tensor."""
    X = _to_tensor(name, x, dtype, device)
    if X.ndim == 1 and n_features == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples x features), got shape {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: 0 sample(s) (shape={tuple(X.shape)}) while a minimum of 1 is required.")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has no feature columns: 0 feature(s) (shape={tuple(X.shape)}) while a "
                         "minimum of 1 is required.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} feature column(s), expected {n_features}")
    bad = ~torch.isfinite(X)
    if bad.any():
        rows = torch.nonzero(bad.any(dim=1)).flatten()
        first = int(rows[0])
        column = int(torch.nonzero(bad[first]).flatten()[0])
        label = repr(x.columns[column]) if hasattr(x, "columns") else str(column)
        raise ValueError(f"{name} contains NaN or inf in {len(rows)} row(s), first at row {first} (column {label}, "
                         f"value {float(X[first, column])}); drop or impute them first")
    return X


def check_y(y, n_samples: int, dtype: torch.dtype = torch.float64, device=None, name: str = "y") -> torch.Tensor:
    """Validate a 1-D target of ``n_samples`` finite values."""
    Y = _to_tensor(name, y, dtype, device)
    if Y.ndim == 2 and Y.shape[1] == 1:
        Y = Y[:, 0]
    if Y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(Y.shape)}")
    if Y.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} samples but {name} has {Y.shape[0]}")
    bad = ~torch.isfinite(Y)
    if bad.any():
        raise ValueError(f"{name} contains NaN or inf at {int(bad.sum())} position(s), first at {int(bad.nonzero()[0])}")
    return Y


def check_xy(x, y, weights=None, n_features: int | None = None, dtype: torch.dtype = torch.float64, device=None):
    """Validate features, target and optional non-negative sample weights together."""
    X = check_x(x, n_features, dtype, device)
    Y = check_y(y, X.shape[0], dtype, device)
    W = None
    if weights is not None:
        W = check_y(weights, X.shape[0], dtype, device, name="weights")
        if (W < 0).any():
            raise ValueError("weights must be non-negative")
        if W.sum() <= 0:
            raise ValueError("weights must not all be zero")
    return X, Y, W
