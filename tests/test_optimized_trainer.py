"""OptimizedSymbolicTrainer and BatchedSoftTree: the baseline's function, gradient,
starts and formulas, computed faster; and the baseline's input checks."""
import numpy as np
import pytest
import sympy
import torch

from enhancements.dp_memoization import IncrementalEvaluator, OptimizedSymbolicTrainer, SubexpressionCache
from enhancements.dp_memoization.batched_soft_tree import BatchedSoftTree
from enhancements.dp_memoization.optimized_trainer import _FlatAdam, _LocalSearch, _MemoizedRefit
from experiments.scoring import is_symbolic_solution
from pysr_baseline.constant_fitting import fit_formula, linear_scaling, normalized_mse
from pysr_baseline.model import SymbolicRegressor
from pysr_baseline.operators import custom_operator
from pysr_baseline.trainer import (SymbolicTrainer, initial_parameters, load_parameters, local_search_candidates,
                                   restart_seed)
from pysr_baseline.parsing import parse_expression

SMALL = dict(binary_operators=["+", "-", "*", "/"], unary_operators=["square", "inv"])
EVERY = dict(binary_operators=["+", "-", "*", "/", "pow"],
             unary_operators=["neg", "square", "cube", "sqrt", "exp", "log", "abs", "sin", "cos", "tan", "tanh",
                              "inv"])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: a second OpenMP thread only adds overhead, and on a busy machine
    its spin-waits make these fits several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tree_and_starts(model, n_restarts=3, init_scale=1.0, seed=0):
    starts = [initial_parameters(model, restart_seed(seed, r), init_scale) for r in range(n_restarts)]
    return BatchedSoftTree.from_model(model, starts), starts


def autograd_loss_and_grad(tree, X, Y, W, coefficient):
    tree.flat.grad = None
    out = tree(X)
    a, b = linear_scaling(out, Y, W)
    fit = normalized_mse(a[:, None] * out + b[:, None], Y, W)
    (fit + coefficient * tree.entropy()).sum().backward()
    grad = tree.flat.grad.clone()
    tree.flat.grad = None
    return fit.detach(), grad


# --- the batched tree computes the baseline model's function ---------------------------------

@pytest.mark.parametrize("operators", [{}, EVERY])
def test_batched_forward_equals_the_per_node_model_for_the_same_parameters(operators):
    torch.manual_seed(0)
    model = SymbolicRegressor(3, 3, dtype=torch.float64, **operators)
    tree, starts = tree_and_starts(model, n_restarts=4)
    X = torch.rand(50, 3, dtype=torch.float64) * 8 - 4
    tree.temperature = model.temperature = 0.5
    expected = []
    for start in starts:
        load_parameters(model, start)
        expected.append(model(X).detach())
    expected = torch.stack(expected)
    torch.testing.assert_close(tree(X).detach(), expected, rtol=1e-10, atol=1e-10)       # autograd path
    torch.testing.assert_close(tree.evaluate(X), expected, rtol=1e-10, atol=1e-10)       # fused kernels


def test_node_by_node_batched_forward_equals_level_batched():
    model = SymbolicRegressor(2, 3, dtype=torch.float64)
    starts = [initial_parameters(model, restart_seed(0, r), 0.5) for r in range(2)]
    X = torch.rand(20, 2, dtype=torch.float64) + 0.5
    level = BatchedSoftTree.from_model(model, starts)(X)
    node = BatchedSoftTree.from_model(model, starts, level_batching=False)(X)
    torch.testing.assert_close(level, node, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("operators", [{}, EVERY])
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_loss_and_gradient_equal_autograd(operators, weighted):
    torch.manual_seed(1)
    model = SymbolicRegressor(3, 3, dtype=torch.float64, **operators)
    tree, _ = tree_and_starts(model, n_restarts=3)
    tree.temperature = 0.7
    X = torch.rand(80, 3, dtype=torch.float64) * 8 - 4
    Y = X[:, 0] * X[:, 1] - X[:, 2]
    W = torch.rand(80, dtype=torch.float64) if weighted else None
    fit_ref, grad_ref = autograd_loss_and_grad(tree, X, Y, W, 0.05)
    fit = tree.loss_and_grad(X, Y, W, 0.05)
    torch.testing.assert_close(fit, fit_ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(tree.flat.grad, grad_ref, rtol=1e-9, atol=1e-12 * float(grad_ref.abs().max()))


def test_fused_derivatives_respect_every_guard():
    """Inputs placed on the guards' active sides (|b| < eps, a > 30, a < eps, |t| > 1e3,
    outputs beyond the +-100 clamp): the fused derivatives still equal autograd's."""
    model = SymbolicRegressor(1, 1, dtype=torch.float64, **EVERY)
    tree, _ = tree_and_starts(model, n_restarts=2)
    special = torch.tensor([0.0, 1e-8, -1e-8, 5e-7, 1e-4, 1.5707963, 31.0, 40.0, -35.0, 4.7, 150.0, -0.3, 2.0],
                           dtype=torch.float64)
    a = special.repeat_interleave(len(special))
    b = special.repeat(len(special))
    values = torch.stack([a, b])[:, None, :].expand(2, 2, -1).contiguous()      # (2 children, R, N)
    weights = torch.softmax(torch.randn(1, 2, model.n_candidates, dtype=torch.float64), -1)
    ws = tree._workspaces(values.shape[-1], values, True)[0]
    out = tree._mix_fused(ws, values, weights, True).clone()
    grad = torch.randn_like(out)
    grad_w = tree._mix_backward(grad, ws).clone()
    children = ws.children.clone()

    v = values.clone().requires_grad_(True)
    w = weights.clone().requires_grad_(True)
    ref = tree._mix(v[:1], v[1:], w)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-12, atol=1e-12)
    ref.backward(grad)
    torch.testing.assert_close(children, v.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(grad_w, w.grad, rtol=1e-9, atol=1e-9)


def test_custom_operators_get_autograd_derivatives_and_nan_to_num():
    sinc = custom_operator("sinc", lambda x: torch.sin(x) / x, lambda x: sympy.sin(x) / x)   # 0/0 at x = 0
    model = SymbolicRegressor(2, 2, dtype=torch.float64, binary_operators=["+", "*"],
                              unary_operators=[sinc, "inv(x) = 1/x", "sq(x) = x*x + 1"])
    tree, starts = tree_and_starts(model, n_restarts=2)
    X = torch.tensor([[0.0, 1.0], [2.0, -3.0], [0.5, 0.0], [1e-9, 4.0]], dtype=torch.float64)
    Y = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    expected = []
    for start in starts:
        load_parameters(model, start)
        expected.append(model(X).detach())
    torch.testing.assert_close(tree.evaluate(X), torch.stack(expected), rtol=1e-10, atol=1e-10)
    fit_ref, grad_ref = autograd_loss_and_grad(tree, X, Y, None, 0.1)
    fit = tree.loss_and_grad(X, Y, None, 0.1)
    assert torch.isfinite(tree.flat.grad).all()
    torch.testing.assert_close(fit, fit_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tree.flat.grad, grad_ref, rtol=1e-7, atol=1e-9)


def test_restart_r_starts_where_the_sequential_restart_r_starts():
    model = SymbolicRegressor(2, 3)
    trainer = OptimizedSymbolicTrainer(model, random_state=7, n_restarts=5)
    starts = [initial_parameters(model, restart_seed(7, r), trainer.init_scale) for r in range(5)]
    tree = BatchedSoftTree.from_model(model, starts)
    X = torch.rand(30, 2) + 1
    for r, start in enumerate(starts):
        params = tree.restart_parameters(r)
        for key in start:
            assert torch.equal(params[key], start[key])
        load_parameters(model, start)
        torch.testing.assert_close(tree.evaluate(X)[r], model(X).detach(), rtol=1e-5, atol=1e-5)


def test_flat_adam_takes_torch_adams_steps_exactly():
    p1 = torch.nn.Parameter(torch.randn(50))
    p2 = torch.nn.Parameter(p1.detach().clone())
    reference, flat = torch.optim.Adam([p1], lr=0.1, foreach=False), _FlatAdam(p2, 0.1)
    for _ in range(30):
        g = torch.randn(50)
        p1.grad, p2.grad = g.clone(), g.clone()
        reference.step()
        flat.step()
    assert torch.equal(p1.detach(), p2.detach())


# --- the trainer --------------------------------------------------------------------------------

def _recovered(history, truth) -> bool:
    return is_symbolic_solution(history.formula.to_sympy(), truth).solved


@pytest.mark.parametrize("case", ["x0*x1", "0.5*x0*x1**2"])
def test_recovers_the_formulas_the_baseline_recovers(case):
    """Both trainers recover both formulas at every seed tried (10 of 10 with these
    settings); asserted for both, at three seeds, with the same restarts and epochs."""
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 5, size=(200, 2))
    x0, x1 = sympy.symbols("x0 x1")
    y, truth = {"x0*x1": (X[:, 0] * X[:, 1], x0 * x1),
                "0.5*x0*x1**2": (0.5 * X[:, 0] * X[:, 1] ** 2, x0 * x1 ** 2 / 2)}[case]
    for seed in (0, 1, 2):
        results = {}
        for trainer_class in (SymbolicTrainer, OptimizedSymbolicTrainer):
            model = SymbolicRegressor(2, 2, **SMALL)
            history = trainer_class(model, n_restarts=4, random_state=seed).fit(X, y, n_epochs=100)
            results[trainer_class] = history
            assert model.fitted_expression is history.formula
            assert _recovered(history, truth), f"{trainer_class.__name__}, seed {seed}: {history.formula}"
        assert results[OptimizedSymbolicTrainer].nmse <= results[SymbolicTrainer].nmse * 1.01 + 1e-12


def test_restart_batches_do_not_change_any_restarts_formula():
    rng = np.random.default_rng(1)
    X = rng.uniform(1, 5, size=(100, 2))
    y = X[:, 0] / X[:, 1]
    formulas = []
    for batch in (None, 1, 3):
        model = SymbolicRegressor(2, 2, **SMALL)
        history = OptimizedSymbolicTrainer(model, n_restarts=4, random_state=3, restart_batch_size=batch).fit(
            X, y, n_epochs=40)
        formulas.append([str(f) for f in history.restart_formulas])
    assert formulas[0] == formulas[1] == formulas[2]


def test_early_stop_does_not_change_the_formulas():
    rng = np.random.default_rng(2)
    X = rng.uniform(1, 5, size=(100, 2))
    y = X[:, 0] * X[:, 1]
    out = []
    for early_stop in (False, True):
        model = SymbolicRegressor(2, 2, **SMALL)
        history = OptimizedSymbolicTrainer(model, n_restarts=4, random_state=0, early_stop=early_stop).fit(
            X, y, n_epochs=150)
        out.append(([str(f) for f in history.restart_formulas], str(history.formula)))
        assert all(1 <= n <= 150 for n in history.n_epochs_run)
    assert out[0] == out[1]


def test_history_and_cache_stats_after_fit():
    rng = np.random.default_rng(3)
    X = rng.uniform(1, 5, size=(60, 2))
    y = X[:, 0] + X[:, 1]
    model = SymbolicRegressor(2, 2, **SMALL)
    trainer = OptimizedSymbolicTrainer(model, cache_capacity=50, n_restarts=3, random_state=0)
    history = trainer.fit(X, y, n_epochs=20)
    stats = trainer.cache.stats
    # Restarts and hill-climb neighbours share sub-trees, so some lookups hit; 50 entries
    # cannot hold them all, so some are evicted.
    assert stats.hits > 0 and stats.misses > 0 and stats.evictions > 0 and stats.entries == 50
    assert stats.hit_rate == pytest.approx(stats.hits / (stats.hits + stats.misses))
    assert len(history.losses) == len(history.restart_formulas) == len(history.n_epochs_run) == 3
    assert all(len(curve) == n for curve, n in zip(history.losses, history.n_epochs_run))
    assert history.formula is model.fitted_expression and np.isfinite(history.nmse)
    assert history.wall_time > 0 and 0 <= history.best_restart < 3


def test_a_second_fit_on_the_same_data_is_served_from_the_cache():
    """A workload that must hit: the same fit again (same data, same seed) asks for the
    same sub-trees, so with room for all of them it computes none of them again."""
    rng = np.random.default_rng(3)
    X = rng.uniform(1, 5, size=(60, 2))
    y = X[:, 0] + X[:, 1]
    trainer = OptimizedSymbolicTrainer(SymbolicRegressor(2, 2, **SMALL), cache_capacity=100_000, n_restarts=3,
                                       random_state=0)
    first = trainer.fit(X, y, n_epochs=20)
    before = trainer.cache.stats
    second = trainer.fit(X, y, n_epochs=20)
    after = trainer.cache.stats
    assert before.misses > 0 and before.evictions == 0
    assert after.misses == before.misses                  # nothing computed twice
    assert after.hits > before.hits                       # every lookup of the second fit hit
    assert [str(f) for f in second.restart_formulas] == [str(f) for f in first.restart_formulas]


class _Spy:
    """Records how the trainer's trees are built and trained: one (restarts, level_batching)
    pair per tree, and the number of fused steps and autograd forward passes."""

    def __init__(self, monkeypatch):
        self.trees, self.fused_steps, self.forwards = [], 0, 0
        spy = self
        from_model, fused_step, forward = (BatchedSoftTree.from_model.__func__, BatchedSoftTree.fused_step,
                                           BatchedSoftTree.forward)

        def spy_from_model(cls, model, starts, **kwargs):
            spy.trees.append((len(starts), kwargs.get("level_batching", True)))
            return from_model(cls, model, starts, **kwargs)

        def spy_fused_step(self, *args):
            step = fused_step(self, *args)

            def counted(*a):
                spy.fused_steps += 1
                return step(*a)
            return counted

        def spy_forward(self, X):
            spy.forwards += 1
            return forward(self, X)

        monkeypatch.setattr(BatchedSoftTree, "from_model", classmethod(spy_from_model))
        monkeypatch.setattr(BatchedSoftTree, "fused_step", spy_fused_step)
        monkeypatch.setattr(BatchedSoftTree, "forward", spy_forward)


@pytest.mark.parametrize("switches", [dict(fused=False), dict(memoize=False), dict(level_batching=False),
                                      dict(restart_batch_size=1, fused=False)])
def test_every_ablation_switch_changes_how_not_what(switches, monkeypatch):
    """Each switch turns its technique off (checked on how the trees are built and trained,
    and on the cache) and leaves every restart's formula as it was."""
    rng = np.random.default_rng(4)
    X = rng.uniform(1, 5, size=(40, 2))
    y = X[:, 0] * X[:, 1]
    runs = {}
    for name, kwargs in (("default", {}), ("switched", switches)):
        monkeypatch.undo()          # each run's spy wraps the real methods, not the last spy
        spy = _Spy(monkeypatch)
        trainer = OptimizedSymbolicTrainer(SymbolicRegressor(2, 2, **SMALL), n_restarts=2, random_state=0,
                                           early_stop=False, **kwargs)
        history = trainer.fit(X, y, n_epochs=10)
        runs[name] = (spy, trainer.cache.stats, [str(f) for f in history.restart_formulas])
    (spy, stats, formulas), (spy_off, stats_off, formulas_off) = runs["default"], runs["switched"]
    # The default: one tree of both restarts, level-batched, trained by fused steps, cache in use.
    assert spy.trees == [(2, True)] and spy.fused_steps == 10 and spy.forwards == 0
    assert stats.hits + stats.misses > 0
    fused = switches.get("fused", True) and switches.get("level_batching", True)
    assert (spy_off.fused_steps, spy_off.forwards > 0) == ((10, False) if fused else (0, True))
    batch = switches.get("restart_batch_size") or 2
    level_batching = switches.get("level_batching", True)
    assert spy_off.trees == [(batch, level_batching)] * (2 // batch)
    assert (stats_off.hits + stats_off.misses > 0) == switches.get("memoize", True)
    assert formulas_off == formulas


@pytest.mark.parametrize("depth", [2, 3])
def test_memoized_local_search_finds_the_baselines_candidates(depth):
    rng = np.random.default_rng(6)
    X = torch.tensor(rng.uniform(1, 5, size=(100, 3)))
    Y = X[:, 0] / X[:, 1] ** 2 + X[:, 2]
    evaluator = IncrementalEvaluator(X, cache=SubexpressionCache(500))
    for seed in range(4):
        model = SymbolicRegressor(3, depth)
        params = initial_parameters(model, restart_seed(seed, 0), 2.0)
        load_parameters(model, params)
        reference = local_search_candidates(model, evaluator.evaluate, Y, None, 6, 8)
        fast = _LocalSearch(model, params).candidates(evaluator.evaluate, Y, None, 6, 8)
        assert [f.key for f in fast] == [f.key for f in reference]


def test_memoized_refit_agrees_with_fit_formula():
    rng = np.random.default_rng(5)
    X = torch.tensor(rng.uniform(1, 5, size=(200, 2)))
    y = X[:, 0] / X[:, 1] ** 2
    formulas = [parse_expression(s) for s in ["x0 / square(x1 + 0.3)", "x0 * inv(square(x1)) + 1.5",
                                               "x0 / (x1 * 2.0 - 0.7)", "square(x1) - x0", "x0 / square(x1)",
                                               "sqrt(exp(1.7) + cube(x1))", "log(x1 - 4.0)"]]
    for W in (None, torch.tensor(rng.uniform(0.5, 1.5, size=200))):
        fitter = _MemoizedRefit(X, y, W, IncrementalEvaluator(X, cache=SubexpressionCache(100)), formulas)
        for f in formulas:
            fast, reference = fitter.fit(f), fit_formula(f, X, y, W)
            assert fast.expression.shape_key == reference.expression.shape_key
            if np.isfinite(reference.nmse):
                assert abs(fast.nmse - reference.nmse) <= 1e-6 * reference.nmse + 1e-14
            else:
                assert not np.isfinite(fast.nmse)


# --- the same input checks as SymbolicTrainer ------------------------------------------------

def _error(trainer_class, x, y, n_epochs=5, weights=None, **kwargs):
    model = SymbolicRegressor(2, 2, **SMALL)
    with pytest.raises((ValueError, TypeError)) as info:
        trainer_class(model, n_restarts=1, **kwargs).fit(x, y, n_epochs=n_epochs, weights=weights)
    return type(info.value), str(info.value)


@pytest.mark.parametrize("bad", [
    dict(x=np.ones((5, 3)), y=np.ones(5)),                        # wrong number of features
    dict(x=np.ones((5, 2)), y=np.ones(4)),                        # mismatched rows
    dict(x=np.array([[1.0, np.nan]] * 5), y=np.ones(5)),          # NaN
    dict(x=np.ones((5, 2)), y=np.array([1, 2, np.inf, 4, 5.0])),  # inf
    dict(x=np.ones((0, 2)), y=np.ones(0)),                        # empty
    dict(x=[["a", "b"]] * 5, y=np.ones(5)),                       # not numeric
    dict(x=np.ones((5, 2)), y=np.ones(5), n_epochs=0),
    dict(x=np.ones((5, 2)), y=np.ones(5), n_epochs=2.5),
    dict(x=np.ones((5, 2)), y=np.ones(5), weights=-np.ones(5)),
])
def test_bad_input_raises_what_the_baseline_raises(bad):
    assert _error(OptimizedSymbolicTrainer, **bad) == _error(SymbolicTrainer, **bad)


@pytest.mark.parametrize("kwargs", [dict(lr=0), dict(n_restarts=0), dict(final_temperature=0),
                                    dict(entropy_weight=-1)])
def test_bad_settings_raise_what_the_baseline_raises(kwargs):
    model = SymbolicRegressor(2, 2)
    errors = []
    for trainer_class in (SymbolicTrainer, OptimizedSymbolicTrainer):
        with pytest.raises(ValueError) as info:
            trainer_class(model, **kwargs)
        errors.append(str(info.value))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("kwargs", [dict(restart_batch_size=0), dict(restart_batch_size=2.0),
                                    dict(harden_threshold=1.0), dict(patience=0), dict(cache_capacity=0)])
def test_bad_optimizer_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        OptimizedSymbolicTrainer(SymbolicRegressor(2, 2), **kwargs)


def test_a_model_of_another_type_is_refused():
    with pytest.raises(TypeError):
        OptimizedSymbolicTrainer(torch.nn.Linear(2, 1))
