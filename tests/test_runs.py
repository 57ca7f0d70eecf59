"""Runs that never lose work: the loss memo under eviction, Ctrl-C, progress, large data."""
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from enhancements import PySRRegressor
from enhancements.hybrid_optimization import scoring
from enhancements.hybrid_optimization.evolution import Search
from enhancements.hybrid_optimization.interrupts import StopRequest
from enhancements.hybrid_optimization.options import Options
from enhancements.hybrid_optimization.monitoring import ProgressBar
from enhancements.hybrid_optimization.regressor import LARGE_DATA_ROWS, _warn_if_large
from pysr_baseline.parsing import parse_expression


@pytest.fixture(autouse=True)
def _python_sigint_handler():
    """Python's own Ctrl-C handler for each test: a process started in the background by
    a shell inherits SIGINT ignored, and these tests are about what the handler does."""
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)

SMALL = dict(populations=4, population_size=20, ncycles_per_iteration=60, niterations=3, verbosity=0,
             progress=False, random_state=0, soft_tree_seed_fraction=0.0)
rng = np.random.default_rng(1)
X = rng.uniform(1, 3, (80, 2))
Y = X[:, 0] ** 2 + X[:, 1]


def _front(model):
    return list(zip(model.equations_["complexity"], model.equations_["equation"]))


def test_loss_memo_evicting_many_times_never_fails_and_changes_nothing(monkeypatch):
    # A bound far below one batch makes every batch evict entries that the same batch
    # found in the memo a moment earlier (the old code then raised KeyError).
    monkeypatch.setattr(scoring, "_MEMO_SIZE", 25)
    small_memo = PySRRegressor(**SMALL, engine="torch").fit(X, Y)      # the torch engine's loss memo
    stats = small_memo.stats_["evaluator"]
    assert stats["loss_memo_evictions"] > 1000
    assert stats["formulas_served_from_loss_memo"] > 0
    no_memo = PySRRegressor(**SMALL, engine="torch", memoize=False).fit(X, Y)
    assert _front(small_memo) == _front(no_memo)
    assert np.array_equal(small_memo.equations_["loss"].to_numpy(), no_memo.equations_["loss"].to_numpy())


def test_loss_memo_keeps_at_most_its_bound_and_the_most_recent():
    opts = Options(soft_tree_seed_fraction=0, progress=False)
    Xt = torch.as_tensor(X)
    s = scoring.Scorer(Xt, torch.as_tensor(Y), None, opts)
    s.memo_capacity = 3
    exprs = [parse_expression(t) for t in ("x0", "x1", "x0 + x1", "x0 * x1")]
    first = s.score(exprs)
    assert len(s._memo) == 3 and s.memo_evictions == 1
    again = s.score([exprs[0], exprs[3], exprs[0]])   # x0 was forgotten, x0 * x1 is recent
    assert np.array_equal(again.loss, first.loss[[0, 3, 0]])
    assert len(s._memo) == 3 and list(s._memo)[-1] == exprs[0].key


# --- Ctrl-C ---------------------------------------------------------------------------------

def test_stop_request_first_interrupt_is_a_request_second_aborts():
    before = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


class _InterruptAt:
    """A progress callback that sends this process SIGINT at given steps."""

    def __init__(self, *steps):
        self.steps, self.n = set(steps), 0

    def on_step(self, search):
        self.n += 1
        if self.n in self.steps:
            os.kill(os.getpid(), signal.SIGINT)

    def __call__(self, search, iteration):
        pass


def _search(callback, **kw):
    opts = Options(**{**SMALL, "niterations": 1000, **kw})
    return Search(torch.as_tensor(X), torch.as_tensor(Y), None, opts, callback=callback)


def test_first_interrupt_stops_the_search_at_the_next_step_with_a_complete_front():
    callback = _InterruptAt(5)
    result = _search(callback).run()
    assert result.stop_reason == "interrupted"
    assert callback.n == 5                                   # stopped right after the step it came in
    front = result.hall_of_fame.pareto_front()
    assert front and all(np.isfinite(e.loss) for e in front)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_interrupt_aborts_at_once():
    with pytest.raises(KeyboardInterrupt):
        # The second SIGINT arrives in the same step as the first: nothing waits for a safe point.
        class Twice(_InterruptAt):
            def on_step(self, search):
                super().on_step(search)
                if self.n == 2:
                    os.kill(os.getpid(), signal.SIGINT)
        _search(Twice(2)).run()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


_CHILD = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    from enhancements import PySRRegressor
    X = np.random.default_rng(0).uniform(1, 3, (100, 2)); y = X[:, 0] * X[:, 1] + 1
    model = PySRRegressor(niterations=10**6, max_evals=10**9, populations=4, population_size=20,
                          ncycles_per_iteration=40, progress=False, verbosity=1, random_state=0,
                          soft_tree_seed_fraction=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y)
    print("RESULT " + json.dumps({"stop": model.stats_["stop_reason"], "rows": len(model.equations_),
                                  "predict": bool(np.isfinite(model.predict(X)).all()),
                                  "warned": any("interrupted" in str(w.message) for w in caught)}))
""")


def test_sigint_to_a_running_fit_returns_the_fitted_model():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    try:
        for line in child.stdout:                     # verbosity=1 prints a line per iteration
            if line.startswith("iteration 2:"):
                child.send_signal(signal.SIGINT)
                break
        out, err = child.communicate(timeout=600)     # a guard against a hang, not a speed limit
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    import json
    result = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
    assert result == {"stop": "interrupted", "rows": result["rows"], "predict": True, "warned": True}
    assert result["rows"] >= 1


# --- progress -------------------------------------------------------------------------------

def test_progress_counts_towards_each_limit():
    s = _search(None, niterations=4, max_evals=10**6, timeout_in_seconds=10**6)
    assert s.progress() == {"niterations": 0.0, "timeout_in_seconds": pytest.approx(0, abs=1e-3),
                            "max_evals": 0.0}
    s.iteration, s._cycle = 2, SMALL["ncycles_per_iteration"] / 2   # half way through the 2nd of 4
    assert s.progress()["niterations"] == pytest.approx(1.5 / 4)


def test_bar_follows_the_limit_that_stops_the_run_and_moves_within_an_iteration():
    # niterations is out of reach: max_evals stops the run inside the first iteration.
    opts = Options(**{**SMALL, "niterations": 10**9, "ncycles_per_iteration": 10**6, "max_evals": 3000,
                      "progress": True})
    bar = ProgressBar(opts, ["x0", "x1"])
    result = Search(torch.as_tensor(X), torch.as_tensor(Y), None, opts, callback=bar).run()
    bar.close()
    assert result.stop_reason == "max_evals" and result.iterations == 1
    assert bar.limit == "max_evals"
    assert bar.shown >= 0.9 * ProgressBar._STEPS          # at the end, close to the cap
    assert "evaluations" in bar.bar.desc


def test_progress_is_reported_while_a_large_batch_is_scored_in_parts(monkeypatch):
    # Ten formulas per evaluator call: the initial population (80 formulas) comes in parts.
    monkeypatch.setattr(scoring, "_VALUES_PER_CALL", 10 * len(X))

    class Seen(_InterruptAt):
        def __init__(self):
            super().__init__()
            self.evals = []

        def on_step(self, search):
            self.evals.append(search.n_evals)

    seen = Seen()
    _search(seen, max_evals=500).run()
    assert seen.evals.count(0) >= 7          # before the initial population's scores were all in


# --- large data -----------------------------------------------------------------------------

def test_large_data_warns_once_before_the_search():
    n = LARGE_DATA_ROWS + 1
    Xl = np.random.default_rng(2).uniform(1, 2, (n, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PySRRegressor(**{**SMALL, "max_evals": 300, "niterations": 1}).fit(Xl, Xl[:, 0] * 2)
    large = [w for w in caught if "rows" in str(w.message) and "subsample" in str(w.message)]
    assert len(large) == 1
    assert f"{n:,}" in str(large[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_large(LARGE_DATA_ROWS, Options(soft_tree_seed_fraction=0))   # at the limit: silent
