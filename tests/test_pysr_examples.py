"""PySR's own README and documentation examples, with only the import line changed.

Each constructor call is PySR's, verbatim; a test then bounds the run with set_params
(iterations, a seed, no bar) so that CI stays short, and checks the formula
symbolically. Data come from numpy's global generator, as in PySR's examples, seeded
here.
"""
import numpy as np
import pytest
import sympy

from enhancements import PySRRegressor  # was: from pysr import PySRRegressor

BOUND = dict(progress=False, verbosity=0, random_state=0)


def _equivalent(found, truth, digits=4) -> bool:
    """SRBench's check (to ``digits`` decimals: the examples' constants have four): after
    rounding constants, the difference simplifies to a constant. A constant within 1e-9 of
    a multiple of pi/2 is read as that multiple first (sin(x + 1.5707963268) is cos(x))."""
    halves = {f: k * sympy.pi / 2 for f in found.atoms(sympy.Float) for k in range(-4, 5)
              if k and abs(float(f) - k * np.pi / 2) < 1e-9}
    found = found.xreplace(halves)
    found = found.xreplace({f: sympy.Float(round(float(f), digits)) for f in found.atoms(sympy.Float)})
    found = found.xreplace({s: sympy.Symbol(s.name) for s in found.free_symbols})
    diff = sympy.simplify(sympy.nsimplify(found, rational=True) - truth)
    return not diff.free_symbols


x0, x1, x2, x3, x19 = sympy.symbols("x0 x1 x2 x3 x19")


@pytest.mark.parametrize("seed", [0, 1])
def test_readme_quickstart(seed):
    np.random.seed(seed)
    X = 2 * np.random.randn(100, 5)
    y = 2.5382 * np.cos(X[:, 3]) + X[:, 0] ** 2 - 0.5
    model = PySRRegressor(
        maxsize=20,
        niterations=40,  # < Increase me for better results
        binary_operators=["+", "*"],
        unary_operators=[
            "cos",
            "exp",
            "sin",
            "inv(x) = 1/x",
            # ^ Custom operator (julia syntax)
        ],
        extra_sympy_mappings={"inv": lambda x: 1 / x},
        # ^ Define operator for SymPy as well
        elementwise_loss="loss(prediction, target) = (prediction - target)^2",
        # ^ Custom loss function (julia syntax)
    )
    model.set_params(niterations=4, **BOUND)
    model.fit(X, y)
    assert _equivalent(model.sympy(), sympy.Rational(25382, 10000) * sympy.cos(x3) + x0 ** 2)
    model.predict(X)
    model.predict(X, 3)
    assert ">>>>" in repr(model)


def test_readme_detailed_example_accepts_every_option_it_sets():
    np.random.seed(0)
    X = 2 * np.random.randn(100, 5)
    y = 2.5382 * np.cos(X[:, 3]) + X[:, 0] ** 2 - 0.5
    with pytest.warns(UserWarning, match="`turbo` has no effect here"):
        model = PySRRegressor(
            populations=8,
            # ^ Assuming we have 4 cores, this means 2 populations per core, so one is always running.
            population_size=50,
            # ^ Slightly larger populations, for greater diversity.
            ncycles_per_iteration=500,
            # ^ Generations between migrations.
            niterations=10000000,  # Run forever
            early_stop_condition=(
                "stop_if(loss, complexity) = loss < 1e-6 && complexity < 10"
                # Stop early if we find a good and simple equation
            ),
            timeout_in_seconds=60 * 60 * 24,
            # ^ Alternatively, stop after 24 hours have passed.
            maxsize=50,
            # ^ Allow greater complexity.
            maxdepth=10,
            # ^ But, avoid deep nesting.
            binary_operators=["*", "+", "-", "/"],
            unary_operators=["square", "cube", "exp", "cos2(x)=cos(x)^2"],
            constraints={
                "/": (-1, 9),
                "square": 9,
                "cube": 9,
                "exp": 9,
            },
            # ^ Limit the complexity within each argument.
            # "inv": (-1, 9) states that the numerator has no constraint,
            # but the denominator has a max complexity of 9.
            # "exp": 9 simply states that `exp` can only have
            # an expression of complexity 9 as input.
            nested_constraints={
                "square": {"square": 1, "cube": 1, "exp": 0},
                "cube": {"square": 1, "cube": 1, "exp": 0},
                "exp": {"square": 1, "cube": 1, "exp": 0},
            },
            # ^ Nesting constraints on operators. For example,
            # "square(exp(x))" is not allowed, since "square": {"exp": 0}.
            complexity_of_operators={"/": 2, "exp": 3},
            # ^ Custom complexity of particular operators.
            complexity_of_constants=2,
            # ^ Punish constants more than variables
            select_k_features=4,
            # ^ Train on only the 4 most important features
            progress=True,
            # ^ Can set to false if printing to a file.
            weight_randomize=0.1,
            # ^ Randomize the tree much more frequently
            cluster_manager=None,
            # ^ Can be set to, e.g., "slurm", to run a slurm
            # cluster. Just launch one script from the head node.
            precision=64,
            # ^ Higher precision calculations.
            warm_start=True,
            # ^ Start from where left off.
            turbo=True,
            # ^ Faster evaluation (experimental)
            extra_sympy_mappings={"cos2": lambda x: sympy.cos(x)**2},
            # extra_torch_mappings={sympy.cos: torch.cos},
            # ^ Not needed as cos already defined, but this
            # is how you define custom torch operators.
            # extra_jax_mappings={sympy.cos: "jnp.cos"},
            # ^ For JAX, one passes a string.
        )
        model.set_params(niterations=1, ncycles_per_iteration=100, **BOUND)
        model.fit(X, y)
    assert model.selection_mask_[[0, 3]].all() and model.selection_mask_.sum() == 4
    assert {s.name for s in model.sympy().free_symbols} <= {"x0", "x1", "x2", "x3", "x4"}
    for expr in model.expressions_:           # the constraints hold on everything the search kept
        for node in expr.nodes():
            if node.op is not None and node.op.name in ("square", "cube", "exp"):
                assert model._options().complexity(node.children[0]) <= 9
            if node.op is not None and node.op.name == "div":
                assert model._options().complexity(node.children[1]) <= 9
    first = model.search_state_[0].iterations
    model.fit(X, y)                           # warm_start=True: continues
    assert model.search_state_[0].iterations == first + 1


def test_docs_example_simple_search():
    np.random.seed(1)
    X = 2 * np.random.randn(100, 5)
    y = 2 * np.cos(X[:, 3]) + X[:, 0] ** 2 - 2
    model = PySRRegressor(binary_operators=["+", "-", "*", "/"])
    model.set_params(niterations=6, unary_operators=["cos"],
                     early_stop_condition="f(loss, complexity) = loss < 1e-12", **BOUND)
    model.fit(X, y)
    assert _equivalent(model.sympy(), 2 * sympy.cos(x3) + x0 ** 2)


def test_docs_example_custom_operator():
    np.random.seed(2)
    X = 2 * np.random.randn(100, 5)
    y = 1 / X[:, 0]
    model = PySRRegressor(
        binary_operators=["+", "*"],
        unary_operators=["inv(x) = 1/x"],
        extra_sympy_mappings={"inv": lambda x: 1/x},
    )
    model.set_params(niterations=1, **BOUND)
    model.fit(X, y)
    assert _equivalent(model.sympy(), 1 / x0)


def test_docs_example_multiple_outputs():
    np.random.seed(3)
    X = 2 * np.random.randn(100, 5)
    y = 1 / X[:, [0, 1, 2]]
    model = PySRRegressor(
        binary_operators=["+", "*"],
        unary_operators=["inv(x) = 1/x"],
        extra_sympy_mappings={"inv": lambda x: 1/x},
    )
    model.set_params(niterations=1, **BOUND)
    model.fit(X, y)
    assert isinstance(model.equations_, list) and len(model.equations_) == 3
    assert [_equivalent(e, 1 / v) for e, v in zip(model.sympy(), (x0, x1, x2))] == [True] * 3
    assert len(model.latex()) == 3 and model.predict(X).shape == (100, 3)


def test_docs_example_feature_selection():
    np.random.seed(4)
    X = np.random.randn(300, 30)
    y = X[:, 3]**2 - X[:, 19]**2 + 1.5
    model = PySRRegressor(
        binary_operators=["+", "-", "*", "/"],
        unary_operators=["exp"],
        select_k_features=5,
    )
    model.set_params(niterations=4, early_stop_condition="f(loss, complexity) = loss < 1e-12", **BOUND)
    model.fit(X, y)
    assert model.selection_mask_[[3, 19]].all() and model.selection_mask_.sum() == 5
    assert _equivalent(model.sympy(), x3 ** 2 - x19 ** 2)
    assert np.allclose(model.predict(X), y)


def test_docs_example_denoising():
    np.random.seed(5)
    X = np.random.randn(100, 5)
    noise = np.random.randn(100) * 0.1
    y = np.exp(X[:, 0]) + X[:, 1] + X[:, 2] + noise
    model = PySRRegressor(
        binary_operators=["+", "-", "*", "/"],
        unary_operators=["exp"],
        denoise=True,
    )
    model.set_params(niterations=2, **BOUND)
    model.fit(X, y)
    assert _equivalent(model.sympy(), sympy.exp(x0) + x1 + x2, digits=1)
