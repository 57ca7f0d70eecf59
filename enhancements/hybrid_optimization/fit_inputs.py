"""Checks of what `PySRRegressor.fit` and `predict` are handed, with messages that say
what to do: the variables' names, weights, and input that the generic checks of
`pysr_baseline.validation` would reject more vaguely.

    >>> import pandas as pd
    >>> read_variable_names(pd.DataFrame({"a": [1.0], "b": [2.0]}), None)
    ['a', 'b']
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import DataConversionWarning


MAX_NAME_LENGTH = 256


def read_variable_names(X, variable_names):
    """The user's names for the variables, or None (then x0, x1, ...)."""
    source = "variable_names"
    if variable_names is None and isinstance(X, pd.DataFrame):
        # As scikit-learn: columns name the variables only if all are strings, so
        # pd.DataFrame(array) (columns 0, 1, ...) counts as an array.
        if not all(isinstance(c, str) for c in X.columns):
            return None
        variable_names, source = list(X.columns), "X"
    if variable_names is None:
        return None
    if isinstance(variable_names, str) or not hasattr(variable_names, "__iter__"):
        raise TypeError("variable_names must be a list of strings")
    names = [str(n) for n in variable_names]
    if any(" " in n for n in names):
        # PySR's rule and wording: spaces become underscores.
        what = "DataFrame column names" if source == "X" else "`variable_names`"
        fix = "rename the columns to valid names" if source == "X" else "use valid names instead"
        warnings.warn(f"Spaces in {what} are not supported. Spaces have been replaced with underscores. \n"
                      f"Please {fix}.", UserWarning, stacklevel=3)
        names = [n.replace(" ", "_") for n in names]
    for n in names:
        if len(n) > MAX_NAME_LENGTH:
            raise ValueError(f"a variable name of {len(n):,} characters ({n[:20]!r}...): names may have at most "
                             f"{MAX_NAME_LENGTH} (formulas are saved and read back as text)")
        if not n.isidentifier():
            if source == "X":
                what = f"column {n!r} of X"
                fix = f"rename the column (e.g. to {_identifier(n)!r}) or pass variable_names=[...] to fit"
            else:
                what, fix = f"variable name {n!r}", f"use e.g. {_identifier(n)!r}"
            raise ValueError(f"{what} is not a valid variable name: names must be identifiers (letters, "
                             f"digits and _, not starting with a digit); {fix}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"variable name(s) given twice: {dupes}")
    return names


def _identifier(name: str) -> str:
    """A valid variable name close to ``name`` (for error messages)."""
    fixed = re.sub(r"\W", "_", name) or "x"
    return fixed if fixed.isidentifier() else "x_" + fixed


def merge_weights(weights, sample_weight):
    """``sample_weight`` (scikit-learn's name) is an alias of PySR's ``weights``."""
    if sample_weight is None:
        return weights
    if weights is None or weights is sample_weight:
        return sample_weight
    try:
        same = np.array_equal(np.asarray(weights, dtype=float), np.asarray(sample_weight, dtype=float))
    except (TypeError, ValueError):
        same = False
    if not same:
        raise ValueError("weights and sample_weight were both given, with different values; they are the "
                         "same setting (sample_weight is scikit-learn's name): pass only one")
    return weights


def check_input(value, name: str, n_features: int | None = 0, multi_output: bool = False) -> None:
    """Reject, with a message saying what to do, input that `check_xy` would reject more vaguely
    (or not at all). ``n_features``: 0 for 1-D ``y``/weights, else what `check_x` gets."""
    if value is None:
        if name == "y":
            # "requires y to be passed, ...": scikit-learn's wording, which its estimator checks look for.
            raise ValueError("y is required: PySRRegressor requires y to be passed, but the target y is None; "
                             "fit(X, y) needs the target values (1-D, one per row of X)")
        raise ValueError(f"{name} is required, got None")
    if _is_complex(value):
        # scikit-learn's wording (its estimator checks look for it).
        raise ValueError(f"Complex data not supported: {name} has complex values; it must hold real numbers")
    if n_features != 0 and n_features != 1 and _ndim(value) == 1:
        if n_features is None:
            hint = f"for a single feature pass {name}.reshape(-1, 1)"
        else:
            hint = f"for a single sample pass {name}.reshape(1, -1)"
        raise ValueError(f"{name} must be 2-D (samples x features), got a 1-D array of shape "
                         f"{np.shape(value)}. Reshape your data: {hint}")
    if n_features and _ndim(value) == 2 and np.shape(value)[1] != n_features:
        raise ValueError(f"{name} has {np.shape(value)[1]} features, but PySRRegressor is expecting {n_features} "
                         "features as input (the number it was fitted with)")
    if name == "y" and _ndim(value) == 2 and np.shape(value)[1] == 1 and not multi_output:
        warnings.warn("A column-vector y was passed when a 1d array was expected; it is used as y.ravel()",
                      DataConversionWarning, stacklevel=3)


def _ndim(value) -> int | None:
    try:
        return np.ndim(value)
    except Exception:  # ragged lists and the like: check_xy names the problem
        return None


def _is_complex(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_complex()
    if isinstance(value, pd.DataFrame):
        return any(dtype.kind == "c" for dtype in value.dtypes)
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, np.dtype):
        return dtype.kind == "c"
    try:
        return np.asarray(value).dtype.kind == "c"
    except Exception:  # ragged lists and the like: check_xy names the problem
        return False


def check_target_scale(Y: torch.Tensor, precision: int) -> None:
    """Refuse a target whose squared errors overflow or underflow the search's floats:
    every loss would be inf (or 0), and the search would rank nothing. (float16 is not
    checked: its range is the user's choice, and overflows there are the search's to score.)"""
    if precision == 16:
        return
    dtype = {32: torch.float32, 64: torch.float64}[precision]
    info = torch.finfo(dtype)
    largest = float(Y.abs().max())
    if largest * largest >= float(info.max) / 16:
        raise ValueError(f"y reaches {largest:.3g} in magnitude: its squared errors overflow float{precision} "
                         f"(largest {float(info.max):.3g}); rescale y (e.g. divide it by {largest:.0e}) and fit again")
    spread = float((Y - Y.mean(0)).abs().max())
    if 0 < spread and spread * spread <= float(info.tiny) * 1e6:
        raise ValueError(f"y varies by at most {spread:.3g}: its squared errors underflow float{precision} "
                         f"(smallest normal {float(info.tiny):.3g}), so every formula would score the same; rescale "
                         f"y (e.g. divide it by {spread:.0e}) and fit again")


def no_finite_loss_message(y: torch.Tensor, precision: int) -> str:
    """Why a search can end with an empty front, and what to do about it."""
    largest = float(y.abs().max())
    limit = float(torch.finfo(y.dtype).max)
    text = ("the search found no formula with a finite loss: every candidate's loss was inf or NaN. "
            "Likely causes: y's scale overflows the loss, or every formula is undefined on the data "
            "(e.g. log or sqrt of negative values). ")
    if largest * largest > limit:
        text += (f"Here max |y| = {largest:.3g}, whose square overflows float{precision} "
                 f"(max {limit:.3g}). ")
    return text + "Rescale y (e.g. divide it by its standard deviation) and fit again."
