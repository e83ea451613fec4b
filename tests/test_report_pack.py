"""The evidence pack end to end from the shipped assets: plan -> pack comparing the GRPO- and FairGRPO-trained
tiny FairMedGemmas -> sign -> verify; the HTML opens offline (screenshot), the PDF holds the same content."""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from dataclasses import replace
from pathlib import Path

import pytest

from fairmed_core.cli import main
from fairmed_core.errors import FairMedInputError
from fairmed_core.report.identity import sha256_file
from fairmed_core.report.pack import CHROMIUM, CHROMIUM_ARGS, build_pack
from fairmed_core.report.plan import MetricMargin, SubgroupAtRisk, plan_from_run, plan_hash, read_plan, write_plan
from fairmed_core.report.signoff import DECISION_LOG, sign_pack, verify_pack
from fairmed_core.runs.workspace import ASSETS

ARTIFACTS = Path(__file__).parent / "_artifacts"
HAS_CHROMIUM = Path(CHROMIUM).is_file()
SECTION_IDS = ("cover", "plan", "data-card", "results", "comparison", "robustness", "training", "limitations",
               "checklist", "sign-off")
HEADINGS = ("Verdict summary", "Audit plan", "Data card", "Results", "Model comparison", "Robustness",
            "Training provenance", "Limitations", "Checklist crosswalk", "Sign-off")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Copies of the two shipped trained models (weights and evaluation): tests alter bytes of these only."""
    root = tmp_path_factory.mktemp("models")
    return {name: Path(shutil.copytree(ASSETS / "models" / f"tiny-fairmedgemma-{name}", root / f"tiny-fairmedgemma-{name}"))
            for name in ("grpo", "fairgrpo")}


@pytest.fixture(scope="module")
def plan_path(models, tmp_path_factory) -> Path:
    plan = plan_from_run(models["fairgrpo"] / "evaluation", prepared_by="Dr A. Reviewer")
    plan = replace(plan, intended_use="flag chest X-rays, skin lesions and mammograms for specialist review",
                   population="adults referred for imaging", decision_requested="approve FairGRPO model for a pilot",
                   intersections=True, reviewer_limitations="Reviewed on synthetic data only.")
    return write_plan(plan, tmp_path_factory.mktemp("plan") / "plan.toml")


@pytest.fixture(scope="module")
def pack(models, plan_path, default_manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("packs") / "review"
    # Under review: the FairGRPO-trained model; baseline: the GRPO-trained one, on the same test cases.
    return build_pack(plan_path, models["fairgrpo"] / "evaluation", out, compare=(models["grpo"] / "evaluation",),
                      data=default_manifest, pdf=HAS_CHROMIUM, now=1_780_000_000)


def test_html_is_self_contained_with_plotly_inline_once(pack):
    html = pack.html.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, flags=re.IGNORECASE)
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?https?:", html, flags=re.IGNORECASE)
    assert not re.search(r"@import|url\(\s*[\"']?https?:", html, flags=re.IGNORECASE)
    assert not re.search(r"<(img|iframe|embed|object)[^>]*(src|data)\s*=\s*[\"']?https?:", html, flags=re.IGNORECASE)
    assert html.count("plotly.js v") == 1  # the bundle's banner: embedded exactly once
    assert html.count('class="plotly-graph-div"') >= 6  # planned metrics + comparison + training


def test_sections_come_in_order(pack):
    html = pack.html.read_text(encoding="utf-8")
    positions = [html.index(f'<section id="{section}">') for section in SECTION_IDS]
    assert positions == sorted(positions)


def test_json_holds_hashes_verdicts_and_the_comparison(pack, models, plan_path, default_manifest):
    data = json.loads(pack.json.read_text(encoding="utf-8"))
    assert data["run"]["manifest_sha256"] == sha256_file(default_manifest)
    weights = next(f for f in data["model"]["files"] if f["role"] == "model weights")
    assert weights["sha256"] == sha256_file(models["fairgrpo"] / "model.safetensors")
    assert data["plan"]["sha256"] == plan_hash(read_plan(plan_path)) == data["plan"]["locked_sha256"]
    assert data["plan"]["deviations"] == []
    summary = dict(data["verdict_summary"])
    assert sum(summary.values()) == len(data["group_verdicts"]) > 0
    for verdict in data["group_verdicts"]:
        low, high = verdict["difference_ci_low"], verdict["difference_ci_high"]
        if verdict["verdict"] == "meets the margin":
            assert verdict["band_low"] <= low and high <= verdict["band_high"]
        elif verdict["verdict"] == "fails the margin":
            assert high < verdict["band_low"] or low > verdict["band_high"]
        if verdict["n"] < 30:
            assert verdict["verdict"] == "insufficient evidence"
    assert [c["runs"] for c in data["comparisons"]] == [["tiny-fairmedgemma-grpo", "tiny-fairmedgemma-fairgrpo"]]
    assert {g["outcome"] for g in data["comparisons"][0]["gap_changes"]} <= {"narrowed", "widened", "no clear change",
                                                                             "undefined"}
    assert data["training"]["method"] == "fairgrpo"
    # small-cell guard: intersection cells below the smallest group carry no numbers
    guarded = [c for c in data["intersections"] if c["n"] < 30]
    assert guarded and all(c["estimate"] is None and c["guard"] for c in guarded)
    assert {c["item"] for c in data["checklist"]} >= {"3c", "14", "15", "20b", "23a", "25", "26", "36", "37", "38", "39"}
    # The chest X-ray source where the model finds almost nothing, and pooled gaps made by the mix of sources,
    # are named in the limitations (issue 15's reading, carried into the pack).
    limitations = " ".join(data["limitations"])
    assert "In the chest X-ray source, the model finds" in limitations and "do not hold within the sources" in limitations
    pooled_sex_recall = next(v for v in data["group_verdicts"] if v["source"] == "ALL" and v["attribute"] == "sex"
                             and v["metric"] == "recall")  # fmt: skip
    assert "pooled over sources, this gap" in pooled_sex_recall["reason"]
    gallery = data["robustness"]["failure_cases"]
    assert gallery and all(c["truth"] != c["answer"] for c in gallery)
    assert all(c["image_data_uri"].startswith("data:image/png;base64,") for c in gallery)


@pytest.mark.browser
@pytest.mark.skipif(not HAS_CHROMIUM, reason="Debian chromium is not installed")
def test_html_renders_offline_in_chromium(pack):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1100, "height": 1600})
            requests = []
            page = context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(pack.html.as_uri())
            page.wait_for_function("() => [...document.querySelectorAll('.plotly-graph-div')]"
                                   ".every(d => d.querySelector('.main-svg'))", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "evidence_pack_cover.png"))
            page.evaluate("document.getElementById('results').scrollIntoView()")
            page.screenshot(path=str(ARTIFACTS / "evidence_pack_results.png"))
            assert page.locator(".plotly-graph-div .main-svg").count() >= 6
        finally:
            browser.close()
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


@pytest.mark.skipif(not HAS_CHROMIUM, reason="Debian chromium is not installed")
def test_pdf_holds_the_sections_verdicts_and_hashes(pack, models):
    from pypdf import PdfReader

    text = "\n".join(page.extract_text() for page in PdfReader(pack.pdf).pages)
    text = unicodedata.normalize("NFKC", text)  # chromium sets "ff"/"fi" as ligatures
    for heading in HEADINGS:
        assert heading in text, heading
    for verdict in ("meets the margin", "fails the margin", "insufficient evidence"):
        assert verdict in text
    flat = re.sub(r"\s+", "", text)
    data = json.loads(pack.json.read_text(encoding="utf-8"))
    assert sha256_file(models["fairgrpo"] / "model.safetensors") in flat
    assert "tiny-fairmedgemma-fairgrpo against tiny-fairmedgemma-grpo" in text
    assert data["plan"]["sha256"] in flat


def test_sign_then_verify_and_one_altered_weight_byte_fails(pack, models, tmp_path):
    folder = Path(shutil.copytree(pack.folder, tmp_path / "pack"))
    entry = sign_pack(folder, reviewers=["Dr A", "Dr B"], decision="approve with conditions",
                      conditions="adults only; re-audit after 3 months", date="2026-12-03")
    assert entry["pack_sha256"] == sha256_file(folder / "manifest.json")
    sign_pack(folder, reviewers=["Dr C"], decision="approve")
    first_lines = (folder / DECISION_LOG).read_text().splitlines()
    assert len(first_lines) == 2
    assert verify_pack(folder).ok and verify_pack(folder).decisions == 2
    weights = models["fairgrpo"] / "model.safetensors"
    original = weights.read_bytes()
    try:
        altered = bytearray(original)
        altered[len(altered) // 2] ^= 0x01
        weights.write_bytes(bytes(altered))
        result = verify_pack(folder)
        assert not result.ok
        assert [Path(f.path).name for f in result.files if f.status != "unchanged"] == ["model.safetensors"]
        assert main(["report", "verify", str(folder)]) == 2
        with pytest.raises(FairMedInputError, match="does not verify"):
            sign_pack(folder, reviewers=["Dr D"], decision="reject")
    finally:
        weights.write_bytes(original)
    assert verify_pack(folder).ok
    assert (folder / DECISION_LOG).read_text().splitlines() == first_lines  # never rewritten


def test_rewriting_an_earlier_decision_breaks_the_chain(pack, tmp_path):
    folder = Path(shutil.copytree(pack.folder, tmp_path / "pack"))
    sign_pack(folder, reviewers=["Dr A"], decision="reject")
    sign_pack(folder, reviewers=["Dr B"], decision="approve")
    lines = (folder / DECISION_LOG).read_text().splitlines()
    (folder / DECISION_LOG).write_text(lines[0].replace("reject", "approve") + "\n" + lines[1] + "\n")
    problems = verify_pack(folder).problems()
    assert problems == [f"{DECISION_LOG} line 2: the line before it was changed or removed (the chain of entry "
                        "hashes is broken)"]
    (folder / "pack.html").write_text("edited")
    assert any("pack.html: changed" in p for p in verify_pack(folder).problems())


def test_sign_refuses_bad_decisions(pack, tmp_path):
    folder = Path(shutil.copytree(pack.folder, tmp_path / "pack"))
    with pytest.raises(FairMedInputError, match="unknown decision"):
        sign_pack(folder, reviewers=["Dr A"], decision="maybe")
    with pytest.raises(FairMedInputError, match="must state the conditions"):
        sign_pack(folder, reviewers=["Dr A"], decision="approve with conditions")
    with pytest.raises(FairMedInputError, match="at least one reviewer"):
        sign_pack(folder, reviewers=[" "], decision="approve")
    with pytest.raises(FairMedInputError, match="YYYY-MM-DD"):
        sign_pack(folder, reviewers=["Dr A"], decision="approve", date="3rd of May")
    assert not (folder / DECISION_LOG).exists()


def test_a_plan_edited_after_lock_is_reported_as_a_deviation(pack, models, plan_path, tmp_path):
    edited = tmp_path / "plan.toml"
    shutil.copy(plan_path, edited)
    shutil.copy(plan_path.with_name(plan_path.name + ".lock.json"), tmp_path / "plan.toml.lock.json")
    plan = read_plan(edited)
    write_plan(replace(plan, min_group_size=50,
                       subgroups=(*plan.subgroups[:2], SubgroupAtRisk("skin_tone", "edited after lock"))),
               edited, overwrite=True)
    files = build_pack(edited, models["grpo"] / "evaluation", tmp_path / "pack", pdf=False)
    data = json.loads(files.json.read_text())
    fields = {d["field"] for d in data["plan"]["deviations"]}
    assert fields == {"min_group_size", "subgroups[skin_tone].why"}
    assert "Deviations from the locked plan (2)" in files.html.read_text()


def test_bad_input_is_refused_and_nothing_is_written(models, tmp_path):
    plan_path = write_plan(plan_from_run(models["grpo"] / "evaluation"), tmp_path / "fresh-plan.json")
    other = Path(shutil.copytree(models["fairgrpo"] / "evaluation", tmp_path / "other"))
    table = (other / "predictions.csv").read_text().replace("synth_cxr-00000,", "synth_cxr-99999,", 1)
    (other / "predictions.csv").write_text(table)
    out = tmp_path / "pack"
    with pytest.raises(FairMedInputError, match="same cases") as error:
        build_pack(plan_path, models["grpo"] / "evaluation", out, compare=(other,), pdf=False)
    assert "of 'other' are not in 'tiny-fairmedgemma-grpo': synth_cxr-99999" in str(error.value)
    assert "of 'tiny-fairmedgemma-grpo' are not in 'other': synth_cxr-00000" in str(error.value)
    assert not out.exists() and not list(tmp_path.glob(".pack*"))
    assert not plan_path.with_name("fresh-plan.json.lock.json").exists()  # a refused build locks nothing
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FairMedInputError, match="not empty"):
        build_pack(plan_path, models["grpo"] / "evaluation", out, pdf=False)
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_plan_and_report_commands(models, tmp_path, capsys):
    run = str(models["grpo"] / "evaluation")
    plan = tmp_path / "plan.json"
    assert main(["plan", "init", "--run", run, "--out", str(plan)]) == 0
    data = json.loads(plan.read_text())
    data["metrics"][0]["metric"] = "auroc"  # the run has no score column
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["report", "build", "--plan", str(bad), "--run", run, "--out", str(tmp_path / "p"), "--no-pdf"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "metrics[0].metric" in error[0] and "auroc" in error[0] and "bad.json" in error[0]
    assert main(["report", "build", "--plan", str(plan), "--run", run, "--out", str(tmp_path / "p"), "--no-pdf"]) == 0
    assert main(["report", "sign", str(tmp_path / "p"), "--reviewer", "Dr A", "--decision", "approve"]) == 0
    assert main(["report", "verify", str(tmp_path / "p")]) == 0
    assert "chain intact" in capsys.readouterr().out


def test_a_counterfactual_run_fills_the_robustness_section(models, plan_path, tmp_path):
    run = tmp_path / "cf"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "counterfactual", "attribute": "sex"}))
    row = {"attribute": "factual_group", "group": "F", "n_pairs": 40, "flips": 6, "flip_rate": 0.15,
           "ci_low": 0.07, "ci_high": 0.29, "p_value_holm": 0.03}
    (run / "tests.json").write_text(json.dumps({  # the fields of a tests.json the report reads, and those it must have
        "attribute": "sex", "n_cases": 40, "n_pairs": 40, "n_valid_pairs": 30, "flips": {"n_pairs": 40, "rows": [row]},
        "flips_valid_pairs": {"n_pairs": 30, "rows": [{**row, "n_pairs": 30, "flips": 3, "flip_rate": 0.1}]},
        "ci_test": {"ran": True, "p_value": 0.2}, "validity": {}}))
    shutil.copy(plan_path, tmp_path / "plan.toml")
    files = build_pack(tmp_path / "plan.toml", models["fairgrpo"] / "evaluation", tmp_path / "pack",
                       counterfactual=run, pdf=False)
    data = json.loads(files.json.read_text())
    flips = data["robustness"]["flips"]
    assert [(f["pairs"], f["flips"]) for f in flips] == [("all pairs", 6), ("valid pairs", 3)]
    assert "30 pass the validity checks (75.0%)" in files.html.read_text()
    assert verify_pack(files.folder).ok
    (run / "tests.json").write_text("{}")
    assert any("counterfactual run" in p and "tests.json: changed" in p for p in verify_pack(files.folder).problems())
    (run / "run.json").write_text(json.dumps({"kind": "evaluation"}))
    with pytest.raises(FairMedInputError, match="not a counterfactual run"):
        build_pack(tmp_path / "plan.toml", models["fairgrpo"] / "evaluation", tmp_path / "pack2", counterfactual=run,
                   pdf=False)


def test_a_run_with_scores_can_plan_auroc_and_calibration(models, tmp_path):
    import numpy as np
    import pandas as pd

    run = Path(shutil.copytree(models["grpo"] / "evaluation", tmp_path / "scored"))
    table = pd.read_csv(run / "predictions.csv", keep_default_na=False)
    rng = np.random.default_rng(0)
    table["score"] = np.clip(np.where(table["y_pred"] == "yes", 0.7, 0.3) + rng.normal(0, 0.15, len(table)), 0, 1)
    table.to_csv(run / "predictions.csv", index=False)
    plan = plan_from_run(run)
    plan = replace(plan, metrics=(*plan.metrics, MetricMargin(metric="auroc", max_difference=0.05),
                                  MetricMargin(metric="ece", max_difference=0.05)))
    files = build_pack(write_plan(plan, tmp_path / "plan.json"), run, tmp_path / "pack", pdf=False)
    data = json.loads(files.json.read_text())
    planned = {v["metric"] for v in data["group_verdicts"]}
    assert {"auroc", "ece"} <= planned
