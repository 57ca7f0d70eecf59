"""What the project declares it needs is what it uses, and the other way round."""
import ast
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("pysr_baseline", "enhancements", "experiments")
# Distribution name -> the module it installs, where they differ.
MODULE_OF = {"scikit-learn": "sklearn"}


def _declared() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    names = re.findall(r'"([A-Za-z0-9_.-]+)', block)
    return {MODULE_OF.get(n, n) for n in names}


def _imported() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found


def test_every_declared_dependency_is_imported():
    unused = _declared() - _imported()
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_requirements_txt_lists_the_runtime_dependencies():
    lines = (ROOT / "requirements.txt").read_text().split()
    listed = {MODULE_OF.get(re.split(r"[<>=]", line)[0], re.split(r"[<>=]", line)[0]) for line in lines}
    assert _declared() <= listed


def test_every_third_party_import_of_the_library_is_declared():
    stdlib = set(sys.stdlib_module_names)
    own = set(PACKAGES)
    optional = {"cachetools", "gplearn", "jax", "hypothesis", "pytest"}  # imported where present only
    third_party = {m for m in _imported() if m not in stdlib and m not in own and m != "__future__"}
    assert third_party - optional <= _declared()
