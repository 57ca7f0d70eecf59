"""Generated bad input for `PySRRegressor.fit` and `predict`, with the outcomes counted.

hypothesis draws a recipe (what goes wrong, the sizes, a seed) and numpy builds the data
from it: NaN, inf, huge and tiny magnitudes; int, bool, object, string, datetime and
categorical columns; wrong shapes, mismatched lengths, empty data, one row, constant y;
one feature and 200; non-contiguous, float32 and float16 arrays and torch tensors;
pandas with missing values and odd column names; y as a list, Series or one-column
DataFrame; bad weights and variable names. Each case ends one of three ways:

- ``fit``: the call returned (for fit, ``predict`` on the same X then gives one finite or
  NaN value per row);
- ``refused``: a ValueError or TypeError raised by this project's own checks (the
  raising frame is in ``pysr_baseline`` or ``enhancements``), with a message;
- ``crash``: anything else (another exception, or an error from deep inside numpy,
  torch or pandas). The goal is none.

Every search is tiny (1 iteration, 2 populations of 10), so no case can hang.

    python -m experiments.bad_inputs                 # 10,000 cases, ~15 min
    python -m experiments.bad_inputs --cases 300     # what CI runs (tests/test_bad_inputs.py)

The table is printed and written to ``results/bad_inputs.md`` (``--quick``: ``results/quick/``).
"""
from __future__ import annotations

import argparse
import string
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.outputs import OUT_HELP, Report, output_dir

OUTPUT_FILE = "bad_inputs.md"
TINY_SEARCH = dict(niterations=1, populations=2, population_size=10, tournament_selection_n=5,
                   ncycles_per_iteration=2, maxsize=10,
                   soft_tree_seed_fraction=0.0, progress=False, verbosity=0, temp_equation_file=True,
                   random_state=0)
_OWN_CODE = ("/pysr_baseline/", "/enhancements/")

FAULTS = ("none", "nan", "inf", "huge", "tiny", "mixed_magnitudes", "constant_y", "all_nan_y")
DTYPES = ("float64", "float32", "float16", "int64", "int8", "uint8", "bool", "object", "str", "complex",
          "datetime", "mixed_object")
CONTAINERS = ("numpy", "fortran", "strided", "list", "torch", "torch32", "pandas", "pandas_nullable",
              "pandas_categorical", "pandas_datetime", "pandas_object")
Y_FORMS = ("numpy", "list", "series", "frame", "column", "two_columns", "torch", "scalar", "nested_list")
SHAPES = ("ok", "y_short", "y_long", "x_1d", "x_3d", "empty", "no_features")


@dataclass
class Recipe:
    """What one case is made of (hypothesis shrinks these, not the arrays)."""
    target: str
    rows: int
    features: int
    fault: str
    fault_share: float
    dtype: str
    container: str
    y_form: str
    shape: str
    weights: str
    names: str
    odd_names: list = field(default_factory=list)
    seed: int = 0

    def __str__(self) -> str:
        return (f"{self.target}: {self.rows}x{self.features} {self.dtype} in {self.container}, fault {self.fault} "
                f"({self.fault_share:.2f}), y as {self.y_form}, shape {self.shape}, weights {self.weights}, "
                f"names {self.names}")


_DEFAULTS = dict(fault="none", dtype="float64", container="numpy", y_form="numpy", shape="ok", weights="none",
                 names="none")
_CHOICES = dict(fault=FAULTS, dtype=DTYPES, container=CONTAINERS, y_form=Y_FORMS, shape=SHAPES,
                weights=("ok", "negative", "nan", "zero", "short", "strings"),
                names=("ok", "odd", "duplicate", "short", "keyword"))


@st.composite
def recipes(draw) -> Recipe:
    """The hypothesis strategy of cases: zero to three things changed from clean data (so
    that each fault is met alone as well as with others)."""
    changed = draw(st.lists(st.sampled_from(sorted(_CHOICES)), max_size=3, unique=True))
    parts = {name: draw(st.sampled_from(_CHOICES[name])) if name in changed else default
             for name, default in _DEFAULTS.items()}
    return Recipe(target=draw(st.sampled_from(("fit", "fit", "fit", "predict"))),
                  rows=draw(st.sampled_from((1, 2, 3, 5, 12, 40))),
                  features=draw(st.sampled_from((1, 1, 2, 2, 3, 200))),
                  fault_share=draw(st.floats(0.0, 1.0)),
                  odd_names=draw(st.lists(st.text(string.printable + "éλ→", max_size=12), min_size=1, max_size=3)),
                  seed=draw(st.integers(0, 2**31 - 1)), **parts)


def _values(r: Recipe, rng, n: int, k: int) -> np.ndarray:
    X = rng.uniform(0.5, 3.0, (n, k))
    if r.fault == "huge":
        X = X * 1e300
    elif r.fault == "tiny":
        X = X * 1e-300
    elif r.fault == "mixed_magnitudes":
        X = X * 10.0 ** rng.integers(-300, 300, (n, k))
    if r.fault in ("nan", "inf"):
        hit = rng.random((n, k)) < r.fault_share
        X[hit] = np.nan if r.fault == "nan" else rng.choice([np.inf, -np.inf], int(hit.sum()))
    return X


def _as_dtype(X: np.ndarray, dtype: str):
    if dtype in ("float64", "float32", "float16"):
        return X.astype(dtype)
    if dtype in ("int64", "int8", "uint8"):
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(X, nan=0, posinf=0, neginf=0).clip(-100, 100).astype(dtype)
    if dtype == "bool":
        return X > 1.5
    if dtype == "object":
        return X.astype(object)
    if dtype == "str":
        return X.astype(str)
    if dtype == "complex":
        return X + 1j
    if dtype == "datetime":
        return np.full(X.shape, np.datetime64("2020-01-01"))
    mixed = X.astype(object)
    if mixed.size:
        mixed.flat[0] = "a"
    return mixed


def _container(X, r: Recipe, names):
    c = r.container
    if c == "fortran":
        return np.asfortranarray(X)
    if c == "strided":
        return np.repeat(X, 2, axis=0)[::2] if X.ndim == 2 else X
    if c == "list":
        return X.tolist()
    if c in ("torch", "torch32"):
        try:
            return torch.tensor(np.asarray(X, dtype=np.float64), dtype=torch.float32 if c == "torch32" else None)
        except (TypeError, ValueError):
            return X
    if c.startswith("pandas") and X.ndim == 2:
        frame = pd.DataFrame(X, columns=names if names is not None and len(names) == X.shape[1] else None)
        if frame.shape[1] and frame.shape[0]:
            first = frame.columns[0]
            if c == "pandas_nullable":
                frame[first] = pd.array([None] + [1] * (len(frame) - 1), dtype="Int64")
            elif c == "pandas_categorical":
                frame[first] = pd.Categorical(["u", "v"] * (len(frame) // 2) + ["u"] * (len(frame) % 2))
            elif c == "pandas_datetime":
                frame[first] = pd.date_range("2020", periods=len(frame))
            elif c == "pandas_object":
                frame[first] = ["1.5", None] * (len(frame) // 2) + ["x"] * (len(frame) % 2)
        return frame
    return X


def _names(r: Recipe, k: int):
    if r.names == "none":
        return None
    if r.names == "ok":
        return [f"v_{i}" for i in range(k)]
    if r.names == "odd":
        return (r.odd_names * k)[:k]
    if r.names == "duplicate":
        return ["a"] * k
    if r.names == "short":
        return [f"v_{i}" for i in range(max(0, k - 1))]
    return (["lambda", "import", "cos", "pi", "E", "None"] * k)[:k]


def _target(r: Recipe, rng, X: np.ndarray, n: int):
    finite = np.nan_to_num(np.asarray(X, dtype=np.float64), nan=1.0, posinf=1.0, neginf=1.0)
    y = finite[:, 0] * 2.0 + 1.0 if finite.ndim == 2 and finite.shape[1] else rng.uniform(0, 1, n)
    if r.fault == "constant_y":
        y = np.full(n, 3.0)
    elif r.fault == "all_nan_y":
        y = np.full(n, np.nan)
    if r.shape == "y_short":
        y = y[:-1]
    elif r.shape == "y_long":
        y = np.r_[y, 1.0]
    f = r.y_form
    if f == "list":
        return y.tolist()
    if f == "series":
        return pd.Series(y)
    if f == "frame":
        return pd.DataFrame({"target": y})
    if f == "column":
        return y.reshape(-1, 1)
    if f == "two_columns":
        return np.c_[y, -y]
    if f == "torch":
        return torch.tensor(y)
    if f == "scalar":
        return 1.0
    if f == "nested_list":
        return [[v] for v in y[:-1]] + [[1.0, 2.0]] if len(y) > 1 else [[1.0, 2.0]]
    return y


def _weights(r: Recipe, rng, n: int):
    w = r.weights
    if w == "none":
        return None
    if w == "ok":
        return rng.uniform(0.5, 2.0, n)
    if w == "negative":
        return -np.ones(n)
    if w == "nan":
        return np.full(n, np.nan)
    if w == "zero":
        return np.zeros(n)
    if w == "short":
        return np.ones(max(0, n - 1))
    return np.array(["a"] * n)


def build(r: Recipe):
    """(X, y, weights, variable_names) of a recipe."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return _build(r)


def _build(r: Recipe):
    rng = np.random.default_rng(r.seed)
    n, k = r.rows, r.features
    if r.shape == "empty":
        n = 0
    if r.shape == "no_features":
        k = 0
    X = _values(r, rng, n, k)
    y = _target(r, rng, X, n)
    if r.shape == "x_1d":
        X = X[:, 0] if k else X.reshape(-1)
    elif r.shape == "x_3d":
        X = X.reshape(n, k, 1)
    names = _names(r, X.shape[1] if X.ndim == 2 else 1)
    X = _container(_as_dtype(X, r.dtype), r, names if r.names in ("ok", "odd", "duplicate", "keyword") else None)
    return X, y, _weights(r, rng, n), names


_FITTED = {}


def _fitted_model(n_features: int):
    """A model fitted on clean data, for the predict cases."""
    from enhancements import PySRRegressor

    if n_features not in _FITTED:
        rng = np.random.default_rng(0)
        X = rng.uniform(1, 2, (20, n_features))
        _FITTED[n_features] = PySRRegressor(**TINY_SEARCH).fit(X, X[:, 0] * 2)
    return _FITTED[n_features]


def raised_by_us(err: BaseException) -> bool:
    """Whether ``err`` was raised by this project's own code (its last frame is there)."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and any(part in frames[-1].filename for part in _OWN_CODE)


def run_case(r: Recipe) -> tuple[str, str]:
    """``(outcome, detail)``: outcome "fit", "refused" or "crash" (see the module docstring)."""
    from enhancements import PySRRegressor

    try:
        X, y, w, names = build(r)
    except Exception as err:  # the recipe itself cannot be built: not a case
        return "skipped", f"{type(err).__name__}: {err}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if r.target == "predict":
                pred = _fitted_model(2).predict(X)
                n = len(X)
            else:
                model = PySRRegressor(**TINY_SEARCH).fit(X, y, weights=w, variable_names=names)
                pred = model.predict(X)
                n = np.shape(X)[0]
        pred = np.asarray(pred)
        if pred.shape[0] != n or not np.all(np.isfinite(pred) | np.isnan(pred)):
            return "crash", f"predict gave shape {pred.shape} for {n} rows"
        return "fit", ""
    except (ValueError, TypeError) as err:
        if raised_by_us(err) and str(err):
            return "refused", f"{type(err).__name__}: {err}"
        return "crash", _describe(err)
    except Exception as err:
        return "crash", _describe(err)


def _describe(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    return f"{type(err).__name__} at {where}: {str(err)[:300]}"


def run_many(n_cases: int, on_case=None) -> list[tuple[Recipe, str, str]]:
    """``n_cases`` recipes drawn by hypothesis (derandomized: the same cases every run), run."""
    seen: list[tuple[Recipe, str, str]] = []

    @settings(max_examples=n_cases, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(recipes())
    def one(r):
        outcome, detail = run_case(r)
        seen.append((r, outcome, detail))
        if on_case is not None:
            on_case(len(seen))

    one()
    return seen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.bad_inputs", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="300 cases; writes to results/quick/")
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    n = 300 if args.quick else args.cases
    seen = run_many(n, on_case=lambda i: print(f"\r{i:,} cases", end="", flush=True) if i % 100 == 0 else None)
    print()
    say = Report()
    counts = Counter(outcome for _, outcome, _ in seen)
    say(f"Generated bad input: {len(seen):,} cases (hypothesis, derandomized)\n")
    say("| outcome | cases |")
    say("|---|---:|")
    for outcome in ("fit", "refused", "crash", "skipped"):
        say(f"| {outcome} | {counts.get(outcome, 0):,} |")
    by_fault = Counter((r.fault, outcome) for r, outcome, _ in seen)
    say("\n| fault | fit | refused | crash |")
    say("|---|---:|---:|---:|")
    for fault in FAULTS:
        say(f"| {fault} | {by_fault[(fault, 'fit')]:,} | {by_fault[(fault, 'refused')]:,} | "
            f"{by_fault[(fault, 'crash')]:,} |")
    messages = Counter(detail.split(":")[0] + ": " + detail.split(": ", 1)[-1][:70]
                       for _, outcome, detail in seen if outcome == "refused")
    say("\nMost frequent refusals:\n")
    for text, count in messages.most_common(12):
        say(f"- {count:,} x {text}")
    crashes = [(r, d) for r, o, d in seen if o == "crash"]
    if crashes:
        say("\nCrashes (first 20):\n")
        for r, d in crashes[:20]:
            say(f"- {r}: {d}")
    print(f"\nwritten: {say.write(output_dir(args.quick, args.out) / OUTPUT_FILE)}")
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
