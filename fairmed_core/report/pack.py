"""The review-meeting evidence pack: one self-contained HTML file, the same content as PDF, and a JSON.

``build_pack`` gathers the evidence (``evidence.py``), renders it through the jinja2 template in
``templates/`` with plotly figures (plotly.js embedded once, inline: the file opens offline, on a hospital
network without internet), prints the PDF with headless Debian chromium (playwright's ``page.pdf``), and
writes ``manifest.json`` with the SHA-256 of every pack file and every input (plan, run files, model config
and weights) for ``verify``. The pack is written complete into a hidden sibling folder and renamed into place,
so a failed build leaves nothing, and an existing non-empty folder is never written into.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import jinja2
import pandas as pd
import plotly.io as pio
import plotly.offline

from fairmed_core.errors import FairMedInputError
from fairmed_core.report.evidence import Evidence, gather_evidence
from fairmed_core.report.identity import FileRecord, file_record
from fairmed_core.report.plan import plan_to_dict
from fairmed_core.report.verdicts import VERDICT_STATES
from fairmed_core.runs.workspace import atomic_write_json, atomic_write_text
from fairmed_core.viz.audit_figures import METRIC_LABELS
from fairmed_core.viz.report_figures import VERDICT_COLOURS, change_intervals_figure, difference_intervals_figure
from fairmed_core.viz.training_figures import step_lines_figure

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "PACK_FILES", "PackFiles", "build_pack", "html_to_pdf", "render_html"]

PACK_HTML, PACK_PDF, PACK_JSON, PACK_PLAN, MANIFEST = "pack.html", "pack.pdf", "pack.json", "plan.json", "manifest.json"
PACK_FILES = (PACK_HTML, PACK_PDF, PACK_JSON, PACK_PLAN)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
_TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class PackFiles:
    """Where a built pack lies and what it holds."""

    folder: Path
    html: Path
    pdf: Path | None
    json: Path
    manifest: Path
    seconds: dict


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _interval(low, high, digits: int = 3) -> str:
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _p_value(value) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _figure_html(figure, div_id: str) -> str:
    return pio.to_html(figure, full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": False})


def _figures(evidence: Evidence) -> dict[str, list[str]]:
    figures: dict[str, list[str]] = {"verdicts": [], "comparison": [], "training": []}
    plan = evidence.plan.plan
    verdicts = pd.DataFrame([asdict(v) for v in evidence.group_verdicts])
    for index, metric in enumerate(plan.metric_names):
        rows = verdicts[verdicts["metric"] == metric] if not verdicts.empty else verdicts
        if rows.empty:
            continue
        rows = pd.DataFrame({
            "label": rows["source"] + " · " + rows["attribute"] + " " + rows["group"] + " vs " + rows["reference_group"],
            "difference": rows["difference"], "ci_low": rows["difference_ci_low"],
            "ci_high": rows["difference_ci_high"], "band_low": rows["band_low"], "band_high": rows["band_high"],
            "verdict": rows["verdict"]})
        figures["verdicts"].append(_figure_html(difference_intervals_figure(
            rows, title=f"{METRIC_LABELS.get(metric, metric)}: difference to the reference group"), f"verdict-{index}"))
    for index, comparison in enumerate(evidence.comparisons):
        changes = comparison.changes_frame()
        pooled = "ALL" if (changes["source"] == "ALL").any() else changes["source"].iloc[0]
        rows = changes[(changes["source"] == pooled) & (changes["group"] != "UNK")].copy()
        rows["label"] = rows["metric"] + " · " + rows["attribute"] + " " + rows["group"]
        baseline, candidate = comparison.runs[0], comparison.runs[1]
        figures["comparison"].append(_figure_html(change_intervals_figure(
            rows, title=f"{candidate} against {baseline} (source {pooled})", confidence=comparison.confidence),
            f"comparison-{index}"))
    if evidence.training is not None and evidence.training.curves:
        curves = pd.DataFrame(evidence.training.curves, columns=["step", "source", "attribute", "sigma_f1"])
        curves["series"] = curves["source"] + " · " + curves["attribute"]
        figure = step_lines_figure(curves, value="sigma_f1", series="series",
                                   title="Training dynamics: spread of group F1 (sigma F1) on held-out cases",
                                   y_title="sigma F1 (standard deviation of group F1)")
        figure.update_layout(width=760)
        figures["training"].append(_figure_html(figure, "training-0"))
    return figures


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
                                     autoescape=jinja2.select_autoescape(["html", "j2"]),
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(num=_number, ci=_interval, p=_p_value,
                               metric=lambda m: METRIC_LABELS.get(m, m),
                               pct=lambda v: "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%")
    return environment


def render_html(evidence: Evidence) -> str:
    """The evidence as one self-contained HTML page (plotly.js inline once; no external resource)."""
    template = _environment().get_template("pack.html.j2")
    plan = evidence.plan.plan
    intersections = {}
    for cell in evidence.intersections:
        if "UNK" in cell.cell.split(","):
            continue  # a cell with an unknown part is no demographic group; it stays in the JSON
        intersections.setdefault((cell.source, cell.attribute, cell.cell, cell.n, cell.events), {})[cell.metric] = cell
    rows: dict[tuple, list] = {}
    for r in evidence.results:
        key = (r.source, r.attribute, r.group)
        if key not in rows:
            rows[key] = [r.source, r.attribute, r.group, r.n, r.events, r.small_group_reason, {}, {}]
        rows[key][6 if r.planned else 7][r.metric] = r
    sources = {r.source for r in evidence.results}
    return template.render(
        e=evidence, result_rows=[tuple(v) for v in rows.values()],
        pooled_source="ALL" if "ALL" in sources else next(iter(sources), ""), plan=plan, plan_dict=plan_to_dict(plan), figures=_figures(evidence),
        plotly_js=plotly.offline.get_plotlyjs(), verdict_states=VERDICT_STATES, verdict_colours=VERDICT_COLOURS,
        intersections=intersections, planned_metrics=plan.metric_names,
        exploratory_metrics=[m for m in dict.fromkeys(r.metric for r in evidence.results) if m not in plan.metric_names])


def html_to_pdf(html_path: Path, pdf_path: Path, *, timeout_s: float = 120.0) -> Path:
    """Print the HTML file to PDF with headless Debian chromium (A4, backgrounds on), after every plotly
    figure has drawn; the PDF is written atomically."""
    if not Path(CHROMIUM).is_file():
        raise FairMedInputError(f"no chromium at {CHROMIUM} to print the PDF",
                                hint="apt-get install chromium, or build with --no-pdf")
    from playwright.sync_api import sync_playwright

    temporary = pdf_path.with_name(f".{pdf_path.name}.tmp")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(html_path.resolve().as_uri(), wait_until="load", timeout=timeout_s * 1000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))",
                timeout=timeout_s * 1000)
            page.pdf(path=str(temporary), format="A4", print_background=True,
                     margin={"top": "14mm", "bottom": "14mm", "left": "12mm", "right": "12mm"})
        finally:
            browser.close()
    os.replace(temporary, pdf_path)
    return pdf_path


def _manifest(evidence: Evidence, pack_files: list[FileRecord], extra: list[FileRecord]) -> dict:
    inputs = [evidence.plan.file, *evidence.run.files, *evidence.model.files, *extra]
    for run in evidence.compared_runs:
        inputs += list(run.files)
    return {"format": 1, "created_utc": evidence.created_utc, "model": evidence.model.name,
            "plan_sha256": evidence.plan.sha256, "plan_path": evidence.plan.path,
            "pack_files": [asdict(r) | {"path": r.name} for r in pack_files],
            "inputs": [asdict(r) for r in inputs]}


def build_pack(plan_path: str | Path, run_dir: str | Path, out_dir: str | Path, *,
               compare: tuple[str | Path, ...] = (), counterfactual: str | Path | None = None,
               data: str | Path | None = None, prepared_by: str = "", pdf: bool = True,
               now: float | None = None) -> PackFiles:
    """Build the evidence pack into ``out_dir`` (created; refused when it exists and is not empty)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FairMedInputError("the pack folder exists and is not empty; packs are never overwritten",
                                source=str(out), hint="choose a new --out folder")
    seconds = {}
    began = time.perf_counter()
    evidence = gather_evidence(plan_path, run_dir, compare=tuple(compare), counterfactual=counterfactual,
                               data=data, prepared_by=prepared_by, now=now)
    seconds["evidence"] = time.perf_counter() - began
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        began = time.perf_counter()
        html = render_html(evidence)
        atomic_write_text(temporary / PACK_HTML, html)
        atomic_write_json(temporary / PACK_JSON, evidence.to_json_dict())
        atomic_write_json(temporary / PACK_PLAN, {"plan_sha256": evidence.plan.sha256, "plan": plan_to_dict(evidence.plan.plan)})
        seconds["html_json"] = time.perf_counter() - began
        if pdf:
            began = time.perf_counter()
            html_to_pdf(temporary / PACK_HTML, temporary / PACK_PDF)
            seconds["pdf"] = time.perf_counter() - began
        names = [n for n in PACK_FILES if (temporary / n).is_file()]
        records = [file_record(temporary / n, "pack") for n in names]
        extra = []
        lock = Path(evidence.plan.path).with_name(Path(evidence.plan.path).name + ".lock.json")
        if lock.is_file():
            extra.append(file_record(lock, "plan lock"))
        if counterfactual:
            extra += [file_record(p, "counterfactual run") for p in sorted(Path(counterfactual).glob("*.json"))]
        atomic_write_json(temporary / MANIFEST, _manifest(evidence, records, extra))
        if out.exists():
            out.rmdir()  # empty (checked above)
        temporary.rename(out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return PackFiles(folder=out, html=out / PACK_HTML, pdf=(out / PACK_PDF) if pdf else None, json=out / PACK_JSON,
                     manifest=out / MANIFEST, seconds=seconds)
