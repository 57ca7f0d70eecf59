"""PySR's expression specifications, for scripts that import them.

Only the default, `ExpressionSpec` (plain expressions), is offered; the template and
parametric specifications are accepted as objects (so that imports work) but a fit
with one raises, since ignoring them would change the answer.

    >>> ExpressionSpec().is_default, TemplateExpressionSpec("f(x1)", expressions=["f"]).is_default
    (True, False)
"""
from __future__ import annotations


class AbstractExpressionSpec:
    """The base class PySR exports."""

    is_default = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ExpressionSpec(AbstractExpressionSpec):
    """Plain expressions: PySR's default, and what this library searches."""

    is_default = True


class TemplateExpressionSpec(AbstractExpressionSpec):
    """Stored as given; a fit with it raises (templates are not offered here)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class ParametricExpressionSpec(AbstractExpressionSpec):
    """Stored as given; a fit with it raises (parametric expressions are not offered here)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
