"""Watching a search: the progress bar, and 'q' then Enter to stop early.

`ProgressBar` shows how far the search is towards the limit that will stop it, with
the current pick (PySR's ``progress``, ``verbosity``, ``print_precision``).
`QuitOnQ` watches standard input while an interactive run searches: a line "q" asks the
search to stop at its next step, as PySR's does (``input_stream="stdin"``; "devnull"
turns it off). It reads only when input is waiting, so it never swallows what is typed
after the fit.

    >>> with QuitOnQ("devnull", search=None) as watcher:
    ...     watcher.active
    False
"""
from __future__ import annotations

import os
import sys
import threading
import warnings

from enhancements.hybrid_optimization.options import Options


def stdout_has_buffer() -> bool:
    """False in notebooks (Jupyter's stdout has no ``buffer``), where PySR turns the bar off."""
    return "buffer" in dir(sys.stdout)


def progress_wanted(options: Options) -> bool:
    """``progress``, unless stdout has no buffer: then off, with PySR's warning."""
    if options.progress and not stdout_has_buffer():
        warnings.warn("Note: it looks like you are running in Jupyter. The progress bar will be turned off.",
                      UserWarning, stacklevel=3)
        return False
    return bool(options.progress)


class ProgressBar:
    """Progress of a search towards the limit that will stop it, with the current pick.

    A search stops at ``niterations``, ``timeout_in_seconds`` or ``max_evals``, whichever
    comes first; the bar shows the percentage done towards the nearest of them (by the
    share done so far) and names it, so that a run under a deadline with a huge
    ``niterations`` reads in seconds, not in iterations it will never reach. It moves
    after every step, not only every iteration (an iteration on large data takes long).
    With ``show_bar=False`` a line is printed per iteration instead. ``after_iteration``
    (if given) is called with the search after every iteration (the run directory's files).
    """

    _UNITS = {"niterations": "iterations", "timeout_in_seconds": "time", "max_evals": "evaluations"}
    _STEPS = 1000  # the bar's resolution

    def __init__(self, options: Options, names: list[str], show_bar: bool = True, quiet: bool = False,
                 after_iteration=None, label: str = "search"):
        self.names = names
        self.options = options
        self.bar = None
        self.shown = 0
        self.limit = None
        self.quiet = quiet
        self.after_iteration = after_iteration
        if show_bar and not quiet:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self._STEPS, desc=label, leave=False,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")
        self.label = label

    def _describe(self, search, limit: str) -> str:
        opts = self.options
        if limit == "timeout_in_seconds":
            return f"iteration {search.iteration} of a {opts.timeout_in_seconds:g} s budget"
        if limit == "max_evals":
            return f"{search.n_evals:,}/{opts.max_evals:,} evaluations"
        return f"iteration {search.iteration}/{opts.niterations}"

    def on_step(self, search) -> None:
        if self.bar is None:
            return
        fractions = search.progress()
        limit = max(fractions, key=fractions.get)
        target = int(self._STEPS * fractions[limit])
        if target > self.shown:
            self.bar.update(target - self.shown)
            self.shown = target
        if limit != self.limit:
            self.limit = limit
            self.bar.set_description_str(f"{self.label} ({self._UNITS[limit]})", refresh=False)

    def __call__(self, search, iteration: int) -> None:
        if self.after_iteration is not None:
            self.after_iteration(search)
        if self.quiet:
            return
        entry = search.best_entry()
        digits = self.options.print_precision
        text = "" if entry is None else f"loss={entry.loss:.3g} {entry.expr.to_string(self.names, precision=digits)}"
        if self.bar is not None:
            self.on_step(search)
            self.bar.set_postfix_str(f"{self._describe(search, self.limit)}, {text[:80]}", refresh=True)
        else:
            print(f"iteration {iteration}: evals={search.n_evals} best: {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class QuitOnQ:
    """While active (input_stream "stdin", an interactive terminal, POSIX ``select``), a
    background thread polls standard input; a line "q" calls ``search.request_stop()``
    (``search`` may be changed while it runs: several outputs are searched in turn)."""

    _POLL_SECONDS = 0.2

    def __init__(self, input_stream: str, search=None):
        if input_stream not in ("stdin", "devnull"):
            raise ValueError(f"input_stream must be 'stdin' or 'devnull', got {input_stream!r}")
        self.search = search
        self.active = False
        self._done = threading.Event()
        self._thread = None
        if input_stream == "stdin":
            try:
                import select  # noqa: F401  (POSIX; absent on Windows' consoles)

                self.active = sys.stdin is not None and sys.stdin.isatty() and os.name == "posix"
            except (ImportError, ValueError, AttributeError, OSError):
                self.active = False

    def _watch(self) -> None:
        import select

        while not self._done.is_set():
            try:
                ready, _, _ = select.select([sys.stdin], [], [], self._POLL_SECONDS)
            except (ValueError, OSError):
                return
            if ready:
                line = sys.stdin.readline()
                if line.strip().lower() == "q" and self.search is not None:
                    self.search.request_stop()
                    return

    def __enter__(self) -> "QuitOnQ":
        if self.active:
            self._thread = threading.Thread(target=self._watch, name="pysr-quit-on-q", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self._POLL_SECONDS)
