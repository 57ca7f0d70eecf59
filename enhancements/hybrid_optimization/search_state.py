"""What a search leaves behind to be continued (``warm_start``, a reloaded run): its
populations and hall of fame as formulas, and its counters and random generators.

`SearchState.to_data` gives plain data (formula strings, numbers; JSON-ready) for the
run directory's checkpoint, and `SearchState.from_data` reads it back with the
whitelist parser: a saved state holds no code.

    >>> from enhancements.hybrid_optimization.options import Options
    >>> opts = Options(soft_tree_seed_fraction=0)
    >>> state = SearchState([[parse_expression("x0 + 1.5")]], [parse_expression("x0")], 3, 12.0, 7)
    >>> again = SearchState.from_data(state.to_data(), opts.operators)
    >>> again.populations[0][0].key == state.populations[0][0].key, again.iterations
    (True, 3)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pysr_baseline.expression import Expression
from pysr_baseline.parsing import parse_expression

# A state bigger than this is not one a search wrote (populations x members, formulas).
_MAX_FORMULAS = 1_000_000


@dataclass
class SearchState:
    """``populations``: each population's formulas; ``hall_of_fame``: its formulas (their
    losses are recomputed on the data when the search continues); ``iterations`` and
    ``cycles_done`` continue the counters (maxsize warm-up); ``birth`` the age counter;
    ``rng_states``: the populations' and the search's generators (numpy bit-generator
    states), so that a continued run is reproducible."""

    populations: list[list[Expression]]
    hall_of_fame: list[Expression]
    iterations: int = 0
    cycles_done: float = 0.0
    birth: int = 0
    rng_states: list[dict] = field(default_factory=list)

    def to_data(self) -> dict:
        return {
            "populations": [[e.to_string() for e in pop] for pop in self.populations],
            "hall_of_fame": [e.to_string() for e in self.hall_of_fame],
            "iterations": int(self.iterations),
            "cycles_done": float(self.cycles_done),
            "birth": int(self.birth),
            "rng_states": list(self.rng_states),
        }

    @staticmethod
    def from_data(data: dict, operators) -> "SearchState":
        """Read `to_data`'s output back; formulas through the whitelist parser, numbers
        checked; anything else raises ValueError."""
        if not isinstance(data, dict):
            raise ValueError("a saved search state must be a mapping")
        pops = data.get("populations", [])
        hof = data.get("hall_of_fame", [])
        if not isinstance(pops, list) or not all(isinstance(p, list) for p in pops) or not isinstance(hof, list):
            raise ValueError("a saved search state's populations must be lists of formula strings")
        if sum(len(p) for p in pops) + len(hof) > _MAX_FORMULAS:
            raise ValueError("a saved search state holds too many formulas")

        def read(text):
            if not isinstance(text, str):
                raise ValueError(f"a saved formula must be a string, got {type(text).__name__}")
            return parse_expression(text, operators=operators)

        numbers = {}
        for key, kind in (("iterations", int), ("cycles_done", float), ("birth", int)):
            value = data.get(key, 0)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"a saved search state's {key} must be a non-negative number, got {value!r}")
            numbers[key] = kind(value)
        rng_states = data.get("rng_states", [])
        if not isinstance(rng_states, list) or not all(_is_rng_state(s) for s in rng_states):
            raise ValueError("a saved search state's rng_states are not numpy bit-generator states")
        return SearchState([[read(t) for t in pop] for pop in pops], [read(t) for t in hof],
                           numbers["iterations"], numbers["cycles_done"], numbers["birth"], rng_states)


def _is_rng_state(state) -> bool:
    """A PCG64 state as numpy gives it: plain ints in a fixed layout (nothing else is restored)."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        return False
    inner = state.get("state")
    return (isinstance(inner, dict) and all(isinstance(inner.get(k), int) for k in ("state", "inc"))
            and isinstance(state.get("has_uint32"), int) and isinstance(state.get("uinteger"), int))
