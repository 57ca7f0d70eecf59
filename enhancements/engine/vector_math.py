"""exp, log, sin and cos over rows of float64, written so that LLVM vectorises them.

numba compiles ``np.exp(a[r])`` in a loop to one libm call per element: ~7-9 ns here,
five times the cost of an arithmetic node, so formulas with transcendental functions
spent most of their evaluation in libm. These kernels are the textbook reductions
(x = k ln2 + t; x = m 2^e; x = k pi/2 + r) with Taylor polynomials, in straight-line
arithmetic and bit operations on whole rows, which LLVM turns into SIMD code. Within
an ulp or two of libm (tests/test_vector_math.py), with libm's special values: an
element outside a kernel's range (NaN, +-inf, zero, negatives for log, subnormals,
|x| >= 8e5 for sin and cos, |x| beyond exp's range) is given to libm instead.

    >>> import numpy as np
    >>> x = np.array([0.0, 1.0, -2.5, np.nan, 800.0])
    >>> out = np.empty(5)
    >>> exp_rows(x, out, 5)
    >>> bool(np.allclose(out[:3], np.exp(x[:3]), rtol=1e-15)), bool(np.isnan(out[3])), bool(np.isinf(out[4]))
    (True, True, True)
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})

# Adding 1.5 * 2**52 to a double of magnitude < 2**51 rounds it to an integer and leaves
# that integer in the low bits of the sum's bit pattern.
_SHIFT = 6755399441055744.0
_SHIFT_BITS = np.int64(0x4338000000000000)

# exp: x = k ln2 + t, |t| <= ln2 / 2, ln2 split so that k * _LN2_HI is exact.
_INV_LN2 = 1.44269504088896338700e+00
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_E = tuple(1.0 / math.factorial(k) for k in range(14))          # e^t = sum t^k / k!
_EXP_LO, _EXP_HI = -708.0, 709.0                                 # e^x normal: 2^k fits the exponent

# log: x = m 2^e, m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1).
_MANTISSA = np.int64(0x000FFFFFFFFFFFFF)
_ONE_BITS = np.int64(0x3FF0000000000000)
_SQRT2 = 1.4142135623730951
_L = tuple(2.0 / (2 * k + 1) for k in range(1, 12))              # 2 atanh(s) = 2s + sum 2 s^(2k+1) / (2k+1)
_MIN_NORMAL = 2.2250738585072014e-308

# sin, cos: x = k pi/2 + r, |r| <= pi/4, pi/2 in three 33-bit parts (k * part exact for |k| < 2^20)
# and a remainder.
_TWO_OVER_PI = 6.36619772367581382433e-01
_PIO2_1 = 1.57079632673412561417e+00
_PIO2_2 = 6.07710050630396597660e-11
_PIO2_3 = 2.02226624871116645580e-21
_PIO2_3T = 8.47842766036889956997e-32    # the rest of pi/2: sin(pi) = 1.2246467991473532e-16 to the bit
_TRIG_MAX = 8.0e5
_S = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(1, 9))   # sin r = r + sum ... r^(2k+1)
_C = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(1, 10))      # cos r = 1 + sum ... r^(2k)


@njit(**dict(_JIT, inline="always"))
def _horner(coefficients, x):
    """sum coefficients[k] x^k (a constant tuple: the loop unrolls into the caller's)."""
    p = coefficients[-1]
    for k in range(len(coefficients) - 2, -1, -1):
        p = p * x + coefficients[k]
    return p


@njit(**_JIT)
def exp_rows(a, out, n):
    """out[:n] = exp(a[:n]) (``out`` may be ``a``)."""
    buf = np.empty(3 * n)
    xs, kb, pb = buf[:n], buf[n:2 * n], buf[2 * n:]
    bad = 0
    for r in range(n):
        x = a[r]
        xs[r] = x
        bad += not (_EXP_LO < x < _EXP_HI)
        kf = x * _INV_LN2 + _SHIFT
        k = kf - _SHIFT
        t = (x - k * _LN2_HI) - k * _LN2_LO
        pb[r] = _horner(_E, t)
        kb[r] = kf
    p_bits, k_bits = pb.view(np.int64), kb.view(np.int64)
    for r in range(n):               # times 2^k: k added to the exponent field
        p_bits[r] += (k_bits[r] - _SHIFT_BITS) << 52
    for r in range(n):
        out[r] = pb[r]
    if bad:
        for r in range(n):
            x = xs[r]
            if not (_EXP_LO < x < _EXP_HI):
                out[r] = x if x != x else np.exp(x)     # NaN passes through (libm takes ~8 ns on one)


@njit(**_JIT)
def log_rows(a, out, n):
    """out[:n] = log(a[:n]) (``out`` may be ``a``)."""
    buf = np.empty(3 * n)
    xs, mb, eb = buf[:n], buf[n:2 * n], buf[2 * n:]
    bad = 0
    for r in range(n):
        x = a[r]
        xs[r] = x
        bad += not (_MIN_NORMAL <= x < np.inf)
    x_bits, m_bits, e_bits = xs.view(np.int64), mb.view(np.int64), eb.view(np.int64)
    for r in range(n):               # the exponent and the mantissa (in [1, 2)) of x
        bits = x_bits[r]
        m_bits[r] = (bits & _MANTISSA) | _ONE_BITS
        e_bits[r] = ((bits >> 52) - 1023) + _SHIFT_BITS
    for r in range(n):
        m = mb[r]
        e = eb[r] - _SHIFT
        big = m > _SQRT2
        m = m * 0.5 if big else m
        e = e + 1.0 if big else e
        s = (m - 1.0) / (m + 1.0)
        z = s * s
        p = _horner(_L, z)
        out[r] = e * _LN2_HI + ((2.0 * s + s * (z * p)) + e * _LN2_LO)
    if bad:
        for r in range(n):
            x = xs[r]
            if not (_MIN_NORMAL <= x < np.inf):
                out[r] = np.nan if (x != x or x < 0.0) else np.log(x)


@njit(**_JIT)
def _sin_cos_rows(a, out, n, shift):
    """sin (``shift`` 0) or cos (1: sin of x + pi/2, by the quadrant) of a[:n]."""
    buf = np.empty(n)
    bad = 0
    for r in range(n):
        x = a[r]
        buf[r] = x
        bad += not (np.abs(x) < _TRIG_MAX)
        k = (x * _TWO_OVER_PI + _SHIFT) - _SHIFT
        t = (((x - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_3) - k * _PIO2_3T
        q = k + shift
        q = q - 4.0 * np.floor(q * 0.25)           # the quadrant, 0-3
        z = t * t
        s = t + t * (z * _horner(_S, z))
        c = 1.0 + z * _horner(_C, z)
        v = c if (q == 1.0 or q == 3.0) else s
        v = -v if q >= 2.0 else v
        out[r] = x if (x == 0.0 and shift == 0.0) else v     # sin(-0) = -0 (t + t * ... gives +0)
    if bad:
        for r in range(n):
            x = buf[r]
            if not (np.abs(x) < _TRIG_MAX):
                if not (x - x == 0.0):                  # NaN or +-inf
                    out[r] = np.nan
                else:
                    out[r] = np.sin(x) if shift == 0 else np.cos(x)


@njit(**_JIT)
def sin_rows(a, out, n):
    """out[:n] = sin(a[:n]) (``out`` may be ``a``)."""
    _sin_cos_rows(a, out, n, 0.0)


@njit(**_JIT)
def cos_rows(a, out, n):
    """out[:n] = cos(a[:n]) (``out`` may be ``a``)."""
    _sin_cos_rows(a, out, n, 1.0)
