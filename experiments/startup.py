"""Start-up costs, each measured in fresh Python processes (medians of ``--runs``):

- ``import torch``, ``import enhancements`` and ``from enhancements import PySRRegressor``
  (what the import adds over torch's);
- whether a fit imports ``torch._dynamo`` (``torch.optim`` pulls it in at first use);
- a warm process (the compiled engine loaded once): the time from ``fit`` to its first
  iteration's progress line on 1,000 x 5 data, PySR's defaults;
- a cold fit in a fresh process (numba's compiled code read from its cache);
- the first fit on a machine: numba's cache empty (``NUMBA_CACHE_DIR`` a new folder), so
  the kernels compile; once per machine and numba version (one run: it takes minutes).

    python -m experiments.startup            # 5 runs, ~4 min
    python -m experiments.startup --quick    # 2 runs, no empty-cache run

The table is printed and written to ``results/startup.md`` (``--quick``: ``results/quick/``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from experiments.outputs import OUT_HELP, Report, output_dir

OUTPUT_FILE = "startup.md"

_IMPORTS = textwrap.dedent("""
    import json, time
    t0 = time.perf_counter(); import torch; t1 = time.perf_counter()
    import enhancements; t2 = time.perf_counter()
    from enhancements import PySRRegressor; t3 = time.perf_counter()
    print(json.dumps({"torch": t1 - t0, "enhancements": t2 - t1, "regressor": t3 - t2}))
""")

_FIT = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from enhancements import PySRRegressor
    X = np.random.default_rng(0).uniform(1, 3, (1000, 5)); y = X[:, 0] * X[:, 1] + np.cos(X[:, 2])

    class First(Exception):
        pass

    def fit_until_first_iteration():
        model = PySRRegressor(niterations=10**6, random_state=0, progress=False, verbosity=0, temp_equation_file=True)
        seen = {}

        def first(search):
            seen["t"] = time.perf_counter()
            raise First()
        import enhancements.hybrid_optimization.monitoring as monitoring
        original = monitoring.ProgressBar.__call__

        def call(self, search, iteration):
            original(self, search, iteration)
            first(search)
        monitoring.ProgressBar.__call__ = call
        start = time.perf_counter()
        try:
            model.fit(X, y)
        except First:
            pass
        finally:
            monitoring.ProgressBar.__call__ = original
        return seen["t"] - start

    cold = fit_until_first_iteration()
    warm = fit_until_first_iteration()
    print(json.dumps({"cold": cold, "warm": warm, "dynamo": "torch._dynamo" in sys.modules}))
""")


def _run(code: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=None if env is None else {**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def _first_fit_on_a_machine() -> float:
    """Seconds from ``fit`` to the first iteration's line with numba's cache empty."""
    with tempfile.TemporaryDirectory() as cache:
        return _run(_FIT, env={"NUMBA_CACHE_DIR": cache})["cold"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 runs; writes to results/quick/")
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    runs = 2 if args.quick else args.runs
    say = Report()
    imports = [_run(_IMPORTS) for _ in range(runs)]
    fits = [_run(_FIT) for _ in range(runs)]
    compiling = None if args.quick else _first_fit_on_a_machine()
    med = {k: statistics.median(r[k] for r in imports) for k in imports[0]}
    say(f"Start-up, fresh processes, median of {runs}\n")
    say("| what | seconds |")
    say("|---|---:|")
    say(f"| `import torch` | {med['torch']:.2f} |")
    say(f"| `import enhancements` (after torch) | {med['enhancements']:.2f} |")
    say(f"| `from enhancements import PySRRegressor` (after both) | {med['regressor']:.2f} |")
    say(f"| fit to the first iteration's line, first fit of the process (1,000 x 5) | "
        f"{statistics.median(r['cold'] for r in fits):.2f} |")
    say(f"| fit to the first iteration's line, second fit (warm process) | "
        f"{statistics.median(r['warm'] for r in fits):.2f} |")
    if compiling is not None:
        say(f"| fit to the first iteration's line, first fit on a machine (numba compiles; one run) | "
            f"{compiling:.2f} |")
    say(f"\n`torch._dynamo` imported by a fit: {'yes' if any(r['dynamo'] for r in fits) else 'no'}")
    print(f"\nwritten: {say.write(output_dir(args.quick, args.out) / OUTPUT_FILE)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
