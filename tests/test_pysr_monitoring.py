"""Monitoring and control as PySR's: the progress bar where stdout has no buffer,
print_precision, 'q' then Enter, the console script; constraints that hold throughout."""
import importlib.metadata
import io
import os
import select
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from enhancements import PySRRegressor
from enhancements.hybrid_optimization.evolution import Search
from enhancements.hybrid_optimization.mutations import Mutator
from enhancements.hybrid_optimization.options import Options
from pysr_baseline.random_expressions import random_expression

TINY = dict(niterations=1, populations=2, population_size=10, tournament_selection_n=5, ncycles_per_iteration=10,
            soft_tree_seed_fraction=0.0, verbosity=0, progress=False, random_state=0)
rng = np.random.default_rng(2)
X = rng.uniform(1, 3, (50, 2))
Y = 1.23456789 * X[:, 0] * X[:, 1]


def test_no_bar_and_a_warning_where_stdout_has_no_buffer(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())          # as Jupyter's: no .buffer
    with pytest.warns(UserWarning, match="it looks like you are running in Jupyter"):
        PySRRegressor(**{**TINY, "progress": True, "verbosity": 1}).fit(X, Y)
    assert "iteration 1:" in sys.stdout.getvalue()              # a line per iteration instead


def test_print_precision_rounds_printed_constants_only():
    model = PySRRegressor(**{**TINY, "niterations": 2}, print_precision=3, linear_scaling=True).fit(X, Y)
    text = repr(model)
    assert "1.23" in text and "1.2345" not in text
    assert any("1.23456789" in eq for eq in model.equations_["equation"])  # the table keeps full precision


_CHILD = textwrap.dedent("""
    import numpy as np
    from enhancements import PySRRegressor
    X = np.random.default_rng(0).uniform(1, 3, (100, 2)); y = X[:, 0] * X[:, 1] + np.cos(X[:, 0])
    m = PySRRegressor(niterations=10**6, populations=4, population_size=20, ncycles_per_iteration=40,
                      unary_operators=["cos"], progress=False, verbosity=1, random_state=0, soft_tree_seed_fraction=0,
                      temp_equation_file=True)
    m.fit(X, y)
    print("STOPPED", m.stats_["stop_reason"], len(m.equations_), flush=True)
""")


@pytest.mark.skipif(os.name != "posix", reason="a pseudo-terminal is POSIX")
def test_q_then_enter_stops_an_interactive_run():
    import pty

    leader, follower = pty.openpty()
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=follower, stdout=follower, stderr=follower,
                             close_fds=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    os.close(follower)
    seen, sent = b"", False
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 5)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 4096)
            except OSError:                                    # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not sent and b"iteration 2:" in seen:
                os.write(leader, b"q\n")
                sent = True
        child.wait(timeout=600)                                # a guard against a hang, not a speed limit
    finally:
        if child.poll() is None:
            child.kill()
        os.close(leader)
    text = seen.decode(errors="replace")
    assert "Press 'q' and then <enter> to stop execution early." in text
    assert "STOPPED interrupted" in text


def test_the_console_script_is_installed():
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("pysr-torch") == "enhancements.cli:main"


DETAILED = dict(binary_operators=["*", "+", "-", "/"], unary_operators=["square", "cube", "exp", "cos2(x)=cos(x)^2"],
                constraints={"/": (-1, 9), "square": 9, "cube": 9, "exp": 9},
                nested_constraints={"square": {"square": 1, "cube": 1, "exp": 0},
                                    "cube": {"square": 1, "cube": 1, "exp": 0},
                                    "exp": {"square": 1, "cube": 1, "exp": 0}},
                complexity_of_operators={"/": 2, "exp": 3}, complexity_of_constants=2, maxsize=50, maxdepth=10)


def _holds(opts, expr) -> bool:
    return opts.satisfies_constraints(expr) and opts.complexity(expr) <= opts.maxsize and expr.depth <= opts.maxdepth


def test_pysrs_detailed_constraints_hold_over_a_thousand_mutations():
    opts = Options(**DETAILED, soft_tree_seed_fraction=0)
    mutator = Mutator(opts, n_features=3)
    gen = np.random.default_rng(0)
    expr = random_expression(gen, 3, 5, opts.binary, opts.unary)
    while not _holds(opts, expr):
        expr = random_expression(gen, 3, 5, opts.binary, opts.unary)
    changed = 0
    for _ in range(1000):
        new, _ = mutator.mutate(expr, gen, 1.0, opts.maxsize)
        if new is not None:
            assert _holds(opts, new), str(new)
            changed += new.key != expr.key
            expr = new
    assert changed > 500


def test_constraints_hold_on_everything_a_search_keeps():
    opts = Options(**{**TINY, **DETAILED, "niterations": 2, "ncycles_per_iteration": 40})
    search = Search(torch.as_tensor(X), torch.as_tensor(Y), None, opts)
    search.run()
    kept = [m.expr for pop in search.populations for m in pop.members] + [e.expr for e in search.hof.pareto_front()]
    assert kept and all(_holds(opts, e) for e in kept)
