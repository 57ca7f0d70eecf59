"""PySR's data preprocessing: feature selection and denoising, before the search.

`run_feature_selection` keeps the ``k`` columns a random forest finds most important
(PySR's rule: 100 trees of depth 3); `denoise` replaces y by a Gaussian process's
smoothed prediction (RBF + white noise + constant kernel, as PySR's), optionally at
other points ``Xresampled``.

    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 6))
    >>> y = X[:, 2] ** 2 - X[:, 4]
    >>> np.flatnonzero(run_feature_selection(X, y, 2, random_state=0)).tolist()
    [2, 4]
"""
from __future__ import annotations

import numpy as np


def run_feature_selection(X, y, select_k_features: int, random_state=None) -> np.ndarray:
    """A boolean mask of the ``select_k_features`` most important columns of X."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.feature_selection import SelectFromModel

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if isinstance(select_k_features, (bool, np.bool_)) or not isinstance(select_k_features, (int, np.integer)):
        raise TypeError(f"select_k_features must be an int (the number of features to keep) or None, got "
                        f"{select_k_features!r}")
    k = int(select_k_features)
    if not 1 <= k <= X.shape[1]:
        raise ValueError(f"select_k_features must be between 1 and the number of features ({X.shape[1]}), got "
                         f"{select_k_features!r}")
    forest = RandomForestRegressor(n_estimators=100, max_depth=3, random_state=random_state)
    forest.fit(X, y)
    selector = SelectFromModel(forest, threshold=-np.inf, max_features=k, prefit=True)
    return selector.get_support(indices=False)


def denoise(X, y, Xresampled=None, random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """``(X', y')``: y smoothed by a Gaussian process fitted on (X, y), predicted at X, or
    at ``Xresampled`` (which then becomes the training X). A 2-D y is smoothed column by
    column."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2:
        parts = [denoise(X, y[:, j], Xresampled, random_state) for j in range(y.shape[1])]
        return parts[0][0], np.stack([p[1] for p in parts], axis=1)
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    kernel = RBF(np.ones(X.shape[1])) + WhiteKernel(1e-1) + ConstantKernel()
    gp = GaussianProcessRegressor(kernel=kernel, n_restarts_optimizer=50, random_state=random_state)
    gp.fit(X, y)
    at = X if Xresampled is None else np.asarray(Xresampled, dtype=np.float64)
    return at, gp.predict(at)
