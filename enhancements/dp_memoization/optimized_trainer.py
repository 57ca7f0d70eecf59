"""`OptimizedSymbolicTrainer`: the baseline trainer's work, without computing anything twice.

Same constructor arguments, ``fit`` signature, restarts, seeds, epochs and choice rule
as `pysr_baseline.trainer.SymbolicTrainer`; what changes is how the work is done. Each
technique has a switch, so that ``experiments/speed_comparison.py`` can add them one
at a time:

1. ``level_batching``: a whole level of the tree is one tensor call per candidate
   operator (`BatchedSoftTree`), instead of one per node;
2. ``restart_batch_size`` (default: all restarts in one batch; 1: one after another):
   restarts are a leading batch dimension, trained together (Adam is elementwise, so
   each restart follows its sequential path up to round-off);
3. ``fused``: each level computes its candidates' values and derivatives in one sweep
   (`BatchedSoftTree.loss_and_grad`), so the backward pass is three tensor calls per
   level instead of an autograd graph of ~150 small nodes;
4. ``memoize``: after training, each restart's hill climb over single-node changes of
   its argmax formula (`local_search_candidates`) evaluates its neighbours through the
   `IncrementalEvaluator` (a neighbour shares all but one path with the formula, and
   restarts share sub-trees: the `SubexpressionCache` serves them), and the refit
   computes each distinct candidate once, with its constant-free sub-trees cached
   (`_MemoizedRefit`), skipping alternatives more complex than an exact fit;
5. ``early_stop``: a batch stops once every node of every restart has hardened (top
   probability above ``harden_threshold``), no restart's argmax choices have changed
   for ``patience`` epochs and the loss has stopped moving.

    >>> import numpy as np
    >>> from pysr_baseline.model import SymbolicRegressor
    >>> x = np.random.default_rng(0).uniform(1, 5, (200, 2)); y = 0.5 * x[:, 0] * x[:, 1] ** 2
    >>> model = SymbolicRegressor(n_features=2, max_depth=2)
    >>> trainer = OptimizedSymbolicTrainer(model, cache_capacity=1000, random_state=0, n_restarts=4)
    >>> history = trainer.fit(x, y, n_epochs=60)
    >>> model.simplify()
    0.5*x0*x1**2
    >>> trainer.cache.stats.hits > 0      # restarts and neighbours share sub-trees
    True
"""
from __future__ import annotations

import math
import time

import torch

from enhancements.dp_memoization.batched_soft_tree import BatchedSoftTree
from enhancements.dp_memoization.cache import SubexpressionCache
from enhancements.dp_memoization.incremental_evaluator import IncrementalEvaluator
from pysr_baseline.constant_fitting import (FittedFormula, _zero_negligible_constants, fit_formula, linear_scaling,
                                            normalized_mse, refit_constants_lbfgs, scale_formula)
from pysr_baseline.expression import Expression
from pysr_baseline.model import SymbolicRegressor
from pysr_baseline.trainer import (SymbolicTrainer, TrainingHistory, choose_formula, initial_parameters,
                                   load_parameters, local_search_candidates, restart_seed)
from pysr_baseline.validation import check_xy


# Bound on one level's stacked candidate values for the default restart batch.
_BATCH_BYTES = 64 * 2 ** 20


class _FlatAdam:
    """`torch.optim.Adam` (default settings) on one flat parameter, as its single-tensor
    update does it, op for op (so the same numbers), without the optimizer's per-step
    Python machinery (~0.15 ms a step; this is 7 tensor calls)."""

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.step_count = 0

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        grad = self.param.grad
        self.step_count += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** self.step_count
        bias_correction2 = 1 - beta2 ** self.step_count
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-self.lr / bias_correction1)


class OptimizedSymbolicTrainer(SymbolicTrainer):
    """A drop-in, faster `SymbolicTrainer`. The switches exist for the ablation in
    ``experiments/speed_comparison.py``; the defaults turn every technique on.

    ``restart_batch_size`` (default: all restarts in one batch, as far as a level's
    stacked values stay under 64 MB) bounds memory for large data; ``level_batching``,
    ``fused``, ``memoize`` and ``early_stop`` switch techniques 1, 3, 4 and 5 (``fused``
    needs ``level_batching``). A restart's result does not depend on the batch it is
    trained in (every tensor call is per restart), so the batch size changes no formula.
    """

    def __init__(self, model: SymbolicRegressor, cache_capacity: int = 1000, restart_batch_size: int | None = None,
                 level_batching: bool = True, fused: bool = True, memoize: bool = True, early_stop: bool = True,
                 harden_threshold: float = 0.99, patience: int = 20, **kwargs):
        super().__init__(model, **kwargs)
        if not isinstance(cache_capacity, int) or isinstance(cache_capacity, bool) or cache_capacity < 1:
            raise ValueError(f"cache_capacity must be a positive int, got {cache_capacity!r}")
        if restart_batch_size is not None and (not isinstance(restart_batch_size, int)
                                               or isinstance(restart_batch_size, bool) or restart_batch_size < 1):
            raise ValueError(f"restart_batch_size must be a positive int or None, got {restart_batch_size!r}")
        if not 0.5 < harden_threshold < 1:
            raise ValueError(f"harden_threshold must be in (0.5, 1), got {harden_threshold!r}")
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise ValueError(f"patience must be a positive int, got {patience!r}")
        self.cache = SubexpressionCache(capacity=cache_capacity)
        self.restart_batch_size = restart_batch_size
        self.level_batching = bool(level_batching)
        self.fused = bool(fused)
        self.memoize = bool(memoize)
        self.early_stop = bool(early_stop)
        self.harden_threshold = harden_threshold
        self.patience = patience

    def fit(self, x, y, n_epochs: int = 200, weights=None) -> TrainingHistory:
        """Train, pick a formula, store it on the model (``model.fitted_expression``) and
        leave the model's parameters at the restart that produced it, as `SymbolicTrainer.fit`."""
        if not isinstance(n_epochs, int) or n_epochs < 1:     # exactly SymbolicTrainer's checks
            raise ValueError(f"n_epochs must be a positive int, got {n_epochs!r}")
        X, Y, W = check_xy(x, y, weights, n_features=self.model.n_features, device=self.device)
        start = time.perf_counter()
        seed = self._seed()
        model = self.model.to(self.device)
        evaluator = IncrementalEvaluator(X, cache=self.cache, memoize=True, device=self.device)
        if self.memoize:
            evaluate = evaluator.evaluate       # one DAG of unique sub-trees, cached across steps and restarts
        else:
            def evaluate(formulas):             # the baseline's way: one formula at a time
                return torch.stack([f.evaluate(X) for f in formulas])
        memo: dict[str, FittedFormula] = {}
        soft_data = [None if t is None else t.to(model.dtype) for t in (X, Y, W)]
        batch = self.restart_batch_size or self._default_batch(X.shape[0], model)
        losses, epochs_run, restart_params, candidates, owners, restart_formulas = [], [], [], [], [], []
        for first in range(0, self.n_restarts, batch):
            restarts = range(first, min(first + batch, self.n_restarts))
            starts = [initial_parameters(model, restart_seed(seed, r), self.init_scale) for r in restarts]
            tree = BatchedSoftTree.from_model(model, starts, level_batching=self.level_batching).to(self.device)
            curves, ran = self._train_batch(tree, *soft_data, n_epochs)
            losses.extend(curves)
            epochs_run.extend([ran] * len(restarts))
            per_restart = []
            for i in range(len(restarts)):
                restart_params.append(tree.restart_parameters(i))
                if self.memoize:
                    search = _LocalSearch(model, restart_params[-1])
                    per_restart.append(search.candidates(evaluate, Y, W, self.n_alternatives, self.n_search_steps))
                else:
                    load_parameters(model, restart_params[-1])
                    per_restart.append(local_search_candidates(model, evaluate, Y, W, self.n_alternatives,
                                                               self.n_search_steps))
            fitted = self._refit_all(per_restart, evaluator, memo, X, Y, W)
            for i, restart in enumerate(restarts):
                restart_formulas.append(fitted[i][0].expression)
                candidates.extend(fitted[i])
                owners.extend([restart] * len(fitted[i]))
        chosen = choose_formula(candidates)
        load_parameters(model, restart_params[owners[chosen]])
        model.fitted_expression = candidates[chosen].expression
        return TrainingHistory(losses, restart_formulas, candidates[chosen].expression, candidates[chosen].nmse,
                               owners[chosen], time.perf_counter() - start, epochs_run)

    def _default_batch(self, n_rows: int, model: SymbolicRegressor) -> int:
        """All restarts in one batch, unless one level's stacked candidates would pass
        ``_BATCH_BYTES`` (the fused path keeps four such buffers per level)."""
        itemsize = torch.empty((), dtype=model.dtype).element_size()
        per_restart = model.n_candidates * 2 ** (model.max_depth - 1) * n_rows * itemsize
        return max(1, min(self.n_restarts, _BATCH_BYTES // per_restart))

    # --- training -----------------------------------------------------------------------
    def _train_batch(self, tree: BatchedSoftTree, X, Y, W, n_epochs: int) -> tuple[list[list[float]], int]:
        """Adam on all restarts of a batch at once; each restart's loss curve and the epochs run."""
        fused = self.fused and self.level_batching
        optimizer = _FlatAdam(tree.flat, self.lr) if fused else torch.optim.Adam(tree.parameters(), lr=self.lr)
        start_temperature = self.model.temperature
        history, watch = [], _HardeningWatch(tree, self) if self.early_stop else None
        step = tree.fused_step(X, Y, W) if fused else None
        for epoch in range(n_epochs):
            tree.temperature = self.temperature_at(epoch, n_epochs, start_temperature)
            coefficient = self.entropy_coefficient(epoch, n_epochs)
            if fused:
                fit_loss = step(coefficient)
            else:
                optimizer.zero_grad()
                out = tree(X)                                          # (R, N)
                a, b = linear_scaling(out, Y, W)
                fit_loss = normalized_mse(a[:, None] * out + b[:, None], Y, W)
                # Each restart's loss depends only on its own parameters: the sum's gradient
                # is every restart's own gradient.
                (fit_loss + coefficient * tree.entropy()).sum().backward()
                fit_loss = fit_loss.detach()
            optimizer.step()
            history.append(fit_loss)
            if watch is not None and watch.settled(epoch, history):
                break
        tree.temperature = start_temperature
        return torch.stack(history, dim=1).tolist(), len(history)

    # --- the refit ----------------------------------------------------------------------
    def _refit_all(self, per_restart: list[list], evaluator: IncrementalEvaluator, memo: dict,
                   X, Y, W) -> list[list[FittedFormula]]:
        """Refit every restart's candidates (its argmax formula first, then alternatives).

        With ``memoize``: each distinct formula is refitted once; the constant-free ones
        and the constant-free sub-trees of the others are evaluated in one
        `IncrementalEvaluator` batch (through the cache), so the L-BFGS closure only
        recomputes the path from the constants to the root; and once some candidate fits
        exactly, alternatives more complex than it are not refitted (`choose_formula`
        cannot pick them; they are reported with an infinite loss)."""
        if not self.memoize:
            return [[fit_formula(e, X, Y, W) for e in exprs] for exprs in per_restart]
        unique = {e.key: e for exprs in per_restart for e in exprs if e.key not in memo}
        fitter = _MemoizedRefit(X, Y, W, evaluator, list(unique.values()))
        argmax_keys = {exprs[0].key for exprs in per_restart}
        exact_complexity = min((f.complexity for f in memo.values() if f.nmse <= 1e-12), default=float("inf"))
        skipped = {}
        # simplest first, so that an exact fit is known before the complex alternatives
        for e in sorted(unique.values(), key=lambda e: e.complexity()):
            if e.key not in argmax_keys and e.complexity() > exact_complexity:
                skipped[e.key] = FittedFormula(e, float("inf"))   # not memoized: may be needed later
                continue
            memo[e.key] = fitter.fit(e)
            if memo[e.key].nmse <= 1e-12:
                exact_complexity = min(exact_complexity, memo[e.key].complexity)
        return [[memo[e.key] if e.key in memo else skipped[e.key] for e in exprs] for exprs in per_restart]


class _LocalSearch:
    """`local_search_candidates` for one restart, with every formula built from memoized
    sub-formulas.

    The baseline reads each of the ~300 neighbours of a hill-climbing step off the module
    tree (`SymbolicRegressor.discretize`: one ``argmax`` tensor call per node, a new
    `Expression` per node). Here the argmax choices are read once, and the formula of a
    sub-tree under given choices is built once and shared (a neighbour differs from its
    centre in one node, so only that node's path to the root is new). Same neighbours,
    same order, same scores and tie-breaking, hence the same candidates.
    """

    def __init__(self, model: SymbolicRegressor, params: dict[str, torch.Tensor]):
        self.n_internal = params["internal"].shape[0]
        self.binary, self.unary = model.binary_operators, model.unary_operators
        self.n_features = model.n_features
        self.argmax = params["internal"].argmax(-1).tolist() + params["leaf"].argmax(-1).tolist()
        self.n_choices = [params["internal"].shape[1]] * self.n_internal + [params["leaf"].shape[1]] * len(
            params["constant"])
        self.constants = params["constant"].tolist()
        n_nodes = len(self.argmax)
        self.subtree = [frozenset()] * n_nodes
        for i in reversed(range(n_nodes)):
            kids = (2 * i + 1, 2 * i + 2) if i < self.n_internal else ()
            self.subtree[i] = frozenset([i]).union(*(self.subtree[c] for c in kids))
        self._memo: dict = {}

    def formula(self, node: int, choices: dict) -> Expression:
        """The formula of the sub-tree at heap index ``node`` (``discretize`` semantics)."""
        key = (node, tuple(sorted((i, k) for i, k in choices.items() if i in self.subtree[node])))
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._build(node, choices)
        return found

    def _build(self, node: int, choices: dict) -> Expression:
        k = choices.get(node, self.argmax[node])
        if node >= self.n_internal:
            return Expression.var(k) if k < self.n_features else Expression.const(self.constants[node - self.n_internal])
        n_binary = len(self.binary)
        if k < n_binary:
            return Expression(self.binary[k], (self.formula(2 * node + 1, choices), self.formula(2 * node + 2, choices)))
        if k < n_binary + len(self.unary):
            return Expression(self.unary[k - n_binary], (self.formula(2 * node + 1, choices),))
        return self.formula(2 * node + 1, choices)

    def active_nodes(self, choices: dict) -> list[int]:
        """`SymbolicRegressor.active_nodes` order, as heap indices."""
        active, stack = [], [0]
        while stack:
            node = stack.pop()
            active.append(node)
            if node < self.n_internal:
                k = choices.get(node, self.argmax[node])
                stack.extend([2 * node + 1, 2 * node + 2] if k < len(self.binary) else [2 * node + 1])
        return active

    def neighbours(self, choices: dict) -> list[tuple[dict, Expression]]:
        """`neighbour_formulas`: the centre, then every distinct single-node change."""
        centre = self.formula(0, choices)
        found = {centre.key: (choices, centre)}
        for node in self.active_nodes(choices):
            current = choices.get(node, self.argmax[node])
            for k in range(self.n_choices[node]):
                if k != current:
                    trial = {**choices, node: k}
                    formula = self.formula(0, trial)
                    found.setdefault(formula.key, (trial, formula))
        return list(found.values())

    def candidates(self, evaluate, Y, W, n_alternatives: int, n_steps: int) -> list[Expression]:
        """`local_search_candidates`, step for step."""
        seen: dict[str, tuple[float, Expression]] = {}
        argmax = self.formula(0, {})
        choices: dict = {}
        for _ in range(max(n_steps, 1)):
            neighbours = self.neighbours(choices)
            fresh = [(c, f) for c, f in neighbours if f.key not in seen]
            if fresh:
                with torch.no_grad():
                    values = evaluate([f for _, f in fresh])
                    a, b = linear_scaling(values, Y, W)
                    losses = normalized_mse(a[:, None] * values + b[:, None], Y, W)
                for (_, f), loss in zip(fresh, losses.tolist()):
                    seen[f.key] = (loss, f)
            best_choices, best = min(neighbours, key=lambda cf: (seen[cf[1].key][0], cf[1].size))
            if best.key == neighbours[0][1].key:
                break
            choices = best_choices
        ranked = sorted((v for k, v in seen.items() if k != argmax.key), key=lambda v: (v[0], v[1].size))
        return [argmax] + [f for _, f in ranked[:n_alternatives]]


class _MemoizedRefit:
    """`fit_formula` with the constant-free sub-trees of every formula computed once.

    The L-BFGS closure of `fit_formula` evaluates the whole formula and differentiates
    through the closed-form linear scaling on each of its ~50 calls. Here a formula is
    compiled to the path from its constants to the root, over sub-tree values taken from
    one `IncrementalEvaluator` batch; the loss is the same `linear_scaling` /
    `normalized_mse` value, and its gradient with respect to the output is the closed
    form 2 w a r / var_y (the derivatives through a and b vanish at their optimum), so
    autograd only records the constant path. Same optimiser, settings and acceptance
    rule as `fit_formula`; constants agree with it to round-off.
    """

    def __init__(self, X, Y, W, evaluator: IncrementalEvaluator, formulas: list[Expression],
                 max_iter: int = 50, tolerance: float = 1e-6):
        self.X, self.Y, self.W = X, Y, W
        self.max_iter, self.tolerance = max_iter, tolerance
        w = torch.ones_like(Y) if W is None else W
        self.w = w / w.sum()
        self.y_centred = Y - (Y * self.w).sum()
        self.y_centred_w = self.y_centred * self.w
        self.var_y = (self.y_centred * self.y_centred * self.w).sum().clamp_min(1e-300)
        self.columns = [X[:, i] for i in range(X.shape[1])]
        shared = {}
        for f in formulas:
            for node in _constant_free_subtrees(f):
                shared.setdefault(node.key, node)
        batch = list(shared.values()) + [f for f in formulas if not f.constants]
        values = evaluator.evaluate(batch) if batch else None
        self.values = {e.key: values[i] for i, e in enumerate(batch)}

    def fit(self, f: Expression) -> FittedFormula:
        X, Y, W = self.X, self.Y, self.W
        if not f.constants:
            return fit_formula(f, X, Y, W, values=self.values.get(f.key))
        f = self._refit_inner_constants(f)
        f = _zero_negligible_constants(f, X, Y, W, self.tolerance)
        return scale_formula(f, X, Y, W, self.tolerance)

    def _program(self, f: Expression):
        """f as a function of its constants (preorder), over the memoized sub-tree values."""
        steps, counter = [], [0]

        def source(node):
            if node.is_constant:
                counter[0] += 1
                return ("c", counter[0] - 1)
            if node.feature is not None:
                return ("v", self.columns[node.feature])
            if node.key in self.values and not node.constants:
                return ("v", self.values[node.key])
            args = [source(c) for c in node.children]
            steps.append((node.op.fn, args))
            return ("s", len(steps) - 1)

        root = source(f)

        def run(params):
            done = []
            pick = {"c": lambda i: params[i], "v": lambda t: t, "s": lambda i: done[i]}
            for fn, args in steps:
                done.append(fn(*[pick[kind](x) for kind, x in args]))
            return pick[root[0]](root[1])

        return run

    def _refit_inner_constants(self, f: Expression) -> Expression:
        """`constant_fitting._refit_inner_constants` with the memoized loss."""
        X, Y, W = self.X, self.Y, self.W
        run = self._program(f)
        n, w, y_centred_w, inv_var_y = Y.shape[0], self.w, self.y_centred_w, 1.0 / float(self.var_y)

        def loss_and_backward(params):
            out = run(params)
            with torch.no_grad():
                # normalized_mse(a * f + b) with linear_scaling's a and b, in fewer calls
                value = out.detach().expand(n) if out.ndim == 0 else out.detach()
                mean_f = float((value * w).sum())
                if not math.isfinite(mean_f):        # NaN/inf somewhere: normalized_mse says inf
                    return torch.tensor(float("inf"), dtype=X.dtype)
                centred = value - mean_f
                var_f = float((centred * centred * w).sum())
                a = float((centred * y_centred_w).sum()) / var_f if var_f > 1e-14 * (mean_f * mean_f + 1.0) else 0.0
                residual = centred.mul_(a).sub_(self.y_centred)          # a * f + b - y
                weighted = residual * w
                loss = float((residual * weighted).sum()) * inv_var_y
                if not math.isfinite(loss) or not out.requires_grad:
                    return torch.tensor(float("inf"), dtype=X.dtype)  # no gradient step out of an undefined region
                grad = weighted.mul_(2.0 * a * inv_var_y)
            out.backward(grad.sum() if out.ndim == 0 else grad)
            return torch.tensor(loss, dtype=X.dtype)

        return refit_constants_lbfgs(f, X, Y, W, self.max_iter, loss_and_backward)


def _constant_free_subtrees(f: Expression) -> list[Expression]:
    """The largest operator sub-trees of f without constants, when f has constants."""
    if not f.constants:
        return []
    found, stack = [], list(f.children)
    while stack:
        node = stack.pop()
        if node.op is None:
            continue
        if node.constants:
            stack.extend(node.children)
        else:
            found.append(node)
    return found


class _HardeningWatch:
    """Decides when more epochs would not change what a batch of restarts yields.

    A restart yields its argmax formula (and the hill climb around it), so the batch
    stops only when every node of every restart has a top probability above
    ``harden_threshold``, no restart's argmax choices have changed for ``patience``
    epochs, and no restart's loss has moved by more than 1e-6 (relative) over the last
    10 epochs. Checked every 10 epochs (a few small tensor calls).
    """

    def __init__(self, tree: BatchedSoftTree, trainer: OptimizedSymbolicTrainer):
        self.tree, self.threshold, self.patience = tree, trainer.harden_threshold, trainer.patience
        self.choices, self.since = None, None

    def settled(self, epoch: int, history: list[torch.Tensor]) -> bool:
        if epoch % 10 != 9:
            return False
        tree = self.tree
        with torch.no_grad():
            hardened = True
            choices = []
            for logits in (tree.internal, tree.leaf):
                top = torch.softmax(logits / tree.temperature, dim=-1).max(dim=-1)
                choices.append(top.indices.reshape(-1))
                hardened = hardened and bool((top.values > self.threshold).all())
            choices = torch.cat(choices)
        if not hardened or self.choices is None or not torch.equal(choices, self.choices):
            self.choices, self.since = choices, epoch
            return False
        if epoch - self.since < self.patience or len(history) < 11:
            return False
        now, before = history[-1], history[-11]
        return bool(((now - before).abs() <= 1e-6 * (before.abs() + 1e-12)).all())

