"""The drop-in's results: equations_ columns, torch/JAX/sympy/LaTeX exports, model
selection after fit, and the printed front."""
import importlib.util

import numpy as np
import pandas as pd
import pytest
import sympy
import torch

import enhancements
from enhancements import PySRRegressor, pysr2sympy, sympy2latex, sympy2torch

FAST = dict(niterations=3, populations=4, population_size=20, ncycles_per_iteration=40, soft_tree_seed_fraction=0.0,
            verbosity=0, progress=False, random_state=0)
rng = np.random.default_rng(7)
X = rng.uniform(1, 3, (100, 2))
Y = 2.5 * np.cos(X[:, 1]) * X[:, 0] + 0.3


@pytest.fixture(scope="module")
def fitted():
    return PySRRegressor(**FAST, unary_operators=["cos"], output_torch_format=True).fit(X, Y)


def test_equations_have_pysrs_columns_and_torch_format(fitted):
    assert list(fitted.equations_.columns) == ["complexity", "loss", "equation", "score", "sympy_format",
                                               "lambda_format", "torch_format"]
    plain = PySRRegressor(**{**FAST, "niterations": 1}).fit(X, Y)
    assert "torch_format" not in plain.equations_.columns and "jax_format" not in plain.equations_.columns
    assert repr(fitted.equations_["lambda_format"].iloc[0]).startswith("PySRFunction(X=>")


def test_pytorch_module_agrees_with_predict_and_its_constants_train(fitted):
    for i in range(len(fitted.equations_)):
        module = fitted.pytorch(i)
        assert isinstance(module, torch.nn.Module)
        out = module(torch.as_tensor(X))
        assert np.allclose(out.detach().numpy(), fitted.predict(X, index=i), rtol=1e-12, atol=1e-12)
    module = fitted.pytorch()
    params = list(module.parameters())
    assert params and params[0].requires_grad
    loss = ((module(torch.as_tensor(X)) - torch.as_tensor(Y)) ** 2).mean()
    loss.backward()
    assert params[0].grad is not None and torch.isfinite(params[0].grad).all()
    row = fitted.equations_["torch_format"].iloc[fitted._pick()]
    assert np.allclose(row(torch.as_tensor(X)).detach().numpy(), fitted.predict(X))


def test_sympy2torch_makes_floats_parameters_and_matches_sympy():
    x, y = sympy.symbols("x y")
    expr = 2.5 * sympy.cos(y) * x + sympy.Rational(1, 3) + sympy.exp(-x)
    module = sympy2torch(expr, [x, y])
    assert module.constants.tolist() == [2.5]                    # a Float; 1/3 and -1 stay exact
    values = module(torch.as_tensor(X)).detach().numpy()
    expected = sympy.lambdify([x, y], expr)(X[:, 0], X[:, 1])
    assert np.allclose(values, expected, rtol=1e-12)
    with pytest.raises(KeyError, match="extra_torch_mappings"):
        sympy2torch(sympy.Function("weird")(x), [x])
    mapped = sympy2torch(sympy.Function("weird")(x), [x], extra_torch_mappings={sympy.Function("weird"): torch.exp})
    assert np.allclose(mapped(torch.as_tensor(X[:, :1])).numpy(), np.exp(X[:, 0]))


def test_jax_export_works_or_says_to_install_jax(fitted):
    if importlib.util.find_spec("jax") is None:
        with pytest.raises(ImportError, match="pip install jax"):
            fitted.jax()
    else:
        out = fitted.jax()
        import jax.numpy as jnp
        assert np.allclose(np.asarray(out["callable"](jnp.asarray(X), out["parameters"])), fitted.predict(X))


def test_pysr2sympy_reads_pysrs_csv_equations_without_eval():
    assert pysr2sympy("((x0 * x0) + -0.28087974)") == sympy.Symbol("x0") ** 2 - 0.28087974
    assert pysr2sympy("inv(x0) + cos(x1)", extra_sympy_mappings={"inv": lambda a: 1 / a}) == \
        1 / sympy.Symbol("x0") + sympy.cos(sympy.Symbol("x1"))
    with pytest.raises(ValueError):
        pysr2sympy("__import__('os').system('echo hacked')")


def test_latex_and_latex_table(fitted):
    table = fitted.latex_table(precision=3)
    assert table.startswith("\\usepackage{breqn}\n\\usepackage{booktabs}")
    assert "\\begin{tabular}{@{}cccc@{}}" in table and "Equation & Complexity & Loss & Score \\\\" in table
    assert table.count(" \\\\\n") >= len(fitted.equations_)
    subset = fitted.latex_table(indices=[0, 1], columns=["equation", "loss"])
    assert "\\begin{tabular}{@{}cc@{}}" in subset and subset.count("$y = ") == 2
    with pytest.raises(ValueError, match="Unknown column: size"):
        fitted.latex_table(columns=["size"])
    assert sympy2latex(sympy.Float(0.02315)) == "0.0232"
    assert fitted.latex() == sympy2latex(fitted.sympy(), prec=3)


def test_model_selection_can_change_after_fit(fitted):
    eq = fitted.equations_
    picks = {}
    for rule in ("best", "accuracy", "score"):
        fitted.set_params(model_selection=rule)
        picks[rule] = fitted._pick()
    fitted.set_params(model_selection="best")
    assert picks["accuracy"] == int(np.argmin(eq["loss"]))
    assert picks["score"] == int(np.argmax(eq["score"]))
    fitted.set_params(model_selection="accuracy")
    assert np.allclose(fitted.predict(X), fitted.predict(X, index=picks["accuracy"]))
    fitted.set_params(model_selection="best")


def test_print_follows_pysrs_format(fitted):
    text = repr(fitted)
    lines = text.splitlines()
    assert lines[0] == "PySRRegressor.equations_ = [" and lines[-1] == "]"
    assert all(line.startswith("\t") for line in lines[1:-1])
    header = lines[1].split()
    assert header == ["pick", "score", "equation", "loss", "complexity"]
    assert text.count(">>>>") == 1
    assert repr(PySRRegressor()) == "PySRRegressor.equations_ = None"


def test_linear_loss_scale_has_no_score_and_selects_by_accuracy():
    m = PySRRegressor(**{**FAST, "niterations": 1}, loss_scale="linear").fit(X, Y)
    assert "score" not in m.equations_.columns
    assert m._pick() == int(np.argmin(m.equations_["loss"]))
    assert "score" not in repr(m).splitlines()[1]


def test_top_level_names_that_pysr_exports():
    for name in ("PySRRegressor", "sympy2torch", "sympy2jax", "pysr2sympy", "TemplateExpressionSpec",
                 "ExpressionSpec", "best", "best_row", "best_tex", "best_callable", "install", "pysr"):
        assert hasattr(enhancements, name), name
    with pytest.raises(NotImplementedError, match="PySRRegressor"):
        enhancements.best()
    with pytest.warns(FutureWarning, match="Calling `pysr` is deprecated"):
        eqs = enhancements.pysr(X, Y, **{**FAST, "niterations": 1})
    assert isinstance(eqs, pd.DataFrame) and len(eqs)


def test_pickling_drops_lambda_mappings_as_pysr_does():
    import pickle

    m = PySRRegressor(**{**FAST, "niterations": 1}, unary_operators=["myinv(x) = 1/x"],
                      extra_sympy_mappings={"myinv": lambda x: 1 / x}).fit(X, Y)
    with pytest.warns(UserWarning, match="`extra_sympy_mappings` cannot be pickled"):
        blob = pickle.dumps(m)
    back = pickle.loads(blob)
    assert back.extra_sympy_mappings is None
    assert np.allclose(back.predict(X), m.predict(X))
