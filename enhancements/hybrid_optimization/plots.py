"""Plots of a fitted model (matplotlib, imported on first use): the Pareto front, and
predicted against true values.

    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np, tempfile
    >>> from enhancements import PySRRegressor
    >>> X = np.linspace(1, 2, 30).reshape(-1, 1)
    >>> m = PySRRegressor(niterations=1, populations=2, population_size=10, tournament_selection_n=5,
    ...                   ncycles_per_iteration=10, soft_tree_seed_fraction=0, progress=False, verbosity=0,
    ...                   random_state=0, output_directory=tempfile.mkdtemp()).fit(X, 2 * X[:, 0])
    >>> type(plot_pareto(m)).__name__, type(plot_fit(m, X, 2 * X[:, 0])).__name__
    ('Figure', 'Figure')
"""
from __future__ import annotations

import numpy as np


def _axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        return fig, ax
    return ax.figure, ax


def plot_pareto(model, output: int = 0, ax=None):
    """Loss (log scale) against complexity of the front of ``output``; the formula that
    ``model_selection`` picks is marked. Returns the figure."""
    frame = model._frames()[output]
    pick = model._pick(output)
    fig, ax = _axes(ax)
    losses = np.maximum(frame["loss"].to_numpy(dtype=float), np.finfo(float).tiny)
    ax.step(frame["complexity"], losses, where="post", color="0.6", lw=1)
    ax.plot(frame["complexity"], losses, "o", color="C0", label="Pareto front")
    ax.plot([frame["complexity"].iloc[pick]], [losses[pick]], "*", ms=14, color="C3",
            label=f"picked ({model.model_selection})")
    ax.set_yscale("log")
    ax.set_xlabel("complexity")
    ax.set_ylabel("loss")
    ax.set_title(str(model.get_best()["equation"] if model.nout_ == 1 else frame["equation"].iloc[pick])[:60],
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_fit(model, X, y, index=None, output: int = 0, ax=None):
    """Predicted against true y for the picked formula (or row ``index``) of ``output``,
    with the diagonal. Returns the figure."""
    pred = np.asarray(model.predict(X, index))
    y = np.asarray(y, dtype=float)
    if pred.ndim == 2:
        pred, y = pred[:, output], (y[:, output] if y.ndim == 2 else y)
    fig, ax = _axes(ax)
    ax.plot(y, pred, ".", ms=4, alpha=0.7)
    finite = np.isfinite(pred)
    lo = float(min(y.min(), pred[finite].min() if finite.any() else y.min()))
    hi = float(max(y.max(), pred[finite].max() if finite.any() else y.max()))
    ax.plot([lo, hi], [lo, hi], "--", color="0.4", lw=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ok = np.isfinite(pred)
    r2 = 1 - np.sum((y[ok] - pred[ok]) ** 2) / max(np.sum((y[ok] - y[ok].mean()) ** 2), 1e-300) if ok.any() else np.nan
    ax.set_title(f"R2 = {r2:.6g} ({int((~ok).sum())} undefined)" if (~ok).any() else f"R2 = {r2:.6g}", fontsize=9)
    fig.tight_layout()
    return fig
