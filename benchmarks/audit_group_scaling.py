"""Peak memory and time of ``fairmed audit`` against the number of groups of one attribute.

Each count runs in its own process (peak resident memory from ``getrusage``), on a table of 4 cases per group
(a 400-group table is about 14 KB), with the CLI's default 1,000 resamples.

    python benchmarks/audit_group_scaling.py --groups 25 50 100 200 400
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_CHILD = """
import contextlib, io, json, resource, sys, time
sys.path.insert(0, {root!r})
from fairmed_core.cli import main
started = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
    code = main(["audit", {path!r}, "--label-col", "label", "--pred-col", "pred", "--sensitive", "sex",
                 "--n-boot", {n_boot!r}])
print(json.dumps({{"exit_code": code, "seconds": round(time.perf_counter() - started, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "error": err.getvalue().strip()[:160]}}))
"""


def measure(groups: int, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Audit a table with ``groups`` groups of 4 cases each in a fresh process; its exit code, time, peak RSS."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"groups{groups}.csv"
        rows = [f"{rng.integers(2)},{rng.integers(2)},g{i % groups:04d}" for i in range(4 * groups)]
        path.write_text("label,pred,sex\n" + "\n".join(rows) + "\n")
        code = _CHILD.format(root=str(ROOT), path=str(path), n_boot=str(n_boot))
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return {"groups": groups, "table_kb": round(path.stat().st_size / 1024, 1),
                "wall_s": round(time.perf_counter() - started, 1), **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    for groups in args.groups:
        print(json.dumps(measure(groups, n_boot=args.n_boot)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
