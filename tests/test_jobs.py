"""Background jobs: a fairmed command in its own process, with its status, progress, log and a stop button."""

from __future__ import annotations

import json
import time

import pytest

from fairmed_core.errors import FairMedInputError
from fairmed_core.runs.jobs import list_jobs, read_job, start_job, stop_job
from fairmed_core.runs.workspace import Workspace, atomic_write_json


def _wait(job, until=("finished", "failed", "stopped", "lost"), timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = read_job(job.path)
        if current.status in until:
            return current
        time.sleep(0.3)
    raise AssertionError(f"job {job.name} still {read_job(job.path).status} after {timeout} s")


@pytest.fixture()
def workspace(tmp_path):
    return Workspace(tmp_path / "ws")


def test_a_job_runs_a_command_and_records_its_end(workspace, tmp_path):
    out = tmp_path / "bench"
    job = start_job(workspace, "synth-small", ["synth", "--out", str(out), "--n", "30"], labels={"kind": "synth"})
    assert job.pid > 0 and job.status in ("running", "finished")
    done = _wait(job)
    assert done.status == "finished" and done.exit_code == 0, done.log_tail()
    assert (out / "manifest.jsonl").is_file()
    assert "30 cases" in done.log_tail()
    assert [j.name for j in list_jobs(workspace)] == ["synth-small"] and done.labels == {"kind": "synth"}


def test_a_failing_command_is_a_failed_job_with_its_message(workspace, tmp_path):
    job = start_job(workspace, "bad-audit", ["audit", str(tmp_path / "missing.csv"), "--sensitive", "sex",
                                             "--label-col", "y", "--pred-col", "p"])
    done = _wait(job)
    assert done.status == "failed" and done.exit_code == 2
    assert "missing.csv" in done.log_tail()


def test_a_running_job_can_be_stopped_and_leaves_no_run(workspace, default_manifest, tmp_path):
    out = tmp_path / "run"
    job = start_job(workspace, "long-fairgrad", ["train", "fairgrad", "--data", str(default_manifest), "--out",
                                                 str(out), "--epochs", "200"])
    _wait(job, until=("running",), timeout=60)
    time.sleep(3)
    stopped = stop_job(job)
    assert stopped.status == "stopped"
    final = _wait(job, until=("stopped",))
    deadline = time.monotonic() + 60
    while not (final.path / "result.json").exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert json.loads((final.path / "result.json").read_text())["exit_code"] == 143
    assert not (out / "run.json").exists()  # an interrupted run is never mistaken for a finished one


def test_a_job_whose_process_vanished_is_lost(workspace):
    folder = workspace.root / "jobs" / "ghost"
    atomic_write_json(folder / "job.json", {"argv": ["synth"], "pid": 2**22 + 12345, "started_utc": "2026-01-01"})
    assert read_job(folder).status == "lost"


def test_job_names_are_checked_and_never_reused(workspace, tmp_path):
    with pytest.raises(FairMedInputError, match="not allowed"):
        start_job(workspace, "../escape", ["synth"])
    start_job(workspace, "once", ["synth", "--out", str(tmp_path / "a"), "--n", "30"])
    with pytest.raises(FairMedInputError, match="already exists"):
        start_job(workspace, "once", ["synth"])
    _wait(read_job(workspace.root / "jobs" / "once"))


def _record_signals(monkeypatch):
    import os

    sent = []
    monkeypatch.setattr(os, "killpg", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)) if sig else None)
    return sent


@pytest.mark.parametrize("process_start", ["proc:1", None], ids=["wrong-start-time", "no-start-time"])
def test_stop_signals_nothing_when_the_pid_is_not_the_jobs_process(workspace, monkeypatch, process_start):
    """Issue 13: stop sent SIGTERM to whatever process group job.json named. Here it names this live test process
    (a reused pid, or a forged file): the job is no longer running and nothing is signalled."""
    import os

    folder = workspace.root / "jobs" / "stranger"
    atomic_write_json(folder / "job.json", {"argv": ["synth"], "pid": os.getpid(), "process_start": process_start,
                                            "started_utc": "2026-01-01"})
    sent = _record_signals(monkeypatch)
    job = read_job(folder)
    assert job.status == "lost"
    assert stop_job(job).status == "lost"
    assert sent == [] and not (folder / "stopped.json").exists()


def test_a_job_records_its_process_start_time_and_is_running_only_while_it_matches(workspace, tmp_path):
    import os

    from fairmed_core.runs.jobs import _process_start

    own = _process_start(os.getpid())
    assert own is not None and own == _process_start(os.getpid())
    job = start_job(workspace, "synth-start", ["synth", "--out", str(tmp_path / "b"), "--n", "30"])
    recorded = json.loads((job.path / "job.json").read_text())
    assert recorded["pid"] == job.pid and recorded["process_start"] not in (None, own)
    assert _wait(job).status == "finished"
