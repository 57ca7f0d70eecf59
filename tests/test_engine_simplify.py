"""The compiled search's end-of-iteration pieces: the compiled simplification
(`enhancements.engine.simplify`) against simplify_tree, the hand-over of members between
the arrays and Python, and the notice while numba compiles."""
import threading

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from enhancements.engine.programs import OperatorTable, decode, encode
from enhancements.engine.search import CompiledSearch
from enhancements.engine.simplify import simplify_programs
from enhancements.hybrid_optimization.options import Options
from enhancements.hybrid_optimization.population import PopMember
from enhancements.hybrid_optimization.simplification import simplify_tree
from pysr_baseline.expression import Expression
from pysr_baseline.parsing import parse_expression

OPTS = Options(binary_operators=["+", "-", "*", "/", "^"],
               unary_operators=["cos", "exp", "log", "sqrt", "square", "neg", "inv", "cos2(x) = cos(x)^2"],
               soft_tree_seed_fraction=0, progress=False)
TABLE = OperatorTable.from_options(OPTS)
BUILTIN_BINARY = [OPTS.by_name[n] for n in ("add", "sub", "mul", "div", "pow")]
BUILTIN_UNARY = [OPTS.by_name[n] for n in ("cos", "exp", "log", "sqrt", "square", "neg", "inv")]
# Neutral elements and small values, so that the identities and merges come up often.
CONSTANTS = st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5, 3.0, 1e308]) | st.floats(-5, 5)


def _trees(unary):
    leaves = CONSTANTS.map(Expression.const) | st.integers(0, 2).map(Expression.var)
    return st.recursive(leaves, lambda kids: st.one_of(
        st.tuples(st.sampled_from(BUILTIN_BINARY), kids, kids).map(lambda t: Expression(t[0], (t[1], t[2]))),
        st.tuples(st.sampled_from(unary), kids).map(lambda t: Expression(t[0], (t[1],)))), max_leaves=12)


def _simplified(exprs):
    block = encode(exprs, TABLE, max(e.size for e in exprs))
    out = simplify_programs(block.ops, block.feat, block.val, block.length, TABLE.arity)
    return [decode(out.ops[k], out.feat[k], out.val[k], int(out.length[k]), TABLE) for k in range(len(exprs))], out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exprs=st.lists(_trees(BUILTIN_UNARY), min_size=1, max_size=8))
def test_compiled_simplification_is_simplify_tree(exprs):
    got, out = _simplified(exprs)
    for e, g, changed in zip(exprs, got, out.changed):
        want = simplify_tree(e)
        assert g.shape_key == want.shape_key, (e.to_string(), g.to_string(), want.to_string())
        np.testing.assert_allclose(g.constants, want.constants, rtol=1e-12, atol=0)
        assert bool(changed) == (want.key != e.key)


def test_the_rules_one_by_one():
    cases = {
        "2.0 * (3.0 * x0) + (1.0 + 1.0)": "6.0 * x0 + 2.0",
        "x0 * 1.0": "x0", "1.0 * x0": "x0", "x0 / 1.0": "x0", "0.0 + x0": "x0", "x0 - 0.0": "x0",
        "(x0 * 2.0) * 0.5": "x0", "3.0 + (x1 + 2.0)": "5.0 + x1", "cos(0.0) * x0": "x0",
        "x0 / 0.0": "x0 / 0.0",            # 0 / 0 and x / 0 are not folded: the meaning stays
        "log(-1.0) + x0": "log(-1.0) + x0",
        "1.0 - x0": "1.0 - x0",            # only x - 0 is an identity of -
    }
    exprs = [parse_expression(s) for s in cases]
    got, _ = _simplified(exprs)
    for (source, want), g in zip(cases.items(), got):
        assert g.key == parse_expression(want).key, (source, g.to_string())


def test_custom_operators_keep_their_constant_arguments_and_their_value():
    cos2 = OPTS.by_name["cos2"]
    e = Expression(BUILTIN_BINARY[2], (Expression(cos2, (Expression.const(0.5),)), Expression.var(0)))
    e = Expression(BUILTIN_BINARY[0], (e, Expression.const(0.0)))        # cos2(0.5) * x0 + 0
    (g,), out = _simplified([e])
    assert g.to_string() == Expression(BUILTIN_BINARY[2], e.children[0].children).to_string()
    X = torch.tensor([[1.5], [2.0]], dtype=torch.float64)
    torch.testing.assert_close(g.evaluate(X), e.evaluate(X), rtol=1e-12, atol=0)


def test_the_arrays_hold_what_python_holds_after_each_hand_over():
    rng = np.random.default_rng(0)
    X = torch.as_tensor(rng.uniform(1, 3, (60, 2)))
    search = CompiledSearch(X, X[:, 0] * X[:, 1] + 2.0, None, Options(
        populations=3, population_size=12, tournament_selection_n=5, ncycles_per_iteration=20, niterations=1,
        random_state=0,
        soft_tree_seed_fraction=0, progress=False, verbosity=0))
    search.run()
    search._compiled_step(1.0)                     # the arrays are ahead of the members after a step
    search.pull()
    assert len(search._pulled) == 3 * 12           # members as read: push writes only what Python changed
    replaced = PopMember(parse_expression("x0 * x1"), 0.5, 0.6, 3.0, 10**6)
    search.populations[1].members[4] = replaced    # a Python change the arrays must receive
    search.push()
    N = search.opts.population_size
    for p, pop in enumerate(search.populations):
        for j, m in enumerate(pop.members):
            k = p * N + j
            S = search.arrays
            back = decode(S.ops[k], S.feat[k], S.val[k], int(S.length[k]), search.table)
            assert back.key == m.expr.key
            assert (S.loss[k], S.cost[k], S.cplx[k], S.birth[k]) == (m.loss, m.cost, m.complexity, m.birth)


def test_a_long_first_step_says_that_numba_is_compiling():
    from enhancements.engine.search import _compile_notice

    said = threading.Event()
    with _compile_notice(True, seconds=0.0, say=said.set):
        assert said.wait(60)                     # the block outlives the delay: the notice comes
    quiet = threading.Event()
    with _compile_notice(True, seconds=3600.0, say=quiet.set):
        pass
    with _compile_notice(False, seconds=0.0, say=quiet.set):
        said.wait(0.05)
    assert not quiet.is_set()                    # a short block, or notices off: nothing said
