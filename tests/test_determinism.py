"""The same random_state and settings give the same equations_: twice in one process,
across processes, and with the data passed as numpy, pandas or torch."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from enhancements import PySRRegressor

SETTINGS = dict(niterations=3, populations=4, population_size=24, ncycles_per_iteration=30,
                unary_operators=["cos", "exp"], progress=False, verbosity=0, temp_equation_file=True,
                random_state=7, soft_tree_seed_fraction=0.1)


def _data():
    X = np.random.default_rng(3).uniform(0.5, 3.0, (120, 3))
    return X, X[:, 0] * np.cos(X[:, 1]) + np.exp(-X[:, 2])


def _front(model) -> list:
    return [[str(e), float(loss)] for e, loss in zip(model.equations_["equation"], model.equations_["loss"])]


@pytest.mark.parametrize("engine", ["compiled", "torch"])
def test_twice_in_one_process(engine):
    X, y = _data()
    first = _front(PySRRegressor(**SETTINGS, engine=engine).fit(X, y))
    second = _front(PySRRegressor(**SETTINGS, engine=engine).fit(X, y))
    assert first == second and len(first) >= 2


def test_a_different_seed_gives_a_different_search():
    # The comparison above could fail: the seed does change the run.
    X, y = _data()
    a = PySRRegressor(**SETTINGS).fit(X, y)
    b = PySRRegressor(**{**SETTINGS, "random_state": 8}).fit(X, y)
    assert _front(a) != _front(b)


def test_numpy_pandas_and_torch_inputs_give_the_same_front():
    X, y = _data()
    fronts = [_front(PySRRegressor(**SETTINGS).fit(data_x, data_y)) for data_x, data_y in (
        (X, y), (pd.DataFrame(X), pd.Series(y)), (torch.tensor(X), torch.tensor(y)), (X.tolist(), list(y)))]
    assert all(f == fronts[0] for f in fronts[1:])


_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from enhancements import PySRRegressor
    settings = json.loads(sys.argv[1])
    X = np.random.default_rng(3).uniform(0.5, 3.0, (120, 3))
    y = X[:, 0] * np.cos(X[:, 1]) + np.exp(-X[:, 2])
    m = PySRRegressor(**settings).fit(X, y)
    print(json.dumps([[str(e), float(l)] for e, l in zip(m.equations_["equation"], m.equations_["loss"])]))
""")


def test_across_processes():
    X, y = _data()
    here = _front(PySRRegressor(**SETTINGS).fit(X, y))
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(SETTINGS)], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == here
