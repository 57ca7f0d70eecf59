"""The search on the compiled engine: every step in one compiled call, the rest as before.

`CompiledSearch` is `hybrid_optimization.evolution.Search` with its step (tournaments,
mutations, scoring, the hall of fame, acceptance) run by `step.run_step` on arrays
(`programs`): no Python object per formula inside an iteration. At the end of each
iteration the populations and the hall of fame are read back as `Expression` members
(`pull`, which also simplifies every member in one compiled call, `simplify`), the
iteration's Python work runs unchanged (batched constant optimisation, soft-tree
reseeding, migration, sympy and polish on the front), and the members it changed are
written back to the arrays (`push`).

`reason_not_compiled(options)` says why a configuration runs on the torch engine
instead (an operator given as a Python callable, a loss other than the squared error,
fractional complexities, batching, float32, a GPU device, ...), or None.

    >>> import torch
    >>> from enhancements.hybrid_optimization.options import Options
    >>> X = torch.linspace(1, 2, 50, dtype=torch.float64).reshape(-1, 1)
    >>> opts = Options(niterations=2, populations=4, soft_tree_seed_fraction=0, random_state=0, progress=False)
    >>> result = CompiledSearch(X, 2.5 * X[:, 0] ** 2, None, opts).run()
    >>> min(e.loss for e in result.hall_of_fame.pareto_front()) < 1e-20
    True
"""
from __future__ import annotations

import math
import sys
import threading
from contextlib import contextmanager

import numpy as np
import torch

from pysr_baseline.expression import Expression

from enhancements.engine.constants import optimize_constants as compiled_optimize_constants
from enhancements.engine.evaluate import score_programs, tables
from enhancements.engine.mutate import mutation_params, scratch
from enhancements.engine.programs import NotCompilable, OperatorTable, Programs
from enhancements.engine.rng import seed_states
from enhancements.engine.simplify import simplify_programs
from enhancements.engine.step import Data, Settings, State, run_step
from enhancements.engine.trees import make_rules
from enhancements.hybrid_optimization.evolution import Search, _seed_sequence
from enhancements.hybrid_optimization.hall_of_fame import HallOfFameEntry
from enhancements.hybrid_optimization.population import PopMember
from enhancements.hybrid_optimization.scoring import Scores

_FRONT_SPARE = 4  # tokens a*f+b adds to a program


def _entry_point(dispatcher, args):
    """The compiled function a numba ``dispatcher`` runs for ``args``, to call again
    without retyping them. numba types every argument of every call: this search's ~80
    arrays in named tuples cost ~0.6 ms a step, a fifth of it. Their types cannot change
    during a search (its arrays are made once, in `CompiledSearch.__init__`)."""
    signature = tuple(dispatcher.typeof_pyval(a) for a in args)
    return dispatcher.overloads[signature].entry_point


# A first step that runs longer than this is numba compiling the kernels (a step takes ms).
COMPILE_NOTICE_SECONDS = 10.0
COMPILE_NOTICE = ("compiling the search's kernels (numba): the first fit on a machine takes about a minute "
                  "longer; the compiled code is cached for every later fit")


@contextmanager
def _compile_notice(enabled: bool, seconds: float = COMPILE_NOTICE_SECONDS, say=None):
    """Print `COMPILE_NOTICE` to stderr (or call ``say()``) if the block is still running
    after ``seconds``, so that a first fit does not look hung."""
    timer = None
    if enabled:
        timer = threading.Timer(seconds, say or (lambda: print(COMPILE_NOTICE, file=sys.stderr, flush=True)))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


def reason_not_compiled(options) -> str | None:
    """Why ``options`` cannot run on the compiled engine (None: it can)."""
    if options.precision != 64:
        return "precision=64 only"
    if options.device is not None and torch.device(options.device).type != "cpu":
        return "a torch device other than the CPU"
    if options.batching:
        return "batching"
    if options.loss_function is not None or not _is_squared_error(options.loss):
        return "a loss other than the squared error"
    if options.weight_optimize > 0 or options.weight_soft_tree > 0:
        return "weight_optimize or weight_soft_tree > 0"
    try:
        OperatorTable.from_options(options)
    except NotCompilable as err:
        return str(err)
    weights = [options.complexity_of_constants, *options._op_complexity.values(),
               *(options.complexity_of_variables if isinstance(options.complexity_of_variables, tuple)
                 else (options.complexity_of_variables,))]
    if any(float(w) != int(w) for w in weights):
        return "fractional complexities"
    if min(weights) < 1:
        return "a complexity below 1 (a formula's length would not be bounded by maxsize)"
    return None


def _is_squared_error(loss) -> bool:
    """The search's loss is (prediction - target)^2, by name or (a user's string) by value."""
    if getattr(loss, "is_l2", False):
        return True
    if getattr(loss, "uses_weights", False):
        return False
    grid = torch.linspace(-3.0, 3.0, 13, dtype=torch.float64)
    pred = grid.reshape(1, -1)
    target = grid.flip(0) * 0.7 + 0.3
    try:
        with torch.no_grad():
            values = loss(pred, target)
    except Exception:
        return False
    expected = torch.mean((pred - target) ** 2, dim=-1)
    return bool(torch.allclose(values, expected, rtol=1e-12, atol=0.0))


# Formulas the compiled loss memo remembers (13 numbers each); a full memo starts again.
MEMO_SIZE = 200_000


def _memo(options):
    """The compiled loss memo's tables (empty with ``memoize=False``)."""
    from numba import types
    from numba.typed import Dict

    size = MEMO_SIZE if options.memoize else 0
    return (Dict.empty(key_type=types.int64, value_type=types.int64), np.zeros((size, 13)),
            np.zeros(size, np.int64))


def _program_length(options) -> int:
    """Tokens a member may have: every token costs at least 1 (`reason_not_compiled`), so maxsize."""
    return int(math.ceil(options.maxsize))


class CompiledSearch(Search):
    """`Search` with its steps compiled (see the module docstring)."""

    # Reseeding costs two soft-tree fits (~1.5 s). The torch engine's 20,000 evaluations
    # are ~4 s of its search, but ~0.7 s of this one's, where a reseed every iteration
    # would take most of the time: 100,000 keeps it to about a third.
    reseed_every_evals = 100_000

    def __init__(self, X, y, weights, options, callback=None, guesses=None, resume=None):
        why = reason_not_compiled(options)
        if why is not None:
            raise ValueError(f"the compiled engine cannot run this search: {why}")
        super().__init__(X, y, weights, options, callback, guesses, resume)
        self.table = OperatorTable.from_options(options)
        self.L = _program_length(options)
        self.rules = make_rules(options, self.table, self.n_features, self.L)
        self.params = mutation_params(options)
        P, N = options.populations, options.population_size
        H = int(math.ceil(options.maxsize)) + 1
        Lf = self.L + _FRONT_SPARE
        streams = seed_states(_seed_sequence(options.random_state).spawn(1)[0], P)
        self.arrays = State(
            np.zeros((P * N, self.L), np.int64), np.zeros((P * N, self.L), np.int64), np.zeros((P * N, self.L)),
            np.zeros(P * N, np.int64), np.full(P * N, np.inf), np.full(P * N, np.inf), np.zeros(P * N),
            np.zeros(P * N, np.int64), self.stats.frequencies,
            np.full(H, np.inf), np.zeros((H, Lf), np.int64), np.zeros((H, Lf), np.int64), np.zeros((H, Lf)),
            np.zeros(H, np.int64), np.zeros((H, self.L), np.int64), np.zeros((H, self.L), np.int64),
            np.zeros((H, self.L)), np.zeros(H, np.int64), np.full(H, np.inf), np.full(H, np.inf), np.zeros(H),
            np.zeros(H, np.int8), np.zeros(3, np.int64), streams, *_memo(options))
        ev = self.scorer.evaluator
        w = self.scorer.w
        self.data = Data(np.ascontiguousarray(ev.X.T.cpu().numpy()), self.scorer.y.cpu().numpy().copy(),
                         np.zeros(0) if w is None else w.cpu().numpy().copy(),
                         0.0 if w is None else float(w.sum()), *tables(self.table), np.array(self._scaled, np.bool_))
        by = options.by_name
        code = {name: self.table.code_of(op) for name, op in by.items()}
        mul, add, sub = code.get("mul", -1), code.get("add", -1), code.get("sub", -1)
        opts = options
        self.settings = Settings(
            P, N, self._per_step, int(opts.tournament_selection_n), float(opts.tournament_selection_p),
            float(opts.adaptive_parsimony_scaling if opts.use_frequency_in_tournament else 0.0),
            bool(opts.use_frequency), bool(opts.annealing), float(opts.alpha), float(opts.crossover_probability),
            bool(opts.skip_mutation_failures), float(opts.parsimony), float(self.scorer.normalization),
            bool(self.scorer.linear_scaling), int(math.ceil(opts.maxsize)), float(self.stats.window_size),
            mul, add, sub, float(self.table.complexity[mul]) if mul >= 0 else 0.0,
            float(self.table.complexity[add if add >= 0 else sub]) if max(add, sub) >= 0 else 0.0)
        self._arrays_ahead = False
        self._pulled: list[PopMember] = []  # the members as `pull` read them, by array row
        self.work = scratch(self.L + 8)
        self._step_entry = None
        self.scorer.backend = self._score_compiled

    def _score_compiled(self, exprs) -> Scores | None:
        """`Scorer` losses of ``exprs`` by the compiled evaluator (None: an operator it lacks)."""
        L = max(e.size for e in exprs)
        block = Programs.empty(len(exprs), L)
        try:
            for m, e in enumerate(exprs):
                block.set(m, e, self.table)
        except NotCompilable:
            return None
        k = len(exprs)
        loss, lv, av, bv = np.empty(k), np.empty((k, 4)), np.empty((k, 4)), np.empty((k, 4))
        D = self.data
        score_programs(block.ops, block.feat, block.val, block.length, D.X, D.y, D.w, D.w_sum,
                       bool(self.scorer.linear_scaling), *tables(self.table), loss, lv, av, bv)
        return Scores(loss, lv, av, bv)

    def _optimize_constants(self, scorer, exprs, iterations, nrestarts, seeds, deadline=None, scaled=True):
        if scorer is not self.scorer:  # a batch's scorer (batching is not compiled): the torch optimiser
            return super()._optimize_constants(scorer, exprs, iterations, nrestarts, seeds, deadline, scaled)
        return compiled_optimize_constants(scorer if scaled else scorer.unscaled(), exprs, iterations, nrestarts,
                                           seeds, deadline, self.table)

    @property
    def n_evals(self) -> int:
        extra = int(self.arrays.counters[1]) if hasattr(self, "arrays") else 0
        return super().n_evals + extra

    # --- arrays <-> members ---------------------------------------------------------------------
    def push(self) -> None:
        """Populations, hall of fame, counters and statistics into the arrays."""
        S, N = self.arrays, self.opts.population_size
        pulled = self._pulled
        for p, pop in enumerate(self.populations):
            for j, m in enumerate(pop.members):
                k = p * N + j
                if k < len(pulled) and pulled[k] is m:  # as the arrays hold it (members are not edited)
                    continue
                if not self._write(S.ops, S.feat, S.val, S.length, k, m.expr):
                    raise AssertionError(f"a member longer than the program length: {m.expr}")
                S.loss[k], S.cost[k], S.cplx[k], S.birth[k] = m.loss, m.cost, m.complexity, m.birth
        S.hof_loss[:] = np.inf
        S.hof_changed[:] = 0
        for entry in self.hof.entries.values():
            slot = int(round(entry.complexity))
            if not 0 <= slot < S.hof_loss.shape[0] or not self._write(S.hof_ops, S.hof_feat, S.hof_val,
                                                                       S.hof_length, slot, entry.expr):
                continue
            member = entry.member
            if member is None or not self._write(S.hof_m_ops, S.hof_m_feat, S.hof_m_val, S.hof_m_length, slot,
                                                 member.expr):
                continue
            S.hof_loss[slot] = entry.loss
            S.hof_m_loss[slot], S.hof_m_cost[slot], S.hof_m_cplx[slot] = member.loss, member.cost, member.complexity
        S.counters[0] = self._birth
        self._pulled = []
        self._arrays_ahead = False

    def pull(self) -> None:
        """The arrays' populations and new hall-of-fame entries back as members."""
        if not self._arrays_ahead:
            return
        S, N, table = self.arrays, self.opts.population_size, self.table
        simple = None
        if self.opts.should_simplify:
            # The iteration's simplification (`Search._simplify`), compiled over all members at
            # once: its results are put where `_simplify` looks them up.
            simple = simplify_programs(S.ops, S.feat, S.val, S.length, self.table.arity)
            if len(self._simplified) > self.opts.populations * N:
                self._simplified.clear()
        pulled = self._pulled = []
        for p, pop in enumerate(self.populations):
            members = []
            for j in range(N):
                k = p * N + j
                expr = _decode(S.ops, S.feat, S.val, S.length, k, table)
                if simple is not None:
                    self._simplified[expr.key] = (_decode(simple.ops, simple.feat, simple.val, simple.length, k,
                                                          table) if simple.changed[k] else expr)
                members.append(PopMember(expr, float(S.loss[k]), float(S.cost[k]), float(S.cplx[k]),
                                         int(S.birth[k])))
            pop.members = members
            pulled.extend(members)
        for slot in np.flatnonzero(S.hof_changed):
            slot = int(slot)
            expr = _decode(S.hof_ops, S.hof_feat, S.hof_val, S.hof_length, slot, table)
            member_expr = _decode(S.hof_m_ops, S.hof_m_feat, S.hof_m_val, S.hof_m_length, slot, table)
            member = PopMember(member_expr, float(S.hof_m_loss[slot]), float(S.hof_m_cost[slot]),
                               float(S.hof_m_cplx[slot]), 0)
            current = self.hof.entries.get(slot)
            if current is None or S.hof_loss[slot] < current.loss:
                self.hof.entries[slot] = HallOfFameEntry(expr, float(S.hof_loss[slot]), slot, member)
        S.hof_changed[:] = 0
        self._birth = int(S.counters[0])
        self._arrays_ahead = False

    def _write(self, ops, feat, val, length, k, expr: Expression) -> bool:
        block = Programs(ops, feat, val, length)
        return block.set(k, expr, self.table)

    # --- the loop -------------------------------------------------------------------------------
    def _compiled_step(self, temperature: float) -> None:
        args = (self.arrays, self.data, self.rules, self.params, self.settings, float(temperature),
                float(self.curmaxsize()), self.work)
        if self._step_entry is None:
            with _compile_notice(self.opts.verbosity > 0):
                run_step(*args)  # types the arguments and compiles (or loads) the step
            self._step_entry = _entry_point(run_step, args)
        else:
            self._step_entry(*args)
        self._arrays_ahead = True
        self.stats.normalize()
        self._cycles_done += self._per_step / self._n_evol
        cond = self.opts.stop_condition
        if cond is not None and self._early_stop is None:
            S = self.arrays
            for slot in np.flatnonzero(S.hof_changed):
                if cond(float(S.hof_loss[slot]), float(slot)):
                    self._early_stop = "early_stop_condition"
                    break

    # the hooks of `Search._run`
    def _step(self, temperature: float) -> None:
        self._compiled_step(temperature)

    def _steps_begin(self) -> None:
        self.push()

    def _steps_end(self) -> None:
        self.pull()

    def _end_of_iteration(self) -> None:
        self.pull()
        super()._end_of_iteration()
        self.push()

    def _evaluator_stats(self) -> dict:
        stats = self.scorer.stats()
        stats["engine"] = "compiled"
        stats["evaluations"] = self.n_evals
        stats["formulas_served_from_loss_memo"] = stats.get("formulas_served_from_loss_memo", 0) + int(
            self.arrays.counters[2])
        return stats


def _decode(ops, feat, val, length, k, table) -> Expression:
    from enhancements.engine.programs import decode

    return decode(ops[k], feat[k], val[k], int(length[k]), table)


def make_search(X, y, weights, options, callback=None, guesses=None, resume=None) -> Search:
    """The search for ``options.engine``: "compiled" (an error, saying why, where it cannot
    run), "torch", or "auto" (compiled where it can run)."""
    if options.engine == "torch":
        return Search(X, y, weights, options, callback, guesses, resume)
    why = reason_not_compiled(options)
    if why is None:
        return CompiledSearch(X, y, weights, options, callback, guesses, resume)
    if options.engine == "compiled":
        raise ValueError(f"engine='compiled' cannot run this search ({why}); use engine='auto' or 'torch'")
    return Search(X, y, weights, options, callback, guesses, resume)
