"""A seeded subset of the fuzz corpus (benchmarks/fuzz_inputs.py) through `fairmed audit`, `fairmed card`,
manifest images, the upload reader and model-folder checks: each case a clean one-line error or a correct
result, in a forked child with a timeout and a memory cap. The harness itself is checked to catch what it
claims to catch."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks import fuzz_inputs
from benchmarks.fuzz_inputs import FuzzCase, generate_corpus, known_open, run_case, run_corpus, subset, summarise

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, RLIMIT_AS and /proc")


def test_the_corpus_is_seeded_and_large_in_every_format():
    corpus = generate_corpus(0)
    assert len(corpus) >= 1000
    assert {case.target for case in corpus} == set(fuzz_inputs.TARGETS)
    names = {name.rsplit(".", 1)[-1] for case in corpus for name, _ in case.files}
    assert {"csv", "tsv", "parquet", "jsonl", "png", "jpg", "dcm", "safetensors", "json"} <= names
    again = generate_corpus(0)
    assert [(c.case_id, c.files) for c in again[:50]] == [(c.case_id, c.files) for c in corpus[:50]]


def test_a_seeded_subset_gives_only_clean_errors_and_correct_results():
    cases = subset(generate_corpus(0), 400, seed=0)
    assert 300 <= len(cases) <= 500
    outcomes = run_corpus(cases, timeout_s=30.0, memory_bytes=2 * 2**30)
    summary = summarise(cases, outcomes)
    assert summary["clean_errors"] > 100 and summary["correct_results"] > 50
    unexplained = [failure for failure in summary["failed"] if known_open(failure[0]) is None]
    assert unexplained == [], unexplained[:10]


def _fake_target(behaviour):
    def run(case, path, scratch):
        return behaviour()
    return run


def test_the_harness_reports_a_hang(monkeypatch):
    import time

    monkeypatch.setattr(fuzz_inputs, "_run_target", _fake_target(lambda: time.sleep(60)))
    outcome = run_case(FuzzCase("fake/hang/0", "upload", (("x", b""),), "x", "either"), timeout_s=1.0)
    assert outcome.kind == "hang" and outcome.failed


def test_the_harness_reports_memory_past_the_cap(monkeypatch):
    monkeypatch.setattr(fuzz_inputs, "_run_target", _fake_target(lambda: (np.ones(2**31 // 8), ("ok", ""))[1]))
    outcome = run_case(FuzzCase("fake/memory/0", "upload", (("x", b""),), "x", "either"), memory_bytes=2**30)
    assert outcome.kind == "memory" and outcome.failed


def test_the_harness_reports_a_traceback_and_a_refused_valid_input(monkeypatch):
    broken = FuzzCase("fake/refused/0", "model_dir", (("config.json", b"{"),), ".", "ok")
    outcome = run_case(broken)
    assert outcome.kind == "refused_valid" and "config.json" in outcome.detail

    from fairmed_core.data import uploads

    def raising(data, name):
        raise KeyError("boom")

    monkeypatch.setattr(uploads, "read_uploaded_image", raising)  # the forked child inherits the patch
    outcome = run_case(FuzzCase("fake/traceback/0", "upload", (("x.png", b"\x89PNG"),), "x.png", "either"))
    assert outcome.kind == "traceback" and "KeyError" in outcome.detail
