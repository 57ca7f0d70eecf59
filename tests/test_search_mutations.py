"""Mutations and crossover always give valid formulas within maxsize / maxdepth / constraints;
simplification never changes a formula's values."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from enhancements.hybrid_optimization.mutations import Mutator
from enhancements.hybrid_optimization.options import MUTATIONS, Options
from enhancements.hybrid_optimization.simplification import lower_to_operators, simplify_tree, sympy_simplify
from pysr_baseline.expression import Expression
from pysr_baseline.parsing import parse_expression
from pysr_baseline.random_expressions import random_expression

OPTS = Options(binary_operators=["+", "-", "*", "/"], unary_operators=["cos", "exp", "square"],
               maxsize=12, maxdepth=5, constraints={"/": (-1, 5)}, nested_constraints={"exp": {"exp": 0}})
MUTATOR = Mutator(OPTS, n_features=3)
X = torch.tensor(np.random.default_rng(0).uniform(0.5, 2.0, (20, 3)))


def _valid(e: Expression, maxsize) -> bool:
    return (OPTS.complexity(e) <= maxsize and e.depth <= OPTS.maxdepth and OPTS.satisfies_constraints(e)
            and e.n_features_required() <= 3)


def _start(seed: int, size: int) -> Expression:
    rng = np.random.default_rng(seed)
    for _ in range(100):
        e = random_expression(rng, 3, size, OPTS.binary, OPTS.unary)
        if _valid(e, OPTS.maxsize):
            return e
    return Expression.var(0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 12), steps=st.integers(1, 8),
       curmax=st.integers(3, 12), temperature=st.floats(0.0, 1.0))
def test_mutations_stay_valid(seed, size, steps, curmax, temperature):
    rng = np.random.default_rng(seed)
    expr = _start(seed, size)
    for _ in range(steps):
        new, kind = MUTATOR.mutate(expr, rng, temperature, curmax)
        assert kind in MUTATIONS
        if new is not None:
            assert _valid(new, curmax), (kind, str(expr), str(new))
            expr = new


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), a=st.integers(1, 12), b=st.integers(1, 12))
def test_crossover_stays_valid(seed, a, b):
    rng = np.random.default_rng(seed)
    out = MUTATOR.crossover(_start(seed, a), _start(seed + 1, b), rng, OPTS.maxsize)
    if out is not None:
        assert all(_valid(e, OPTS.maxsize) for e in out)


def _only(name: str) -> Mutator:
    """OPTS's mutator with every mutation weight zero but ``name``'s."""
    weights = {f"weight_{m}": float(m == name) for m in MUTATIONS}
    return Mutator(Options(**{**{k: getattr(OPTS, k) for k in ("binary_operators", "unary_operators", "maxsize",
                                                                 "maxdepth", "constraints", "nested_constraints")},
                              **weights}), n_features=3)


def _leaves(e: Expression) -> list:
    return sorted(str(n) for n in e.nodes() if n.op is None)


def _changed_nodes(a: Expression, b: Expression) -> list:
    """Preorder positions where two formulas of the same shape differ in a node's own label."""
    label = lambda n: n.op.name if n.op is not None else str(n)      # noqa: E731
    return [i for i, (m, n) in enumerate(zip(a.nodes(), b.nodes())) if label(m) != label(n)]


START = parse_expression("cos(x0 * 1.5) + x1 / (x2 - 0.5)")        # complexity 10 of OPTS's maxsize 12
# What each mutation must have done to START (old, new); None: whatever it likes, as long as valid.
EFFECT = {
    "mutate_constant": lambda a, b: b.shape_key == a.shape_key and len(_changed_nodes(a, b)) == 1,
    "mutate_operator": lambda a, b: b.size == a.size and _leaves(b) == _leaves(a) and len(_changed_nodes(a, b)) <= 1,
    "mutate_feature": lambda a, b: b.size == a.size and len(_changed_nodes(a, b)) == 1
                                   and str(list(b.nodes())[_changed_nodes(a, b)[0]]).startswith("x"),
    "swap_operands": lambda a, b: b.key != a.key and _leaves(b) == _leaves(a) and b.size == a.size,
    "rotate_tree": lambda a, b: b.key != a.key and _leaves(b) == _leaves(a) and b.size == a.size,
    "add_node": lambda a, b: b.size > a.size,
    "insert_node": lambda a, b: b.size > a.size,
    "delete_node": lambda a, b: b.size < a.size,
    "simplify": lambda a, b: b.key == a.key,                     # START has nothing to fold
    "randomize": None,
    "do_nothing": lambda a, b: b.key == a.key,
    "optimize": lambda a, b: b.key == a.key,                     # constants are fitted by the search
}


@pytest.mark.parametrize("name", [m for m in MUTATIONS if m not in ("soft_tree",)])
def test_every_mutation_does_what_it_says_within_the_limits(name):
    assert set(EFFECT) == set(MUTATIONS) - {"soft_tree"}
    mutator = _only(name)
    rng = np.random.default_rng(1)
    changed = {12: 0, 11: 0}
    # 12: room for a new binary node; 11: room for a unary one only, so that a binary draw
    # breaks the limit and must be retried (or, after ten tries, give None)
    for curmax in (12, 11):
        for _ in range(30):
            new, kind = mutator.mutate(START, rng, 1.0, curmax)
            assert kind == name
            if new is None and curmax == 11:
                continue
            assert new is not None and _valid(new, curmax), (kind, str(new))
            if EFFECT[name] is not None:
                assert EFFECT[name](START, new), (kind, str(new))
            changed[curmax] += new.key != START.key
    if name not in ("simplify", "do_nothing", "optimize"):
        # every draw changes the formula, but mutate_operator may redraw the same operator
        assert changed[12] >= (15 if name == "mutate_operator" else 30), (name, changed)
        assert changed[11] >= 10, (name, changed)
    # at the size limit nothing that grows the formula is drawn
    new, kind = mutator.mutate(START, rng, 1.0, OPTS.complexity(START))
    if name in ("add_node", "insert_node"):
        assert (new, kind) == (START, "do_nothing")
    else:
        assert new is None or _valid(new, OPTS.complexity(START))


def test_simplify_mutation_folds_constants():
    new, kind = _only("simplify").mutate(parse_expression("x0 * (2.0 * 3.0) + x1"), np.random.default_rng(0))
    assert kind == "simplify" and str(new) == "x0 * 6.0 + x1"


def test_mutation_conditioning():
    w = dict(zip(MUTATIONS, MUTATOR.conditioned_weights(Expression.var(0), 12)))
    assert w["mutate_operator"] == w["swap_operands"] == w["delete_node"] == w["mutate_constant"] == 0
    full = parse_expression("x0 + x1 * x2 + x0 * x1 * x2")   # complexity 11
    w = dict(zip(MUTATIONS, MUTATOR.conditioned_weights(full, 11)))
    assert w["add_node"] == w["insert_node"] == 0


def test_rotation_reassociates():
    rng = np.random.default_rng(0)
    seen = {str(MUTATOR.rotate_tree(parse_expression("x0 * (x1 + x2)"), rng, 1.0)) for _ in range(30)}
    assert "x0 * x1 + x2" in seen


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 15))
def test_simplify_tree_keeps_values(seed, size):
    rng = np.random.default_rng(seed)
    e = random_expression(rng, 3, size, OPTS.binary, OPTS.unary, const_probability=0.7)
    s = simplify_tree(e)
    assert s.size <= e.size
    a, b = e.evaluate(X), s.evaluate(X)
    # Re-association changes round-off; where a formula amplifies round-off (exp(exp(..)),
    # cancellation) values may legitimately differ, so compare only well-conditioned rows.
    nudged = e.evaluate(X * (1 + 1e-13))
    calm = torch.isfinite(a) & torch.isfinite(nudged) & ((nudged - a).abs() <= 1e-9 * (1 + a.abs()))
    assert torch.allclose(a[calm], b[calm], rtol=1e-6, atol=1e-9)
    assert torch.equal(torch.isnan(a[calm]), torch.isnan(b[calm]))


def test_simplify_tree_folds_and_merges():
    assert str(simplify_tree(parse_expression("2.0 * (3.0 * x0)"))) == "6.0 * x0"
    assert str(simplify_tree(parse_expression("(x0 + 1.0) + 2.5"))) == "3.5 + x0"
    assert str(simplify_tree(parse_expression("cos(0.0) * x1"))) == "x1"
    assert str(simplify_tree(parse_expression("(x0 - 0.0) / 1.0 + 0.0 * x1"))) == "x0 + 0.0 * x1"
    # 1/0 is not folded: the formula keeps its (inf) meaning
    assert str(simplify_tree(parse_expression("x0 + 1.0 / 0.0"))) == "x0 + 1.0 / 0.0"


def test_lowering_and_sympy_simplify():
    allowed = {op.name: op for op in Options(binary_operators=["+", "*", "/"]).operators}
    low = lower_to_operators(parse_expression("square(x0) - inv(x1)"), allowed)
    assert set(n.op.name for n in low.nodes() if n.op) <= set(allowed)
    assert torch.allclose(low.evaluate(X), parse_expression("square(x0) - inv(x1)").evaluate(X))
    s = sympy_simplify(parse_expression("x0 * x1 / x1 + x0"), allowed, timeout=10)
    assert s is not None and s.size < 7 and torch.allclose(s.evaluate(X), 2 * X[:, 0])
    assert lower_to_operators(parse_expression("cos(x0)"), allowed) is None
