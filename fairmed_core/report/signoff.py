"""Sign-off and verification of an evidence pack.

``sign`` appends one decision (reviewers, approve / approve with conditions / reject, conditions, date, the
SHA-256 of the pack's manifest) to ``decisions.jsonl`` beside the pack. The log is append-only: each entry
carries the SHA-256 of the line before it, so a rewritten or deleted earlier entry breaks the chain, and
``verify`` says so. ``verify`` recomputes the hash of every file the manifest lists (the pack files, the plan,
the run files, the model config and weights) and names each one that changed or went missing.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from fairmed_core.errors import FairMedInputError
from fairmed_core.report.identity import sha256_file
from fairmed_core.report.pack import MANIFEST

__all__ = ["DECISIONS", "DECISION_LOG", "FileCheck", "Verification", "read_decisions", "sign_pack", "verify_pack"]

DECISIONS = ("approve", "approve with conditions", "reject")
DECISION_LOG = "decisions.jsonl"
_GENESIS = "0" * 64


@dataclass(frozen=True)
class FileCheck:
    """One file of the manifest: unchanged, changed (hash differs) or missing."""

    role: str
    path: str
    status: str
    expected_sha256: str
    found_sha256: str


@dataclass(frozen=True)
class Verification:
    """The result of ``verify``: every file checked, problems in the decision log, and whether all is intact."""

    folder: str
    pack_sha256: str
    files: tuple[FileCheck, ...]
    decision_problems: tuple[str, ...]
    decisions: int

    @property
    def ok(self) -> bool:
        return all(f.status == "unchanged" for f in self.files) and not self.decision_problems

    def problems(self) -> list[str]:
        """One line per changed or missing file and per decision-log problem."""
        lines = [f"{f.role} {f.path}: {f.status}" for f in self.files if f.status != "unchanged"]
        return lines + list(self.decision_problems)


def _manifest(folder: Path) -> tuple[dict, str]:
    path = folder / MANIFEST
    if not path.is_file():
        raise FairMedInputError("not an evidence pack (no manifest.json)", source=str(folder))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FairMedInputError(f"unreadable pack manifest ({error})", source=str(path)) from error
    if not isinstance(data, dict) or "pack_files" not in data or "inputs" not in data:
        raise FairMedInputError("the pack manifest lacks pack_files or inputs", source=str(path))
    return data, sha256_file(path)


def _entries(log: Path) -> list[str]:
    if not log.is_file():
        return []
    return log.read_text(encoding="utf-8").splitlines()


def read_decisions(folder: str | Path) -> list[dict]:
    """The decisions recorded for a pack, oldest first (unreadable lines are skipped; ``verify`` names them)."""
    decisions = []
    for line in _entries(Path(folder) / DECISION_LOG):
        try:
            decisions.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return decisions


def sign_pack(folder: str | Path, *, reviewers: list[str], decision: str, conditions: str = "",
              date: str | None = None) -> dict:
    """Append a decision to the pack's decision log (never rewriting an earlier line) and return the entry.

    The pack must verify first: signing a pack whose files changed since it was built is refused."""
    folder = Path(folder)
    if decision not in DECISIONS:
        raise FairMedInputError(f"unknown decision {decision!r}", hint=f"use one of: {', '.join(DECISIONS)}")
    reviewers = [r.strip() for r in reviewers if r and r.strip()]
    if not reviewers:
        raise FairMedInputError("name at least one reviewer")
    if decision == "approve with conditions" and not conditions.strip():
        raise FairMedInputError("an approval with conditions must state the conditions")
    if date is not None:
        try:
            date = datetime.date.fromisoformat(date).isoformat()
        except ValueError as error:
            raise FairMedInputError(f"date {date!r} is not a date", hint="write it as YYYY-MM-DD") from error
    check = verify_pack(folder)
    if not check.ok:
        raise FairMedInputError("the pack does not verify, so it cannot be signed: " + "; ".join(check.problems()[:3]),
                                source=str(folder))
    log = folder / DECISION_LOG
    lines = _entries(log)
    previous = hashlib.sha256(lines[-1].encode("utf-8")).hexdigest() if lines else _GENESIS
    entry = {"reviewers": reviewers, "decision": decision, "conditions": conditions.strip(),
             "date": date or time.strftime("%Y-%m-%d", time.gmtime()),
             "signed_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "pack_sha256": check.pack_sha256, "previous_entry_sha256": previous}
    line = json.dumps(entry, ensure_ascii=False, sort_keys=True)
    # Append-only: open in append mode and fsync; the earlier lines are never read back into a rewrite.
    with open(log, "a", encoding="utf-8") as stream:
        stream.write(line + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    return entry


def _check_decisions(log: Path, pack_sha256: str) -> tuple[list[str], int]:
    problems = []
    lines = _entries(log)
    previous = _GENESIS
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"{DECISION_LOG} line {number}: not valid JSON")
            previous = hashlib.sha256(line.encode("utf-8")).hexdigest()
            continue
        if entry.get("previous_entry_sha256") != previous:
            problems.append(f"{DECISION_LOG} line {number}: the line before it was changed or removed "
                            "(the chain of entry hashes is broken)")
        if entry.get("pack_sha256") != pack_sha256:
            problems.append(f"{DECISION_LOG} line {number}: signed a different pack "
                            f"(manifest SHA-256 {str(entry.get('pack_sha256'))[:12]}...)")
        previous = hashlib.sha256(line.encode("utf-8")).hexdigest()
    return problems, len(lines)


def verify_pack(folder: str | Path) -> Verification:
    """Recompute the hashes of the pack files and every input the manifest lists; check the decision log."""
    folder = Path(folder)
    manifest, pack_sha256 = _manifest(folder)
    checks = []
    listed = [(r, folder / r["path"]) for r in manifest["pack_files"]]
    listed += [(r, Path(r["path"])) for r in manifest["inputs"]]
    for record, path in listed:
        if not path.is_file():
            status, found = "missing", ""
        else:
            found = sha256_file(path)
            status = "unchanged" if found == record["sha256"] else "changed"
        checks.append(FileCheck(role=str(record.get("role", "")), path=str(path), status=status,
                                expected_sha256=str(record["sha256"]), found_sha256=found))
    problems, count = _check_decisions(folder / DECISION_LOG, pack_sha256)
    return Verification(folder=str(folder), pack_sha256=pack_sha256, files=tuple(checks),
                        decision_problems=tuple(problems), decisions=count)
