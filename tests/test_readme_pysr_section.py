"""The README's "Coming from PySR" section: its examples run, its table is the one
the code generates, and its counts are the table's."""
import pathlib
import re

import matplotlib

from enhancements.hybrid_optimization.parameters import coming_from_pysr_table, status_counts

matplotlib.use("Agg")
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Coming from PySR")
    return text[start:text.index("\n## ", start + 5)]


def test_the_table_is_the_generated_one():
    section = _section()
    table = section[section.index("<!-- coming-from-pysr:start -->") + 32:section.index("<!-- coming-from-pysr:end -->")]
    assert table.strip() == coming_from_pysr_table().strip()


def test_the_counts_are_the_tables():
    counts = status_counts()
    section = re.sub(r"\s+", " ", _section())
    total = sum(v for k, v in counts.items() if k != "added")
    assert f"Of PySR's {total} parameters, {counts['same']} behave as in PySR" in section
    assert f"{counts['different']} are used with a difference" in section
    assert f"{counts['no_effect']} are accepted but do nothing here" in section
    assert f"{counts['unsupported']} raise when set" in section
    assert f"{counts['added']} parameters are this project's own" in section


def test_the_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", _section(), re.S)
    assert len(blocks) >= 4
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)      # our own README's code, not user input
    out = capsys.readouterr().out
    import sympy
    a, b = sympy.symbols("a b")
    first = namespace["model"].sympy()
    assert sympy.simplify(first - (a ** 2 + sympy.Float(2.5) * sympy.cos(b))).free_symbols == set()
    assert namespace["picked"].selection_mask_[:2].all() and namespace["picked"].selection_mask_.sum() == 2
    assert len(namespace["multi"].sympy()) == 2
    assert "\\begin{tabular}" in out
