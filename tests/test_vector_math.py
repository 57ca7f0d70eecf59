"""The vectorised exp, log, sin and cos of the compiled engine against numpy's (libm's):
within two ulps, the same special values, and the same in place."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from enhancements.engine.vector_math import cos_rows, exp_rows, log_rows, sin_rows

KERNELS = {"exp": (exp_rows, np.exp), "log": (log_rows, np.log), "sin": (sin_rows, np.sin),
           "cos": (cos_rows, np.cos)}
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 1e-310, 2.2250738585072014e-308,
                    1e308, -1e308, -1.0, 1.0, 709.78, 709.79, -708.3, -745.1, -746.0, 8e5, -8e5, 7.9e5, 3e6,
                    np.pi, np.pi / 2, 1e-300])


def _rows(kernel, x):
    out = np.empty_like(x)
    kernel(x, out, x.size)
    return out


def _ulps(got, want):
    with np.errstate(all="ignore"):
        return np.where(got == want, 0.0, np.abs(got - want) / np.spacing(np.abs(want)))


@pytest.mark.parametrize("name, x", [
    ("exp", np.random.default_rng(0).uniform(-708, 709, 50_000)),
    ("exp", np.random.default_rng(1).normal(0, 2, 50_000)),
    ("log", np.exp(np.random.default_rng(2).uniform(-700, 700, 50_000))),
    ("log", 1 + np.random.default_rng(3).normal(0, 1e-3, 50_000)),
    ("sin", np.random.default_rng(4).uniform(-20, 20, 50_000)),
    ("cos", np.random.default_rng(5).uniform(-20, 20, 50_000)),
    ("sin", np.random.default_rng(6).uniform(-7e5, 7e5, 50_000)),
    ("cos", np.random.default_rng(7).uniform(-7e5, 7e5, 50_000)),
])
def test_within_two_ulps_of_libm(name, x):
    kernel, reference = KERNELS[name]
    got, want = _rows(kernel, x), reference(x)
    assert _ulps(got, want).max() <= 2.0
    assert np.mean(got == want) > 0.6            # most values are libm's to the bit


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_special_values_are_libms(name):
    kernel, reference = KERNELS[name]
    with np.errstate(all="ignore"):
        want = reference(SPECIAL)
    got = _rows(kernel, SPECIAL)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    assert np.array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])   # +-inf
    np.testing.assert_allclose(got[finite], want[finite], rtol=4.5e-16, atol=0)
    zeros = want == 0
    assert np.array_equal(np.signbit(got[zeros]), np.signbit(want[zeros]))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=40),
       name=st.sampled_from(sorted(KERNELS)))
def test_any_input_in_place_or_not(values, name):
    kernel, reference = KERNELS[name]
    x = np.array(values)
    got = _rows(kernel, x)
    inplace = x.copy()
    kernel(inplace, inplace, inplace.size)
    assert np.array_equal(got, inplace, equal_nan=True)
    with np.errstate(all="ignore"):
        want = reference(x)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert (_ulps(got[ok], want[ok]) <= 2.0).all()
