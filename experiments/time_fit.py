"""How long the plain soft-tree fit takes on the three reference cases.

    python -m experiments.time_fit [--restarts 16] [--epochs 200] [--threads 1]

Cases (500 samples, max_depth=3, the default operators): E = 0.5 m v^2, E = q / r^2,
k = omega / c. Prints one markdown row per case: the formula found, whether it is the
truth up to constants (SRBench's check), and the wall time of ``SymbolicTrainer.fit``.
It only prints (there is no --quick); it writes no file.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import sympy
import torch

from experiments.scoring import is_symbolic_solution
from pysr_baseline.model import SymbolicRegressor
from pysr_baseline.trainer import SymbolicTrainer

# name, variable names, truth (sympy text over those names), sampling range
REFERENCE_CASES = [
    ("E = 0.5 m v^2", ["m", "v"], "0.5*m*v**2", (1.0, 5.0)),
    ("E = q / r^2", ["q", "r"], "q/r**2", (1.0, 5.0)),
    ("k = omega / c", ["omega", "c"], "omega/c", (1.0, 5.0)),
]


def reference_data(names, truth: str, low: float, high: float, n_samples: int = 500, seed: int = 0):
    """Uniform samples of the named variables and the truth evaluated on them."""
    symbols = sympy.symbols(names)
    x = np.random.default_rng(seed).uniform(low, high, size=(n_samples, len(names)))
    y = sympy.lambdify(symbols, sympy.sympify(truth, locals=dict(zip(names, symbols))), "numpy")(*x.T)
    return x, np.asarray(y, dtype=np.float64), symbols


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.time_fit",
                                     description=__doc__.splitlines()[0] + " Prints a markdown table; "
                                     "writes no file.")
    parser.add_argument("--restarts", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"SymbolicTrainer.fit: 500 samples, max_depth=3, default operators, {args.restarts} restarts, "
          f"{args.epochs} epochs, {args.threads} thread(s), random_state={args.seed}\n")
    print("| case | formula found | recovered | fit time (s) |")
    print("|---|---|---|---:|")
    for name, names, truth, (low, high) in REFERENCE_CASES:
        x, y, symbols = reference_data(names, truth, low, high, seed=args.seed)
        model = SymbolicRegressor(n_features=len(names), max_depth=3, variable_names=names)
        start = time.perf_counter()
        SymbolicTrainer(model, random_state=args.seed, n_restarts=args.restarts).fit(x, y, n_epochs=args.epochs)
        elapsed = time.perf_counter() - start
        found = model.simplify()
        truth_expr = sympy.sympify(truth, locals=dict(zip(names, symbols)))
        ok = is_symbolic_solution(found, truth_expr).solved
        print(f"| {name} | `{model.simplify()}` | {'yes' if ok else 'no'} | {elapsed:.2f} |", flush=True)


if __name__ == "__main__":
    main()
