"""PySR's old top-level functions, for scripts that still import them: each does what
PySR's does now (a FutureWarning and the new way, or an error saying what replaced it).

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     install()
    >>> caught[0].category.__name__
    'FutureWarning'
"""
from __future__ import annotations

import warnings


def install(*args, **kwargs) -> None:
    warnings.warn("The `install` function has been removed. This library needs no Julia: there is nothing to "
                  "install.", FutureWarning, stacklevel=2)


def load_all_packages(*args, **kwargs) -> None:
    warnings.warn("`load_all_packages` does nothing here: this library needs no Julia packages.", FutureWarning,
                  stacklevel=2)


def init_julia(*args, **kwargs) -> None:
    warnings.warn("The `init_julia` function has been removed. This library needs no Julia.", FutureWarning,
                  stacklevel=2)


def pysr(X, y, weights=None, **kwargs):
    """Fit and return ``equations_`` (PySR's deprecated function form)."""
    from enhancements.hybrid_optimization.regressor import PySRRegressor

    warnings.warn("Calling `pysr` is deprecated. Please use `model = PySRRegressor(**params); model.fit(X, y)` "
                  "going forward.", FutureWarning, stacklevel=2)
    model = PySRRegressor(**kwargs)
    model.fit(X, y, weights=weights)
    return model.equations_


def best(*args, **kwargs):
    raise NotImplementedError("`best` has been deprecated. Please use the `PySRRegressor` interface. After "
                              "fitting, you can return `.sympy()` to get the sympy representation of the best "
                              "equation.")


def best_row(*args, **kwargs):
    raise NotImplementedError("`best_row` has been deprecated. Please use the `PySRRegressor` interface. After "
                              "fitting, you can run `print(model)` to view the best equation, or "
                              "`model.get_best()` to return the best equation's row in `model.equations_`.")


def best_tex(*args, **kwargs):
    raise NotImplementedError("`best_tex` has been deprecated. Please use the `PySRRegressor` interface. After "
                              "fitting, you can return `.latex()` to get the sympy representation of the best "
                              "equation.")


def best_callable(*args, **kwargs):
    raise NotImplementedError("`best_callable` has been deprecated. Please use the `PySRRegressor` interface. "
                              "After fitting, you can use `.predict(X)` to use the best callable.")
