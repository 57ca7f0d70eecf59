"""Memory of long and large searches, each in a fresh process, against what bounds it:

- a long search (``--minutes``, default 30) on 1,000 x 5 data, PySR's defaults: the
  resident memory (RSS) sampled every ``--every`` seconds, and its growth over the second
  half of the run (a search whose memory is bounded stops growing once its caches fill);
- a search on ``--rows`` (default 1,000,000) x 5 rows with ``batching=True``: the peak RSS
  against the process's RSS before the data was made, and the data's own size.

    python -m experiments.memory                      # 30 min + ~2 min
    python -m experiments.memory --quick              # 2 min + 100,000 rows

The table is printed and written to ``results/memory.md`` (``--quick``: ``results/quick/``).
Linux only (RSS and its peak are read from /proc/self/statm and /proc/self/status).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from experiments.outputs import OUT_HELP, Report, output_dir

OUTPUT_FILE = "memory.md"

_RSS = textwrap.dedent("""
    import os, threading, time
    _PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20

    def peak_mib():
        # VmHWM, this process's own peak. Not getrusage's ru_maxrss: exec keeps the peak of
        # the process it replaced, so a child of a large parent (pytest, a long session)
        # reported the parent's size as its own peak.
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024

    class Sampler(threading.Thread):
        def __init__(self, every):
            super().__init__(daemon=True)
            self.every, self.samples, self.start_time = every, [], time.perf_counter()
            self.done = threading.Event()

        def run(self):
            while not self.done.wait(self.every):
                self.samples.append((time.perf_counter() - self.start_time, rss_mib()))
""")

_LONG = _RSS + textwrap.dedent("""
    import json, sys
    import numpy as np
    from enhancements import PySRRegressor
    seconds, every = float(sys.argv[1]), float(sys.argv[2])
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 3, (1000, 5))
    y = X[:, 0] * np.exp(-X[:, 1]) + np.log(X[:, 2] + X[:, 3] ** 2) - X[:, 4] ** 3
    model = PySRRegressor(niterations=10**9, timeout_in_seconds=seconds, random_state=0, progress=False,
                          verbosity=0, temp_equation_file=True, unary_operators=["exp", "log", "sin"])
    sampler = Sampler(every)
    before = rss_mib()
    sampler.start()
    model.fit(X, y)
    sampler.done.set(); sampler.join()
    print(json.dumps({"before": before, "samples": sampler.samples, "peak": peak_mib(),
                      "iterations": model.stats_["iterations"], "evals": model.stats_["evaluations"]}))
""")

_LARGE = _RSS + textwrap.dedent("""
    import json, sys
    import numpy as np
    from enhancements import PySRRegressor
    rows, iterations = int(sys.argv[1]), int(sys.argv[2])
    before = rss_mib()
    rng = np.random.default_rng(0)
    X = rng.uniform(1, 3, (rows, 5))
    y = X[:, 0] * X[:, 1] + np.cos(X[:, 2])
    model = PySRRegressor(niterations=iterations, batching=True, batch_size=50, random_state=0, progress=False,
                          verbosity=0, temp_equation_file=True, unary_operators=["cos"])
    model.fit(X, y)
    print(json.dumps({"before": before, "peak": peak_mib(), "data": (X.nbytes + y.nbytes) / 2**20,
                      "formula": str(model.sympy())}))
""")


def _run(code: str, *args) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the measured process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _at(samples, t):
    """The sample nearest to time ``t`` (seconds)."""
    return min(samples, key=lambda s: abs(s[0] - t))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the long search")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the batched search")
    parser.add_argument("--iterations", type=int, default=3, help="iterations of the batched search")
    parser.add_argument("--quick", action="store_true", help="2 minutes, 100,000 rows; writes to results/quick/")
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    minutes, rows, every = (2.0, 100_000, 5.0) if args.quick else (args.minutes, args.rows, args.every)
    say = Report()
    long = _run(_LONG, minutes * 60, every)
    samples = long["samples"]
    end = samples[-1][0]
    say(f"A {minutes:g}-minute search on 1,000 x 5 rows (PySR's defaults; {long['iterations']:,} iterations, "
        f"{long['evals']:,} evaluations), resident memory\n")
    say("| minute | RSS MiB |")
    say("|---:|---:|")
    say(f"| 0 (before fit) | {long['before']:.0f} |")
    marks = sorted({min(end, m * 60) for m in _minute_marks(minutes)})
    for t in marks:
        at = _at(samples, t)
        say(f"| {at[0] / 60:.1f} | {at[1]:.0f} |")
    half = _at(samples, end / 2)[1]
    say(f"\nPeak {long['peak']:.0f} MiB. Growth over the second half: {samples[-1][1] - half:+.0f} MiB "
        f"({half:.0f} -> {samples[-1][1]:.0f}); over the whole fit: {samples[-1][1] - long['before']:+.0f} MiB.")
    large = _run(_LARGE, rows, args.iterations)
    say(f"\nA batched search on {rows:,} x 5 rows (batch_size=50, {args.iterations} iterations): peak RSS "
        f"{large['peak']:.0f} MiB, {large['peak'] - large['before']:.0f} MiB over the process before the data "
        f"was made; the data itself (X and y, float64) is {large['data']:.0f} MiB.")
    print(f"\nwritten: {say.write(output_dir(args.quick, args.out) / OUTPUT_FILE)}")
    return 0


def _minute_marks(minutes: float) -> list[float]:
    step = 1 if minutes <= 10 else 5
    marks = [1.0] + [float(m) for m in range(step, int(minutes) + 1, step)]
    return [m for m in marks if m <= minutes] + [minutes]


if __name__ == "__main__":
    raise SystemExit(main())
