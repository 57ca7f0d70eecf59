"""The README's figures agree with the tracked tables and CSVs they quote.

Every number is read from both sides: the README's Experiments section and the tables
in results/*.md / the results CSVs. Editing one without the other fails here.
"""
import csv
import re
import shlex
from pathlib import Path

import pytest

from experiments import feynman
from experiments.feynman_methods import GplearnMethod, SearchMethod, get_method
from pysr_baseline.operators import DEFAULT_BINARY_OPERATORS
from pysr_baseline.parsing import resolve_operator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
SEARCH_CSV = RESULTS / "feynman_search_all_60s.csv"
GPLEARN_CSV = RESULTS / "feynman_gplearn_all_60s.csv"
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven",
                8: "eight", 9: "nine", 10: "ten"}


def experiments_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Experiments\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def prose() -> str:
    """The Experiments section outside its code block, whitespace collapsed."""
    text = re.sub(r"```.*?```", " ", experiments_section(), flags=re.S)
    return " ".join(text.split())


def bullet(start: str) -> str:
    """The README bullet of 'What memoization buys' that starts with ``start``."""
    text = prose()
    i = text.index("- " + start)
    j = text.find(" - ", i + 2)
    end = text.find("The AI Feynman tables", i)
    return text[i:j if 0 <= j < end else end]


def tables(path: Path) -> list[list[dict]]:
    """Every markdown table of a file: a list of rows, each a dict header -> cell."""
    out, block = [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) > 2:
            header = block[0]
            out.append([dict(zip(header, cells)) for cells in block[2:]])
        block = []
    return out


def number(cell: str) -> float:
    """'25.6x', '1,234', '53.0%' -> the number."""
    return float(re.match(r"-?[\d,]*\.?\d+", cell.strip()).group(0).replace(",", ""))


def claimed_range(text: str, pattern: str) -> tuple[float, float]:
    """The 'a-bx' range the regex ``pattern`` (one group for it) finds in ``text``."""
    match = re.search(pattern, text)
    assert match, f"README has nothing matching {pattern!r}"
    lo, hi = match.group(1).split("-")
    return float(lo), float(hi)


def span(cells: list[str]) -> tuple[float, float]:
    values = [number(c) for c in cells]
    return min(values), max(values)


def claimed(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    assert match, f"README has nothing matching {pattern!r}"
    return float(match.group(1))


RANGE = r"(\d+(?:\.\d+)?-\d+(?:\.\d+)?)x"


# --- 5. what memoization buys ----------------------------------------------------------------

def test_trainer_claims_match_the_speed_comparison_tables():
    comparison, ablation = tables(RESULTS / "speed_comparison.md")[:2]
    text = bullet("the soft-tree trainer")
    assert claimed_range(text, RANGE + r" faster than `SymbolicTrainer`") == \
        span([r["speedup"] for r in comparison])
    assert f"on {NUMBER_WORDS[len(comparison)]} Feynman cases" in text
    assert claimed_range(text, r"\((\d+\.\d+-\d+\.\d+) s a fit\)") == \
        span([r["optimized median s"] for r in comparison])
    both = sum(r["recovered (B / O)"] == "yes / yes" for r in comparison)
    assert f"both recover the same {both} of the {len(comparison)}" in text
    assert all(r["recovered (B / O)"] in ("yes / yes", "no / no") for r in comparison)

    def step(configuration, column):
        return span([r[column] for r in ablation if r["configuration"].startswith(configuration)])
    # Cumulative (vs baseline) for the batching steps, each step's own factor (vs the row
    # above) for memoization and early stop.
    assert claimed_range(text, "level batching gives " + RANGE) == \
        step("+ level batching", "vs baseline")
    assert claimed_range(text, "restart batching takes it to " + RANGE) == \
        step("+ restart batching", "vs baseline")
    assert claimed_range(text, "fused level kernels to " + RANGE) == \
        step("+ fused level kernels", "vs baseline")
    assert claimed_range(text, "memoization's own step [^;]*? adds " + RANGE) == \
        step("+ memoization", "vs row above")
    assert claimed_range(text, "early stop then changes it by " + RANGE) == \
        step("+ early stop", "vs row above")
    cases = {r["case"] for r in ablation}
    assert f"the {NUMBER_WORDS[len(cases)]} reference cases" in text


def test_evaluator_claims_match_the_throughput_table():
    path = RESULTS / "evaluator_throughput.md"
    (table,) = tables(path)
    rows = {r["method"].split()[0]: r for r in table}
    last = next(h for h in table[0] if h.startswith("vs (a), last"))
    tail = int(last.split()[-1])
    text = bullet("a stream of mutated formulas")
    b, b0 = rows["(b)"], rows["(b0)"]
    assert claimed(text, r"evaluates (\d+\.\d+)x as many formulas per second") == number(b["vs (a)"])
    assert claimed(text, r"one-at-a-time evaluation \((\d+\.\d+)x over the last") == number(b[last])
    assert claimed(text, r"without a cache gives (\d+\.\d+)x") == number(b0["vs (a)"])
    assert claimed(text, r"without a cache gives \d+\.\d+x \((\d+\.\d+)x over the last") == \
        number(b0[last])
    rate, rate_tail = "formulas/s", next(h for h in table[0] if h.startswith("formulas/s, last"))
    own = round(number(b[rate]) / number(b0[rate]), 2)
    own_tail = round(number(b[rate_tail]) / number(b0[rate_tail]), 2)
    assert claimed(text, r"the cache's own factor is (\d+\.\d+)x") == own
    assert claimed(text, r"the cache's own factor is \d+\.\d+x \((\d+\.\d+)x over the last") == own_tail
    assert text.count(f"over the last {tail} rounds") == 3
    assert claimed(text, r"(\d+\.\d+)% of node evaluations coming from") == number(b["served from cache"])
    cap = re.search(r"could reach at most (\d+\.\d+)x", path.read_text()).group(1)
    assert claimed(text, r"cap it at (\d+\.\d+)x") == float(cap)


def test_search_claims_match_the_throughput_table():
    path = RESULTS / "search_throughput.md"
    (table,) = tables(path)
    ratios = [r["formulas/s"] for r in table if r["memoize"] == "on / off"]
    on = [r for r in table if r["memoize"] == "on"]
    text = bullet("the whole search")
    assert claimed_range(text, "memoization on vs off is " + RANGE) == span(ratios)
    median = re.search(r"median ratio \(memoize on / off\): (\d+\.\d+)x", path.read_text()).group(1)
    assert claimed(text, r"\(median (\d+\.\d+)x\)") == float(median)
    slower = sum(number(r) < 1 for r in ratios)
    if slower:
        assert f"on {NUMBER_WORDS[slower]} of the {NUMBER_WORDS[len(ratios)]} equations it is slower" in text
    else:
        assert "slower" not in text
    assert claimed_range(text, r"(\d+\.\d+-\d+\.\d+)% of node evaluations come from the cache") == \
        span([r["node evaluations from cache"] for r in on])
    assert claimed_range(text, r"(\d+\.\d+-\d+\.\d+)% of formulas from the loss memo") == \
        span([r["formulas from loss memo"] for r in on])


# --- 6 and 10. the reproducible headline, under both rounding rules -------------------------

def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def readme_command(method: str) -> list[str]:
    """The arguments of the README's all-100 command for ``method``."""
    block = re.search(r"```bash\n(.*?)```", experiments_section(), flags=re.S).group(1)
    for line in block.splitlines():
        words = shlex.split(line.split("#")[0])
        if words[:3] == ["python", "-m", "experiments.feynman"] and "--all" in words \
                and words[words.index("--method") + 1] == method:
            return words[3:]
    raise AssertionError(f"README has no all-100 command for {method}")


@pytest.mark.parametrize("method, path", [("search", SEARCH_CSV), ("gplearn", GPLEARN_CSV)])
def test_readme_command_gives_the_keys_of_the_tracked_csv(method, path):
    tasks = feynman.planned_tasks(readme_command(method))
    rows = read_csv(path)
    assert sorted(t.key() for t in tasks) == sorted(feynman.row_key(r) for r in rows)
    assert len(rows) == 100


def settings_of(text: str) -> dict:
    """'a=1,b=x,y,z' -> {'a': '1', 'b': 'x,y,z'} (a list value keeps its commas)."""
    out, name = {}, None
    for part in text.split(","):
        if "=" in part:
            name, value = part.split("=", 1)
            out[name] = value
        else:
            out[name] += "," + part
    return out


def words(listing: str) -> list[str]:
    return [w for w in re.split(r"[,\s]+", listing.strip()) if w]


def test_headline_states_the_operators_budget_and_data_of_the_csv():
    text = prose()
    rows = read_csv(SEARCH_CSV)
    (settings,) = {r["settings"] for r in rows}
    settings = settings_of(settings)
    unary = re.search(r"the unary operators ([a-z, ]+?) \(", text).group(1)
    assert words(unary) == settings["unary_operators"].split(",") == list(SearchMethod.UNARY_OPERATORS)
    binary = re.search(r"the binary operators ((?:[-+*/] ?)+)", text).group(1)
    # The search method sets no binary operators: the estimator's default is what ran.
    assert "binary_operators" not in settings
    assert tuple(resolve_operator(op).name for op in binary.split()) == tuple(DEFAULT_BINARY_OPERATORS)
    assert float(re.search(r"soft-tree seeding (\d+(?:\.\d+)?)", text).group(1)) == \
        float(settings["soft_tree_seed_fraction"])
    gp = re.search(r"gplearn \(([a-z, ]+)\) solves", text).group(1)
    assert tuple(words(gp)) == GplearnMethod.FUNCTION_SET
    assert read_csv(GPLEARN_CSV)[0]["settings"] == get_method("gplearn").settings()

    match = re.search(r"Measured here \((\d+) cores, [^;]+; (\w+) seed, noise (\S+), (\d+) samples, "
                      r"(\d+) s per equation\)", text)
    assert match, "the headline's conditions"
    for r in rows + read_csv(GPLEARN_CSV):
        assert float(r["noise"]) == float(match.group(3))
        assert int(r["samples"]) == int(match.group(4))
        assert float(r["time_budget"]) == float(match.group(5))
    seeds = {r["seed"] for r in rows + read_csv(GPLEARN_CSV)}
    assert NUMBER_WORDS[len(seeds)] == match.group(2)


def solved(path, column):
    return sum(r[column] == "True" for r in read_csv(path))


def test_headline_counts_match_the_csv_under_each_rule():
    text = prose()
    m = re.search(r"the search solves (\d+) of the (\d+) AI Feynman equations symbolically under "
                  r"SRBench's rule \(3 decimal places\) and (\d+) under 3 significant digits", text)
    assert m, "the search's headline"
    assert int(m.group(2)) == len(read_csv(SEARCH_CSV))
    assert int(m.group(1)) == solved(SEARCH_CSV, "symbolic_solved")
    assert int(m.group(3)) == solved(SEARCH_CSV, "symbolic_solved_significant")
    g = re.search(r"gplearn \([a-z, ]+\) solves (\d+) under SRBench's rule and (\d+) under 3 "
                  r"significant digits", text)
    assert g, "gplearn's headline"
    assert int(g.group(1)) == solved(GPLEARN_CSV, "symbolic_solved")
    assert int(g.group(2)) == solved(GPLEARN_CSV, "symbolic_solved_significant")


def test_readme_time_of_the_all_100_commands_matches_the_csv():
    block = re.search(r"```bash\n(.*?)```", experiments_section(), flags=re.S).group(1)
    for method, path in (("search", SEARCH_CSV), ("gplearn", GPLEARN_CSV)):
        line = next(l for l in block.splitlines() if f"--method {method} --all" in l)
        minutes = float(re.search(r"~(\d+) min", line).group(1))
        total = sum(float(r["time"]) for r in read_csv(path)) / 60
        assert abs(minutes - total) <= 0.1 * total, (method, minutes, total)
