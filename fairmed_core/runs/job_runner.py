"""Runs one ``fairmed`` command for a background job and records how it ended (``result.json``).

``python -m fairmed_core.runs.job_runner JOB_DIR ARGS...`` is what ``jobs.start_job`` launches; it is not meant
to be run by hand.
"""

from __future__ import annotations

import signal
import sys
import time
import traceback
from pathlib import Path

from fairmed_core.runs.workspace import atomic_write_json


def _terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt  # unwind through the command's finally blocks, then record the exit


def run(job_dir: Path, argv: list[str]) -> int:
    from fairmed_core.cli import main

    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = main(argv)
    except KeyboardInterrupt:
        code = 143
        print("stopped", file=sys.stderr)
    except Exception:  # noqa: BLE001 - an unexpected crash is recorded as a failed job with its traceback
        traceback.print_exc()
        code = 1
    atomic_write_json(job_dir / "result.json", {"exit_code": int(code),
                                                "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return int(code)


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), sys.argv[2:]))
