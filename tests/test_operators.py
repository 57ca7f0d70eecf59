"""The operator registry: exact and guarded torch forms, sympy forms, names, custom operators."""
import math
import warnings

import numpy as np
import pytest
import sympy
import torch

from pysr_baseline.operators import (ALIASES, BUILTIN_OPERATORS, DEFAULT_BINARY_OPERATORS,
                                     DEFAULT_UNARY_OPERATORS, Operator, custom_operator, get_operator)
from pysr_baseline.parsing import parse_operator_definition, resolve_operator, resolve_operators

# The exact semantics each built-in must have, written with numpy.
NUMPY_REFERENCE = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "neg": np.negative, "square": np.square, "cube": lambda a: np.power(a, 3), "sqrt": np.sqrt,
    "exp": np.exp, "log": np.log, "abs": np.abs, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "tanh": np.tanh, "inv": lambda a: 1.0 / a,
}

REQUIRED = {"add", "sub", "mul", "div", "pow", "neg", "square", "cube", "sqrt", "exp", "log", "abs",
            "sin", "cos", "tan", "tanh", "inv"}


def _np(fn, *args):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(*args)


def _random_args(arity, n=2000, seed=0):
    rng = np.random.default_rng(seed)
    # mixed signs and scales, exact zeros included, so that domain errors occur
    parts = [rng.uniform(-5, 5, n // 2), rng.normal(0, 50, n // 4), np.zeros(n // 8),
             rng.uniform(-1e-3, 1e-3, n - n // 2 - n // 4 - n // 8)]
    return [rng.permutation(np.concatenate(parts)) for _ in range(arity)]


def assert_same(got: torch.Tensor, want: np.ndarray, rtol=1e-12):
    got = got.detach().numpy()
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=1e-300)


def test_registry_has_required_operators_with_consistent_fields():
    assert REQUIRED <= set(BUILTIN_OPERATORS)
    for name, op in BUILTIN_OPERATORS.items():
        assert op.name == name
        assert op.arity in (1, 2)
        assert op.complexity == 1
        assert callable(op.fn) and callable(op.sympy_fn)
    for name in DEFAULT_BINARY_OPERATORS:
        assert BUILTIN_OPERATORS[name].arity == 2
    for name in DEFAULT_UNARY_OPERATORS:
        assert BUILTIN_OPERATORS[name].arity == 1
    assert {op.infix for op in BUILTIN_OPERATORS.values() if op.infix} == {"+", "-", "*", "/", "^"}
    assert get_operator("+").commutative and get_operator("*").commutative
    assert not get_operator("-").commutative and not get_operator("/").commutative


@pytest.mark.parametrize("name", sorted(NUMPY_REFERENCE))
def test_exact_form_matches_numpy(name):
    op = BUILTIN_OPERATORS[name]
    args = _random_args(op.arity, seed=len(name))
    if name == "pow":  # keep magnitudes where pow does not just overflow everywhere
        args = [args[0], np.clip(args[1], -6, 6)]
    got = op(*[torch.tensor(a) for a in args])
    assert got.dtype == torch.float64
    assert_same(got, _np(NUMPY_REFERENCE[name], *args), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(NUMPY_REFERENCE))
def test_exact_form_float32_keeps_dtype_and_matches(name):
    op = BUILTIN_OPERATORS[name]
    args = [np.clip(a, -4, 4) for a in _random_args(op.arity, n=400, seed=7)]
    got = op(*[torch.tensor(a, dtype=torch.float32) for a in args])
    assert got.dtype == torch.float32
    want = _np(NUMPY_REFERENCE[name], *[a.astype(np.float32) for a in args]).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got.numpy()), np.isnan(want))
    ok = np.isfinite(want) & (np.abs(want) < 1e6)
    np.testing.assert_allclose(got.numpy()[ok], want[ok], rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name, args, expected", [
    ("log", [-1.0], "nan"), ("log", [0.0], "-inf"), ("sqrt", [-1.0], "nan"), ("div", [1.0, 0.0], "inf"),
    ("div", [-1.0, 0.0], "-inf"), ("div", [0.0, 0.0], "nan"), ("inv", [0.0], "inf"),
    ("pow", [-2.0, 0.5], "nan"), ("pow", [0.0, -1.0], "inf"), ("exp", [1000.0], "inf"),
    ("tan", [math.inf], "nan"), ("sin", [math.inf], "nan"), ("sub", [math.inf, math.inf], "nan"),
])
def test_domain_errors_give_nan_or_inf_never_raise(name, args, expected):
    out = get_operator(name)(*[torch.tensor([a], dtype=torch.float64) for a in args])
    value = float(out[0])
    if expected == "nan":
        assert math.isnan(value)
    else:
        assert value == float(expected)


def test_pow_with_integer_exponent_keeps_sign_of_negative_base():
    out = get_operator("pow")(torch.tensor([-2.0, -2.0]), torch.tensor([3.0, 2.0]))
    assert out.tolist() == [-8.0, 4.0]


EXTREMES = torch.tensor([0.0, -0.0, 1e-300, -1e-300, 1e-7, -1e-7, 1e-3, -1.0, 1.0, math.pi / 2,
                         -math.pi / 2, 7.5, -7.5, 800.0, -800.0, 1e6, -1e6, 1e100, -1e100],
                        dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(BUILTIN_OPERATORS))
def test_soft_form_is_finite_for_finite_inputs_including_extremes(name):
    op = BUILTIN_OPERATORS[name]
    if op.arity == 1:
        args = [EXTREMES]
    else:  # every pair of extreme values
        args = [EXTREMES.repeat_interleave(len(EXTREMES)), EXTREMES.repeat(len(EXTREMES))]
    args = [a.clone().requires_grad_(True) for a in args]
    out = op.soft(*args)
    assert torch.isfinite(out).all(), f"{name}: {out}"
    out.sum().backward()
    for a in args:  # and the gradient does not poison training either
        assert torch.isfinite(a.grad).all(), f"{name}: grad {a.grad}"


@pytest.mark.parametrize("name", sorted(BUILTIN_OPERATORS))
def test_soft_form_is_finite_in_float32(name):
    op = BUILTIN_OPERATORS[name]
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-30, -3.0, 3.0, 100.0, -100.0, 1e4, -1e4], dtype=torch.float32)
    args = [x] if op.arity == 1 else [x.repeat_interleave(len(x)), x.repeat(len(x))]
    assert torch.isfinite(op.soft(*args)).all(), name


# Inputs inside each operator's domain, where the guarded form must equal the exact one.
DOMAINS = {
    "sqrt": (1e-5, 50), "log": (1e-5, 50), "exp": (-20, 20), "tan": (-1.4, 1.4), "inv": (0.01, 50),
}


@pytest.mark.parametrize("name", sorted(BUILTIN_OPERATORS))
def test_soft_form_equals_exact_inside_domain(name):
    op = BUILTIN_OPERATORS[name]
    rng = np.random.default_rng(3)
    if name == "pow":
        args = [rng.uniform(0.01, 10, 500), rng.uniform(-4, 4, 500)]
    elif name == "div":
        args = [rng.uniform(-10, 10, 500), rng.choice([-1, 1], 500) * rng.uniform(0.01, 10, 500)]
    elif name == "inv":
        args = [rng.choice([-1, 1], 500) * rng.uniform(*DOMAINS["inv"], 500)]
    else:
        lo, hi = DOMAINS.get(name, (-20, 20))
        args = [rng.uniform(lo, hi, 500) for _ in range(op.arity)]
    t = [torch.tensor(a) for a in args]
    torch.testing.assert_close(op.soft(*t), op(*t), rtol=1e-12, atol=1e-12)


def test_soft_forms_clamp_where_exact_forms_break():
    x = torch.tensor([-4.0, 0.0], dtype=torch.float64)
    assert torch.isnan(get_operator("sqrt")(x)[0]) and torch.isfinite(get_operator("sqrt").soft(x)).all()
    assert torch.isfinite(get_operator("log").soft(x)).all()
    assert torch.isfinite(get_operator("inv").soft(x)).all()
    assert torch.isfinite(get_operator("div").soft(torch.ones(2, dtype=torch.float64), x)).all()
    assert torch.isfinite(get_operator("exp").soft(torch.tensor([1e5], dtype=torch.float64))).all()
    assert torch.isfinite(get_operator("pow").soft(torch.tensor([-2.0]), torch.tensor([0.5]))).all()
    # operators without a special soft form use the exact one
    assert get_operator("sin").soft(x).tolist() == get_operator("sin")(x).tolist()


@pytest.mark.parametrize("name", sorted(BUILTIN_OPERATORS))
def test_sympy_form_agrees_with_torch(name):
    op = BUILTIN_OPERATORS[name]
    symbols = sympy.symbols(f"a0:{op.arity}")
    expr = op.sympy_fn(*symbols)
    assert isinstance(expr, sympy.Basic)
    f = sympy.lambdify(symbols, expr, modules="numpy")
    rng = np.random.default_rng(11)
    args = [rng.uniform(0.1, 3.0, 300) for _ in range(op.arity)]  # inside every domain
    if name in ("sub", "add", "mul", "sin", "cos", "tanh", "neg", "abs", "square", "cube"):
        args = [rng.uniform(-3, 3, 300) for _ in range(op.arity)]
    want = np.broadcast_to(np.asarray(f(*args), dtype=np.float64), args[0].shape)
    got = op(*[torch.tensor(a) for a in args]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_sympy_forms_are_the_expected_functions():
    x, y = sympy.symbols("x y")
    assert get_operator("inv").sympy_fn(x) == 1 / x
    assert get_operator("sqrt").sympy_fn(x) == sympy.sqrt(x)
    assert get_operator("pow").sympy_fn(x, y) == x**y
    assert get_operator("cube").sympy_fn(x) == x**3
    assert get_operator("neg").sympy_fn(x) == -x
    assert get_operator("abs").sympy_fn(x) == sympy.Abs(x)


@pytest.mark.parametrize("alias, name", [
    ("+", "add"), ("plus", "add"), ("-", "sub"), ("minus", "sub"), ("*", "mul"), ("mult", "mul"),
    ("times", "mul"), ("/", "div"), ("^", "pow"), ("**", "pow"), ("ln", "log"), ("safe_log", "log"),
    ("safe_sqrt", "sqrt"), ("safe_pow", "pow"), ("cos", "cos"), (" exp ", "exp"),
])
def test_aliases_resolve_to_builtins(alias, name):
    assert get_operator(alias) is BUILTIN_OPERATORS[name]
    assert resolve_operator(alias) is BUILTIN_OPERATORS[name]


def test_every_alias_points_at_a_builtin():
    for alias, name in ALIASES.items():
        assert name in BUILTIN_OPERATORS, alias


@pytest.mark.parametrize("bad", ["coss", "sinh", "foo", "", "log10", "__import__"])
def test_unknown_operator_name_raises_value_error_naming_it(bad):
    with pytest.raises(ValueError, match="unknown operator") as info:
        get_operator(bad)
    assert repr(bad) in str(info.value)
    with pytest.raises(ValueError):
        resolve_operators(["+", bad], 2) if bad else resolve_operator(bad)


def test_non_string_operator_specs_raise_type_error():
    with pytest.raises(TypeError):
        get_operator(3)
    with pytest.raises(TypeError):
        resolve_operator(3.5)
    with pytest.raises(TypeError):
        resolve_operators([None], 1)


def test_resolve_operators_checks_arity_in_both_directions():
    assert [op.name for op in resolve_operators(["+", "*", "pow"], 2)] == ["add", "mul", "pow"]
    assert [op.name for op in resolve_operators(["cos", "exp"], 1)] == ["cos", "exp"]
    with pytest.raises(ValueError, match="'cos'.*arity 1.*binary"):
        resolve_operators(["+", "cos"], 2)
    with pytest.raises(ValueError, match="'add'.*arity 2.*unary"):
        resolve_operators(["sin", "+"], 1)
    with pytest.raises(ValueError, match="arity"):
        resolve_operators(["special(x, y) = x^2 + y"], 1)


def test_resolve_operators_accepts_a_single_spec():
    assert resolve_operators("cos", 1) == (get_operator("cos"),)
    assert resolve_operators(get_operator("*"), 2) == (get_operator("mul"),)


@pytest.mark.parametrize("specs", [["+", "+"], ["+", "add"], ["*", "mult", "-"], ["plus", "+"]])
def test_duplicate_operators_rejected(specs):
    with pytest.raises(ValueError, match="twice"):
        resolve_operators(specs, 2)


def test_duplicate_unary_including_definition_rejected():
    with pytest.raises(ValueError, match="inv"):
        resolve_operators(["inv", "inv(x) = 1/x"], 1)
    with pytest.raises(ValueError, match="sq3"):
        resolve_operators(["sq3(x) = 3*x^2", "sq3(y) = 3*y^2"], 1)


def test_custom_operator_from_callable():
    sinc = custom_operator("sinc", lambda x: torch.sin(x) / x, lambda x: sympy.sin(x) / x)
    assert sinc.name == "sinc" and sinc.arity == 1 and sinc.complexity == 1
    x = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(sinc(x), torch.sin(x) / x)
    torch.testing.assert_close(sinc.soft(x), torch.sin(x) / x)  # no guarded form: exact
    s = sympy.Symbol("s")
    assert sinc.sympy_fn(s) == sympy.sin(s) / s
    assert resolve_operators([sinc, "cos"], 1)[0] is sinc

    hyp = custom_operator("hyp", lambda a, b: torch.sqrt(a * a + b * b),
                          lambda a, b: sympy.sqrt(a**2 + b**2), arity=2, complexity=3,
                          soft_fn=lambda a, b: torch.sqrt(a * a + b * b + 1e-12))
    assert hyp.arity == 2 and hyp.complexity == 3
    assert hyp(torch.tensor([3.0]), torch.tensor([4.0])).item() == 5.0
    assert abs(hyp.soft(torch.tensor([0.0]), torch.tensor([0.0])).item() - 1e-6) < 1e-9
    with pytest.raises(ValueError):
        resolve_operators([hyp], 1)


@pytest.mark.parametrize("kwargs, error", [
    (dict(name="bad name"), ValueError), (dict(name="1x"), ValueError), (dict(name=None), ValueError),
    (dict(fn="torch.sin"), TypeError), (dict(sympy_fn=None), TypeError), (dict(arity=3), ValueError),
    (dict(arity=0), ValueError), (dict(complexity=-1), ValueError),
])
def test_custom_operator_rejects_bad_arguments(kwargs, error):
    args = dict(name="f", fn=torch.sin, sympy_fn=sympy.sin, arity=1)
    args.update(kwargs)
    with pytest.raises(error):
        custom_operator(**args)


def test_operator_dataclass_validates_arity():
    with pytest.raises(ValueError, match="arity"):
        Operator("tri", 3, torch.add, sympy.Add)


# --- PySR's string definitions ---------------------------------------------------------------

def test_string_definition_unary():
    op = resolve_operator("inv(x) = 1/x", arity=1)
    assert op.arity == 1 and op.name == "inv"
    x = torch.tensor([0.5, 2.0, -4.0, 0.0], dtype=torch.float64)
    assert op(x).tolist() == [2.0, 0.5, -0.25, math.inf]
    s = sympy.Symbol("s")
    assert sympy.simplify(op.sympy_fn(s) - 1 / s) == 0


def test_string_definition_binary_torch_soft_and_sympy():
    op = resolve_operator("special(x, y) = x^2 + y", arity=2)
    assert op.name == "special" and op.arity == 2
    rng = np.random.default_rng(0)
    a, b = torch.tensor(rng.uniform(-3, 3, 50)), torch.tensor(rng.uniform(-3, 3, 50))
    torch.testing.assert_close(op(a, b), a**2 + b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.soft(a, b), a.abs() ** 2 + b, rtol=1e-9, atol=1e-9)
    p, q = sympy.symbols("p q")
    # constants become sympy Floats (x^2 -> p**2.0); nsimplify makes them exact again
    assert sympy.simplify(sympy.nsimplify(op.sympy_fn(p, q)) - (p**2 + q)) == 0
    # substitution is simultaneous: the sympy arguments may reuse the parameter names
    x, y = sympy.symbols("x y")
    assert sympy.simplify(sympy.nsimplify(op.sympy_fn(y, x)) - (y**2 + x)) == 0
    assert float(op.sympy_fn(sympy.Float(2.0), sympy.Float(1.0))) == 5.0


def test_string_definition_using_builtins_and_constants():
    op = parse_operator_definition("bump(t) = exp(-(t * t)) * 2.5 + cos(t) / 2", complexity=3)
    assert op.complexity == 3
    t = torch.linspace(-2, 2, 21, dtype=torch.float64)
    torch.testing.assert_close(op(t), torch.exp(-t * t) * 2.5 + torch.cos(t) / 2)
    s = sympy.Symbol("s")
    f = sympy.lambdify(s, op.sympy_fn(s), "numpy")
    np.testing.assert_allclose(f(t.numpy()), op(t).numpy(), rtol=1e-12)


def test_string_definition_domain_errors_are_nan_and_soft_is_finite():
    op = resolve_operator("lg(x) = log(x) + sqrt(x)")
    x = torch.tensor([-1.0, 0.0, 4.0], dtype=torch.float64)
    out = op(x)
    assert math.isnan(out[0]) and out[1] == -math.inf and abs(out[2] - (math.log(4) + 2)) < 1e-12
    assert torch.isfinite(op.soft(x)).all()


@pytest.mark.parametrize("text, builtin", [
    ("inv(x) = 1/x", "inv"), ("square(x) = x*x", "square"), ("sqrt(x) = x^0.5", "sqrt"),
    ("neg(z) = -z", "neg"), ("plus(a, b) = b + a", "add"), ("ln(x) = log(x)", "log"),
])
def test_definition_restating_a_builtin_means_the_builtin(text, builtin):
    assert resolve_operator(text) is BUILTIN_OPERATORS[builtin]


@pytest.mark.parametrize("text, fragment", [
    ("__import__('os')", "unknown operator"),
    ("f(x) = __import__('os').system('ls')", "unexpected character"),
    ("f(x) = x.real", "unexpected character"),
    ("f(x)= eval(x)", "unknown function 'eval'"),
    ("f(x) = exec(x)", "unknown function 'exec'"),
    ("f(x) = os", "unknown name 'os'"),
    ("f(x) = x + y", "unknown name 'y'"),
    ("f(x, y, z) = x", "one or two parameter"),
    ("f() = 1", "one or two parameter"),
    ("f(x, x) = x", "must differ"),
    ("f(1) = 1", "parameter"),
    ("cos(x) = x", "built-in operator 'cos'"),
    ("exp(x) = exp(x) + 1", "built-in operator 'exp'"),
    ("inv(x) = 2/x", "built-in operator 'inv'"),
    ("plus(x, y) = x * y", "built-in operator 'plus'"),
    ("inv(x, y) = x / y", "built-in operator 'inv'"),
    ("f(x) = ", "empty"),
    ("f(x) = x +", "unexpected end"),
    ("f(x) = (x", "unexpected end"),
    ("f(x) = x)", "unexpected '\\)'"),
    ("f(x) == x", "unexpected '='"),
    ("f(x) = x = 1", "unexpected '='"),
    ("lambda x: x", "unknown operator"),
    ("f = lambda x: x", "malformed"),
    ("f(x) = lambda: x", "unexpected character ':'"),
    ("f(x) = x; import os", "unexpected character ';'"),
    ("f(x) = x[0]", "unexpected character '\\['"),
    ("f(x) = 'x'", "unexpected character"),
    ("f(x) = sin(x, x)", "takes 1 argument"),
    ("__f__(x) = x", "not allowed"),
    ("f(cos) = cos", "clashes"),
    ("f(x=1) = x", "parameter"),
    ("f(x) = x\n__import__('os')", "unexpected"),
])
def test_malformed_or_unsafe_definitions_raise_value_error(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        resolve_operator(text)


def test_rejected_definitions_never_reach_eval(monkeypatch):
    import builtins

    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec called on a user string")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(sympy, "sympify", forbidden)
    monkeypatch.setattr(sympy, "parse_expr", forbidden)
    op = resolve_operator("special(x, y) = x^2 + y")
    assert op(torch.tensor([3.0]), torch.tensor([1.0])).item() == 10.0
    with pytest.raises(ValueError):
        resolve_operator("f(x) = __import__('os').system('echo hacked')")


def test_definition_with_non_string_type_error():
    with pytest.raises(TypeError):
        parse_operator_definition(b"f(x) = x")
