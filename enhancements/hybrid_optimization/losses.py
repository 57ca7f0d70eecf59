"""Loss functions and stopping conditions from what users write, parsed with a whitelist.

PySR takes Julia snippets (``"L1DistLoss()"``, ``"myloss(x, y) = abs(x - y)"``,
``"stop_if(loss, complexity) = loss < 1e-6 && complexity < 10"``). Here the same strings
are read by a small grammar built on `pysr_baseline.parsing`; nothing reaches eval.

    >>> loss = make_loss("L1DistLoss()")
    >>> import torch; loss(torch.tensor([[1.0, 3.0]]), torch.tensor([0.0, 0.0])).tolist()
    [2.0]
    >>> make_stop_condition("f(loss, complexity) = loss < 1e-6 && complexity < 10")(1e-7, 5)
    True
"""
from __future__ import annotations

import math
import numbers
import re
from typing import Callable

import torch

from pysr_baseline.parsing import parse_expression


class Loss:
    """An elementwise loss, reduced to one (weighted) mean per candidate.

    ``loss(pred, y, w=None)`` takes predictions ``(B, n)``, targets ``(n,)`` and optional
    weights ``(n,)`` and returns ``(B,)``; a candidate with a NaN/inf anywhere gets inf.
    ``is_l2`` marks the squared error (for which linear scaling is exact).
    """

    def __init__(self, elementwise: Callable, name: str, is_l2: bool = False, uses_weights: bool = False):
        self.elementwise = elementwise
        self.name = name
        self.is_l2 = is_l2
        self.uses_weights = uses_weights  # a user loss f(x, y, w) handles weights itself

    def __call__(self, pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        if self.uses_weights:
            weights = w if w is not None else torch.ones_like(y)
            values = self.elementwise(pred, y.expand_as(pred), weights.expand_as(pred))
            out = values.mean(dim=-1)
        else:
            values = self.elementwise(pred, y.expand_as(pred))
            out = values.mean(dim=-1) if w is None else (values * w).sum(dim=-1) / w.sum()
        return torch.where(torch.isfinite(out), out, torch.full_like(out, math.inf))

    def __repr__(self) -> str:
        return f"Loss({self.name})"


def _lp(p: float):
    return lambda x, y: (x - y).abs() ** p


def _huber(d: float):
    def fn(x, y):
        r = (x - y).abs()
        return torch.where(r <= d, 0.5 * r * r, d * (r - 0.5 * d))
    return fn


def _logit(x, y):
    r = x - y
    return -torch.log(4 * torch.exp(r) / (1 + torch.exp(r)) ** 2)


def _quantile(tau: float):
    def fn(x, y):
        r = y - x
        return torch.where(r >= 0, tau * r, (tau - 1) * r)
    return fn


def _periodic(c: float):
    return lambda x, y: 1 - torch.cos(2 * math.pi * (x - y) / c)


def _margin(fn):
    """A margin-based loss of the agreement a = target * prediction (classification, y = +-1)."""
    return lambda: (lambda x, y: fn(y * x))


def _smoothed_hinge(gamma: float):
    def fn(x, y):
        a = y * x
        return torch.where(a >= 1 - gamma, 0.5 / gamma * torch.square((1 - a).clamp_min(0)), 1 - gamma / 2 - a)
    return fn


def _dwd(q: float):
    def fn(x, y):
        a = y * x
        return torch.where(a <= q / (q + 1), 1 - a, q ** q / ((q + 1) ** (q + 1) * a.abs().clamp_min(1e-300) ** q))
    return fn


# name -> (number of numeric arguments, factory); LPDistLoss takes its P in braces.
# The LossFunctions.jl losses PySR's documentation lists, with their definitions.
_NAMED_LOSSES = {
    "L2DistLoss": (0, lambda: (lambda x, y: torch.square(x - y))),  # the bits of ** 2, 3x faster
    "L1DistLoss": (0, lambda: (lambda x, y: (x - y).abs())),
    "LogitDistLoss": (0, lambda: _logit),
    "HuberLoss": (1, _huber),
    "L1EpsilonInsLoss": (1, lambda e: (lambda x, y: ((x - y).abs() - e).clamp_min(0))),
    "L2EpsilonInsLoss": (1, lambda e: (lambda x, y: torch.square(((x - y).abs() - e).clamp_min(0)))),
    "QuantileLoss": (1, _quantile),
    "PeriodicLoss": (1, _periodic),
    "ZeroOneLoss": (0, _margin(lambda a: (a < 0).to(a.dtype))),
    "PerceptronLoss": (0, _margin(lambda a: (-a).clamp_min(0))),
    "L1HingeLoss": (0, _margin(lambda a: (1 - a).clamp_min(0))),
    "HingeLoss": (0, _margin(lambda a: (1 - a).clamp_min(0))),
    "L2HingeLoss": (0, _margin(lambda a: torch.square((1 - a).clamp_min(0)))),
    "SmoothedL1HingeLoss": (1, _smoothed_hinge),
    "ModifiedHuberLoss": (0, _margin(lambda a: torch.where(a >= -1, torch.square((1 - a).clamp_min(0)), -4 * a))),
    "L2MarginLoss": (0, _margin(lambda a: torch.square(1 - a))),
    "ExpLoss": (0, _margin(lambda a: torch.exp(-a))),
    "SigmoidLoss": (0, _margin(lambda a: 1 - torch.tanh(a))),
    "DWDMarginLoss": (1, _dwd),
    "EpsilonInsLoss": (1, lambda e: (lambda x, y: ((x - y).abs() - e).clamp_min(0))),
}
_DEFAULT_ARGUMENT = {"HuberLoss": 1.0, "PeriodicLoss": 1.0}  # LossFunctions.jl's defaults
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NAMED = re.compile(r"^\s*(?P<name>[A-Za-z0-9]+)\s*(?:\{\s*(?P<p>" + _NUMBER + r")\s*\})?"
                    r"\s*\(\s*(?P<args>[^()]*)\)\s*$")
_DEFINITION = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)\s*\((?P<params>[^()]*)\)\s*=(?P<body>.*)$", re.S)


def make_loss(spec=None) -> Loss:
    """A `Loss` from ``None`` (squared error), a LossFunctions.jl name such as
    ``"L1DistLoss()"``, ``"HuberLoss(1.0)"``, ``"LPDistLoss{3}()"``, a definition
    ``"myloss(x, y) = abs(x - y)"`` / ``"myloss(x, y, w) = w * (x - y)^2"`` (x the prediction,
    y the target, w the weight), or a torch callable ``f(pred, target)``."""
    if spec is None:
        spec = "L2DistLoss()"
    if isinstance(spec, Loss):
        return spec
    if callable(spec):
        return Loss(spec, getattr(spec, "__name__", "custom"))
    if not isinstance(spec, str):
        raise TypeError(f"elementwise_loss must be a string or a callable, got {type(spec).__name__}")
    m = _NAMED.match(spec)
    if m is not None and (m.group("name") in _NAMED_LOSSES or m.group("name") == "LPDistLoss"):
        name, p = m.group("name"), m.group("p")
        args = [a.strip() for a in m.group("args").split(",") if a.strip()]
        if not all(re.fullmatch(_NUMBER, a) for a in args):
            raise ValueError(f"elementwise_loss {spec!r}: arguments must be numbers")
        values = [float(a) for a in args]
        if name == "LPDistLoss":
            if p is None and len(values) == 1:  # LPDistLoss(3) as well as LPDistLoss{3}()
                p, values = values[0], []
            if p is None or values:
                raise ValueError(f"elementwise_loss {spec!r}: write LPDistLoss{{P}}() with a number P")
            return Loss(_lp(float(p)), spec.strip(), is_l2=float(p) == 2.0)
        n_args, factory = _NAMED_LOSSES[name]
        if not values and name in _DEFAULT_ARGUMENT:
            values = [_DEFAULT_ARGUMENT[name]]
        if p is not None or len(values) != n_args:
            raise ValueError(f"elementwise_loss {spec!r}: {name} takes {n_args} numeric argument(s)")
        return Loss(factory(*values), spec.strip(), is_l2=name == "L2DistLoss")
    d = _DEFINITION.match(spec)
    if d is None:
        known = ", ".join(sorted(_NAMED_LOSSES) + ["LPDistLoss{P}"])
        raise ValueError(f"unknown elementwise_loss {spec!r}; use one of {known} or 'f(x, y) = <formula>'")
    params = [p.strip() for p in d.group("params").split(",")]
    if len(params) not in (2, 3) or not all(p.isidentifier() for p in params) or len(set(params)) != len(params):
        raise ValueError(f"elementwise_loss {spec!r}: expected two or three parameter names, f(x, y) or f(x, y, w)")
    body = parse_expression(d.group("body"), variable_names=params)
    if not any(n.op is None and n.feature == 0 for n in body.nodes()):
        raise ValueError(f"elementwise_loss {spec!r}: the loss does not use the prediction ({params[0]}), so "
                         "every formula would score the same")
    return Loss(lambda *cols: body.evaluate_columns(cols), spec.strip(), uses_weights=len(params) == 3)


class FormulaLoss(Loss):
    """A whole-formula loss (PySR's ``loss_function``, in Python): ``fn(prediction, target,
    weights)`` gets one formula's predictions on all rows (1-D torch tensors; ``weights``
    None when fit had none) and returns its loss as a number or 0-d tensor. Called once
    per formula, so it may do anything with the whole prediction (a max, a correlation);
    it must be written with torch operations to be differentiable for constant fitting."""

    def __init__(self, fn: Callable):
        super().__init__(fn, getattr(fn, "__name__", "loss_function"))

    def __call__(self, pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        values = []
        for row in pred:
            value = self.elementwise(row, y, w)
            value = torch.as_tensor(value, dtype=pred.dtype, device=pred.device)
            if value.ndim != 0:
                raise ValueError(f"loss_function must return one number per formula, got shape "
                                 f"{tuple(value.shape)}")
            values.append(value)
        out = torch.stack(values) if values else pred.new_zeros((0,))
        return torch.where(torch.isfinite(out), out, torch.full_like(out, math.inf))


def make_formula_loss(fn) -> FormulaLoss:
    """`FormulaLoss` from a Python callable ``f(prediction, target, weights)``; strings
    (Julia code in PySR) are refused with a clear message."""
    if isinstance(fn, str):
        raise TypeError("loss_function must be a Python callable f(prediction, target, weights) -> loss; "
                        "PySR's Julia form is not read here (for an elementwise loss use elementwise_loss)")
    if not callable(fn):
        raise TypeError(f"loss_function must be callable, got {type(fn).__name__}")
    return FormulaLoss(fn)


_COMPARE = re.compile(r"^(?P<lhs>.*?)(?P<op><=|>=|==|<|>)(?P<rhs>.*)$", re.S)
_COMPARATORS = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__, "==": float.__eq__}


def make_stop_condition(spec=None) -> Callable[[float, float], bool] | None:
    """``None``; a number (stop once some formula's loss is at most it); a callable
    ``f(loss, complexity) -> bool``; or PySR's string form
    ``"f(loss, complexity) = loss < 1e-6 && complexity < 10"`` (comparisons of formulas in
    ``loss`` and ``complexity`` joined by ``&&`` / ``||``)."""
    if spec is None:
        return None
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        threshold = float(spec)
        if math.isnan(threshold):
            raise ValueError("early_stop_condition must not be NaN")
        return lambda loss, complexity: loss <= threshold
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"early_stop_condition must be a number, a callable or a string, got {type(spec).__name__}")
    d = _DEFINITION.match(spec)
    if d is None:
        try:
            return make_stop_condition(float(spec))
        except ValueError:
            raise ValueError(f"malformed early_stop_condition {spec!r}: expected a number or "
                             "'f(loss, complexity) = <condition>'") from None
    params = [p.strip() for p in d.group("params").split(",")]
    if len(params) != 2 or not all(p.isidentifier() for p in params) or params[0] == params[1]:
        raise ValueError(f"early_stop_condition {spec!r}: expected two parameters, f(loss, complexity)")
    disjuncts = []
    for alternative in d.group("body").split("||"):
        conjuncts = []
        for clause in alternative.split("&&"):
            m = _COMPARE.match(clause)
            if m is None or not m.group("lhs").strip() or not m.group("rhs").strip():
                raise ValueError(f"early_stop_condition {spec!r}: {clause.strip()!r} is not a comparison")
            lhs = parse_expression(m.group("lhs"), variable_names=params)
            rhs = parse_expression(m.group("rhs"), variable_names=params)
            conjuncts.append((lhs, _COMPARATORS[m.group("op")], rhs))
        disjuncts.append(conjuncts)

    def condition(loss: float, complexity: float) -> bool:
        cols = [torch.tensor(float(loss), dtype=torch.float64), torch.tensor(float(complexity), dtype=torch.float64)]
        return any(all(cmp(float(lhs.evaluate_columns(cols)), float(rhs.evaluate_columns(cols)))
                       for lhs, cmp, rhs in conj) for conj in disjuncts)

    return condition
