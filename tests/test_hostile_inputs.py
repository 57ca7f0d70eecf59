"""Hostile strings and files (experiments/hostile_inputs.py): none executes anything, and
each is refused with a clear error or accepted as inert data."""
import os
import pickle
from pathlib import Path

import pytest

from experiments import hostile_inputs as hostile

# Accepted as data, by design: numbers that overflow to inf, and a saved parameter of
# another version (skipped), a pickle (never loaded: the CSV is read instead), a saved
# run_id (checked when a fit would use it).
_INERT = ("1e999999", "9" * 10_000, "x0 ** 99999999999", "a parameter of another name", "pickle calling os.system",
          "a path outside the run")


@pytest.fixture(scope="module")
def results():
    return hostile.run_all()


def test_nothing_is_executed(results):
    executed = [(r["where"], r["text"][:60], r["events"]) for r in results if r["outcome"] == "executed"]
    assert not executed


def test_every_case_is_refused_clearly_or_inert_by_design(results):
    assert len(results) > 300
    unclear = [(r["where"], r["text"][:60], r["error"]) for r in results if r["outcome"] == "unclear error"]
    assert not unclear
    surprising = [(r["where"], r["text"][:60]) for r in results if r["outcome"] == "inert" and r["text"] not in _INERT]
    assert not surprising
    refused = [r for r in results if r["outcome"] == "refused"]
    assert all(r["error"] for r in refused) and len(refused) > 0.9 * len(results)


def test_the_detector_sees_execution(tmp_path):
    # The harness must be able to fail: a case that does run code is counted as executed.
    sentinel = tmp_path / "sentinel"
    ran = hostile.run_case(hostile.Case("control", "os.system", lambda w: os.system(f"touch {sentinel}")), sentinel)
    assert ran["outcome"] == "executed"
    payload = pickle.dumps(hostile._Payload("true"))
    unpickled = hostile.run_case(hostile.Case("control", "pickle", lambda w: pickle.loads(payload)), sentinel)
    assert unpickled["outcome"] == "executed" and any("posix.system" in e or "os.system" in e
                                                      for e in unpickled["events"])
    assert not Path(sentinel).exists()
