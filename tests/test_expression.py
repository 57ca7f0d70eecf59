"""The discrete formula: evaluation, round trips, measures, identity, editing, printing."""
import math
import warnings

import numpy as np
import pytest
import sympy
import torch

from pysr_baseline.expression import Expression, evaluate_batch
from pysr_baseline.operators import BUILTIN_OPERATORS, custom_operator, get_operator
from pysr_baseline.parsing import parse_expression
from pysr_baseline.random_expressions import random_expression
from pysr_baseline.sympy_conversion import expression_from_sympy

BINARY = [n for n, op in BUILTIN_OPERATORS.items() if op.arity == 2]
UNARY = [n for n, op in BUILTIN_OPERATORS.items() if op.arity == 1]
N_FEATURES = 3


def P(text, names=None):
    return parse_expression(text, variable_names=names)


def random_trees(seed, count, max_size=15, const_probability=0.5):
    rng = np.random.default_rng(seed)
    return [random_expression(rng, N_FEATURES, int(rng.integers(1, max_size + 1)), BINARY, UNARY,
                              const_probability=const_probability) for _ in range(count)]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    Xn = rng.uniform(-3, 3, (128, N_FEATURES))
    Xn[:4] = [[0.0, 1.0, -1.0], [1.0, 0.0, 2.0], [-2.0, 0.5, 0.0], [0.5, -0.5, 3.0]]  # exact edge values
    return Xn, torch.tensor(Xn)


def well_conditioned(e: Expression, X: torch.Tensor) -> np.ndarray:
    """Rows where a relative nudge of 1e-11 to the inputs barely moves the value (or keeps it
    NaN/inf): there, two correct implementations must agree; elsewhere (cos(exp(30 x)), say)
    last-bit differences in libm are amplified and the comparison says nothing."""
    a = e.evaluate(X).numpy()
    stable = np.ones(len(a), dtype=bool)
    for factor in (1 + 1e-11, 1 - 1e-11):
        b = e.evaluate(X * factor).numpy()
        with np.errstate(all="ignore"):
            close = np.abs(a - b) <= 1e-7 * (1 + np.abs(a))
        same_kind = (np.isnan(a) == np.isnan(b)) & (np.isinf(a) == np.isinf(b))
        stable &= same_kind & (close | ~np.isfinite(a))
    return stable


def lambdified_structurally(e: Expression, Xn: np.ndarray) -> np.ndarray:
    """Evaluate ``e.to_sympy()`` with sympy's lambdify, keeping the tree's structure (no
    automatic simplification, which would move NaNs: sqrt(x)**2 -> x) and feeding the
    constants as numpy arrays (Python floats would give complex numbers or raise)."""
    with sympy.evaluate(False):
        expr = e.to_sympy()
        floats = sorted(expr.atoms(sympy.Float), key=lambda f: float(f))
        cs = sympy.symbols(f"c0:{len(floats)}")
        expr = expr.xreplace(dict(zip(floats, cs)))
    xs = sympy.symbols(f"x0:{N_FEATURES}")
    f = sympy.lambdify(list(xs) + list(cs), expr, modules="numpy")
    n = len(Xn)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        out = f(*Xn.T, *[np.full(n, float(v)) for v in floats])
    return np.broadcast_to(np.asarray(out, dtype=np.float64), (n,))


# --- evaluation ------------------------------------------------------------------------------

def test_evaluate_matches_lambdify_on_random_trees(data):
    Xn, X = data
    compared = total = nan_rows = 0
    for e in random_trees(seed=0, count=150):
        got = e.evaluate(X).numpy()
        assert got.shape == (len(Xn),) and got.dtype == np.float64
        want = lambdified_structurally(e, Xn)
        ok = well_conditioned(e, X)
        np.testing.assert_array_equal(np.isnan(got[ok]), np.isnan(want[ok]), err_msg=str(e))
        np.testing.assert_array_equal(np.isinf(got[ok]), np.isinf(want[ok]), err_msg=str(e))
        fin = ok & np.isfinite(got)
        np.testing.assert_allclose(got[fin], want[fin], rtol=1e-8, atol=1e-10, err_msg=str(e))
        compared += ok.sum()
        total += len(ok)
        nan_rows += np.isnan(got[ok]).sum()
    assert compared > 0.9 * total  # the comparison covered nearly everything
    assert nan_rows > 0.05 * total  # and domain errors did occur


def test_evaluate_small_cases_exactly():
    X = torch.tensor([[2.0, 3.0], [-1.0, 0.5]], dtype=torch.float64)
    assert P("0.5 * x0 * square(x1)").evaluate(X).tolist() == [9.0, -0.125]
    assert P("x1 ^ x0").evaluate(X).tolist() == [9.0, 2.0]
    assert P("x0 / x1 - 1").evaluate(X).tolist() == [2.0 / 3.0 - 1, -3.0]
    assert P("neg(x0) + inv(x1)").evaluate(X).tolist() == [-2.0 + 1 / 3, 3.0]
    out = P("log(x0) + sqrt(x0)").evaluate(X)
    assert math.isfinite(out[0]) and math.isnan(out[1])


def test_constant_formula_broadcasts_to_rows():
    X = torch.zeros(5, 2, dtype=torch.float64)
    out = P("2.5").evaluate(X)
    assert out.shape == (5,) and out.dtype == torch.float64 and (out == 2.5).all()
    out = P("cos(0.0) + 1").evaluate(X)
    assert out.tolist() == [2.0] * 5


def test_evaluate_follows_dtype_and_integer_inputs_become_float():
    X32 = torch.tensor([[1.0, 2.0]], dtype=torch.float32)
    out = P("0.5 * x0 + x1").evaluate(X32)
    assert out.dtype == torch.float32 and out.item() == 2.5
    out = P("0.5 * x0 + x1").evaluate(torch.tensor([[1, 2]]))
    assert out.is_floating_point() and out.item() == 2.5


def test_soft_evaluation_is_finite_where_exact_is_not():
    X = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    e = P("log(x0) + sqrt(x0) + x0 / x1 + inv(x1)")
    assert not torch.isfinite(e.evaluate(X)).any()
    assert torch.isfinite(e.evaluate(X, soft=True)).all()
    Y = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(e.evaluate(Y, soft=True), e.evaluate(Y))


def test_evaluate_with_constants_tensor_gives_gradients():
    e = P("2.0 * exp(0.5 * x0) + 1.5")
    assert e.constants == (2.0, 0.5, 1.5)
    X = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    c = torch.tensor([3.0, 1.0, -1.0], dtype=torch.float64, requires_grad=True)
    out = e.evaluate(X, constants=c)
    torch.testing.assert_close(out, 3.0 * torch.exp(X[:, 0]) - 1.0)
    out.sum().backward()
    x = X[:, 0]
    expected = torch.stack([torch.exp(x).sum(), (3.0 * x * torch.exp(x)).sum(), torch.tensor(3.0, dtype=torch.float64)])
    torch.testing.assert_close(c.grad, expected)
    # the tree itself is unchanged
    assert e.constants == (2.0, 0.5, 1.5)
    torch.testing.assert_close(e.evaluate(X), 2.0 * torch.exp(0.5 * x) + 1.5)


def test_constants_tensor_follows_preorder_in_deep_trees():
    e = P("(1.0 - x0) * (x0 / 2.0) + 3.0 ^ (4.0 * x0)")
    assert e.constants == (1.0, 2.0, 3.0, 4.0)
    X = torch.tensor([[0.5], [1.5]], dtype=torch.float64)
    c = torch.tensor(e.constants, dtype=torch.float64)
    torch.testing.assert_close(e.evaluate(X, constants=c), e.evaluate(X))
    new = [5.0, -1.0, 2.0, 0.25]
    torch.testing.assert_close(e.evaluate(X, constants=torch.tensor(new, dtype=torch.float64)),
                               e.with_constants(new).evaluate(X))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 1), ()])
def test_evaluate_rejects_non_2d(shape):
    with pytest.raises(ValueError, match="2-D"):
        P("x0 + 1").evaluate(torch.zeros(shape, dtype=torch.float64))


def test_evaluate_rejects_too_few_columns():
    with pytest.raises(ValueError, match="x2.*2 column"):
        P("x0 + x2").evaluate(torch.zeros(4, 2, dtype=torch.float64))
    # extra columns are fine
    assert P("x0").evaluate(torch.ones(3, 5, dtype=torch.float64)).tolist() == [1.0] * 3


def test_evaluate_batch():
    X = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    out = evaluate_batch([P("x0 + x1"), P("x0 * x1"), P("7")], X)
    assert out.tolist() == [[3.0, 7.0], [2.0, 12.0], [7.0, 7.0]]
    assert evaluate_batch([], X).shape == (0, 2)


# --- round trips -----------------------------------------------------------------------------

def test_string_round_trip_on_random_trees_is_exact():
    for e in random_trees(seed=1, count=300):
        text = e.to_string()
        back = parse_expression(text)
        assert back == e, (text, e.key, back.key)
        assert back.key == e.key and back.constants == e.constants


def test_string_round_trip_with_variable_names():
    names = ["mass", "v", "theta"]
    for e in random_trees(seed=2, count=100):
        text = e.to_string(names)
        assert not any(f"x{i}" in text for i in range(N_FEATURES))
        assert parse_expression(text, variable_names=names) == e


@pytest.mark.parametrize("text", [
    "x0 + (x1 + x2)", "x0 * (x1 / x2)", "x0 - (x1 - x2)", "x0 + (x1 - x2)", "x0 / (x1 * x2)",
    "(x0 ^ x1) ^ x2", "x0 ^ x1 ^ x2", "x0 - (-2.0)", "(-2.0) ^ x0", "x0 ^ (-0.5)", "neg(x0 ^ 2.0)",
    "x0 * (x1 + x2)", "(x0 + x1) * x2", "x0 - x1 - x2", "(x0 / x1) / x2", "-0.0 * x0", "1e-300 + 1e+300",
    "0.1 + 0.2 * x0", "special(x0, x1) * 2.0",
])
def test_string_round_trip_tricky_cases(text):
    ops = ["special(a, b) = a^2 + b"]
    e = parse_expression(text, operators=ops)
    assert parse_expression(e.to_string(), operators=ops) == e


def test_precision_rounds_printed_constants():
    e = P("3.14159265358979 * x0 + 100")
    assert e.to_string(precision=3) == "3.14 * x0 + 100.0"
    assert str(e) == "3.14159 * x0 + 100.0"
    assert e.to_string() == "3.14159265358979 * x0 + 100.0"
    assert "Expression(" in repr(e)


def test_sympy_round_trip_evaluates_the_same(data):
    Xn, X = data
    converted = compared = 0
    for e in random_trees(seed=3, count=150, max_size=12):
        s = e.to_sympy()
        if s.has(sympy.I, sympy.zoo, sympy.nan):
            # constant-folded domain errors (log(-0.3)) become complex numbers in sympy;
            # such a formula is (nearly) NaN everywhere and may refuse to come back
            assert np.isfinite(e.evaluate(X).numpy()).mean() < 0.1, (e, s)
            continue
        back = expression_from_sympy(s)
        converted += 1
        a, b = e.evaluate(X).numpy(), back.evaluate(X).numpy()
        ok = well_conditioned(e, X) & np.isfinite(a)
        np.testing.assert_allclose(b[ok], a[ok], rtol=1e-7, atol=1e-9, err_msg=f"{e} -> {s} -> {back}")
        compared += ok.sum()
    assert converted > 100 and compared > 0.4 * converted * len(Xn)


def test_sympy_conversion_named_variables_and_known_forms():
    m, v = sympy.symbols("m v")
    e = expression_from_sympy(m * v**2 / 2, ["m", "v"])
    assert e.n_features_required() == 2
    X = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    assert e.evaluate(X).item() == 9.0
    assert e.to_sympy(["m", "v"]) == sympy.Float(0.5) * m * v**2 or \
        sympy.simplify(e.to_sympy(["m", "v"]) - m * v**2 / 2) == 0
    x0, x1 = sympy.symbols("x0 x1")
    assert expression_from_sympy(sympy.sqrt(x0)).op.name == "sqrt"
    assert expression_from_sympy(x0**2).op.name == "square"
    assert expression_from_sympy(x0**3).op.name == "cube"
    assert expression_from_sympy(1 / x0).op.name == "inv"
    assert expression_from_sympy(x0 - x1).op.name == "sub"
    assert expression_from_sympy(x0 / x1**2).to_string() == "x0 / square(x1)"
    assert expression_from_sympy(sympy.Abs(sympy.exp(x0))).evaluate(X).item() == pytest.approx(math.exp(2))


def test_from_sympy_errors():
    x, y = sympy.symbols("x y")
    with pytest.raises(ValueError, match="variable_names"):
        expression_from_sympy(x + y)
    with pytest.raises(ValueError, match="unknown symbol 'y'"):
        expression_from_sympy(x + y, ["x"])
    with pytest.raises(ValueError, match="cannot"):
        expression_from_sympy(sympy.sinh(sympy.Symbol("x0")))
    with pytest.raises(ValueError):
        expression_from_sympy(sympy.I * sympy.Symbol("x0"))


# --- measures ---------------------------------------------------------------------------------

def test_default_complexity_counts_nodes():
    for e in random_trees(seed=4, count=50):
        assert e.complexity() == e.size == sum(1 for _ in e.nodes())
    e = P("0.5 * x0 * square(x1)")
    assert (e.complexity(), e.size, e.depth) == (6, 6, 3)


def test_complexity_of_operators_by_name_and_alias():
    e = P("exp(x0) / (x1 + 2.0)")  # div, exp, x0, add, x1, 2.0
    assert e.complexity() == 6
    assert e.complexity({"/": 3}) == 8
    assert e.complexity({"div": 3, "exp": 2}) == 9
    assert e.complexity({"+": 0, "plus": 0}) == 5
    assert e.complexity({get_operator("exp"): 4}) == 9
    assert e.complexity({"sin": 10}) == 6  # an operator that does not occur changes nothing


def test_complexity_of_constants_and_variables():
    e = P("exp(x0) / (x1 + 2.0)")
    assert e.complexity(complexity_of_constants=2) == 7
    assert e.complexity(complexity_of_variables=3) == 10
    assert e.complexity({"exp": 2}, complexity_of_constants=0, complexity_of_variables=0.5) == 5
    assert e.complexity(complexity_of_variables=1.5) == 7.0
    assert isinstance(e.complexity(), int)
    assert e.complexity(complexity_of_variables=0.25) == 4.5


def test_complexity_uses_custom_operators_own_weight_and_overrides():
    heavy = custom_operator("heavy", torch.sin, sympy.sin, complexity=4)
    e = Expression.apply(heavy, Expression.var(0))
    assert e.complexity() == 5
    assert e.complexity({"heavy": 2}) == 3
    sq3 = parse_expression("sq3(x0) + 1", operators=["sq3(x) = 3*x^2"])
    assert sq3.complexity({"sq3": 5}) == 8


def test_depth_and_size():
    assert (P("x0").depth, P("x0").size) == (1, 1)
    assert (P("sin(cos(x0))").depth, P("sin(cos(x0))").size) == (3, 3)
    e = P("x0 + x1 * (x2 - exp(x0))")
    assert (e.depth, e.size) == (5, 8)
    for e in random_trees(seed=5, count=30):
        def depth(n):
            return 1 + max((depth(c) for c in n.children), default=0)
        assert e.depth == depth(e)


def test_n_features_required():
    assert P("3.0").n_features_required() == 0
    assert P("x4 * x0").n_features_required() == 5


# --- identity ---------------------------------------------------------------------------------

def test_key_is_structural_and_stable():
    a, b = P("x0 * (x1 + 2.5)"), P("x0*(x1+2.5)")
    assert a is not b and a == b and hash(a) == hash(b) and a.key == b.key
    assert a.key == "mul(x0,add(x1,c2.5))"
    assert Expression.apply("*", Expression.var(0), Expression.apply("+", Expression.var(1),
                                                                        Expression.const(2.5))) == a
    assert len({a, b, P("x0 * (x1 + 2.5)")}) == 1
    assert {a: 1}[b] == 1


@pytest.mark.parametrize("left, right", [
    ("x0 + 2.5", "x0 + 2.4999999999999996"), ("x0 + 1", "1 + x0"), ("x0 - x1", "x1 - x0"),
    ("x0 * x1", "x0 * x2"), ("sin(x0)", "cos(x0)"), ("x0 + 0.0", "x0 + -0.0"), ("x0 + 1", "x0 + (1)  + 0"),
])
def test_different_structure_or_constant_gives_different_key(left, right):
    a, b = P(left), P(right)
    assert a != b and a.key != b.key


def test_equality_is_not_fooled_by_other_types():
    assert P("x0") != "x0" and P("1.0") != 1.0 and P("x0") != None  # noqa: E711


def test_shape_key_ignores_constant_values_only():
    a, b, c = P("2.0 * exp(0.3 * x0)"), P("-7.0 * exp(1e-9 * x0)"), P("2.0 * exp(0.3 * x1)")
    assert a.shape_key == b.shape_key == "mul(c,exp(mul(c,x0)))"
    assert a.key != b.key
    assert a.shape_key != c.shape_key


def test_nodes_kinds_and_immutability():
    e = P("sin(x0) + 2.0")
    kinds = [(n.is_operator, n.is_variable, n.is_constant) for n in e.nodes()]
    assert kinds == [(True, False, False), (True, False, False), (False, True, False), (False, False, True)]
    assert [n.key for n in e.nodes()] == ["add(sin(x0),c2.0)", "sin(x0)", "x0", "c2.0"]
    assert isinstance(e.children, tuple)
    with pytest.raises(AttributeError):
        e.cache = 1  # __slots__: no new attributes


# --- constants and editing ----------------------------------------------------------------------

def test_constants_and_with_constants():
    e = P("1.5 * x0 + cos(2.5 - x1) / 3.5")
    assert e.constants == (1.5, 2.5, 3.5)
    f = e.with_constants([10, -1, 0.5])
    assert f.constants == (10.0, -1.0, 0.5)
    assert f.shape_key == e.shape_key and f != e
    assert e.constants == (1.5, 2.5, 3.5)  # the original is untouched
    assert P("x0").constants == () and P("x0").with_constants([]) == P("x0")
    with pytest.raises(ValueError, match="3 constant"):
        e.with_constants([1.0, 2.0])
    with pytest.raises(ValueError):
        e.with_constants([1.0, 2.0, 3.0, 4.0])


def test_subtree_and_replace():
    e = P("x0 * (x1 + sin(x2))")  # preorder: mul, x0, add, x1, sin, x2
    assert [e.subtree(i).key for i in range(e.size)] == ["mul(x0,add(x1,sin(x2)))", "x0", "add(x1,sin(x2))",
                                                       "x1", "sin(x2)", "x2"]
    r = e.replace(4, P("cos(x0)"))
    assert r == P("x0 * (x1 + cos(x0))")
    assert r.children[0] is e.children[0]  # untouched parts are shared
    assert e == P("x0 * (x1 + sin(x2))")
    assert e.replace(0, P("1.0")) == P("1.0")
    assert e.replace(1, P("x2 - 1")) == P("(x2 - 1) * (x1 + sin(x2))")
    for bad in (-1, e.size):
        with pytest.raises(IndexError):
            e.replace(bad, P("x0"))
    with pytest.raises(IndexError):
        e.subtree(e.size)


def test_replace_updates_measures():
    e = P("x0 + x1")
    r = e.replace(2, P("exp(exp(x1))"))
    assert (r.size, r.depth, r.complexity()) == (5, 4, 5)


def test_node_construction_errors():
    with pytest.raises(ValueError, match="takes 2"):
        Expression(get_operator("+"), (Expression.var(0),))
    with pytest.raises(ValueError, match="takes 1"):
        Expression.apply("sin", Expression.var(0), Expression.var(1))
    with pytest.raises(ValueError, match="non-negative int"):
        Expression.var(-1)
    with pytest.raises(ValueError, match="non-negative int"):
        Expression.var(1.0)
    with pytest.raises(ValueError, match="non-negative int"):
        Expression.var(True)
    with pytest.raises(ValueError):
        Expression()
    with pytest.raises(ValueError):
        Expression.apply("nosuchop", Expression.var(0))


# --- printing -----------------------------------------------------------------------------------

def test_to_latex_with_variable_names():
    e = P("0.5 * x0 * square(x1)")
    latex = e.to_latex(["m", "v"])
    assert "m" in latex and "v^{2}" in latex and "x_{0}" not in latex
    assert "x_{0}" in e.to_latex()
    assert "\\theta" in P("sin(x0)").to_latex(["theta"])
    assert "\\frac" in P("x0 / x1").to_latex(["q", "r"])
    with pytest.raises(ValueError, match="variable name"):
        e.to_latex(["m"])


def test_to_sympy_with_variable_names():
    s = P("x0 * x1 + 1").to_sympy(["a", "b"])
    a, b = sympy.symbols("a b")
    assert s == a * b + sympy.Float(1.0)
    with pytest.raises(ValueError):
        P("x0 * x1").to_string(["only_one"])
