"""Losses of many formulas at once, every one evaluated through the memoizing evaluator.

`Scorer.score` hands a batch of formulas to `IncrementalEvaluator.evaluate` (one DAG of
unique sub-trees, cached values reused) and turns the (batch, rows) predictions into
losses. With linear scaling each formula f is also scored as a*f, f+b and a*f+b, with
a and b fitted in closed form (least squares): the search then looks for shape, not
scale, and the hall of fame can hold each of those forms at its own complexity.

    >>> import torch
    >>> from pysr_baseline.expression import Expression
    >>> from enhancements.hybrid_optimization.options import Options
    >>> X = torch.rand(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 1
    >>> s = Scorer(X, 3 * X[:, 0] + 1, None, Options(linear_scaling=True))
    >>> from pysr_baseline.parsing import parse_expression
    >>> float(s.score([parse_expression("x0")]).loss[0]) < 1e-20
    True
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from pysr_baseline.expression import Expression

from enhancements.hybrid_optimization.losses import FormulaLoss, Loss
from enhancements.hybrid_optimization.options import Options

from enhancements.dp_memoization.incremental_evaluator import IncrementalEvaluator
from enhancements.dp_memoization.row_blocks import BLOCK_ROWS, RowBlockEvaluator

# |f| beyond this is treated as overflow: a*f+b could otherwise hide an inf in round-off.
_HUGE = 1e100
# Formulas whose losses the memo keeps (least recently used forgotten first): ~100 bytes
# of numbers each, plus the key.
_MEMO_SIZE = 200_000
# Formulas per evaluator call are capped so that a call holds at most about this many
# values per (B, n_rows) tensor: on large data sets a whole population in one call would
# take gigabytes (the DAG's rows and the scaled forms all live at once).
_VALUES_PER_CALL = 2**22
VARIANTS = ("f", "a*f", "f+b", "a*f+b")


@dataclass
class Scores:
    """Per-formula results of one batch (numpy arrays of length B, or (B, 4) for variants).

    ``loss`` is the loss the search uses (of a*f+b with linear scaling, else of f);
    ``variant_loss[:, k]`` is the loss of VARIANTS[k] with coefficients ``a[:, k]``, ``b[:, k]``.
    """

    loss: np.ndarray
    variant_loss: np.ndarray
    a: np.ndarray
    b: np.ndarray


def search_dtype(options: Options) -> torch.dtype:
    """The torch dtype of ``precision`` (16, 32 or 64 bits)."""
    return {16: torch.float16, 32: torch.float32, 64: torch.float64}[options.precision]


def make_evaluator(X: torch.Tensor, options: Options) -> IncrementalEvaluator | RowBlockEvaluator:
    """The memoizing evaluator every loss of a search goes through (``memoize=False``: the
    same batched evaluator without its sub-expression cache, the ablation baseline). Data
    of more than `BLOCK_ROWS` rows is evaluated by blocks of rows instead, in bounded
    memory (see `row_blocks`)."""
    if X.shape[0] > BLOCK_ROWS:
        return RowBlockEvaluator(X, device=options.device, dtype=search_dtype(options))
    return IncrementalEvaluator(X, memoize=options.memoize, device=options.device, dtype=search_dtype(options))


def closed_form_scaling(f: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
    """Least-squares coefficients for the three scaled forms, batched over rows of ``f``.

    ``w`` are normalised weights (sum 1). Returns (a_only, b_only, a, b) for a*f, f+b and
    a*f+b. A constant f gets a = 0 (and b the mean of y) rather than a division by zero.
    """
    return _scaling_from_sums(*_scaling_sums(f, y, w), (y * w).sum())


def _scaling_sums(f, y, w):
    """The weighted sums the coefficients need (they add up over blocks of rows)."""
    return (f * w).sum(-1), (f * y * w).sum(-1), (f * f * w).sum(-1)


def _scaling_from_sums(mean_f, fy, ff, mean_y):
    var_f = ff - mean_f * mean_f
    cov = fy - mean_f * mean_y
    tiny = 1e-13 * (ff + 1e-300)
    safe_var = torch.where(var_f > tiny, var_f, torch.ones_like(var_f))
    a = torch.where(var_f > tiny, cov / safe_var, torch.zeros_like(var_f))
    b = mean_y - a * mean_f
    a_only = torch.where(ff > 1e-300, fy / torch.where(ff > 1e-300, ff, torch.ones_like(ff)), torch.zeros_like(ff))
    b_only = mean_y - mean_f
    return a_only, b_only, a, b


class Scorer:
    """Scores formulas on one data set (X, y, weights) under ``options``."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None, options: Options,
                 evaluator=None, normalization: float | None = None):
        self.opts = options
        self.memoize = bool(options.memoize)
        self.evaluator = evaluator if evaluator is not None else make_evaluator(X, options)
        dtype = search_dtype(options)
        self.y = y.to(device=options.device, dtype=dtype)
        self.w = None if weights is None else weights.to(device=options.device, dtype=dtype)
        self.w_norm = (torch.ones_like(self.y) if self.w is None else self.w) / (
            len(self.y) if self.w is None else self.w.sum())
        self.loss_fn = options.loss
        # the four forms f, a*f, f+b, a*f+b are scored wherever some population scales
        self.linear_scaling = options.linear_scaling_fraction > 0
        mean = (self.y * self.w_norm).sum()
        self.baseline_loss = float(self.loss_fn(mean.expand(1, len(self.y)), self.y, self.w)[0])
        # PySR divides losses by the baseline (loss of the mean), floored at 0.01.
        if normalization is None:
            normalization = self.baseline_loss if self.baseline_loss >= 0.01 else 0.01
        self.normalization = normalization
        self.n_evals = 0
        self.memo_hits = 0
        self.memo_evictions = 0
        # formula key -> (loss, 4 variant losses, 4 a, 4 b), in least-recently-used order
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self.memo_capacity = _MEMO_SIZE
        # Called after every evaluator call on a batch split in chunks (large data), so
        # that progress shows while one batch takes seconds.
        self.on_chunk = None
        # A compiled scorer (exprs -> Scores, or None when it cannot take the batch), set
        # by the compiled engine so that every loss of a search comes from one code path.
        self.backend = None

    def for_rows(self, rows: torch.Tensor) -> "Scorer":
        """A scorer on these rows of the data (batching): the same loss and normalisation
        (so that costs compare with this scorer's), without the loss memo or the
        sub-expression cache, which would only fill with values of one batch."""
        X = self.evaluator.X[rows]
        w = None if self.w is None else self.w[rows]
        evaluator = IncrementalEvaluator(X, memoize=False, device=X.device, dtype=X.dtype)
        sub = Scorer(X, self.y[rows], w, self.opts, evaluator=evaluator, normalization=self.normalization)
        sub.memoize = False
        return sub

    def unscaled(self) -> "Scorer":
        """This scorer with f's own loss as its objective, not a*f+b's: the constant
        optimiser's, for the populations that do not scale (`Options.scaled_populations`).
        It shares the data and the evaluator, not the loss memo (whose rows hold all forms)."""
        if not self.linear_scaling:
            return self
        view = copy.copy(self)
        view.linear_scaling = False
        view.memoize = False
        return view

    def cost(self, loss: float, complexity: float) -> float:
        return loss / self.normalization + self.opts.parsimony * complexity

    # --- scoring ----------------------------------------------------------------------------
    def score(self, exprs: list[Expression]) -> Scores:
        """Losses of ``exprs`` (one evaluator call for the whole batch).

        With ``memoize`` a formula scored before is not evaluated again (a quarter of the
        mutants of a search are formulas seen before); it still counts as an evaluation,
        served from the cache, so budgets and results do not depend on ``memoize``.
        """
        if not exprs:
            empty = np.zeros(0)
            return Scores(empty, np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4)))
        if not self.memoize:
            self.n_evals += len(exprs)
            return self._score_in_chunks(exprs)
        memo = self._memo
        # The batch's rows are collected as they are found, so that forgetting old
        # entries below can never take away one this batch still needs.
        found: dict[str, np.ndarray] = {}
        todo = []
        for e in exprs:
            key = e.key
            if key in found:
                continue
            row = memo.get(key)
            if row is None:
                found[key] = None
                todo.append(e)
            else:
                memo.move_to_end(key)
                found[key] = row
        if todo:
            fresh = self._score_in_chunks(todo)
            rows = np.concatenate([fresh.loss[:, None], fresh.variant_loss, fresh.a, fresh.b], 1)
            for e, row in zip(todo, rows):
                found[e.key] = memo[e.key] = row
            while len(memo) > self.memo_capacity:
                memo.popitem(last=False)
                self.memo_evictions += 1
        self.n_evals += len(exprs)
        self.memo_hits += len(exprs) - len(todo)
        table = np.stack([found[e.key] for e in exprs])
        return Scores(table[:, 0], table[:, 1:5], table[:, 5:9], table[:, 9:13])

    def _score_in_chunks(self, exprs: list[Expression]) -> Scores:
        """Scores of ``exprs``, evaluated in as few calls as `_VALUES_PER_CALL` allows (one
        for every batch on data of up to ~20,000 rows)."""
        if self.backend is not None:
            scores = self.backend(exprs)
            if scores is not None:
                return scores
        step = max(1, _VALUES_PER_CALL // max(1, self.y.shape[0]))
        # Blocks need a loss that is a mean over rows (not a whole-formula loss_function).
        by_blocks = isinstance(self.evaluator, RowBlockEvaluator) and isinstance(self.loss_fn, Loss) \
            and not isinstance(self.loss_fn, FormulaLoss)
        parts = []
        with torch.no_grad():
            for i in range(0, len(exprs), step):
                chunk = exprs[i:i + step]
                if by_blocks:
                    parts.append(self._score_blocks(self.evaluator.evaluate_blocks(chunk)))
                else:
                    parts.append(self.score_predictions(self.evaluator.evaluate(chunk)))
                if self.on_chunk is not None and i + step < len(exprs):
                    self.on_chunk()
        if len(parts) == 1:
            return parts[0]
        return Scores(*(np.concatenate([getattr(p, name) for p in parts])
                        for name in ("loss", "variant_loss", "a", "b")))

    def score_predictions(self, f: torch.Tensor) -> Scores:
        """Scores of predictions ``f`` (B, n) on all rows."""
        return self._score_blocks([f])

    def _score_blocks(self, blocks: list[torch.Tensor]) -> Scores:
        """Scores of predictions given as consecutive blocks of rows, (B, n_b) each (one
        block: all rows). Large data comes in blocks so that no temporary here holds more
        than a block's rows: (B, n) temporaries, made and freed call after call,
        fragmented the heap until a 1,000,000-row search held gigabytes."""
        one = len(blocks) == 1
        spans, start = [], 0
        for f in blocks:
            spans.append(slice(start, start + f.shape[1]))
            start += f.shape[1]
        ok = None
        for f in blocks:
            good = torch.isfinite(f).all(-1) & (f.abs() < _HUGE).all(-1)
            ok = good if ok is None else ok & good
        blocks = [torch.where(ok[:, None], f, torch.zeros_like(f)) for f in blocks]
        raw = self._loss_of(blocks, spans, lambda f: f)
        inf = torch.full_like(raw, math.inf)
        ones, zeros = torch.ones_like(raw), torch.zeros_like(raw)
        if not self.linear_scaling:
            loss = torch.where(ok, raw, inf)
            lv = torch.stack([loss, inf, inf, inf], -1)
            av = torch.stack([ones, ones, ones, ones], -1)
            bv = torch.zeros_like(av)
        else:
            if one:
                a1, b2, a3, b3 = closed_form_scaling(blocks[0], self.y, self.w_norm)
            else:
                sums = [sum(part) for part in zip(*(_scaling_sums(f, self.y[r], self.w_norm[r])
                                                    for f, r in zip(blocks, spans)))]
                a1, b2, a3, b3 = _scaling_from_sums(*sums, (self.y * self.w_norm).sum())
            # Form by form: a (3B, n) stack would copy every value once more.
            lv = torch.stack([raw, self._loss_of(blocks, spans, lambda f: a1[:, None] * f),
                              self._loss_of(blocks, spans, lambda f: f + b2[:, None]),
                              self._loss_of(blocks, spans, lambda f: a3[:, None] * f + b3[:, None])], -1)
            lv = torch.where(ok[:, None] & torch.isfinite(lv), lv, torch.full_like(lv, math.inf))
            # The search's loss is the best of the forms (a*f+b is best for L2; not always otherwise).
            loss = lv.min(-1).values
            av = torch.stack([ones, a1, ones, a3], -1)
            bv = torch.stack([zeros, zeros, b2, b3], -1)
        return Scores(loss.cpu().numpy(), lv.cpu().numpy(), av.cpu().numpy(), bv.cpu().numpy())

    def _loss_of(self, blocks, spans, form) -> torch.Tensor:
        """The loss of ``form(f)`` over all rows, from its blocks: one block is the loss
        itself; several add up their rows' shares of the (weighted) mean, which a `Loss`
        (elementwise) allows."""
        if len(blocks) == 1:
            return self.loss_fn(form(blocks[0]), self.y, self.w)
        loss, n, y, w = self.loss_fn, self.y.shape[0], self.y, self.w
        total = 0
        for f, r in zip(blocks, spans):
            pred = form(f)
            if loss.uses_weights:
                weights = (w[r] if w is not None else torch.ones_like(y[r])).expand_as(pred)
                total = total + loss.elementwise(pred, y[r].expand_as(pred), weights).sum(-1) / n
            elif w is None:
                total = total + loss.elementwise(pred, y[r].expand_as(pred)).sum(-1) / n
            else:
                total = total + (loss.elementwise(pred, y[r].expand_as(pred)) * w[r]).sum(-1) / w.sum()
        return torch.where(torch.isfinite(total), total, torch.full_like(total, math.inf))

    # --- differentiable objective for constant optimisation ------------------------------------
    def objective(self, f: torch.Tensor) -> torch.Tensor:
        """Per-row loss of predictions ``f`` (B, n), differentiable; a*f+b with linear scaling."""
        if self.linear_scaling:
            _, _, a, b = closed_form_scaling(f, self.y, self.w_norm)
            f = a[:, None] * f + b[:, None]
        return self.loss_fn(f, self.y, self.w)

    def stats(self) -> dict:
        """Evaluation count and the evaluator's counters / cache statistics, where it has them."""
        out = {"evaluations": self.n_evals, "formulas_served_from_loss_memo": self.memo_hits,
               "loss_memo_evictions": self.memo_evictions}
        ev = self.evaluator
        counters = getattr(ev, "counters", None)
        if counters is not None:
            out.update(counters.as_dict())
        cache = getattr(ev, "cache", None)
        if cache is not None:
            out["cache"] = cache.stats.as_dict()
        return out
