"""Gather the evidence of a review: plan and lock, identities, data card, audit results and verdicts, the
comparison, robustness, training provenance, limitations and the checklist, as one frozen value.

This is the content of the evidence pack; ``pack.py`` renders it (HTML, PDF, JSON). Nothing here writes files
except the plan lock, which records that results were computed against the plan.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import norm

from fairmed_core.counterfactual.records import FlipSummary, read_counterfactual_run
from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import (
    FORMAT_FAILURE,
    MISSING_GROUP,
    AuditResult,
    GapEstimate,
    PredictionColumns,
    audit,
    near_constant_sources,
    one_answer_sources,
    pooled_gap_checks,
)
from fairmed_core.plain import json_safe
from fairmed_core.report.checklist import ChecklistItem, checklist_crosswalk
from fairmed_core.report.comparison import COMPARABLE_METRICS, Comparison, compare_runs
from fairmed_core.report.identity import (
    FileRecord,
    ModelIdentity,
    case_ids_sha256,
    file_record,
    model_identity,
    run_file_records,
    sha256_file,
)
from fairmed_core.report.plan import (
    HIGHER_IS_BETTER,
    AuditPlan,
    PlanDeviation,
    check_plan_against_run,
    lock_plan,
    plan_deviations,
    plan_hash,
    read_lock,
    read_plan,
)
from fairmed_core.report.verdicts import GapVerdict, GroupVerdict, verdict_counts, verdicts_from_audit
from fairmed_core.runs.eval_store import EvaluationRecord, read_evaluation
from fairmed_core.runs.workspace import REPO_ROOT

__all__ = ["Evidence", "gather_evidence"]

GALLERY_SIZE = 6


@dataclass(frozen=True)
class RunIdentity:
    """An evaluation run: its folder, what run.json says, and hashes of its files and case ids."""

    name: str
    folder: str
    model: str
    dataset: str
    split: str
    n_cases: int
    manifest_root: str
    manifest_sha256: str
    case_ids_sha256: str
    files: tuple[FileRecord, ...]


@dataclass(frozen=True)
class PlanRecord:
    """The plan as used, its hash and file, the lock in force and any deviations from the locked plan."""

    plan: AuditPlan
    path: str
    sha256: str
    file: FileRecord
    locked_sha256: str
    locked_utc: str
    unchanged_since_lock: bool
    deviations: tuple[PlanDeviation, ...]


@dataclass(frozen=True)
class DataCardRow:
    source: str
    attribute: str
    group: str
    cases: int
    positives: int
    share_of_source: float


@dataclass(frozen=True)
class GroupResult:
    """One metric of one group with its interval; ``planned`` False marks an exploratory (not pre-specified) row."""

    source: str
    attribute: str
    group: str
    n: int
    events: int
    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    method: str
    planned: bool
    small_group_reason: str
    undefined_reason: str


@dataclass(frozen=True)
class IntersectionCell:
    """A cell of the intersection of the planned attributes; below the smallest group its numbers are withheld."""

    source: str
    attribute: str
    cell: str
    n: int
    events: int
    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    guard: str


@dataclass(frozen=True)
class FormatFailureRow:
    source: str
    attribute: str
    group: str
    n: int
    failures: int
    rate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class FlipRow:
    """Counterfactual flip rate of one group, on all pairs or on valid pairs only."""

    pairs: str
    attribute: str
    group: str
    n_pairs: int
    flips: int
    flip_rate: float
    ci_low: float
    ci_high: float
    p_value_holm: float


@dataclass(frozen=True)
class FailureCase:
    case_id: str
    source: str
    truth: str
    answer: str
    reasoning: str
    image_data_uri: str


@dataclass(frozen=True)
class Robustness:
    counterfactual_folder: str
    counterfactual_attribute: str
    n_pairs: int
    n_valid_pairs: int
    flips: tuple[FlipRow, ...]
    ci_test_p_value: float
    worst_group: str
    worst_group_reason: str
    failure_cases: tuple[FailureCase, ...]
    images_note: str


@dataclass(frozen=True)
class TrainingProvenance:
    method: str
    steps: int
    train_time_s: float
    test_accuracy: float
    settings: tuple[tuple[str, str], ...]
    curves: tuple[tuple[int, str, str, float], ...]  # (step, source, attribute, sigma F1)
    folder: str


@dataclass(frozen=True)
class Evidence:
    """Everything the evidence pack shows, in the order of its sections."""

    title: str
    created_utc: str
    prepared_by: str
    model: ModelIdentity
    run: RunIdentity
    compared_runs: tuple[RunIdentity, ...]
    plan: PlanRecord
    settings_text: str
    data_card: tuple[DataCardRow, ...]
    missing_demographics: tuple[tuple[str, str, int, int], ...]  # (source, attribute, missing, cases)
    results: tuple[GroupResult, ...]
    group_verdicts: tuple[GroupVerdict, ...]
    gap_verdicts: tuple[GapVerdict, ...]
    pairwise_gaps: tuple[GapEstimate, ...]
    intersections: tuple[IntersectionCell, ...]
    format_failures: tuple[FormatFailureRow, ...]
    comparisons: tuple[Comparison, ...]
    robustness: Robustness
    training: TrainingProvenance | None
    limitations: tuple[str, ...]
    reviewer_limitations: str
    checklist: tuple[ChecklistItem, ...]
    verdict_summary: tuple[tuple[str, int], ...]
    gap_verdict_summary: tuple[tuple[str, int], ...]

    def to_json_dict(self) -> dict[str, Any]:
        """The evidence as JSON-ready data (NaN becomes null); images stay as data URIs."""
        return json_safe(asdict(self))


def _run_identity(run_dir: Path, record: EvaluationRecord, frame: pd.DataFrame, name: str,
                  manifest: Path | None = None) -> RunIdentity:
    return RunIdentity(name=name, folder=str(run_dir.resolve()), model=record.model,
                       dataset=record.dataset, split=record.split or "all",
                       n_cases=len(frame), manifest_root=record.manifest_root or "",
                       manifest_sha256=sha256_file(manifest) if manifest else "",
                       case_ids_sha256=case_ids_sha256(frame["case_id"]) if "case_id" in frame else "",
                       files=run_file_records(run_dir))


def _run_name(run_dir: Path) -> str:
    """A shipped model's evaluation is named by its model folder; other runs by their folder."""
    return run_dir.parent.name if run_dir.name == "evaluation" else run_dir.name


def _read_run(run_dir: Path) -> tuple[EvaluationRecord, pd.DataFrame]:
    run = read_evaluation(run_dir)
    try:
        frame = pd.read_csv(run.predictions_path, dtype={"case_id": str}, keep_default_na=False,
                            na_values={"y_true": [""], "y_pred": [""]})
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise FairMedInputError(f"unreadable predictions table: {error}", source=str(run.predictions_path)) from error
    for column in ("case_id", "y_true", "y_pred"):
        if column not in frame.columns:
            raise FairMedInputError("predictions table has no such column", source=str(run.predictions_path),
                                    column=column)
    return run.record, frame


def _wilson(failures: int, n: int, confidence: float) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    z = norm.ppf(1 - (1 - confidence) / 2)
    p = failures / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _groups_of(frame: pd.DataFrame, attribute: str) -> pd.Series:
    values = frame[attribute].astype("string").fillna(MISSING_GROUP)
    return values.where(values != "", MISSING_GROUP)


def _scopes(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    sources = sorted(frame["source"].astype(str).unique()) if "source" in frame else []
    scopes = [(s, frame[frame["source"].astype(str) == s]) for s in sources]
    return scopes + [("ALL", frame)] if len(scopes) != 1 else scopes


def _data_card(frame: pd.DataFrame, attributes, positive: str):
    rows, missing = [], []
    for scope, part in _scopes(frame):
        truth = part["y_true"].astype(str) == positive
        for attribute in attributes:
            groups = _groups_of(part, attribute)
            for group, index in part.groupby(groups).groups.items():
                rows.append(DataCardRow(scope, attribute, str(group), len(index), int(truth.loc[index].sum()),
                                        len(index) / max(len(part), 1)))
            missing.append((scope, attribute, int((groups == MISSING_GROUP).sum()), len(part)))
    return tuple(rows), tuple(missing)


def _format_failures(frame: pd.DataFrame, attributes, confidence: float) -> tuple[FormatFailureRow, ...]:
    failed = frame["y_pred"].astype(str) == FORMAT_FAILURE
    if "format_ok" in frame.columns:  # runs written before the marker existed keep the flag only
        failed |= ~frame["format_ok"].astype(str).str.lower().isin(["true", "1"])
    elif not failed.any():
        return ()
    rows = []
    for scope, part in _scopes(frame):
        for attribute in attributes:
            for group, index in part.groupby(_groups_of(part, attribute)).groups.items():
                k, n = int(failed.loc[index].sum()), len(index)
                low, high = _wilson(k, n, confidence)
                rows.append(FormatFailureRow(scope, attribute, str(group), n, k, k / n if n else math.nan, low, high))
    return tuple(rows)


_METHOD_LABELS = {"wilson": "Wilson score", "clopper-pearson": "Clopper-Pearson exact", "bootstrap": "percentile bootstrap"}


def _results(result: AuditResult, plan: AuditPlan) -> tuple[GroupResult, ...]:
    rows = []
    for g in result.groups:
        if g.attribute != "overall" and g.attribute not in plan.attributes:
            continue
        rows.append(GroupResult(
            source=g.source, attribute=g.attribute, group=g.group, n=g.n, events=g.n_positive, metric=g.metric,
            estimate=g.estimate, ci_low=g.ci_low, ci_high=g.ci_high,
            method=f"{result.settings.confidence:.0%} "
                   + _METHOD_LABELS.get(g.interval_method, g.interval_method or "percentile bootstrap"), planned=g.metric in plan.metric_names,
            small_group_reason=g.small_group_reason, undefined_reason=g.undefined_reason))
    return tuple(rows)


def _intersections(result: AuditResult | None, plan: AuditPlan) -> tuple[IntersectionCell, ...]:
    if result is None:
        return ()
    cells = []
    for g in result.groups:
        if " x " not in g.attribute or g.metric not in plan.metric_names or g.n == 0:
            continue
        guard = ""
        if g.n < plan.min_group_size:
            guard = f"n = {g.n} < {plan.min_group_size}: numbers withheld"
        cells.append(IntersectionCell(
            source=g.source, attribute=g.attribute, cell=g.group, n=g.n, events=g.n_positive, metric=g.metric,
            estimate=math.nan if guard else g.estimate, ci_low=math.nan if guard else g.ci_low,
            ci_high=math.nan if guard else g.ci_high, guard=guard))
    return tuple(cells)


def _flip_rows(flips: FlipSummary, label: str) -> list[FlipRow]:
    def number(value) -> float:
        return math.nan if value is None else float(value)

    return [FlipRow(pairs=label, attribute=row.attribute, group=row.group, n_pairs=row.n_pairs, flips=row.flips,
                    flip_rate=number(row.flip_rate), ci_low=number(row.ci_low), ci_high=number(row.ci_high),
                    p_value_holm=number(row.p_value_holm)) for row in flips.rows]


def _counterfactual(folder: Path | None) -> tuple[str, str, int, int, tuple[FlipRow, ...], float]:
    if folder is None:
        return "", "", 0, 0, (), math.nan
    tests, _ = read_counterfactual_run(folder)
    flips = _flip_rows(tests.flips, "all pairs") + _flip_rows(tests.flips_valid_pairs, "valid pairs")
    p = tests.ci_test.p_value
    return (str(folder.resolve()), tests.attribute, tests.n_pairs, tests.n_valid_pairs, tuple(flips),
            math.nan if p is None else float(p))


def _find_manifest(record: EvaluationRecord, data: Path | None) -> Path | None:
    """``data`` when given, else the run's recorded dataset manifest if it is on this machine."""
    candidates = [data] if data else []
    root = record.manifest_root
    if root:
        for base in (Path.cwd(), REPO_ROOT):
            candidates.append((base / root / "manifest.jsonl") if not Path(root).is_absolute()
                              else Path(root) / "manifest.jsonl")
    return next((Path(p) for p in candidates if p and Path(p).is_file()), None)


def _image_lookup(manifest: Path | None):
    """A function case_id -> PNG data URI ("" when unknown) from the dataset manifest, and a note."""
    if manifest is None:
        return None, "images not available: the run's dataset manifest is not on this machine (give --data)"
    from fairmed_core.data import read_manifest

    dataset = read_manifest(manifest)

    def lookup(case_id: str) -> str:
        try:
            image = dataset.load_image(case_id)
        except (FairMedInputError, OSError):
            return ""
        image.thumbnail((128, 128))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")

    return lookup, f"images from {manifest}"


def _worst_group(result: AuditResult, plan: AuditPlan) -> tuple[str, str, str, str]:
    """(source, attribute, group, why) of the group with the worst value of the first planned metric among
    groups large enough to support a claim."""
    metric = plan.metrics[0].metric
    higher = metric in HIGHER_IS_BETTER
    scope = "ALL" if "ALL" in result.settings.sources else result.settings.sources[0]
    candidates = [g for g in result.groups if g.metric == metric and g.attribute in plan.attributes
                  and g.group != MISSING_GROUP and g.n >= max(plan.min_group_size, 1)
                  and g.source == scope and math.isfinite(g.estimate)]
    if not candidates:
        return scope, "", "", f"no group of at least {plan.min_group_size} cases has a defined {metric}"
    worst = min(candidates, key=lambda g: g.estimate if higher else -g.estimate)
    why = (f"{'lowest' if higher else 'highest'} {metric} ({worst.estimate:.3f}, n = {worst.n}) among groups of "
           f"at least {plan.min_group_size} cases, source {scope}")
    return scope, worst.attribute, worst.group, why


def _training(run_dir: Path, attributes) -> TrainingProvenance | None:
    folder = run_dir.parent / "training" if run_dir.name == "evaluation" else run_dir / "training"
    record = folder / "training.json"
    if not record.is_file():
        return None
    try:
        summary = json.loads(record.read_text(encoding="utf-8"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8")) if (folder / "config.json").is_file() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FairMedInputError(f"unreadable training record ({error})", source=str(folder)) from error
    job = config.get("job", {}) if isinstance(config, dict) else {}
    settings = [("base model", str(config.get("model_dir", "?"))), ("dataset", str(config.get("dataset", "?")))]
    settings += [(str(k), json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in job.items()]
    curves = []
    metrics_file = folder / "metrics.jsonl"
    if metrics_file.is_file():
        for line in metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("kind") != "eval":
                continue
            for row in entry.get("summary") or []:
                value = row.get("sigma_f1")
                if row.get("attribute") in attributes and value is not None:
                    curves.append((int(entry.get("step", 0)), str(row.get("source")), str(row["attribute"]),
                                   float(value)))
    return TrainingProvenance(method=str(summary.get("method", "?")), steps=int(summary.get("steps") or 0),
                              train_time_s=float(summary.get("train_time_s") or math.nan),
                              test_accuracy=float(summary.get("test_accuracy") or math.nan),
                              settings=tuple(settings), curves=tuple(curves), folder=str(folder.resolve()))


def plan_metric_names(plan: AuditPlan) -> set[str]:
    """The metrics the plan names (those the pack judges)."""
    return {m.metric for m in plan.metrics}


def _limitations(evidence_parts: dict, plan: AuditPlan, frame: pd.DataFrame, record: EvaluationRecord,
                 result: AuditResult | None = None) -> tuple[str, ...]:
    notes = []
    small = sorted({(r.source, r.attribute, r.group, r.cases) for r in evidence_parts["data_card"]
                    if 0 < r.cases < plan.min_group_size and r.group != MISSING_GROUP})
    if small:
        listed = ", ".join(f"{a} {g} in {s} (n = {n})" for s, a, g, n in small[:8])
        more = f" and {len(small) - 8} more" if len(small) > 8 else ""
        notes.append(f"{len(small)} group(s) have fewer than the plan's {plan.min_group_size} cases, so no claim "
                     f"is made about them: {listed}{more}.")
    empty = sorted({(r.source, r.attribute) for r in evidence_parts["data_card"]
                    if r.group == MISSING_GROUP and r.share_of_source == 1.0})
    if empty:
        notes.append("No demographic data at all for " + ", ".join(f"{a} in {s}" for s, a in empty) + ".")
    for source, attribute, missing, cases in evidence_parts["missing"]:
        if 0 < missing < cases and missing / cases >= 0.05 and source == "ALL":
            notes.append(f"{missing / cases:.0%} of cases ({missing} of {cases}) have no {attribute}; they are "
                         "reported as UNK and kept out of gaps, and may differ from those with a recorded value.")
    for one in one_answer_sources(frame, "y_pred", "source" if "source" in frame else None):
        notes.append(f"{one.describe()}: its rate gaps are 0 because it tells no case apart, not because it is fair.")
    if result is not None:
        for near in near_constant_sources(result):
            notes.append(f"{near.describe()}: ratio-based verdicts there compare near-zero rates and say little; the "
                         "finding is that the model does not tell cases apart in that source.")
        mixed = [c for c in pooled_gap_checks(result) if c.reading not in ("persists within sources", "no clear gap")
                 and c.metric in plan_metric_names(plan)]
        if mixed:
            listed = "; ".join(f"{c.metric} {c.attribute} {c.group_a} vs {c.group_b}: {c.reading}" for c in mixed[:6])
            notes.append(f"{len(mixed)} pooled gap(s) (source ALL) do not hold within the sources, so read them per "
                         f"source: {listed}{' ...' if len(mixed) > 6 else ''}. A pooled verdict on them reflects the "
                         "mix of sources, not the model (source-standardised check, fairness.pooled_gap_checks).")
    failures = [r for r in evidence_parts["format_failures"] if r.source == "ALL" and r.failures]
    if failures:
        notes.append("Some answers could not be parsed (format failures); they are scored as wrong answers.")
    if record.dataset.startswith("synth"):
        notes.append(f"The data ({record.dataset}) are synthetic: they test the review, not the model's "
                     "clinical performance on real patients.")
    if record.split not in (None, "test"):
        notes.append(f"The evaluation used the {record.split!r} split, not a held-out test split.")
    if evidence_parts["deviations"]:
        notes.append(f"The plan was changed after it was locked ({len(evidence_parts['deviations'])} field(s)); "
                     "results for changed fields are not pre-specified.")
    notes.append("Verdicts use the plan's bands for differences to the reference group; a ratio band is read at "
                 "the reference group's estimate. The minimum detectable gap is a normal approximation at 80% power.")
    return tuple(notes)


def gather_evidence(plan_path: str | Path, run_dir: str | Path, *, compare: tuple[str | Path, ...] = (),
                    counterfactual: str | Path | None = None, data: str | Path | None = None,
                    prepared_by: str = "", now: float | None = None, lock: bool = True) -> Evidence:
    """Check the plan against the run, lock it (first time only), audit the run with the plan's settings,
    judge every planned group and gap, compare with ``compare`` runs, and collect the rest of the pack."""
    plan_path, run_dir = Path(plan_path), Path(run_dir)
    plan = read_plan(plan_path)
    check_plan_against_run(plan, run_dir, plan_source=str(plan_path))
    current_hash = plan_hash(plan)
    record, frame = _read_run(run_dir)
    positive = str(record.positive_label or "yes")
    attributes = list(plan.attributes)
    references = {s.attribute: s.reference_group for s in plan.subgroups if s.reference_group}
    # AUROC and ECE (calibration per group) need the model's score, when the run stored one.
    settings = dict(columns=PredictionColumns.model_run(attributes, score="score" in frame.columns),
                    positive_label=positive, metrics=list(dict.fromkeys([*plan.metric_names, *COMPARABLE_METRICS])),
                    n_boot=plan.n_boot, confidence=plan.confidence, correction=plan.correction,
                    min_group_size=plan.min_group_size, seed=plan.seed, reference_groups=references or None)
    result = audit(frame, **settings)
    crossed = audit(frame, **{**settings, "intersect": True, "reference_groups": None}) \
        if plan.intersections and len(attributes) >= 2 else None
    group_verdicts, gap_verdicts = verdicts_from_audit(result, plan)
    data_card, missing = _data_card(frame, attributes, positive)
    format_failures = _format_failures(frame, attributes, plan.confidence)

    # The model under review is the candidate; each --compare run is a baseline it is measured against.
    compared, comparisons = [], []
    reviewed_name = _run_name(run_dir)
    for other in compare:
        other = Path(other)
        other_info, other_frame = _read_run(other)
        name = _run_name(other)
        name = name if name != reviewed_name else f"{name} ({other})"
        compared.append(_run_identity(other, other_info, other_frame, name))
        comparisons.append(compare_runs(
            [other_frame, frame], [name, reviewed_name], attributes=attributes,
            metrics=[m for m in plan.metric_names if m in COMPARABLE_METRICS], positive_label=positive,
            n_boot=plan.n_boot, confidence=plan.confidence, seed=plan.seed))

    manifest = _find_manifest(record, Path(data) if data else None)
    folder, cf_attribute, n_pairs, n_valid, flips, ci_p = _counterfactual(Path(counterfactual) if counterfactual else None)
    scope, worst_attribute, worst_group, worst_why = _worst_group(result, plan)
    failure_cases, images_note = [], ""
    if worst_attribute:
        rows = frame if scope == "ALL" else frame[frame["source"].astype(str) == scope]
        rows = rows[(_groups_of(rows, worst_attribute) == worst_group)
                    & (rows["y_true"].astype(str) != rows["y_pred"].astype(str))]
        rows = rows.sort_values("case_id").head(GALLERY_SIZE)
        lookup, images_note = _image_lookup(manifest)
        for _, row in rows.iterrows():
            failure_cases.append(FailureCase(
                case_id=str(row["case_id"]), source=str(row.get("source", "")), truth=str(row["y_true"]),
                answer=str(row.get("answer", row["y_pred"])), reasoning=str(row.get("reasoning", "")),
                image_data_uri=lookup(str(row["case_id"])) if lookup else ""))
    robustness = Robustness(
        counterfactual_folder=folder, counterfactual_attribute=cf_attribute, n_pairs=n_pairs, n_valid_pairs=n_valid,
        flips=flips, ci_test_p_value=ci_p,
        worst_group=f"{worst_attribute} = {worst_group}" if worst_attribute else "",
        worst_group_reason=worst_why, failure_cases=tuple(failure_cases), images_note=images_note)
    training = _training(run_dir, attributes)
    model = model_identity(run_dir, record)
    # Locked only now that results were computed against the plan: a build refused on bad input locks nothing.
    lock_record = (read_lock(plan_path) or lock_plan(plan_path, now=now)) if lock else read_lock(plan_path)
    deviations = plan_deviations(lock_record.plan, plan) if lock_record else ()
    parts = {"data_card": data_card, "missing": missing, "format_failures": format_failures,
             "deviations": deviations}
    limitations = _limitations(parts, plan, frame, record, result)
    has_images = any(c.image_data_uri for c in failure_cases)
    checklist = checklist_crosswalk(
        every_subgroup_has_reason=all(s.why.strip() for s in plan.subgroups), has_comparison=bool(comparisons),
        has_failure_gallery=bool(failure_cases), has_images=has_images,
        has_reviewer_limitations=bool(plan.reviewer_limitations.strip()),
        has_intended_use=bool(plan.intended_use.strip()) and not plan.intended_use.startswith("("),
        has_counterfactual=bool(flips))
    pairwise = tuple(g for g in result.gaps if g.comparison == "pairwise" and g.metric in plan.metric_names
                     and g.attribute in plan.attributes)
    return Evidence(
        title=f"Evidence pack: {model.name}",
        created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        prepared_by=prepared_by or plan.prepared_by,
        model=model, run=_run_identity(run_dir, record, frame, _run_name(run_dir), manifest), compared_runs=tuple(compared),
        plan=PlanRecord(plan=plan, path=str(plan_path.resolve()), sha256=current_hash,
                        file=file_record(plan_path, "plan"),
                        locked_sha256=lock_record.plan_sha256 if lock_record else "",
                        locked_utc=lock_record.locked_utc if lock_record else "",
                        unchanged_since_lock=bool(lock_record) and lock_record.plan_sha256 == current_hash,
                        deviations=deviations),
        settings_text=f"{result.settings.interval_method}. Resampling: {result.settings.bootstrap}. "
                      f"Tests: {result.settings.tests}", data_card=data_card, missing_demographics=missing,
        results=_results(result, plan), group_verdicts=group_verdicts, gap_verdicts=gap_verdicts,
        pairwise_gaps=pairwise, intersections=_intersections(crossed, plan), format_failures=format_failures,
        comparisons=tuple(comparisons), robustness=robustness, training=training, limitations=limitations,
        reviewer_limitations=plan.reviewer_limitations, checklist=checklist,
        verdict_summary=tuple(verdict_counts(group_verdicts).items()),
        gap_verdict_summary=tuple(verdict_counts(gap_verdicts).items()))

