"""The techniques this project adds to the plain reference system (`pysr_baseline`),
and PySR's top-level names, so that ``from pysr import X`` becomes ``from enhancements
import X``.

- `enhancements.dp_memoization`: sub-expression cache, incremental evaluator and the
  optimized soft-tree trainer.
- `enhancements.hybrid_optimization`: the evolutionary search over formulas and the
  scikit-learn estimator ``PySRRegressor``.

    >>> from enhancements import PySRRegressor, sympy2torch, pysr2sympy
    >>> str(pysr2sympy("x0 * x0 + cos(x1)"))
    'x0**2 + cos(x1)'

Everything is imported on first use, so that ``import enhancements.dp_memoization``
stays light.
"""

__version__ = "0.1.0"

# name -> (module, attribute)
_EXPORTS = {
    "PySRRegressor": ("enhancements.hybrid_optimization.regressor", "PySRRegressor"),
    "sympy2torch": ("enhancements.hybrid_optimization.exports", "sympy2torch"),
    "sympy2jax": ("enhancements.hybrid_optimization.exports", "sympy2jax"),
    "pysr2sympy": ("enhancements.hybrid_optimization.exports", "pysr2sympy"),
    "sympy2latex": ("enhancements.hybrid_optimization.exports", "sympy2latex"),
    "run_feature_selection": ("enhancements.hybrid_optimization.preprocessing", "run_feature_selection"),
    "denoise": ("enhancements.hybrid_optimization.preprocessing", "denoise"),
    "AbstractExpressionSpec": ("enhancements.hybrid_optimization.expression_specs", "AbstractExpressionSpec"),
    "ExpressionSpec": ("enhancements.hybrid_optimization.expression_specs", "ExpressionSpec"),
    "TemplateExpressionSpec": ("enhancements.hybrid_optimization.expression_specs", "TemplateExpressionSpec"),
    "ParametricExpressionSpec": ("enhancements.hybrid_optimization.expression_specs", "ParametricExpressionSpec"),
    "pysr": ("enhancements.deprecated", "pysr"),
    "best": ("enhancements.deprecated", "best"),
    "best_row": ("enhancements.deprecated", "best_row"),
    "best_tex": ("enhancements.deprecated", "best_tex"),
    "best_callable": ("enhancements.deprecated", "best_callable"),
    "install": ("enhancements.deprecated", "install"),
    "load_all_packages": ("enhancements.deprecated", "load_all_packages"),
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        module, attribute = _EXPORTS[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'enhancements' has no attribute {name!r}")
