"""Where the benchmark scripts write, so that a smoke run never replaces a reference.

``results/`` holds the tracked reference results the README quotes (full runs write
there); ``--quick`` runs write to ``results/quick/`` instead, which git ignores.

>>> output_dir(quick=False), output_dir(quick=True), output_dir(True, Path("elsewhere"))
(PosixPath('results'), PosixPath('results/quick'), PosixPath('elsewhere'))
"""
from __future__ import annotations

from pathlib import Path

RESULTS_DIR = Path("results")
QUICK_DIR = RESULTS_DIR / "quick"
OUT_HELP = (f"folder the results are written to (default {RESULTS_DIR}/, where the tracked reference "
            f"results live; with --quick {QUICK_DIR}/, which git ignores, so that a smoke run never "
            "replaces a reference)")


def output_dir(quick: bool, out: Path | str | None = None) -> Path:
    """``out`` if given, else ``results/`` for a full run and ``results/quick/`` for --quick."""
    if out is not None:
        return Path(out)
    return QUICK_DIR if quick else RESULTS_DIR


class Report:
    """Prints lines as they come and keeps them, to be written to a markdown file at the
    end: ``say = Report(); say("| a | b |"); say.write(path)``."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, *parts, flush: bool = True) -> None:
        text = " ".join(str(p) for p in parts)
        print(text, flush=flush)
        self.lines.append(text)

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines).rstrip("\n") + "\n", encoding="utf-8")
        return path


def chosen_names(parser, text: str, known, what: str = "problems") -> list[str]:
    """The comma separated names of ``text``; an unknown one is the parser's error.

    >>> import argparse
    >>> chosen_names(argparse.ArgumentParser(), "a, b", {"a": 1, "b": 2})
    ['a', 'b']
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown {what} {unknown}; choose from {sorted(known)}")
    return names
