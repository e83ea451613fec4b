"""Background jobs: a ``fairmed`` command run as its own process, so a training run outlives the browser session
(or the dashboard) that started it.

A job is a folder ``workspace/jobs/<name>/``::

    job.json       the command, the pid and its process start time, when it started (written before the process
                   starts work)
    log.txt        the command's stdout and stderr
    progress.json  {"done": d, "total": t, "what": "..."}, written by the command as it goes (optional)
    result.json    {"exit_code": n, "finished_utc": ...}, written by :func:`run_recorded` when the command ends

The process is ``python -m fairmed_core.cli ARGS...`` with ``FAIRMED_JOB_DIR`` naming the job folder: the
command line runs itself through :func:`run_recorded` then (this module never imports the command line).

Its status follows from those files and the pid: ``running`` (no result yet, and the pid is still the process the
job started: alive, with the start time recorded in ``job.json``), ``finished`` (exit
code 0), ``failed`` (another exit code), ``stopped`` (stopped by the user) or ``lost`` (the process died without
a result: killed by the system, or the machine restarted, even if its pid now names another process). Every file
is written atomically.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fairmed_core.errors import FairMedInputError
from fairmed_core.files import read_json_object
from fairmed_core.runs.workspace import Workspace, _checked_name, atomic_write_json

__all__ = ["JOB_DIR_ENV", "Job", "PROGRESS_ENV", "list_jobs", "read_job", "report_progress", "run_recorded",
           "start_job", "stop_job"]

PROGRESS_ENV = "FAIRMED_PROGRESS_FILE"  # the command reports progress to the file this variable names
JOB_DIR_ENV = "FAIRMED_JOB_DIR"  # set for a command started as a job: its folder, where it records its end
_STOPPED = "stopped.json"


@dataclass(frozen=True)
class Job:
    """One background job as its folder describes it now."""

    name: str
    path: Path
    argv: tuple[str, ...]
    pid: int
    started_utc: str
    status: str
    exit_code: int | None
    progress: dict | None
    labels: dict

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log (tqdm's carriage-return updates collapse to their last state)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        cleaned = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
        return "\n".join([line for line in cleaned if line.strip()][-lines:])


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)  # reap our own finished children (no zombies)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child (another dashboard process started it): fall through to the signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started, as an opaque token (None: no such process, or no way to tell).

    A pid is reused once its process ends; the pair (pid, start time) is not, so it tells the job's own process
    from a stranger that got the same pid. Linux: field 22 of ``/proc/<pid>/stat`` (clock ticks since boot);
    elsewhere psutil's creation time, if psutil happens to be installed."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # a Linux with /proc: the process is gone
    except OSError:
        return None
    else:
        # The command name (field 2) is in parentheses and may itself hold spaces or ')': split after the last.
        fields = stat.rsplit(")", 1)[-1].split()
        return f"proc:{fields[19]}" if len(fields) > 19 else None  # fields[0] is field 3 (the state)
    try:
        import psutil
    except ImportError:
        return None
    try:
        return f"psutil:{psutil.Process(pid).create_time()!r}"
    except Exception:  # noqa: BLE001 - psutil's NoSuchProcess / AccessDenied: cannot be verified
        return None


def _is_job_process(pid: int, process_start: str | None) -> bool:
    """Whether ``pid`` is alive and is still the process that was started at ``process_start``.

    A job without a recorded start time (or on a system where it cannot be read) is never taken for running:
    stopping it would signal a process that may not be the job's."""
    if pid <= 0 or not process_start or not _alive(pid):
        return False
    return _process_start(pid) == process_start


def read_job(path: str | Path) -> Job:
    """The job in ``path``; an error if its ``job.json`` is missing or unreadable."""
    path = Path(path)
    info = read_json_object(path / "job.json")
    if info is None:
        raise FairMedInputError("not a job folder (job.json missing or unreadable)", source=str(path))
    result = read_json_object(path / "result.json")
    exit_code = None if result is None else result.get("exit_code")
    pid = int(info.get("pid", -1))
    if (path / _STOPPED).exists():
        status = "stopped"
    elif result is not None:
        status = "finished" if exit_code == 0 else "failed"
    elif _is_job_process(pid, info.get("process_start")):
        status = "running"
    else:
        status = "lost"
    return Job(name=path.name, path=path, argv=tuple(info.get("argv", ())), pid=pid,
               started_utc=str(info.get("started_utc", "")), status=status, exit_code=exit_code,
               progress=read_json_object(path / "progress.json"), labels=dict(info.get("labels", {})))


def list_jobs(workspace: Workspace) -> list[Job]:
    """Every job in the workspace, newest first; unreadable folders are skipped."""
    folder = workspace.root / "jobs"
    if not folder.is_dir():
        return []
    jobs = []
    for path in folder.iterdir():
        if (path / "job.json").is_file():
            try:
                jobs.append(read_job(path))
            except FairMedInputError:
                continue
    return sorted(jobs, key=lambda job: job.started_utc, reverse=True)


def start_job(workspace: Workspace, name: str, argv: Sequence[str], *, labels: dict | None = None) -> Job:
    """Start ``fairmed <argv>`` in a new process session (it survives the dashboard's reruns and the browser
    closing) and return the job; ``labels`` are free-form notes kept in ``job.json`` (method, run folder, ...)."""
    path = workspace.root / "jobs" / _checked_name(name, "job")
    if path.exists():
        raise FairMedInputError(f"job {name!r} already exists", hint="choose another name")
    path.mkdir(parents=True)
    command = [sys.executable, "-m", "fairmed_core.cli", *argv]
    env = {**os.environ, PROGRESS_ENV: str(path / "progress.json"), JOB_DIR_ENV: str(path), "PYTHONUNBUFFERED": "1"}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_json(path / "job.json", {"argv": list(argv), "pid": -1, "started_utc": started,
                                          "labels": labels or {}})
    with (path / "log.txt").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    # Read at once: the child cannot have ended and had its pid reused yet, since nobody has reaped it.
    atomic_write_json(path / "job.json", {"argv": list(argv), "pid": process.pid,
                                          "process_start": _process_start(process.pid), "started_utc": started,
                                          "labels": labels or {}})
    return read_job(path)


def stop_job(job: Job) -> Job:
    """Stop a running job (SIGTERM to its process group) and mark it stopped.

    Signals only the process the job started: its pid with the start time recorded in ``job.json`` (a pid
    reused by another process, or a ``job.json`` naming someone else's, gets nothing). A job that is no longer
    running is returned as it is, with its status saying so (``finished``, ``failed``, ``stopped``, ``lost``)."""
    current = read_job(job.path)
    if current.status != "running":
        return current
    info = read_json_object(job.path / "job.json") or {}
    # Checked again right before the signal (read_job's check may be a moment old); the job's process leads its
    # own session (start_new_session), so its process group id is its pid.
    if not _is_job_process(current.pid, info.get("process_start")) or _process_group(current.pid) != current.pid:
        return read_job(job.path)
    atomic_write_json(job.path / _STOPPED, {"stopped_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    try:
        os.killpg(current.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    return read_job(job.path)


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt  # unwind through the command's finally blocks, then record the exit


def run_recorded(job_dir: str | Path, command: Callable[[], int]) -> int:
    """Run a job's ``command`` and record how it ended in ``result.json``: its exit code, 143 when stopped
    (SIGTERM unwinds through the command's ``finally`` blocks first), 1 with the traceback in the log when it
    crashed."""
    os.environ.pop(JOB_DIR_ENV, None)  # processes the command starts are not this job
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = command()
    except KeyboardInterrupt:
        code = 143
        print("stopped", file=sys.stderr)
    except Exception:  # noqa: BLE001 - an unexpected crash is recorded as a failed job with its traceback
        traceback.print_exc()
        code = 1
    atomic_write_json(Path(job_dir) / "result.json", {
        "exit_code": int(code), "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return int(code)


def report_progress(done: int, total: int, what: str = "") -> None:
    """Called by a command run as a job: write its progress where the job runner asked (no-op otherwise)."""
    target = os.environ.get(PROGRESS_ENV)
    if target:
        atomic_write_json(target, {"done": int(done), "total": int(total), "what": what})
