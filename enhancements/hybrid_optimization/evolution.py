"""PySR's search loop, batched: regularized evolution over many populations.

Each iteration runs ``ncycles_per_iteration`` steps. In a step every population draws
ceil(population_size / tournament_selection_n) parents by tournament and mutates them (or
crosses two over); all mutants of all populations are scored in ONE evaluator call (a
mutant shares all but one path with its parent, so the memoizing evaluator computes only
that path); then, population by population, each mutant is accepted or rejected (simulated
annealing and complexity frequencies) and replaces the oldest member. After the steps:
simplification, batched constant optimisation, migration between populations and from
the hall of fame, and refinement of the hall of fame's front (`front.FrontKeeper`).

Every random choice for a population comes from that population's own generator (spawned
from ``random_state``), so a seed fixes the run.

    >>> X = torch.tensor(np.random.default_rng(0).uniform(1, 3, (100, 2)))
    >>> y = X[:, 0] * X[:, 1] + 2.0
    >>> opts = Options(binary_operators=["+", "*"], niterations=2, populations=4, population_size=20,
    ...                ncycles_per_iteration=20, random_state=0, verbosity=0)
    >>> result = Search(X, y, None, opts).run()
    >>> result.stop_reason, result.hall_of_fame.best_loss() < 1e-20
    ('niterations', True)
    >>> front = result.hall_of_fame.pareto_front()      # simplest first, each more accurate
    >>> all(a.complexity < b.complexity and a.loss > b.loss for a, b in zip(front, front[1:]))
    True
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from pysr_baseline.expression import Expression

from enhancements.hybrid_optimization.batching import BatchSampler, batch_rows
from enhancements.hybrid_optimization.constant_optimization import OptimizedConstants, optimize_constants
from enhancements.hybrid_optimization.hall_of_fame import HallOfFame, select_index
from enhancements.hybrid_optimization.interrupts import StopRequest
from enhancements.hybrid_optimization.mutations import Mutator
from enhancements.hybrid_optimization.options import Options
from enhancements.hybrid_optimization.population import PopMember, Population, RunningSearchStatistics
from enhancements.hybrid_optimization.scoring import Scorer, Scores
from enhancements.hybrid_optimization.search_state import SearchState
from enhancements.hybrid_optimization.front import FrontKeeper
from enhancements.hybrid_optimization.simplification import simplify_tree

# sympy simplification of new front entries: a count (not a time) budget per iteration
# keeps runs reproducible (see front.py). One call a iteration (was 4): with the compiled
# engine an iteration's steps take ~0.6 s and a sympy call ~0.25 s, so four made sympy
# most of the search; on the first 20 Feynman equations at 20 s each, 1 and 4 solved the
# same 10 (and 14 reached R2 > 0.999 either way).
_SYMPY_PER_ITERATION = 1
# BFGS iterations for the constants of a guess and of a front entry (`FrontKeeper.refine`),
# and the front entries refined an iteration (~1% of PySR's default iteration's evaluations)
_REFINE_ITERATIONS = 100
_REFINE_PER_ITERATION = 3
_TARGET_BATCH = 192
# Soft-tree reseeding (two fits, ~1-2 s) follows an iteration once this many evaluations
# (~4 s of search) have passed since the last one: with PySR's default iteration (~23,000
# evaluations) that is every iteration, and short iterations do not spend most of their
# time on fits. Counting evaluations, not seconds, keeps a seed's run reproducible.
_RESEED_EVERY_EVALS = 20_000
# Under timeout_in_seconds the search proper stops this share of the budget early (at
# most this many seconds), which pays for the last look at the front (sympy, polish):
# fit returns within the budget instead of a few seconds past it.
_FINAL_LOOK_SHARE = 0.05
_FINAL_LOOK_MAX_SECONDS = 2.0


@dataclass
class SearchResult:
    hall_of_fame: HallOfFame
    populations: list
    n_evals: int
    iterations: int
    elapsed: float
    stop_reason: str
    baseline_loss: float
    evaluator_stats: dict = field(default_factory=dict)

    @property
    def evals_per_second(self) -> float:
        return self.n_evals / self.elapsed if self.elapsed > 0 else float("nan")


@dataclass
class _Proposal:
    pop: int
    kind: str
    parents: tuple
    children: tuple | None
    members: list = field(default_factory=list)


class _Stop(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def _seed_sequence(random_state) -> np.random.SeedSequence:
    if random_state is None:
        return np.random.SeedSequence()
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(int(random_state.integers(2**63)))
    if isinstance(random_state, np.random.RandomState):
        return np.random.SeedSequence(int(random_state.randint(2**31)))
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool) and random_state >= 0:
        return np.random.SeedSequence(int(random_state))
    raise ValueError(f"random_state must be None, a non-negative int or a numpy Generator, got {random_state!r}")


@contextmanager
def _torch_threads(n: int):
    """Run with ``n`` torch intra-op threads: the search's tensors (a few batch x rows) are
    too small to gain from threads, and on a busy machine idle-spinning threads cost ~10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Search:
    """One symbolic-regression search on (X, y[, weights]) under ``options``.

    ``callback(search, iteration)`` is called after every iteration (the progress bar);
    if the callback has an ``on_step(search)`` method, that is called after every step
    too (a step is one batch of mutants: many per iteration), and after every part of a
    batch that large data splits, so progress shows within an iteration. The first Ctrl-C
    stops the search at the next step (stop reason ``"interrupted"``) with the hall of
    fame complete; a second one aborts.

    ``guesses`` (formulas) are fitted, put in the hall of fame and in every population
    (see `guesses`); ``resume`` (a `SearchState`) continues an earlier search's
    populations, hall of fame, counters and random generators instead of starting anew.
    With batching (``options.batching``) populations are scored on a random batch of
    rows each step, and the hall of fame on all rows.
    """

    # Soft-tree reseeding follows an iteration once this many evaluations have passed
    # since the last one (see _RESEED_EVERY_EVALS); an engine that evaluates faster sets more.
    reseed_every_evals = _RESEED_EVERY_EVALS

    def __init__(self, X: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None, options: Options,
                 callback=None, guesses=None, resume: SearchState | None = None):
        self.opts = options
        self.n_features = X.shape[1]
        cv = options.complexity_of_variables
        if isinstance(cv, tuple) and len(cv) != self.n_features:
            raise ValueError("The number of elements in `complexity_of_variables` must equal the number of "
                             f"features in `X` ({len(cv)} for {self.n_features})")
        self.scorer = Scorer(X, y, weights, options)
        # Populations scored as a*f+b and populations scored as f (`linear_scaling` a fraction):
        # the first find constant factors for free, the others are not drawn to formulas that
        # only fit the data's shape (a*exp(sin(x))+b for a polynomial).
        self._scaled = options.scaled_populations()
        self._mixed = 0.0 < options.linear_scaling_fraction < 1.0
        self.mutator = Mutator(options, self.n_features)
        self.stats = RunningSearchStatistics(int(math.ceil(options.maxsize)))
        self.hof = HallOfFame()
        seq = _seed_sequence(options.random_state)
        children = seq.spawn(options.populations + 1)
        self.pop_rngs = [np.random.default_rng(c) for c in children[:-1]]
        self.rng = np.random.default_rng(children[-1])
        self.guesses = list(guesses or ())
        self._guess_members: list[PopMember] = []
        self._resume = resume
        self._iterations_before = 0
        if resume is not None:
            self._iterations_before = resume.iterations
            if len(resume.rng_states) == len(self.pop_rngs) + 1:
                for gen, state in zip(self.pop_rngs + [self.rng], resume.rng_states):
                    gen.bit_generator.state = state
        rows = batch_rows(options.batching, options.batch_size, X.shape[0])
        self.batches = None if rows is None else BatchSampler(self.scorer, rows, self.rng)
        self.callback = callback
        self._on_step = getattr(callback, "on_step", None)
        if self._on_step is not None:
            self.scorer.on_chunk = lambda: self._on_step(self)
        self._stop_request = StopRequest()
        self._birth = 0
        # Losses below this are round-off for an exact formula (used by model selection).
        self.loss_floor = float(np.finfo(np.float64).eps) * max(self.scorer.baseline_loss, 1e-300)
        # PySR: a cycle is ceil(population_size / tournament_selection_n) mutations per population.
        # A step does several cycles' mutations at once so that one evaluator call gets ~_TARGET_BATCH
        # formulas (measured: ~110 us/formula at 64, ~65 at 256), but at most a quarter of a
        # population, so that a step stays close to PySR's one-at-a-time replacement.
        self._n_evol = int(math.ceil(options.population_size / options.tournament_selection_n))
        per_pop = int(math.ceil(_TARGET_BATCH / options.populations))
        self._per_step = max(self._n_evol, min(per_pop, options.population_size // 4))
        positive = [i for i in range(self.n_features) if bool((X[:, i] > 0).all())]
        bind = getattr(options.soft_tree_proposer, "bind", None)
        if bind is not None:
            bind(X, y, weights, options)
        self.front = FrontKeeper(self.hof, options, self.mutator.is_valid, positive, self._check_early_stop)
        self._simplified: dict[str, Expression] = {}
        self._early_stop: str | None = None
        self._reseeded_at = 0
        self._seed_seconds = 0.0  # how long the last soft-tree seeding took
        self.populations: list[Population] = []
        self.iteration = 0
        self._cycle = 0.0  # cycles done in the current iteration
        self._cycles_done = 0.0
        if resume is not None:
            self._cycles_done, self._birth = resume.cycles_done, resume.birth
        self._start = time.perf_counter()

    # --- members and the hall of fame ---------------------------------------------------------
    def _next_birth(self) -> int:
        self._birth += 1
        return self._birth

    @property
    def n_evals(self) -> int:
        """Formulas evaluated, a batch's evaluation counting as its share of the rows."""
        if self.batches is None:
            return self.scorer.n_evals
        return int(self.scorer.n_evals + self.batches.evaluations)

    def _members(self, exprs: list[Expression], scores: Scores, births: bool = True,
                 record: bool = True, scaled=True) -> list[PopMember]:
        """Members for ``exprs`` from their ``scores``: with the loss of the best form where
        ``scaled`` (a bool, or one per formula: its population's `Options.scaled_populations`),
        else f's own loss."""
        out = []
        # Python lists: indexing numpy arrays element by element costs more than the work.
        losses, lv, av, bv = (scores.loss.tolist(), scores.variant_loss.tolist(), scores.a.tolist(),
                              scores.b.tolist())
        complexity, cost_of = self.opts.complexity, self.scorer.cost
        for i, e in enumerate(exprs):
            c = complexity(e)
            if scaled is True or (scaled is not False and scaled[i]):
                loss, scale = losses[i], (av[i][3], bv[i][3])
            else:
                loss, scale = lv[i][0], (1.0, 0.0)
            cost = cost_of(loss, c) if math.isfinite(loss) else math.inf
            m = PopMember(e, loss, cost, c, self._next_birth() if births else 0, scale)
            if record:
                self.front.record(m, lv[i], av[i], bv[i])
            out.append(m)
        return out

    def _score_members(self, exprs: list[Expression], scorer: Scorer | None = None,
                       scaled=True) -> list[PopMember]:
        """Members for ``exprs``, scored on all rows (and offered to the hall of fame), or
        by ``scorer``, a batch's (`_population_scorer`), whose losses stay in the populations.
        ``scaled``: as in `_members`."""
        return self._members_of_kinds(exprs, scorer, (scaled,))[0]

    def _members_of_kinds(self, exprs: list[Expression], scorer: Scorer | None, kinds: tuple,
                          births: bool = True) -> list[list[PopMember]]:
        """Members for ``exprs`` scored once, as each of ``kinds`` takes them (``scaled`` of
        `_members`): the scaled and the unscaled populations' members of one formula."""
        if not exprs:
            return [[] for _ in kinds]
        main = scorer is None or scorer is self.scorer
        if not main:
            self.batches.count(len(exprs))
        scores = (self.scorer if main else scorer).score(exprs)
        return [self._members(exprs, scores, births=births, record=main and i == 0, scaled=kind)
                for i, kind in enumerate(kinds)]

    def _kinds_of(self, pops) -> list[bool]:
        """Whether each of ``pops`` (population indices) scales its members."""
        return [self._scaled[p] for p in pops]

    def _population_scorer(self) -> Scorer:
        """The scorer for population work: a fresh random batch's with batching, else all rows'."""
        return self.scorer if self.batches is None else self.batches.draw()

    def _hall_of_fame_from_populations(self) -> None:
        """With batching: each population's best member per complexity (by its batch loss),
        re-scored on all rows and offered to the hall of fame (SymbolicRegression.jl's rule)."""
        best: dict[tuple, PopMember] = {}
        for p, pop in enumerate(self.populations):
            for m in pop.members:
                key = (p, m.complexity)
                if math.isfinite(m.loss) and (key not in best or m.loss < best[key].loss):
                    best[key] = m
        exprs = list({m.expr.key: m.expr for m in best.values()}.values())
        self._members(exprs, self.scorer.score(exprs), births=False)

    def _check_early_stop(self, loss: float, complexity: float) -> None:
        # Only noted here: the batch being recorded is finished first (its other forms may
        # be simpler), and the run stops at the next budget check.
        cond = self.opts.stop_condition
        if cond is not None and self._early_stop is None and cond(loss, complexity):
            self._early_stop = "early_stop_condition"

    def _deadline(self) -> float | None:
        """When the search proper stops under ``timeout_in_seconds`` (None: no timeout): the
        budget less the share kept for the last look at the front (see `_final_deadline`)."""
        t = self.opts.timeout_in_seconds
        return None if t is None else self._start + t - min(_FINAL_LOOK_SHARE * t, _FINAL_LOOK_MAX_SECONDS)

    def _final_deadline(self) -> float | None:
        """When the last look at the front must be done: the end of ``timeout_in_seconds``."""
        t = self.opts.timeout_in_seconds
        return None if t is None else self._start + t

    def _check_budget(self) -> None:
        opts = self.opts
        if self._stop_request.requested:
            raise _Stop("interrupted")
        if self._early_stop is not None:
            raise _Stop(self._early_stop)
        deadline = self._deadline()
        if deadline is not None and time.perf_counter() >= deadline:
            raise _Stop("timeout_in_seconds")
        if opts.max_evals is not None and self.n_evals >= opts.max_evals:
            raise _Stop("max_evals")

    # --- selection and acceptance ---------------------------------------------------------
    def _tournament(self, pop: Population, rng, keys=None) -> PopMember:
        opts = self.opts
        scaling = opts.adaptive_parsimony_scaling if opts.use_frequency_in_tournament else 0.0
        return pop.tournament(rng, opts.tournament_selection_n, opts.tournament_selection_p, self.stats, scaling,
                              keys)

    def _frequency(self, complexity: float) -> float:
        if 0 < complexity <= self.stats.maxsize:
            return max(self.stats.normalized(complexity), 1e-6)
        return 1e-6

    def _accept(self, baby: PopMember, parent: PopMember, temperature: float, rng) -> bool:
        if not math.isfinite(baby.loss):
            return False
        opts = self.opts
        prob = 1.0
        if opts.annealing:
            delta = baby.cost - parent.cost
            if temperature <= 0:
                prob = 0.0 if delta > 0 else 1.0
            else:
                prob = math.exp(min(0.0, -delta / (temperature * opts.alpha))) if delta > 0 else 1.0
        if opts.use_frequency:
            prob *= self._frequency(parent.complexity) / self._frequency(baby.complexity)
        return prob >= rng.random()

    def _replace_oldest(self, pop: Population, member: PopMember, protect: set[int]) -> int:
        i = pop.oldest(protect)
        pop.members[i] = member
        return i

    # --- the loop -----------------------------------------------------------------------------
    def curmaxsize(self) -> float:
        opts = self.opts
        if opts.warmup_maxsize_by <= 0:
            return opts.maxsize
        total = opts.niterations * opts.ncycles_per_iteration * opts.warmup_maxsize_by
        frac = min(1.0, self._cycles_done / total) if total > 0 else 1.0
        return min(opts.maxsize, 3 + int((opts.maxsize - 3) * frac))

    def _initial_populations(self) -> None:
        opts = self.opts
        top = max(1, int(min(7, self.curmaxsize())))
        resume = self._resume
        guesses = self._fitted_guesses()
        seeds = [] if resume is not None else self._soft_tree_seeds()
        n_seed = min(len(seeds), self._seeds_per_population())
        exprs_by_pop = []
        for p in range(opts.populations):
            rng = self.pop_rngs[p]
            if resume is not None and resume.populations:
                saved = resume.populations[p % len(resume.populations)]
                exprs = [e for e in saved if self.mutator.is_valid(e, opts.maxsize)][:opts.population_size]
            else:
                # Seeds are dealt round-robin, so every seed is in some population (several if few).
                exprs = [seeds[(p * n_seed + j) % len(seeds)] for j in range(n_seed)]
            exprs = (guesses + exprs)[:opts.population_size]
            while len(exprs) < opts.population_size:
                for _ in range(10):
                    e = self.mutator.random_tree(rng, int(rng.integers(1, top + 1)))
                    if self.mutator.is_valid(e, self.curmaxsize()):
                        break
                else:
                    e = self.mutator.random_leaf(rng)
                exprs.append(e)
            exprs_by_pop.append(exprs)
        flat = [e for exprs in exprs_by_pop for e in exprs]
        if resume is not None and resume.hall_of_fame:
            self._score_members(resume.hall_of_fame)  # back into the hall of fame, losses recomputed
        if guesses:
            self._guess_members = [m for m in self._score_members(guesses) if math.isfinite(m.loss)]
        members = self._score_members(flat, self._population_scorer(),
                                      self._kinds_of(p for p, exprs in enumerate(exprs_by_pop) for _ in exprs))
        for p in range(opts.populations):
            chunk = members[p * opts.population_size:(p + 1) * opts.population_size]
            self.populations.append(Population(chunk))
            for m in chunk:
                self.stats.update(m.complexity)
        self.stats.normalize()

    def _fitted_guesses(self) -> list[Expression]:
        """The guesses that fit maxsize, with their constants fitted (PySR does likewise)."""
        opts = self.opts
        guesses = []
        for g in self.guesses:
            if self.mutator.is_valid(g, opts.maxsize):
                guesses.append(g)
            else:
                warnings.warn(f"Guess expression '{g}' has complexity {opts.complexity(g)} > maxsize "
                              f"({opts.maxsize}) or breaks maxdepth/constraints; it is not used.", UserWarning)
        with_constants = [g for g in guesses if g.constants]
        if with_constants and opts.should_optimize_constants:
            result = self._optimize_constants(self.scorer, with_constants,
                                              max(opts.optimizer_iterations, _REFINE_ITERATIONS),
                                              opts.optimizer_nrestarts, list(range(len(with_constants))))
            self.scorer.n_evals += result.n_evals
            fitted = dict(zip((g.key for g in with_constants), result.exprs))
            guesses = [fitted.get(g.key, g) for g in guesses]
        return guesses

    def _seeds_per_population(self) -> int:
        return int(round(self.opts.soft_tree_seed_fraction * self.opts.population_size))

    def _soft_tree_seeds(self) -> list[Expression]:
        """The proposer's seed formulas that fit maxsize/maxdepth (one call for all populations:
        its fits cost seconds, and every population can share them)."""
        opts = self.opts
        n_seed = self._seeds_per_population()
        if not n_seed or opts.soft_tree_proposer is None:
            return []
        start = time.perf_counter()
        seeds = opts.soft_tree_proposer.seed(n_seed * opts.populations, self.rng, deadline=self._deadline())
        self._seed_seconds = time.perf_counter() - start
        return [e for e in seeds[:n_seed * opts.populations]
                if self.mutator.is_valid(e, opts.maxsize) and self.mutator.uses_own_operators(e)]

    def _reseed(self) -> None:
        """Fresh soft-tree fits replace the oldest members of every population (as many per
        population as the initial seeding put in): a soft tree fit succeeds by chance, about
        once in a few restarts, so the search keeps drawing new ones. Skipped when the
        time left is shorter than the last seeding took."""
        self._check_budget()
        deadline = self._deadline()
        if deadline is not None and time.perf_counter() + self._seed_seconds > deadline:
            return
        seeds = self._soft_tree_seeds()
        if not seeds:
            return
        kinds = (True, False) if self._mixed else (self._scaled[0],)
        scored = self._members_of_kinds(seeds, self._population_scorer(), kinds)
        by_kind = {kind: [m for m in ms if math.isfinite(m.loss)] for kind, ms in zip(kinds, scored)}
        for p, pop in enumerate(self.populations):
            members = by_kind[self._scaled[p]]
            n_seed = min(len(members), self._seeds_per_population())
            protect: set[int] = set()
            for j in range(n_seed):
                baby = members[(p * n_seed + j) % len(members)].copy(self._next_birth())
                protect.add(self._replace_oldest(pop, baby, protect))
                self.stats.update(baby.complexity)

    def _step(self, temperature: float) -> None:
        """One batch: ``_per_step`` mutations (or crossovers) in every population."""
        opts = self.opts
        curmax = self.curmaxsize()
        proposals: list[_Proposal] = []
        scaling = opts.adaptive_parsimony_scaling if opts.use_frequency_in_tournament else 0.0
        for p, pop in enumerate(self.populations):
            rng = self.pop_rngs[p]
            keys = pop.selection_keys(self.stats, scaling)  # the population is fixed until the step ends
            for _ in range(self._per_step):
                if rng.random() < opts.crossover_probability:
                    a, b = self._tournament(pop, rng, keys), self._tournament(pop, rng, keys)
                    kids = self.mutator.crossover(a.expr, b.expr, rng, curmax)
                    proposals.append(_Proposal(p, "crossover", (a, b), kids))
                else:
                    parent = self._tournament(pop, rng, keys)
                    new, kind = self.mutator.mutate(parent.expr, rng, temperature, curmax)
                    prop = _Proposal(p, kind, (parent,), None if new is None else (new,))
                    if kind == "optimize" and new is not None:
                        prop.members = [int(rng.integers(2**32))]  # the optimizer's seed
                    proposals.append(prop)
        scorer = self._population_scorer()
        self._optimize_proposals([pr for pr in proposals if pr.kind == "optimize" and pr.children], scorer)
        exprs = [e for pr in proposals if pr.children for e in pr.children]
        members = self._score_members(exprs, scorer,
                                      self._kinds_of(pr.pop for pr in proposals if pr.children for _ in pr.children))
        it = iter(members)
        for pr in proposals:
            pr.members = [next(it) for _ in pr.children] if pr.children else []
        for pr in proposals:
            pop, rng = self.populations[pr.pop], self.pop_rngs[pr.pop]
            if pr.kind == "crossover":
                protect: set[int] = set()
                for baby in pr.members:
                    if math.isfinite(baby.loss):
                        protect.add(self._replace_oldest(pop, baby, protect))
                        self.stats.update(baby.complexity)
                continue
            parent = pr.parents[0]
            if pr.members and self._accept(pr.members[0], parent, temperature, rng):
                baby = pr.members[0]
            elif opts.skip_mutation_failures:
                continue
            else:
                baby = parent.copy(self._next_birth())
            self._replace_oldest(pop, baby, set())
            self.stats.update(baby.complexity)
        self.stats.move_window()
        self.stats.normalize()
        self._cycles_done += self._per_step / self._n_evol

    def _optimize_proposals(self, proposals: list[_Proposal], scorer: Scorer) -> None:
        if not proposals:
            return
        seeds = [pr.members[0] for pr in proposals]
        result = self._optimize_by_kind(scorer, [pr.children[0] for pr in proposals],
                                        self._kinds_of(pr.pop for pr in proposals), self.opts.optimizer_iterations,
                                        self.opts.optimizer_nrestarts, seeds)
        self._count_optimizer(scorer, result.n_evals)
        for pr, e in zip(proposals, result.exprs):
            pr.children = (e,)
            pr.members = []

    def _end_of_iteration(self) -> None:
        opts = self.opts
        targets, to_optimize, seeds = [], [], []
        for p, pop in enumerate(self.populations):
            rng = self.pop_rngs[p]
            for i, m in enumerate(pop.members):
                e = self._simplify(m.expr) if opts.should_simplify else m.expr
                wants = (opts.should_optimize_constants and rng.random() < opts.optimize_probability
                         and len(self.mutator._info(e).constants) > 0)
                if wants:
                    to_optimize.append((p, i, e))
                    seeds.append(int(rng.integers(2**32)))
                elif e is not m.expr:
                    targets.append((p, i, e))
        scorer = self._population_scorer()
        if to_optimize:
            self._check_budget()
            result = self._optimize_by_kind(scorer, [e for _, _, e in to_optimize],
                                            self._kinds_of(p for p, _, _ in to_optimize), opts.optimizer_iterations,
                                            opts.optimizer_nrestarts, seeds, self._deadline())
            self._count_optimizer(scorer, result.n_evals)
            targets += [(p, i, e) for (p, i, _), e in zip(to_optimize, result.exprs)]
        if targets:
            members = self._score_members([e for _, _, e in targets], scorer, self._kinds_of(p for p, _, _ in targets))
            for (p, i, _), new in zip(targets, members):
                old = self.populations[p].members[i]
                if math.isfinite(new.loss) and new.loss <= old.loss * (1 + 1e-12) + 1e-300:
                    new.birth = old.birth
                    self.populations[p].members[i] = new
        if opts.soft_tree_reseed and self.n_evals - self._reseeded_at >= self.reseed_every_evals:
            self._reseeded_at = self.n_evals
            self._reseed()
        if self.batches is not None:
            self._hall_of_fame_from_populations()
        self._migrate()
        self.front.simplify(self._score_members, _SYMPY_PER_ITERATION, self._deadline())
        self.front.polish(self._score_members)
        self._refine_front(self._deadline())
        for pop in self.populations:
            for m in pop.members:
                self.stats.update(m.complexity)
        self.stats.move_window()
        self.stats.normalize()

    def _refine_front(self, deadline: float | None) -> None:
        """`FrontKeeper.refine` with BFGS on each entry's own loss (an entry is the formula as
        it will be reported, its a and b of linear scaling written in), from its constants."""
        opts = self.opts
        if not opts.should_optimize_constants or (opts.max_evals is not None and self.n_evals >= opts.max_evals):
            return  # a spent max_evals: the search ends at this iteration, unrefined as at a final look

        def optimize(exprs):
            result = self._optimize_constants(self.scorer, exprs, max(opts.optimizer_iterations, _REFINE_ITERATIONS),
                                              0, list(range(len(exprs))), deadline, scaled=False)
            self._count_optimizer(self.scorer, result.n_evals)
            return [e for e, better in zip(result.exprs, result.improved) if better]

        self.front.refine(optimize, self._score_members, _REFINE_PER_ITERATION)

    def _optimize_by_kind(self, scorer, exprs, kinds, iterations, nrestarts, seeds, deadline=None):
        """`_optimize_constants` with each formula's objective its population's: a*f+b's
        where ``kinds`` (one bool per formula) says the population scales, else f's."""
        if not self._mixed:
            return self._optimize_constants(scorer, exprs, iterations, nrestarts, seeds, deadline)
        out, loss = list(exprs), np.full(len(exprs), math.inf)
        improved, n_evals = np.zeros(len(exprs), dtype=bool), 0
        for kind in (True, False):
            idx = [i for i, k in enumerate(kinds) if k == kind]
            if not idx:
                continue
            sub = self._optimize_constants(scorer, [exprs[i] for i in idx], iterations, nrestarts,
                                           [seeds[i] for i in idx], deadline, scaled=kind)
            for j, i in enumerate(idx):
                out[i], loss[i], improved[i] = sub.exprs[j], sub.loss[j], sub.improved[j]
            n_evals += sub.n_evals
        return OptimizedConstants(out, loss, improved, n_evals)

    def _optimize_constants(self, scorer, exprs, iterations, nrestarts, seeds, deadline=None, scaled=True):
        """Batched constant optimisation (`constant_optimization`) of a*f+b's loss (``scaled``,
        with linear scaling) or f's; the compiled engine replaces it with its own."""
        return optimize_constants(scorer if scaled else scorer.unscaled(), exprs, iterations, nrestarts, seeds,
                                  deadline)

    def _count_optimizer(self, scorer: Scorer, n_evals: int) -> None:
        if scorer is self.scorer:
            self.scorer.n_evals += n_evals
        else:
            self.batches.count(n_evals)

    def _simplify(self, expr: Expression) -> Expression:
        out = self._simplified.get(expr.key)
        if out is None:
            # Members that survive an iteration are met again at the next: the cache holds
            # about two iterations' members. Its entries are trees (~2-3 KB each), so a cap of
            # 100,000 held ~300 MB in a long search; simplifying a tree anew costs ~20 us.
            if len(self._simplified) > 2 * self.opts.populations * self.opts.population_size:
                self._simplified.clear()
            out = self._simplified[expr.key] = simplify_tree(expr)
        return out if out.key != expr.key else expr

    def _migrate(self) -> None:
        opts = self.opts
        pools = []
        if opts.migration:
            pools.append((opts.fraction_replaced, [m for pop in self.populations for m in pop.best_k(opts.topn)]))
        if opts.hof_migration:
            front = [e.member for e in self.hof.pareto_front() if e.member is not None]
            pools.append((opts.fraction_replaced_hof, front))
        if self._guess_members:
            pools.append((opts.fraction_replaced_guesses, self._guess_members))
        moves = []  # (population, place, migrant), in the order the draws make them
        for frac, pool in pools:
            if not pool or frac <= 0:
                continue
            for p, pop in enumerate(self.populations):
                n = min(len(pop), int(self.rng.poisson(len(pop) * frac)))
                for _ in range(n):
                    where = int(self.rng.integers(len(pop)))
                    moves.append((p, where, pool[int(self.rng.integers(len(pool)))]))
        if self._mixed and moves:
            # A migrant's loss is its old population's (f's, or a*f+b's): scored again as its new one scores it.
            exprs = list({m.expr.key: m.expr for _, _, m in moves}.values())
            scored = self._members_of_kinds(exprs, self._population_scorer(), (True, False), births=False)
            as_kind = {kind: {m.expr.key: m for m in ms} for kind, ms in zip((True, False), scored)}
            moves = [(p, where, as_kind[self._scaled[p]][m.expr.key]) for p, where, m in moves]
        for p, where, migrant in moves:
            self.populations[p].members[where] = migrant.copy(self._next_birth())

    def run(self) -> SearchResult:
        """Run until niterations, timeout_in_seconds, max_evals, early_stop_condition or
        Ctrl-C (see the class docstring)."""
        with _torch_threads(1), self._stop_request:
            return self._run()

    def request_stop(self) -> None:
        """Ask the search to stop at its next step, as a first Ctrl-C does (thread-safe:
        a flag read between steps)."""
        self._stop_request.requested = True

    def progress(self) -> dict[str, float]:
        """How far the search is towards each limit that can stop it, as fractions in
        [0, 1]: ``niterations`` always (a started iteration counts by its cycles done),
        ``timeout_in_seconds`` and ``max_evals`` when set. The largest is the limit that
        will most likely stop the run.

            >>> import torch
            >>> X = torch.rand(20, 1, dtype=torch.float64)
            >>> s = Search(X, X[:, 0], None, Options(niterations=4, max_evals=1000, progress=False,
            ...            soft_tree_seed_fraction=0))
            >>> sorted(s.progress())
            ['max_evals', 'niterations']
        """
        opts = self.opts
        done_iterations = max(0, self.iteration - 1) + min(1.0, self._cycle / max(1, opts.ncycles_per_iteration))
        out = {"niterations": min(1.0, done_iterations / opts.niterations)}
        if opts.timeout_in_seconds is not None:
            out["timeout_in_seconds"] = min(1.0, (time.perf_counter() - self._start) / opts.timeout_in_seconds)
        if opts.max_evals is not None:
            out["max_evals"] = min(1.0, self.n_evals / opts.max_evals)
        return out

    def _run(self) -> SearchResult:
        opts = self.opts
        self._start = time.perf_counter()
        reason = "niterations"
        try:
            self._initial_populations()
            self._steps_begin()
            for self.iteration in range(1, opts.niterations + 1):
                self._cycle, ncycles = 0.0, opts.ncycles_per_iteration
                while self._cycle < ncycles:
                    temperature = max(0.0, 1.0 - self._cycle / max(1, ncycles - 1)) if opts.annealing else 1.0
                    self._step(temperature)
                    self._cycle += self._per_step / self._n_evol
                    if self._on_step is not None:
                        self._on_step(self)
                    self._check_budget()
                self._end_of_iteration()
                if self.callback is not None:
                    self.callback(self, self.iteration)
                if self.iteration < opts.niterations:
                    self._check_budget()
        except _Stop as stop:
            reason = stop.reason
            self._steps_end()
            # A last, short look for simpler equivalent forms of the front.
            self.front.simplify(self._score_members, _SYMPY_PER_ITERATION, self._final_deadline())
            self.front.polish(self._score_members)
            if reason == "timeout_in_seconds":  # not past a spent max_evals, a met condition, a Ctrl-C
                self._refine_front(self._final_deadline())
        elapsed = time.perf_counter() - self._start
        return SearchResult(self.hof, self.populations, self.n_evals, self.iteration, elapsed, reason,
                            self.scorer.baseline_loss, self._evaluator_stats())

    # Hooks for an engine that runs the steps elsewhere (`enhancements.engine`): the
    # populations and the hall of fame are handed over before the steps and read back
    # after them; the torch engine has nothing to hand over.
    def _steps_begin(self) -> None:
        """Before the steps of an iteration (and after the iteration's Python work)."""

    def _steps_end(self) -> None:
        """After the steps: the populations and hall of fame are current here again."""

    def _evaluator_stats(self) -> dict:
        return self.scorer.stats()

    def state(self) -> SearchState:
        """What `resume` needs to continue this search (`search_state`)."""
        return SearchState(
            populations=[[m.expr for m in pop.members] for pop in self.populations],
            hall_of_fame=[e.expr for e in self.hof.pareto_front()],
            iterations=self._iterations_before + self.iteration,
            cycles_done=float(self._cycles_done),
            birth=self._birth,
            rng_states=[g.bit_generator.state for g in self.pop_rngs + [self.rng]])

    def best_entry(self):
        """The hall-of-fame entry the model selection currently picks (None if empty)."""
        front = self.hof.pareto_front()
        if not front:
            return None
        i = select_index([e.loss for e in front], [e.complexity for e in front], self.opts.model_selection,
                         self.loss_floor)
        return front[i]
