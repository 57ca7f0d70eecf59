"""A small random generator for compiled code: xoshiro256** (Blackman and Vigna), one
state row of four 64-bit words per stream.

The compiled search keeps one stream per population (seeded from the search's
``numpy.random.SeedSequence``), so a population's draws do not depend on the others',
and a seed fixes the run. Only what the search needs is here: uniform floats, integers
below a bound, normal and geometric draws.

    >>> state = seed_states(np.random.SeedSequence(0), 2)
    >>> a = uniform(state, 0); b = uniform(state, 1)
    >>> 0.0 <= a < 1.0 and a != b
    True
"""
from __future__ import annotations

import numpy as np
from numba import njit, uint64

_JIT = dict(cache=True, nogil=True)


def seed_states(seq: np.random.SeedSequence, n: int) -> np.ndarray:
    """``n`` independent stream states (n x 4 uint64) spawned from ``seq``."""
    states = np.empty((n, 4), dtype=np.uint64)
    for i, child in enumerate(seq.spawn(n)):
        words = child.generate_state(4, np.uint64)
        if not words.any():
            words[0] = 1  # the all-zero state is the one xoshiro cannot leave
        states[i] = words
    return states


@njit(**_JIT)
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@njit(**_JIT)
def next_u64(state, i):
    s = state[i]
    result = _rotl(s[1] * uint64(5), 7) * uint64(9)
    t = s[1] << uint64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


@njit(**_JIT)
def uniform(state, i):
    """A float in [0, 1) with 53 random bits."""
    return (next_u64(state, i) >> uint64(11)) * (1.0 / 9007199254740992.0)


@njit(**_JIT)
def below(state, i, n):
    """An integer in [0, n) (n >= 1)."""
    return int(uniform(state, i) * n) if n > 1 else 0


@njit(**_JIT)
def normal(state, i):
    """A standard normal draw (Marsaglia's polar method)."""
    while True:
        u = 2.0 * uniform(state, i) - 1.0
        v = 2.0 * uniform(state, i) - 1.0
        s = u * u + v * v
        if 0.0 < s < 1.0:
            return u * np.sqrt(-2.0 * np.log(s) / s)


@njit(**_JIT)
def geometric(state, i, p):
    """The number of trials to the first success (>= 1), success probability ``p``."""
    if p >= 1.0:
        return 1
    u = uniform(state, i)
    return 1 + int(np.floor(np.log(1.0 - u) / np.log(1.0 - p)))
