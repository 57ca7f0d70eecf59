"""A run's directory on disk, as PySR lays it out: ``{output_directory}/{run_id}/`` with
``hall_of_fame.csv`` (and its ``.bak``; ``hall_of_fame_output{i}.csv`` per output when
y has several columns), rewritten after every iteration, and a saved model.

Every file is written atomically (a temporary file in the same directory, flushed to
disk, then renamed over the old one), so a run killed at any moment leaves the last
complete file in place. The saved model is ``checkpoint.json``: parameters as data and
formulas as strings, read back with a whitelist parser. Nothing here unpickles or
executes anything; PySR's ``checkpoint.pkl`` is never loaded.

    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> write_hall_of_fame(run, [(1, 2.5, "x0"), (3, 0.0, "x0 * 2.0")])
    >>> read_hall_of_fame(run)["equation"].tolist()
    ['x0', 'x0 * 2.0']
"""
from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import re
import secrets
import string
import tempfile
from pathlib import Path

import pandas as pd

CHECKPOINT = "checkpoint.json"
CHECKPOINT_FORMAT = "pysr-torch run"
CHECKPOINT_VERSION = 1
# A saved file bigger than this is refused rather than read into memory.
MAX_FILE_BYTES = 256 * 2**20
_RUN_ID_ALPHABET = string.digits + string.ascii_letters


def generate_run_id() -> str:
    """PySR's run id: ``yyyymmdd_HHMMSS_`` and six random letters or digits.

        >>> len(generate_run_id())
        22
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    return stamp + "_" + "".join(secrets.choice(_RUN_ID_ALPHABET) for _ in range(6))


def check_run_id(run_id: str) -> str:
    """A run id names one directory: no separators, no '..', nothing but a plain name."""
    if not isinstance(run_id, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,200}", run_id) or run_id in (".", ".."):
        raise ValueError(f"run_id must be a plain directory name (letters, digits, '_', '-', '.'), got {run_id!r}")
    return run_id


def hall_of_fame_name(output: int | None = None) -> str:
    """``hall_of_fame.csv``, or ``hall_of_fame_output{output}.csv`` (1-based) for one of several outputs."""
    return "hall_of_fame.csv" if output is None else f"hall_of_fame_output{output}.csv"


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` all at once: readers see the old file or the new one,
    never half of one. Raises OSError (the old file untouched) if the disk refuses."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _format_loss(loss: float) -> str:
    return repr(float(loss)) if math.isfinite(loss) else ("Inf" if loss > 0 else "NaN")


def hall_of_fame_text(rows) -> str:
    """PySR's CSV: ``Complexity,Loss,Equation`` with the equation quoted, full precision."""
    lines = ["Complexity,Loss,Equation"]
    for complexity, loss, equation in rows:
        c = float(complexity)
        quoted = '"' + str(equation).replace('"', '""') + '"'
        lines.append(f"{int(c) if c.is_integer() else c},{_format_loss(loss)},{quoted}")
    return "\n".join(lines) + "\n"


def write_hall_of_fame(run_dir: Path, rows, output: int | None = None) -> None:
    """Write the front (``(complexity, loss, equation)`` rows) as the CSV and its ``.bak``,
    each atomically: the ``.bak`` first, so that one of the two is always complete."""
    run_dir = Path(run_dir)
    text = hall_of_fame_text(rows)
    name = hall_of_fame_name(output)
    write_atomic(run_dir / (name + ".bak"), text)
    write_atomic(run_dir / name, text)


# Julia prints Float32 as 1.5f-3 and may write Inf32; the equations' numbers may carry them.
_JULIA_FLOAT = re.compile(r"(?<=\d)f(?=[-+]?\d)")


def _read_text(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path} is {size:,} bytes, more than a saved run's file may be ({MAX_FILE_BYTES:,})")
    return path.read_text(encoding="utf-8")


def _parse_hall_of_fame(text: str, where: Path) -> pd.DataFrame:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header[:3]] != ["complexity", "loss", "equation"]:
        raise ValueError(f"{where} is not a hall-of-fame CSV: its header must be Complexity,Loss,Equation, "
                         f"got {header!r}")
    rows = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) < 3:
            raise ValueError(f"{where}, line {line}: expected Complexity,Loss,Equation, got {row!r}")
        try:
            complexity = float(row[0])
            loss = float(_JULIA_FLOAT.sub("e", row[1].strip()).replace("Inf", "inf"))
        except ValueError:
            raise ValueError(f"{where}, line {line}: complexity and loss must be numbers, got "
                             f"{row[0]!r}, {row[1]!r}") from None
        rows.append((int(complexity) if complexity.is_integer() else complexity, loss,
                     _JULIA_FLOAT.sub("e", row[2].strip())))
    return pd.DataFrame(rows, columns=["complexity", "loss", "equation"])


def read_hall_of_fame(run_dir: Path, output: int | None = None) -> pd.DataFrame:
    """The saved front (columns complexity, loss, equation; equations as text), from the
    CSV, or from its ``.bak`` if the CSV is missing or unreadable (a run killed mid-write
    by something that bypassed the atomic rename)."""
    run_dir = Path(run_dir)
    name = hall_of_fame_name(output)
    errors = []
    for candidate in (run_dir / name, run_dir / (name + ".bak")):
        if not candidate.exists():
            continue
        try:
            return _parse_hall_of_fame(_read_text(candidate), candidate)
        except (ValueError, UnicodeDecodeError, csv.Error) as err:
            errors.append(str(err))
    if errors:
        raise ValueError("; ".join(errors))
    raise FileNotFoundError(f"Hall of fame file `{run_dir / name}` or `{run_dir / (name + '.bak')}` does not exist. "
                            "Please pass a `run_directory` containing a valid checkpoint file.")


def _json_safe(value):
    """JSON for finite and non-finite floats alike (inf and NaN as strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"float"} and value["float"] in ("inf", "-inf", "nan"):
            return float(value["float"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def save_checkpoint(run_dir: Path, content: dict) -> None:
    """Write ``checkpoint.json`` atomically. ``content`` holds only JSON data."""
    body = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **_json_safe(content)}
    write_atomic(Path(run_dir) / CHECKPOINT, json.dumps(body, indent=1, allow_nan=False))


def load_checkpoint(run_dir: Path) -> dict | None:
    """The saved model's content, or None if the run has no ``checkpoint.json``. A file that
    is not one of ours raises ValueError; nothing in it is executed."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    try:
        body = json.loads(_read_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})"[:500]) from None
    if not isinstance(body, dict) or body.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by this library")
    if body.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {body.get('version')!r}; this library reads "
                         f"version {CHECKPOINT_VERSION}")
    return _from_json(body)
