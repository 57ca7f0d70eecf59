"""The whitelist formula parser: grammar, names, and rejection of everything else."""
import math

import pytest
import torch

from pysr_baseline.parsing import parse_expression, parse_operator_definition, tokenize


def key(text, **kw):
    return parse_expression(text, **kw).key


def value(text, row, **kw):
    X = torch.tensor([row], dtype=torch.float64)
    return parse_expression(text, **kw).evaluate(X).item()


@pytest.mark.parametrize("text, expected", [
    ("x0 - x1 - x2", "sub(sub(x0,x1),x2)"),
    ("x0 / x1 / x2", "div(div(x0,x1),x2)"),
    ("x0 ^ x1 ^ x2", "pow(x0,pow(x1,x2))"),
    ("x0 ** x1 ** x2", "pow(x0,pow(x1,x2))"),
    ("-x0^2", "neg(pow(x0,c2.0))"),
    ("-x0 ** 2", "neg(pow(x0,c2.0))"),
    ("(-x0)^2", "pow(neg(x0),c2.0)"),
    ("x0 + x1 * x2", "add(x0,mul(x1,x2))"),
    ("x0 * x1 + x2", "add(mul(x0,x1),x2)"),
    ("x0 - x1 + x2", "add(sub(x0,x1),x2)"),
    ("x0 * x1 / x2 * x0", "mul(div(mul(x0,x1),x2),x0)"),
    ("x0 * x1 ^ 2", "mul(x0,pow(x1,c2.0))"),
    ("2 ^ -x0", "pow(c2.0,neg(x0))"),
    ("x0 ^ -2", "pow(x0,c-2.0)"),
    ("x0 - -2", "sub(x0,c-2.0)"),
    ("-2", "c-2.0"),
    ("- - x0", "neg(neg(x0))"),
    ("+x0", "x0"),
    ("-(x0 * x1)", "neg(mul(x0,x1))"),
    ("((x0))", "x0"),
    ("sin(x0 + x1) * cos(x2)", "mul(sin(add(x0,x1)),cos(x2))"),
    ("pow(x0, 3)", "pow(x0,c3.0)"),
    ("plus(x0, times(x1, 2))", "add(x0,mul(x1,c2.0))"),
    ("ln(x0)", "log(x0)"),
])
def test_precedence_and_associativity(text, expected):
    assert key(text) == expected


def test_precedence_gives_the_right_numbers():
    row = [2.0, 3.0, 4.0]
    assert value("x0 - x1 - x2", row) == -5.0
    assert value("x2 / x0 / x0", row) == 1.0
    assert value("x0 ^ x1 ^ x0", row) == 2.0 ** 9
    assert value("-x1^2", row) == -9.0
    assert value("-x0 ^ 2 + x1", row) == -1.0
    assert value("2 ^ -1", row) == 0.5
    assert value("x0 * x1 ^ 2 / x2", row) == 4.5


@pytest.mark.parametrize("text, val", [
    ("1", 1.0), ("1.5", 1.5), (".5", 0.5), ("2.", 2.0), ("1e3", 1000.0), ("1.5E-3", 0.0015),
    ("2.5e+2", 250.0), ("1e-300", 1e-300), ("pi", math.pi), ("e", math.e), ("0.1", 0.1),
])
def test_numbers_and_named_constants(text, val):
    e = parse_expression(text)
    assert e.is_constant and e.value == val


def test_whitespace_is_free():
    assert key(" \t x0*  (x1 +2)\n ") == key("x0*(x1+2)")


def test_named_variables():
    e = parse_expression("m * v^2 / 2", variable_names=["m", "v"])
    assert e.key == "div(mul(x0,pow(x1,c2.0)),c2.0)"
    assert e.evaluate(torch.tensor([[3.0, 2.0]], dtype=torch.float64)).item() == 6.0
    assert e.to_string(["m", "v"]) == "m * v ^ 2.0 / 2.0"
    # names map to columns by position; unused names are fine
    assert key("b", variable_names=["a", "b", "c"]) == "x1"
    # default names x<i> are not known once names are given
    with pytest.raises(ValueError, match="unknown name 'x0'"):
        parse_expression("x0 + m", variable_names=["m"])
    # a variable may be called like a named constant: the variable wins
    assert key("e * 2", variable_names=["e"]) == "mul(x0,c2.0)"


def test_default_variables_any_index():
    assert key("x12 + x0") == "add(x12,x0)"
    assert parse_expression("x3").n_features_required() == 4


@pytest.mark.parametrize("names, fragment", [
    (["m", "m"], "twice"), (["cos"], "clashes"), (["plus"], "clashes"), (["1a"], "identifier"),
    (["a b"], "identifier"), (["a-b"], "identifier"),
])
def test_bad_variable_names(names, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_expression("1", variable_names=names)


@pytest.mark.parametrize("text, fragment", [
    ("x0 + y", "unknown name 'y' at position 5"),
    ("foo(x0)", "unknown function 'foo' at position 0"),
    ("x0 * sinh(x1)", "unknown function 'sinh' at position 5"),
    ("x0(x1)", "unknown function 'x0' at position 0"),
    ("__import__('os')", "unexpected character"),
    ("x0 + $", "unexpected character '\\$' at position 5"),
    ("x0; x1", "unexpected character ';' at position 2"),
    ("x0 +   # comment", "unexpected character '#' at position 7"),
    ("x0.real", "unexpected character"),
    ("x0 @ x1", "unexpected character '@'"),
    ("'x0'", "unexpected character"),
    ("x0 & x1", "unexpected character"),
    ("x0 == x1", "unexpected '='"),
    ("x0 x1", "unexpected 'x1' at position 3"),
    ("2 3", "unexpected '3' at position 2"),
    ("x0 +", "unexpected end"),
    ("(x0 + x1", "unexpected end, expected '\\)'"),
    ("x0 + x1)", "unexpected '\\)' at position 7"),
    ("sin(x0", "unexpected end"),
    ("sin x0", "unknown name 'sin'"),
    ("sin()", "unexpected '\\)'"),
    ("x0 * * x1", "unexpected '\\*' at position 5"),
    (",", "unexpected ','"),
    ("x0 ^", "unexpected end"),
    ("1e", "unexpected 'e' at position 1"),
    ("inf", "unknown name 'inf'"),
    ("nan * x0", "unknown name 'nan'"),
])
def test_rejections_name_the_problem_and_position(text, fragment):
    with pytest.raises(ValueError, match=fragment) as info:
        parse_expression(text)
    assert repr(text) in str(info.value) or "position" in str(info.value)


@pytest.mark.parametrize("text, fragment", [
    ("sin(x0, x1)", "sin\\(\\) takes 1 argument\\(s\\), got 2"),
    ("pow(x0)", "pow\\(\\) takes 2 argument\\(s\\), got 1"),
    ("add(x0, x1, x2)", "takes 2"),
    ("special(x0)", "takes 2"),
])
def test_wrong_arity(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_expression(text, operators=["special(a, b) = a * b"])


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_string(text):
    with pytest.raises(ValueError, match="empty"):
        parse_expression(text)


def test_very_long_string_rejected_quickly():
    long = "+".join(["x0"] * 4000)  # ~12,000 characters
    with pytest.raises(ValueError, match="too long"):
        parse_expression(long)
    with pytest.raises(ValueError, match="too long"):
        tokenize(" " * 20_000)
    # a long but reasonable formula is fine
    ok = "+".join(["x0"] * 500)
    assert parse_expression(ok).size == 999


@pytest.mark.parametrize("text", [
    "(" * 300 + "x0" + ")" * 300,
    "-" * 2000 + "x0",
    "^".join(["x0"] * 1500),
    "sin(" * 500 + "x0" + ")" * 500,
], ids=["parentheses", "unary-minus", "power-chain", "calls"])
def test_deep_nesting_is_a_value_error_not_a_recursion_error(text):
    with pytest.raises(ValueError, match="nested"):
        parse_expression(text)


def test_moderate_nesting_parses():
    e = parse_expression("sin(" * 30 + "x0" + ")" * 30)
    assert e.depth == 31


def test_non_string_input():
    with pytest.raises(TypeError):
        parse_expression(None)
    with pytest.raises(TypeError):
        parse_expression(b"x0")


def test_custom_operators_in_formulas():
    e = parse_expression("special(x0, x1) + inv2(x0)", operators=["special(a, b) = a^2 + b", "inv2(u) = 1/u"])
    X = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    assert e.evaluate(X).item() == 7.5
    with pytest.raises(ValueError, match="unknown function 'special'"):
        parse_expression("special(x0, x1)")


def test_tokenize():
    assert tokenize("x0*2.5e-3 ** (y)") == [("name", "x0", 0), ("op", "*", 2), ("number", "2.5e-3", 3),
                                           ("op", "**", 10), ("op", "(", 13), ("name", "y", 14),
                                           ("op", ")", 15)]


def test_expression_parse_is_the_same_parser():
    assert parse_expression("m*v", variable_names=["m", "v"]) == parse_expression("x0*x1")


def test_parse_operator_definition_returns_usable_operator():
    op = parse_operator_definition("  half ( t ) =  t / 2 ")
    assert op.name == "half" and op.arity == 1
    assert op(torch.tensor([3.0])).item() == 1.5
