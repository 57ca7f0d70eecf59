"""PySRRegressor: the search as a scikit-learn estimator, a drop-in for PySR's.

    >>> import numpy as np, tempfile
    >>> from enhancements import PySRRegressor
    >>> X = np.random.default_rng(0).uniform(1, 5, (200, 2)); y = 0.5 * X[:, 0] * X[:, 1] ** 2
    >>> model = PySRRegressor(niterations=2, populations=4, binary_operators=["+", "-", "*", "/"],
    ...                       random_state=0, progress=False, verbosity=0,
    ...                       output_directory=tempfile.mkdtemp()).fit(X, y)
    >>> model.sympy()
    0.5*x0*x1**2
    >>> model.predict(X[:3]).shape
    (3,)

Every parameter PySR documents is accepted under its name, with PySR's default
(`parameters.PARAMETERS` lists them, grouped as PySR's reference groups them, with how
each is treated here); PySR's deprecated names map to the new ones with a
FutureWarning. ``__init__`` only stores parameters (so `clone`, `get_params` and
`set_params` work); ``fit`` validates them and the data, runs one `Search` per output,
and writes the run directory (``{output_directory}/{run_id}/``: ``hall_of_fame.csv``
after every iteration, ``checkpoint.json`` before and after the search; see
`run_directory`).

Fitted attributes: ``equations_`` (PySR's columns; a list of tables when y has several
columns), ``expressions_`` (the `Expression` of each row, likewise), ``nout_``,
``n_features_in_``, ``feature_names_in_`` (only when the variables were named, as in
scikit-learn), ``variable_names_`` (the names the formulas use), ``selection_mask_``
(``select_k_features``), ``run_id_``, ``output_directory_``, ``search_state_`` (what
``warm_start`` continues) and ``stats_``.
"""
from __future__ import annotations

import copy
import json
import math
import numbers
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import sympy
import torch
from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from pysr_baseline.parsing import parse_expression
from pysr_baseline.validation import check_x, check_y

from enhancements.hybrid_optimization import run_directory as rundir
from enhancements.hybrid_optimization.evolution import Search
from enhancements.hybrid_optimization.exports import ExpressionModule, LATEX_PREAMBLE, latex_table, sympy2jax
from enhancements.hybrid_optimization.fit_inputs import (check_input, check_target_scale, merge_weights,
                                                         no_finite_loss_message, read_variable_names)
from enhancements.hybrid_optimization.guesses import parse_guesses
from enhancements.hybrid_optimization.monitoring import ProgressBar, QuitOnQ, progress_wanted
from enhancements.hybrid_optimization.options import Options, check_device, option_names
from enhancements.hybrid_optimization.parameters import (DATA_KEYWORDS, DEPRECATED_ALIASES, JULIA_KEYWORDS,
                                                         PARAMETERS, signature, suggest)
from enhancements.hybrid_optimization.results import EPS_FLOOR, equations_frame, format_front, pick_index
from enhancements.hybrid_optimization.scoring import search_dtype
from enhancements.hybrid_optimization.search_state import SearchState

# PySR warns likewise past this many rows without batching.
LARGE_DATA_ROWS = 10_000
_PARALLELISM = ("serial", "multithreading", "multiprocessing")


class PySRRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    """Symbolic regression by regularized evolution (PySR's algorithm) in PyTorch.

    The parameters are PySR's (see `parameters.PARAMETERS` and the README's "Coming from
    PySR" table for each one's status here) plus this project's: ``linear_scaling``,
    ``memoize``, ``device``, ``soft_tree_proposer`` / ``weight_soft_tree`` /
    ``soft_tree_seed_fraction`` / ``soft_tree_reseed`` and ``optimizer_probability``.
    """

    def __init__(self, model_selection="best", **kwargs):
        self.model_selection = model_selection
        for p in PARAMETERS.values():
            if p.name != "model_selection":
                setattr(self, p.name, p.default)
        for key, value in kwargs.items():
            if key in PARAMETERS:
                setattr(self, key, value)
            elif key in DEPRECATED_ALIASES:
                new = DEPRECATED_ALIASES[key]
                warnings.warn(f"`{key}` has been renamed to `{new}` in PySRRegressor. Please use that instead.",
                              FutureWarning, stacklevel=2)
                if key == "equation_file" and value is not None:
                    path = Path(value)
                    self.output_directory, self.run_id = str(path.parent), path.stem
                else:
                    setattr(self, new, value)
            elif key == "multithreading":
                self.multithreading = value
            elif key in DATA_KEYWORDS:
                warnings.warn(f"`{key}` is a data-dependent parameter and should be passed when fit is called. "
                              f"Ignoring parameter; please pass `{key}` during the call to fit instead.",
                              FutureWarning, stacklevel=2)
            elif key in JULIA_KEYWORDS:
                warnings.warn(JULIA_KEYWORDS[key], FutureWarning, stacklevel=2)
            else:
                raise TypeError(f"`{key}` is not a valid keyword argument for PySRRegressor.{suggest(key)}")

    __init__.__signature__ = signature()

    # --- options -------------------------------------------------------------------------------
    def _operator_lists(self):
        """(binary, unary) from ``binary_operators``/``unary_operators`` or PySR 2's ``operators``."""
        if self.operators is None:
            return self.binary_operators, self.unary_operators
        if self.binary_operators is not None or self.unary_operators is not None:
            raise ValueError("Cannot use `operators` with `binary_operators` or `unary_operators`. Use either "
                             "the generic `operators` parameter or the specific operator parameters.")
        if not isinstance(self.operators, dict):
            raise TypeError("operators must be a dict by arity, e.g. {1: ['cos'], 2: ['+', '*']}")
        unknown = [k for k in self.operators if k not in (1, 2)]
        if unknown:
            raise ValueError(f"operators: only arities 1 and 2 are offered, got {unknown}")
        return list(self.operators.get(2, [])), list(self.operators.get(1, []))

    def _check_unused_parameters(self) -> None:
        """Warn for parameters that do nothing here, raise for those whose absence would
        change the answer (`parameters` says which is which)."""
        for p in PARAMETERS.values():
            value = getattr(self, p.name)
            if p.status not in ("no_effect", "unsupported") or _same(value, p.default):
                continue
            if p.name == "expression_spec" and getattr(value, "is_default", False):
                continue
            if p.name == "parallelism" and value == "serial":  # what the search does anyway
                continue
            if p.status == "unsupported":
                raise ValueError(f"`{p.name}` is not supported by this library ({p.note}); leave it unset")
            warnings.warn(f"`{p.name}` has no effect here ({p.note}); it is ignored", UserWarning, stacklevel=3)
        parallelism = self.parallelism
        multithreading = getattr(self, "multithreading", None)
        if multithreading is not None:
            if parallelism is not None:
                raise ValueError("Cannot mix old and new parallelism parameters. Use either `parallelism` and "
                                 "`numprocs`, or `procs` and `multithreading`.")
            parallelism = "multithreading" if multithreading else ("multiprocessing" if self.procs else "serial")
        if parallelism is not None and parallelism not in _PARALLELISM:
            raise ValueError("`parallelism` must be one of 'serial', 'multithreading', or 'multiprocessing'")
        if self.deterministic and parallelism != "serial":
            raise ValueError("To ensure deterministic searches, you must set `parallelism='serial'`. "
                             "Additionally, make sure to set `random_state` to a seed.")
        if self.optimizer_algorithm == "NelderMead":
            warnings.warn("optimizer_algorithm='NelderMead' is not offered here; the batched BFGS is used",
                          UserWarning, stacklevel=4)

    def _options(self, complexity_of_variables=None) -> Options:
        binary, unary = self._operator_lists()
        params = {name: getattr(self, name) for name in option_names() if name in PARAMETERS}
        params["binary_operators"], params["unary_operators"] = binary, unary
        if self.optimizer_probability is not None:
            params["optimize_probability"] = self.optimizer_probability
        if complexity_of_variables is not None:
            params["complexity_of_variables"] = complexity_of_variables
        params["progress"] = bool(self.progress)
        return Options(**params)

    # --- fitting --------------------------------------------------------------------------------
    def fit(self, X, y, Xresampled=None, weights=None, variable_names=None, complexity_of_variables=None,
            X_units=None, y_units=None, category=None, sample_weight=None):
        """Search for formulas y ~ f(X), one search per column of a 2-D y.

        ``X``: array (n_samples, n_features) or DataFrame (string columns name the
        variables); ``weights`` (or scikit-learn's ``sample_weight``): non-negative, one
        per row (or per entry of a 2-D y); ``variable_names``: names for the columns;
        ``complexity_of_variables``: one number per column (or set it in ``__init__``);
        ``Xresampled``: where ``denoise`` evaluates the smoothed y. ``X_units``,
        ``y_units`` and ``category`` (dimensional analysis, parametric expressions) are
        not offered and raise.
        """
        for name, value in (("X_units", X_units), ("y_units", y_units), ("category", category)):
            if value is not None:
                raise ValueError(f"`{name}` is not supported by this library (dimensional analysis and parametric "
                                 "expressions are not offered); fit without it")
        if complexity_of_variables is not None and self.complexity_of_variables is not None:
            raise ValueError("You cannot set `complexity_of_variables` at both `fit` and `__init__`. Pass it at "
                             "`__init__` to set it to global default, OR use `fit` to set it for each variable "
                             "individually.")
        self._check_unused_parameters()
        if complexity_of_variables is not None and not isinstance(complexity_of_variables, numbers.Real):
            complexity_of_variables = list(complexity_of_variables)
        options = self._options(complexity_of_variables)   # checks the device too
        data = self._prepare(X, y, Xresampled, merge_weights(weights, sample_weight), variable_names,
                             complexity_of_variables, options)
        options = data.pop("options")
        resume = self._resume_states(data["nout"])
        guesses = parse_guesses(self.guesses, data["names"], options, data["nout"])
        self._start_run_directory(resume is not None)
        self._set_fitted_data(data)
        fronts, states, stats = [], [], []
        self._running = {"fronts": fronts, "states": states}
        self._checkpoint("starting", outputs=None, states=None)
        show_bar = progress_wanted(options) and options.verbosity > 0
        watcher = QuitOnQ(self.input_stream)
        if watcher.active and options.verbosity > 0:
            print("Press 'q' and then <enter> to stop execution early.")
        with watcher:
            for j in range(data["nout"]):
                label = "search" if data["nout"] == 1 else f"output {j + 1}/{data['nout']}"
                result = self._search_output(j, data, options, guesses[j], None if resume is None else resume[j],
                                             watcher, show_bar, label)
                fronts.append(result["front"])
                states.append(result["state"])
                stats.append(result["stats"])
        self._set_results(fronts, data["names"], [r["floor"] for r in stats])
        self.search_state_ = states
        self.stats_ = stats[0] if data["nout"] == 1 else stats
        self._running = None
        self._write_hall_of_fame_files()
        self._checkpoint("finished", outputs=True, states=states)
        if self.temp_equation_file and self.delete_tempfiles:
            shutil.rmtree(self.output_directory_, ignore_errors=True)
        return self

    def _prepare(self, X, y, Xresampled, weights, variable_names, complexity_of_variables, options) -> dict:
        """Validated tensors and names; feature selection and denoising applied."""
        check_input(X, "X", n_features=None)
        check_input(y, "y", multi_output=True)
        names = read_variable_names(X, variable_names)  # variable_names win over a DataFrame's columns
        dtype = search_dtype(options)
        Xt = check_x(X, dtype=torch.float64, device=options.device)
        n_features_in = Xt.shape[1]
        Y = _check_targets(y, Xt.shape[0], options.device)
        check_target_scale(Y, options.precision)
        W = _check_weights(weights, Y)
        if names is not None and len(names) != Xt.shape[1]:
            raise ValueError(f"{len(names)} variable name(s) for {Xt.shape[1]} feature column(s)")
        all_names = names if names is not None else [f"x{i}" for i in range(Xt.shape[1])]
        _check_names_are_not_operators(all_names, options)
        mask = None
        if self.select_k_features:
            from enhancements.hybrid_optimization.preprocessing import run_feature_selection

            targets = Y.cpu().numpy()
            mask = run_feature_selection(Xt.cpu().numpy(), targets[:, 0] if targets.shape[1] == 1 else targets,
                                         self.select_k_features,
                                         random_state=_sklearn_seed(self.random_state))
            keep = np.flatnonzero(mask).tolist()
            if options.verbosity > 0:
                print(f"Using features {[all_names[i] for i in keep]}")
            Xt = Xt[:, keep]
            if Xresampled is not None:
                Xresampled = np.asarray(Xresampled)[:, keep]
            if isinstance(options.complexity_of_variables, tuple):
                options = self._options([options.complexity_of_variables[i] for i in keep])
        used_names = all_names if mask is None else [all_names[i] for i in np.flatnonzero(mask)]
        if self.denoise:
            from enhancements.hybrid_optimization.preprocessing import denoise

            targets = Y.cpu().numpy()
            Xd, Yd = denoise(Xt.cpu().numpy(), targets[:, 0] if targets.shape[1] == 1 else targets, Xresampled,
                             _sklearn_seed(self.random_state))
            Xt = check_x(Xd, Xt.shape[1], dtype=torch.float64, device=options.device, name="Xresampled")
            Y = torch.as_tensor(Yd, dtype=torch.float64, device=options.device).reshape(len(Xt), -1)
            W = None if W is None or Xresampled is not None else W
        if Xt.shape[0] > LARGE_DATA_ROWS and not options.batching:
            _warn_if_large(Xt.shape[0], options)
        return {"X": Xt.to(dtype), "Y": Y.to(dtype), "W": None if W is None else W.to(dtype), "names": used_names,
                "feature_names": names, "n_features_in": n_features_in, "mask": mask, "nout": Y.shape[1],
                "options": options}

    def _resume_states(self, nout: int):
        """The saved search states to continue (``warm_start``), or None for a fresh search."""
        states = getattr(self, "search_state_", None)
        if not self.warm_start or not states:
            return None
        if len(states) != nout:
            raise ValueError(f"warm_start: the last fit searched {len(states)} output(s), this one has {nout}; "
                             "set warm_start=False to start anew")
        return states

    def _search_output(self, j, data, options, guesses, resume, watcher, show_bar, label) -> dict:
        X, y = data["X"], data["Y"][:, j]
        w = None if data["W"] is None else data["W"][:, j]
        names = data["names"]

        def after_iteration(search):
            self._running["current"] = search
            self._write_hall_of_fame(j, self._entries(search), names)
            # The populations too, so that a killed run continues where it was (warm_start).
            self._checkpoint("running", outputs=True, states=self._running["states"] + [search.state()])

        bar = ProgressBar(options, names, show_bar=show_bar, quiet=options.verbosity <= 0,
                          after_iteration=after_iteration, label=label)
        from enhancements.engine.search import make_search   # numba is imported only for a fit

        search = make_search(X, y, w, options, callback=bar, guesses=guesses, resume=resume)
        watcher.search = search
        try:
            result = search.run()
        finally:
            bar.close()
        if result.stop_reason == "interrupted":
            warnings.warn(f"the search was interrupted after {result.iterations} iteration(s) and "
                          f"{result.n_evals:,} evaluations; the fitted model holds the equations found so far",
                          UserWarning, stacklevel=3)
        entries = self._entries(search)
        if not entries:
            raise RuntimeError(no_finite_loss_message(y, options.precision))
        ev = result.evaluator_stats
        stats = {
            "evaluations": result.n_evals,
            "evals_per_second": result.evals_per_second,
            "elapsed_s": result.elapsed,
            "iterations": result.iterations,
            "stop_reason": result.stop_reason,
            "cache_hit_rate": ev.get("cache", {}).get("hit_rate"),
            "node_reuse_share": ev.get("reuse_share"),
            "evaluator": ev,
            "floor": EPS_FLOOR * max(result.baseline_loss, 1e-300),
        }
        self._running.pop("current", None)
        return {"front": entries, "state": search.state(), "stats": stats}

    @staticmethod
    def _entries(search) -> list[tuple]:
        return [(e.expr, e.loss, e.complexity) for e in search.hof.pareto_front()]

    # --- fitted state ---------------------------------------------------------------------------
    def _set_fitted_data(self, data) -> None:
        self.nout_ = data["nout"]
        self.n_features_in_ = data["n_features_in"]
        self.variable_names_ = list(data["names"])
        self.display_feature_names_in_ = list(data["names"])
        mask = data["mask"]
        self.selection_mask_ = None if mask is None else np.asarray(mask, dtype=bool)
        # scikit-learn sets feature_names_in_ only for named columns; a refit on an array
        # must not keep the names of an earlier fit.
        if data["feature_names"] is not None:
            self.feature_names_in_ = np.asarray(data["feature_names"], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.complexity_of_variables_ = copy.deepcopy(self.complexity_of_variables)
        self.X_units_ = self.y_units_ = None

    def _set_results(self, fronts, names, floors) -> None:
        options_dtype = {16: torch.float16, 32: torch.float32}.get(self.precision, torch.float64)
        selection = None if self.selection_mask_ is None else np.flatnonzero(self.selection_mask_).tolist()
        frames = [equations_frame(front, names, floor, self.loss_scale, selection, self.n_features_in_,
                                  bool(self.output_torch_format), bool(self.output_jax_format), options_dtype)
                  for front, floor in zip(fronts, floors)]
        exprs = [[e for e, _, _ in front] for front in fronts]
        single = len(frames) == 1
        self.equations_ = frames[0] if single else frames
        self.expressions_ = exprs[0] if single else exprs
        self.loss_floor_ = floors[0] if single else list(floors)

    def _frames(self) -> list[pd.DataFrame]:
        self._check_fitted()
        return [self.equations_] if isinstance(self.equations_, pd.DataFrame) else list(self.equations_)

    def _expression_lists(self) -> list[list]:
        return [self.expressions_] if self.nout_ == 1 else list(self.expressions_)

    def _floors(self) -> list[float]:
        floor = getattr(self, "loss_floor_", 0.0)
        return [floor] if not isinstance(floor, list) else floor

    # --- the run directory ------------------------------------------------------------------------
    def _start_run_directory(self, continuing: bool) -> None:
        """``output_directory_``/``run_id_`` (kept when a warm start continues), and the directory."""
        if continuing and hasattr(self, "run_id_") and hasattr(self, "output_directory_"):
            Path(self.output_directory_, self.run_id_).mkdir(parents=True, exist_ok=True)
            return
        if self.temp_equation_file:
            if self.output_directory is not None:
                raise ValueError("temp_equation_file=True writes to a temporary directory: leave output_directory "
                                 "unset")
            if self.tempdir is not None:
                Path(self.tempdir).mkdir(parents=True, exist_ok=True)
            self.output_directory_ = tempfile.mkdtemp(dir=self.tempdir)
        else:
            self.output_directory_ = "outputs" if self.output_directory is None else str(self.output_directory)
        self.run_id_ = rundir.check_run_id(self.run_id) if self.run_id is not None else rundir.generate_run_id()
        try:
            Path(self.output_directory_, self.run_id_).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"cannot create the run directory {Path(self.output_directory_, self.run_id_)}: {err}; "
                          "set output_directory to a writable place (or temp_equation_file=True)") from None

    @property
    def run_directory_(self) -> Path:
        return Path(self.output_directory_, self.run_id_)

    def _write_hall_of_fame(self, j: int, entries, names) -> None:
        rows = [(c, loss, e.to_string(names)) for e, loss, c in entries]
        try:
            rundir.write_hall_of_fame(self.run_directory_, rows, None if self.nout_ == 1 else j + 1)
        except OSError as err:
            # A full disk must not cost the search: the files are written whole or not at
            # all (the last good one stays), and the results live on in this model.
            _warn_unwritable(self.run_directory_, err)

    def _write_hall_of_fame_files(self) -> None:
        for j, exprs in enumerate(self._expression_lists()):
            frame = self._frames()[j]
            entries = list(zip(exprs, frame["loss"], frame["complexity"]))
            self._write_hall_of_fame(j, entries, self.variable_names_)

    def _checkpoint(self, status: str, outputs, states) -> None:
        """``checkpoint.json``: parameters as data, the fitted fronts as formula strings and
        (at the end) the search states; not written for a temporary run (as PySR)."""
        if self.temp_equation_file:
            return
        params, not_saved = _params_as_data(self.get_params(deep=False))
        content = {"status": status, "params": params, "not_saved": not_saved,
                   "fitted": {"nout": self.nout_, "n_features_in": self.n_features_in_,
                              "feature_names_in": None if not hasattr(self, "feature_names_in_")
                              else [str(n) for n in self.feature_names_in_],
                              "variable_names": self.variable_names_,
                              "selection_mask": None if self.selection_mask_ is None
                              else [bool(v) for v in self.selection_mask_]}}
        if outputs is not None:
            names = self.variable_names_
            running = getattr(self, "_running", None)
            if running is not None:
                fronts = list(running["fronts"])
                current = running.get("current")
                if current is not None:
                    fronts.append(self._entries(current))
            else:
                fronts = [list(zip(ex, f["loss"], f["complexity"])) for ex, f in zip(self._expression_lists(),
                                                                                      self._frames())]
            content["fitted"]["outputs"] = [[{"complexity": _plain_number(c), "loss": float(loss),
                                              "equation": e.to_string(names)} for e, loss, c in front]
                                            for front in fronts]
            content["fitted"]["loss_floor"] = self._floors() if running is None else None
        if states is not None:
            content["state"] = [s.to_data() for s in states]
        try:
            rundir.save_checkpoint(self.run_directory_, content)
        except OSError as err:
            _warn_unwritable(self.run_directory_, err)

    # --- using the result ---------------------------------------------------------------------
    def _check_fitted(self):
        check_is_fitted(self, ["equations_", "expressions_"],
                        msg="this %(name)s is not fitted yet; call fit(X, y) first")

    def _pick(self, j: int = 0, index=None) -> int:
        frame = self._frames()[j]
        if index is None:
            return pick_index(frame, self.model_selection, self._floors()[j])
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"index must be an int (a row of equations_), got {index!r}")
        if not -len(frame) <= index < len(frame):
            raise IndexError(f"index {index} out of range for {len(frame)} equation(s)")
        return int(index) % len(frame)

    def _indices(self, index) -> list[int]:
        """One row per output: ``index`` (an int, or a list of ints for several outputs) or the pick."""
        self._check_fitted()
        if self.nout_ > 1 and index is not None:
            if not isinstance(index, (list, tuple)) or len(index) != self.nout_:
                raise TypeError("With multiple output features, index must be a list (one row per output).")
            return [self._pick(j, i) for j, i in enumerate(index)]
        return [self._pick(j, index) for j in range(self.nout_)]

    def _per_output(self, values):
        return values[0] if self.nout_ == 1 else values

    def get_best(self, index=None):
        """The row of ``equations_`` chosen by ``model_selection`` (or row ``index``): a
        Series, or a list of them when y has several columns."""
        rows = self._indices(index)
        return self._per_output([f.iloc[i] for f, i in zip(self._frames(), rows)])

    def predict(self, X, index=None) -> np.ndarray:
        """Predictions of the picked formula (or of row ``index`` of ``equations_``); 2-D
        (one column per output) when y had several columns."""
        rows = self._indices(index)
        check_device(self.device)
        n_in = self.n_features_in_
        check_input(X, "X", n_features=n_in if self.selection_mask_ is None else None)
        if isinstance(X, pd.DataFrame) and hasattr(self, "feature_names_in_"):
            if any(isinstance(c, str) and " " in c for c in X.columns):   # as fit renamed them
                X = X.rename(columns=lambda c: c.replace(" ", "_") if isinstance(c, str) else c)
            missing = [n for n in self.feature_names_in_ if n not in X.columns]
            if not missing:
                X = X[list(self.feature_names_in_)]
            elif len(X.columns) == n_in and all(isinstance(c, str) for c in X.columns):
                raise ValueError(f"X lacks the column(s) {missing} seen in fit")
        dtype = {16: torch.float16, 32: torch.float32}.get(self.precision, torch.float64)
        Xt = check_x(X, n_in if self.selection_mask_ is None else None, dtype=dtype, device=self.device)
        if self.selection_mask_ is not None:
            if Xt.shape[1] == n_in:
                Xt = Xt[:, np.flatnonzero(self.selection_mask_).tolist()]
            elif Xt.shape[1] != int(self.selection_mask_.sum()):
                raise ValueError(f"X has {Xt.shape[1]} features, but PySRRegressor is expecting {n_in} features "
                                 f"as input (or the {int(self.selection_mask_.sum())} selected ones)")
        elif Xt.shape[1] != n_in:
            raise ValueError(f"X has {Xt.shape[1]} features, but PySRRegressor is expecting {n_in} features as input")
        with torch.no_grad():
            columns = [exprs[i].evaluate(Xt).cpu().numpy().astype(np.float64)
                       for exprs, i in zip(self._expression_lists(), rows)]
        return columns[0] if self.nout_ == 1 else np.stack(columns, axis=1)

    def sympy(self, index=None):
        """The picked formula (or row ``index``) as a sympy expression in the variable names
        (a list, one per output, when y had several columns)."""
        rows = self._indices(index)
        return self._per_output([f["sympy_format"].iloc[i] for f, i in zip(self._frames(), rows)])

    def latex(self, index=None, precision: int = 3):
        """LaTeX of the picked formula, constants rounded to ``precision`` significant digits."""
        from enhancements.hybrid_optimization.exports import sympy2latex

        rows = self._indices(index)
        return self._per_output([sympy2latex(f["sympy_format"].iloc[i], prec=precision)
                                 for f, i in zip(self._frames(), rows)])

    def latex_table(self, indices=None, precision: int = 3, columns=("equation", "complexity", "loss", "score")):
        """A LaTeX (booktabs) table of the front, or of rows ``indices`` (a list of lists
        for several outputs), with PySR's preamble."""
        frames = self._frames()
        if self.nout_ > 1 and indices is not None and (not isinstance(indices, (list, tuple)) or len(indices) !=
                                                        self.nout_ or not all(isinstance(i, (list, tuple)) for i in indices)):
            raise TypeError("With multiple output features, indices must be a list of lists (one per output).")
        per_output = [indices] if self.nout_ == 1 else (indices or [None] * self.nout_)
        columns = [c for c in columns if c != "score" or "score" in frames[0].columns]
        tables = [latex_table(f, idx, precision, columns, "y" if self.nout_ == 1 else f"y_{{{j}}}")
                  for j, (f, idx) in enumerate(zip(frames, per_output))]
        return LATEX_PREAMBLE + "\n\n".join(tables)

    def pytorch(self, index=None):
        """The picked formula (or row ``index``) as a ``torch.nn.Module`` whose constants are
        trainable parameters; ``module(X)`` equals ``predict(X)`` (X: a torch tensor, all the
        fitted columns)."""
        rows = self._indices(index)
        selection = None if self.selection_mask_ is None else np.flatnonzero(self.selection_mask_).tolist()
        if self.extra_torch_mappings:
            # The user's torch forms override the operators' own: export through sympy, as PySR does.
            from enhancements.hybrid_optimization.exports import sympy2torch

            symbols = [sympy.Symbol(n) for n in self.variable_names_]
            return self._per_output([sympy2torch(f["sympy_format"].iloc[i], symbols, selection,
                                                 self.extra_torch_mappings)
                                     for f, i in zip(self._frames(), rows)])
        return self._per_output([ExpressionModule(exprs[i], self.variable_names_, selection)
                                 for exprs, i in zip(self._expression_lists(), rows)])

    def jax(self, index=None):
        """``{"callable": f, "parameters": p}`` with ``f(X, p)`` the picked formula in JAX
        (jax must be installed: it is an optional dependency)."""
        rows = self._indices(index)
        symbols = [sympy.Symbol(n) for n in self.variable_names_]
        selection = None if self.selection_mask_ is None else np.flatnonzero(self.selection_mask_).tolist()
        out = []
        for f, i in zip(self._frames(), rows):
            fn, params = sympy2jax(f["sympy_format"].iloc[i], symbols, selection, self.extra_jax_mappings)
            out.append({"callable": fn, "parameters": params})
        return self._per_output(out)

    def get_hof(self):
        """``equations_``: the front(s) as a DataFrame (a list for several outputs)."""
        self._check_fitted()
        return self.equations_

    @property
    def equations(self):
        warnings.warn("PySRRegressor.equations is now deprecated. Please use PySRRegressor.equations_ instead.",
                      FutureWarning, stacklevel=2)
        return self.equations_

    # --- plots ------------------------------------------------------------------------------------
    def plot_pareto(self, output: int = 0, ax=None):
        """Loss against complexity of the front (log loss), the picked formula marked; returns
        the matplotlib figure."""
        from enhancements.hybrid_optimization.plots import plot_pareto

        return plot_pareto(self, output, ax)

    def plot_fit(self, X, y, index=None, output: int = 0, ax=None):
        """Predicted against true y for the picked formula (or row ``index``); returns the figure."""
        from enhancements.hybrid_optimization.plots import plot_fit

        return plot_fit(self, X, y, index, output, ax)

    # --- saved runs -----------------------------------------------------------------------------
    def refresh(self, run_directory=None) -> None:
        """Reread the front(s) from the run directory's CSV (``run_directory``, or this fit's);
        formulas are read with the whitelist parser and the operators given to the model."""
        if run_directory is not None:
            path = Path(run_directory)
            self.output_directory_, self.run_id_ = str(path.parent), path.name
        check_is_fitted(self, ["run_id_", "output_directory_"],
                        msg="this %(name)s has no run directory yet; fit it or pass run_directory")
        options = self._options()
        names = self.variable_names_
        fronts = []
        for j in range(self.nout_):
            table = rundir.read_hall_of_fame(self.run_directory_, None if self.nout_ == 1 else j + 1)
            fronts.append([(_parse_saved(eq, names, options), float(loss), c)
                           for c, loss, eq in zip(table["complexity"], table["loss"], table["equation"])])
        floors = self._floors() if len(self._floors()) == self.nout_ else [0.0] * self.nout_
        self._set_results(fronts, names, floors)

    @classmethod
    def from_file(cls, equation_file=None, *, run_directory, binary_operators=None, unary_operators=None,
                  operators=None, n_features_in=None, feature_names_in=None, selection_mask=None, nout=1,
                  **pysr_kwargs) -> "PySRRegressor":
        """A model from a run directory: a finished run from its ``checkpoint.json``, or a
        running or killed one from its CSV (then the operators and ``n_features_in`` are
        needed, as PySR's). Nothing saved is executed: parameters are data and formulas are
        read with the whitelist parser; PySR's ``checkpoint.pkl`` is never unpickled."""
        if equation_file is not None:
            raise ValueError("Passing `equation_file` is deprecated and no longer compatible with the most recent "
                             "versions of PySR's backend. Please pass `run_directory` instead, which contains all "
                             "checkpoint files.")
        run = Path(run_directory)
        saved = rundir.load_checkpoint(run)
        given = {k: v for k, v in (("binary_operators", binary_operators), ("unary_operators", unary_operators),
                                   ("operators", operators)) if v is not None}
        if saved is not None:
            params = _params_from_data(saved.get("params"))
            params.update(given)
            params.update(pysr_kwargs)
            model = cls(**params)
            fitted = saved.get("fitted") or {}
            model._restore(run, fitted, saved.get("state"))
            return model
        if (run / "checkpoint.pkl").exists():
            warnings.warn(f"{run / 'checkpoint.pkl'} is a pickle (PySR's); it is not loaded, since unpickling can "
                          "run code. The model is rebuilt from the CSV instead.", UserWarning, stacklevel=2)
        if not given:
            raise ValueError("When recreating a model from CSV backups you must provide either `operators` or legacy "
                             "`binary_operators`/`unary_operators`.")
        if n_features_in is None:
            raise ValueError("n_features_in is needed to rebuild a model from its CSV (the number of columns of X)")
        model = cls(**given, **pysr_kwargs)
        names = list(feature_names_in) if feature_names_in is not None else [f"x{i}" for i in range(n_features_in)]
        if len(names) != n_features_in:
            raise ValueError(f"feature_names_in has {len(names)} names for n_features_in={n_features_in}")
        mask = None if selection_mask is None else np.asarray(selection_mask, dtype=bool)
        used = names if mask is None else [n for n, keep in zip(names, mask) if keep]
        model._restore(run, {"nout": nout, "n_features_in": n_features_in,
                             "feature_names_in": None if feature_names_in is None else names,
                             "variable_names": used, "selection_mask": None if mask is None else mask.tolist()}, None)
        return model

    def _restore(self, run: Path, fitted: dict, state) -> None:
        """Fitted attributes from a checkpoint's data (or the CSV), validated."""
        nout = fitted.get("nout", 1)
        n_in = fitted.get("n_features_in")
        names = fitted.get("variable_names")
        if not isinstance(nout, int) or nout < 1 or not isinstance(n_in, int) or n_in < 1:
            raise ValueError(f"{run}: the saved run lacks its number of outputs or features")
        if not isinstance(names, list) or not all(isinstance(n, str) and n.isidentifier() for n in names):
            raise ValueError(f"{run}: the saved variable names are not valid names")
        mask = fitted.get("selection_mask")
        self._set_fitted_data({"nout": nout, "n_features_in": n_in, "names": names,
                               "feature_names": fitted.get("feature_names_in"),
                               "mask": None if mask is None else [bool(v) for v in mask]})
        self.output_directory_, self.run_id_ = str(run.parent), run.name
        options = self._options()
        outputs = fitted.get("outputs")
        if outputs is not None and len(outputs) < nout:
            raise ValueError(f"{run}: the run stopped while searching output {len(outputs)} of {nout}; the outputs "
                             "after it have no results to load")
        if outputs is not None and len(outputs) == nout and all(outputs):
            fronts = [[(_parse_saved(row["equation"], names, options), float(row["loss"]),
                        _plain_number(row["complexity"]))
                       for row in front] for front in outputs]
            floors = fitted.get("loss_floor") or [0.0] * nout
            self._set_results(fronts, names, [float(f) for f in floors])
        else:
            self.refresh()
        if state is not None:
            if not isinstance(state, list) or len(state) != nout:
                raise ValueError(f"{run}: the saved search state does not match its outputs")
            self.search_state_ = [SearchState.from_data(s, options.operators) for s in state]
        else:
            # A run killed before it finished: continue from its front (warm_start).
            self.search_state_ = [SearchState([], list(exprs)) for exprs in self._expression_lists()]

    # --- printing and pickling ------------------------------------------------------------------
    def __repr__(self, N_CHAR_MAX=700) -> str:
        if not hasattr(self, "equations_") or self.equations_ is None:
            return "PySRRegressor.equations_ = None"
        parts = []
        for j, (frame, exprs) in enumerate(zip(self._frames(), self._expression_lists())):
            text = format_front(frame, exprs, self._pick(j), self.variable_names_, self.print_precision)
            parts.append(text if self.nout_ == 1 else "[\n" + text + "]")
        return "PySRRegressor.equations_ = [\n" + ", ".join(parts) + "]"

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_running", None)
        for name in ("extra_sympy_mappings", "extra_torch_mappings", "extra_jax_mappings"):
            # PySR's rule: mappings hold lambdas, which pickle cannot store.
            if state.get(name) is not None and not _picklable(state[name]):
                warnings.warn(f"`{name}` cannot be pickled and will be removed from the serialized instance. "
                              f"When loading the model, please redefine `{name}` at runtime.", UserWarning,
                              stacklevel=2)
                state[name] = None
        if "expressions_" in state:
            state["expressions_"] = [[e.to_string() for e in exprs] for exprs in self._expression_lists()]
            frames = self._frames()
            drop = [c for c in ("lambda_format", "torch_format", "jax_format") if c in frames[0].columns]
            state["equations_"] = [f.drop(columns=drop) for f in frames]
        if "search_state_" in state:
            state["search_state_"] = [s.to_data() for s in state["search_state_"]]
        return state

    def __setstate__(self, state):
        state = dict(state)
        self.__dict__.update(state)
        if "expressions_" in state and state["expressions_"] and isinstance(state["expressions_"][0], list) \
                and (not state["expressions_"][0] or isinstance(state["expressions_"][0][0], str)):
            options = self._options()
            fronts = []
            for texts, frame in zip(state["expressions_"], state["equations_"]):
                exprs = [parse_expression(t, operators=options.operators) for t in texts]
                fronts.append(list(zip(exprs, frame["loss"], frame["complexity"])))
            floors = self._floors()
            self._set_results(fronts, self.variable_names_, floors)
        if "search_state_" in state and state["search_state_"] and isinstance(state["search_state_"][0], dict):
            self.search_state_ = [SearchState.from_data(s, self._options().operators) for s in state["search_state_"]]


def _picklable(value) -> bool:
    import pickle

    try:
        pickle.dumps(value)
        return True
    except Exception:
        return False


def _same(value, default) -> bool:
    try:
        return bool(value == default) if not isinstance(value, np.ndarray) else False
    except Exception:
        return False


def _check_targets(y, n_rows: int, device) -> torch.Tensor:
    """y as an (n_rows, n_outputs) float64 tensor (a 1-D y or one column: one output)."""
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    if not isinstance(y, torch.Tensor):
        try:
            y = np.asarray(y)
        except Exception:  # ragged lists and the like: check_y names the problem
            pass
    ndim = getattr(y, "ndim", 1)
    if ndim == 2 and y.shape[1] > 1:
        cols = [check_y(y[:, j], n_rows, device=device, name=f"y[:, {j}]") for j in range(y.shape[1])]
        return torch.stack(cols, dim=1)
    if ndim not in (1, 2):
        raise ValueError(f"y must be 1-D (one output) or 2-D (one column per output), got {ndim}-D")
    return check_y(y, n_rows, device=device).reshape(-1, 1)


def _check_weights(weights, Y: torch.Tensor):
    """Weights as an (n_rows, n_outputs) tensor: one per row, or one per entry of y."""
    if weights is None:
        return None
    check_input(weights, "weights", multi_output=True)
    if hasattr(weights, "to_numpy"):
        weights = weights.to_numpy()
    arr = weights if isinstance(weights, torch.Tensor) else np.asarray(weights)
    if arr.ndim == 2 and arr.shape[1] == Y.shape[1] and Y.shape[1] > 1:
        cols = [_one_weight(arr[:, j], Y.shape[0], Y.device) for j in range(arr.shape[1])]
        return torch.stack(cols, dim=1)
    W = _one_weight(arr, Y.shape[0], Y.device)
    return W.reshape(-1, 1).expand(-1, Y.shape[1])


def _one_weight(w, n_rows: int, device) -> torch.Tensor:
    W = check_y(w, n_rows, device=device, name="weights")
    if (W < 0).any():
        raise ValueError("weights must be non-negative")
    if W.sum() <= 0:
        raise ValueError("weights must not all be zero")
    return W


def _warn_unwritable(run_directory: Path, err: OSError) -> None:
    warnings.warn(f"could not write the run's files in {run_directory}: {err}. The last complete files there are "
                  "left as they were; the search goes on and its results stay in this model (free some space, or "
                  "save them elsewhere, e.g. model.equations_.to_csv(...)).", UserWarning, stacklevel=3)


def _check_names_are_not_operators(names, options) -> None:
    taken = {op.name for op in options.operators} | {"pi", "e"}
    for n in names:
        if n in taken:
            raise ValueError(f"Variable name {n} is already a function name.")


def _warn_if_large(n_rows: int, options: Options) -> None:
    """One warning, before the search, when every evaluation will run over many rows."""
    if n_rows > LARGE_DATA_ROWS and not options.batching:
        warnings.warn(f"X has {n_rows:,} rows: every formula of the search is evaluated on all of them, so "
                      f"the search runs about {n_rows / 1000:.0f}x slower per formula than on 1,000 rows "
                      f"(memory grows with the rows too). To speed it up, pass batching=True (mutants are then "
                      f"scored on batch_size random rows) or fit on a random subsample of {LARGE_DATA_ROWS:,} "
                      f"rows or fewer.", UserWarning, stacklevel=4)


def _sklearn_seed(random_state):
    """A seed for scikit-learn's preprocessing from ``random_state`` (an int, a Generator or None)."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    return random_state


def _plain_number(value):
    """A complexity as PySR shows it: an int when it is whole."""
    value = float(value)
    return int(value) if value.is_integer() else value


def _parse_saved(text, names, options):
    if not isinstance(text, str):
        raise ValueError(f"a saved equation must be text, got {type(text).__name__}")
    return parse_expression(text, variable_names=names, operators=options.operators)


_JSON_TYPES = (str, int, float, bool, type(None))


def _as_data(value):
    """``value`` as JSON data, or raise TypeError (callables, objects)."""
    if isinstance(value, _JSON_TYPES):
        if isinstance(value, float) and not math.isfinite(value):
            return value
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_as_data(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"key {k!r}")
            out[str(k)] = _as_data(v)
        return out
    raise TypeError(type(value).__name__)


def _params_as_data(params: dict) -> tuple[dict, list]:
    """Parameters that are plain data, and the names of those that are not (callables,
    objects): a saved run keeps no code, so these must be passed again when loading."""
    out, not_saved = {}, []
    for name, value in params.items():
        try:
            out[name] = _as_data(value)
            json.dumps(out[name])
        except (TypeError, ValueError):
            out.pop(name, None)
            not_saved.append(name)
    return out, not_saved


def _params_from_data(params) -> dict:
    """Saved parameters back, restricted to known names and plain values."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValueError("a checkpoint's parameters must be a mapping")
    out = {}
    for name, value in params.items():
        if name not in PARAMETERS:
            continue  # a parameter of another version: skipped rather than executed
        if name == "operators" and isinstance(value, dict):
            value = {int(k): v for k, v in value.items() if str(k).isdigit()}
        if name in ("constraints",) and isinstance(value, dict):
            value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        out[name] = value
    return out
