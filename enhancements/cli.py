"""The command line: fit a CSV file, or show a saved run.

    python -m enhancements fit data.csv --target y --binary-operators + - "*" / \\
        --unary-operators cos exp --niterations 40 --output-directory runs
    python -m enhancements show runs/20261201_120000_abcdef
    pysr-torch fit data.csv --target y        # the same, as an installed console script

``fit`` reads the CSV (a header row names the columns), searches y ~ f(other columns)
with a progress bar, prints the Pareto table and leaves the run directory
(``hall_of_fame.csv``, ``checkpoint.json``), whose path it prints. Any estimator
parameter can be given with ``--set NAME=VALUE`` (VALUE read as JSON where it parses:
numbers, true/false, null, lists; otherwise as text). Nothing given on the command line
is evaluated as code.

    >>> args = build_parser().parse_args(["fit", "d.csv", "--target", "y", "--niterations", "5",
    ...                                   "--set", "maxsize=20", "--set", "elementwise_loss=L1DistLoss()"])
    >>> sorted(estimator_params(args).items())[:3]
    [('elementwise_loss', 'L1DistLoss()'), ('maxsize', 20), ('niterations', 5)]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# flag -> estimator parameter, for the common ones (everything else: --set)
_FLAGS = {
    "binary_operators": ("--binary-operators", dict(nargs="+", metavar="OP", help="binary operators, e.g. + - '*' /")),
    "unary_operators": ("--unary-operators", dict(nargs="+", metavar="OP",
                                                  help="unary operators, e.g. cos exp 'inv(x) = 1/x'")),
    "niterations": ("--niterations", dict(type=int, help="iterations of the search (default 100)")),
    "timeout_in_seconds": ("--timeout", dict(type=float, metavar="SECONDS", help="stop after this long")),
    "max_evals": ("--max-evals", dict(type=int, help="stop after this many formula evaluations")),
    "populations": ("--populations", dict(type=int, help="number of populations (default 31)")),
    "population_size": ("--population-size", dict(type=int, help="members per population (default 27)")),
    "maxsize": ("--maxsize", dict(type=int, help="largest complexity (default 30)")),
    "maxdepth": ("--maxdepth", dict(type=int, help="deepest formula (default: no limit)")),
    "elementwise_loss": ("--loss", dict(metavar="LOSS", help="e.g. 'L1DistLoss()' or 'f(x, y) = abs(x - y)'")),
    "model_selection": ("--model-selection", dict(choices=["best", "accuracy", "score"],
                                                  help="which formula predict uses (default best)")),
    "output_directory": ("--output-directory", dict(metavar="DIR", help="where the run directory goes "
                                                                        "(default outputs)")),
    "run_id": ("--run-id", dict(help="the run directory's name (default: date, time and a random suffix)")),
    "random_state": ("--random-state", dict(type=int, metavar="SEED", help="a seed: the same seed, the same run")),
    "precision": ("--precision", dict(type=int, choices=[16, 32, 64], help="bits per float (default 64)")),
    "batching": ("--batching", dict(choices=["false", "true", "auto"], help="score mutants on random batches")),
    "batch_size": ("--batch-size", dict(type=int, help="rows per batch (default 50)")),
    "verbosity": ("--verbosity", dict(type=int, help="0: quiet")),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m enhancements",
                                     description="Symbolic regression (PySR's search, in Python): fit a CSV "
                                                 "file, or show a saved run.")
    sub = parser.add_subparsers(dest="command", required=True)
    from enhancements.hybrid_optimization.parameters import PARAMETERS

    fit = sub.add_parser("fit", help="search for formulas y = f(X) in a CSV file",
                         description="Search for formulas target = f(other columns) in a CSV file with a header "
                                     "row; print the Pareto front and write the run directory.",
                         epilog="Parameters --set takes (PySRRegressor's; see the README's 'Coming from PySR' "
                                "table): " + ", ".join(PARAMETERS))
    fit.add_argument("csv", help="the data: a CSV file whose first row names the columns")
    fit.add_argument("--target", required=True, nargs="+", metavar="COLUMN",
                     help="the column(s) to explain (several: one search per column)")
    fit.add_argument("--features", nargs="+", metavar="COLUMN", help="the columns to use (default: all others)")
    fit.add_argument("--weights", metavar="COLUMN", help="a column of non-negative sample weights")
    for name, (flag, kwargs) in _FLAGS.items():
        fit.add_argument(flag, dest=name, **kwargs)
    fit.add_argument("--no-progress", action="store_true", help="no progress bar (a line per iteration)")
    fit.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="any other PySRRegressor parameter, VALUE as JSON (e.g. --set maxsize=20 "
                          "--set 'constraints={\"/\": [-1, 9]}') or text")
    show = sub.add_parser("show", help="print a saved run's Pareto front",
                          description="Print the Pareto front of a run directory (a finished run from its "
                                      "checkpoint; a killed one from its CSV, given its operators and features).")
    show.add_argument("run_directory", help="a run directory, e.g. outputs/20261201_120000_abcdef")
    show.add_argument("--binary-operators", nargs="+", metavar="OP", help="for a run without checkpoint.json")
    show.add_argument("--unary-operators", nargs="+", metavar="OP", help="for a run without checkpoint.json")
    show.add_argument("--n-features", type=int, help="for a run without checkpoint.json: columns of X")
    return parser


def _value(text: str):
    """A --set value: JSON if it parses (numbers, booleans, null, lists, dicts), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def estimator_params(args) -> dict:
    """The PySRRegressor parameters the command line gives (unknown names raise)."""
    from enhancements.hybrid_optimization.parameters import PARAMETERS, suggest

    params = {}
    for name in _FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            params[name] = {"true": True, "false": False}.get(value, value) if name == "batching" else value
    if getattr(args, "no_progress", False):
        params["progress"] = False
    for item in getattr(args, "set", []):
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SystemExit(f"--set takes NAME=VALUE, got {item!r}")
        if name not in PARAMETERS:
            raise SystemExit(f"--set: {name!r} is not a PySRRegressor parameter.{suggest(name)}")
        params[name] = _value(text)
    return params


def _fit(args) -> int:
    import pandas as pd

    from enhancements import PySRRegressor

    path = Path(args.csv)
    if not path.is_file():
        raise SystemExit(f"no such file: {path}")
    data = pd.read_csv(path)
    missing = [c for c in args.target + (args.features or []) + ([args.weights] if args.weights else [])
               if c not in data.columns]
    if missing:
        raise SystemExit(f"{path} has no column(s) {missing}; its columns are {list(data.columns)}")
    features = args.features or [c for c in data.columns if c not in args.target and c != args.weights]
    y = data[args.target[0]] if len(args.target) == 1 else data[args.target]
    weights = None if args.weights is None else data[args.weights].to_numpy()
    model = PySRRegressor(**estimator_params(args))
    model.fit(data[features], y, weights=weights)
    print(model)
    print(f"Results saved to: {model.run_directory_}")
    return 0


def _show(args) -> int:
    from enhancements import PySRRegressor

    run = Path(args.run_directory)
    if not run.is_dir():
        raise SystemExit(f"no such run directory: {run}")
    kwargs = {"progress": False, "verbosity": 0}
    if args.binary_operators:
        kwargs["binary_operators"] = args.binary_operators
    if args.unary_operators:
        kwargs["unary_operators"] = args.unary_operators
    model = PySRRegressor.from_file(run_directory=run, n_features_in=args.n_features, **kwargs)
    print(model)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _fit(args) if args.command == "fit" else _show(args)
    except (ValueError, TypeError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
