"""The audit plan: what a review will judge a model on, written (and locked) before the results are seen.

A plan is a small versioned file (JSON or TOML) stating the intended use and population, the subgroups at risk
and why, the metrics that matter with an acceptable margin each (a difference and/or a ratio band to the
reference group), the multiple-comparison correction and the smallest group that supports a claim. Its
SHA-256 content hash (of a canonical JSON form, so the same plan hashes the same from JSON or TOML) identifies
it. A lock file beside the plan records that hash when results are first computed against it; a plan edited
after that is a deviation, which the evidence pack lists field by field.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairmed_core.errors import FairMedInputError
from fairmed_core.fairness import METRIC_SPECS, METRICS, SPEC_BY_NAME
from fairmed_core.runs.workspace import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from fairmed_core.runs.eval_store import EvaluationRecord

__all__ = [
    "PLAN_FORMAT_VERSION",
    "AuditPlan",
    "MetricMargin",
    "PlanDeviation",
    "PlanLock",
    "SubgroupAtRisk",
    "check_plan_against_run",
    "lock_path",
    "lock_plan",
    "plan_deviations",
    "plan_from_dict",
    "plan_from_run",
    "plan_hash",
    "plan_to_dict",
    "plan_to_toml",
    "read_lock",
    "read_plan",
    "run_attributes",
    "run_metrics",
    "write_plan",
]

PLAN_FORMAT_VERSION = 1
"""Version of the plan file format (not of one plan: that is ``AuditPlan.version``)."""

HIGHER_IS_BETTER = tuple(spec.name for spec in METRIC_SPECS if spec.higher_is_better)
"""Metrics where a larger value is better for the patient (from the audit's metric table); FPR, FDR and ECE
are error rates, and the selection rate has no better direction."""

DEFAULT_DIFFERENCE = 0.10
DEFAULT_RATIO_BAND = (0.8, 1.25)
_DEFAULT_METRICS = ("recall", "specificity", "accuracy", "f1", "fdr")
_DEFAULT_WHY = {
    "sex": "sex changes anatomy and acquisition (breast tissue, body habitus); one sex is rare in some sources",
    "age_group": "age changes anatomy and prevalence; the youngest and oldest groups are small",
    "skin_tone": "dermatology models are known to miss lesions on darker skin, which is under-represented",
    "site": "acquisition differs between sites (scanner, protocol, population)",
    "race": "access to care and under-representation in training data differ by race",
}


@dataclass(frozen=True)
class SubgroupAtRisk:
    """An attribute whose groups the review compares, why it is at risk, and its reference group.

    ``reference_group`` empty means the largest group of each source (the audit's default).
    """

    attribute: str
    why: str = ""
    reference_group: str = ""


@dataclass(frozen=True)
class MetricMargin:
    """A metric that matters and how far a group may lie from the reference group on it.

    ``max_difference``: |group - reference| must stay within it (on the metric's 0-1 scale; None: not used).
    ``ratio_low``/``ratio_high``: group / reference must stay within the band (None: not used). When both are
    given, a group meets the margin only if it meets both, and fails if it fails either.
    """

    metric: str
    max_difference: float | None = DEFAULT_DIFFERENCE
    ratio_low: float | None = None
    ratio_high: float | None = None
    why: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER

    def describe(self) -> str:
        """The margin in words, e.g. "|difference| <= 0.10 and ratio in [0.80, 1.25]"."""
        parts = []
        if self.max_difference is not None:
            parts.append(f"|difference| <= {self.max_difference:.2f}")
        if self.ratio_low is not None and self.ratio_high is not None:
            parts.append(f"ratio in [{self.ratio_low:.2f}, {self.ratio_high:.2f}]")
        return " and ".join(parts)


@dataclass(frozen=True)
class AuditPlan:
    """Everything a review decides before seeing results (see the module docstring)."""

    model_name: str
    intended_use: str
    population: str
    decision_requested: str
    subgroups: tuple[SubgroupAtRisk, ...]
    metrics: tuple[MetricMargin, ...]
    intersections: bool = False
    correction: str = "holm"
    min_group_size: int = 30
    confidence: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    version: int = 1
    prepared_by: str = ""
    reviewer_limitations: str = ""
    format_version: int = PLAN_FORMAT_VERSION

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(s.attribute for s in self.subgroups)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.metric for m in self.metrics)

    def margin(self, metric: str) -> MetricMargin:
        """The planned margin of ``metric`` (KeyError when the metric is not planned)."""
        for margin in self.metrics:
            if margin.metric == metric:
                return margin
        raise KeyError(metric)


@dataclass(frozen=True)
class PlanLock:
    """The record that results were computed against a plan: its hash, when, and its content then."""

    plan_sha256: str
    locked_utc: str
    plan: AuditPlan


@dataclass(frozen=True)
class PlanDeviation:
    """One field of the plan that differs from the locked plan."""

    field: str
    locked: Any
    current: Any


def plan_to_dict(plan: AuditPlan) -> dict[str, Any]:
    """The plan as plain JSON-ready data (tuples become lists)."""
    return json.loads(json.dumps(asdict(plan)))


def plan_hash(plan: AuditPlan) -> str:
    """SHA-256 of the plan's canonical JSON (sorted keys, no whitespace): the same plan hashes the same from
    JSON or TOML."""
    canonical = json.dumps(plan_to_dict(plan), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _fail(where: str, message: str, source: str | None) -> FairMedInputError:
    return FairMedInputError(f"{where}: {message}", source=source)


def _typed(value: Any, kind: type | tuple[type, ...], where: str, source: str | None) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if kinds == (float,) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is an int in Python, but `true` is never a valid group size or margin.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise _fail(where, f"expected {names}, got {value!r}", source)
    return value


def _optional_number(value: Any, where: str, source: str | None) -> float | None:
    if value is None:
        return None
    number = _typed(value, (int, float), where, source)
    if not math.isfinite(number) or number <= 0:
        raise _fail(where, f"must be a positive number, got {value!r}", source)
    return float(number)


def plan_from_dict(data: Any, *, source: str | None = None) -> AuditPlan:
    """Build and check a plan from parsed JSON/TOML; errors name the field (e.g. ``metrics[2].ratio_low``)."""
    if not isinstance(data, dict):
        raise FairMedInputError("an audit plan must be a JSON object / TOML table", source=source)
    known = {f.name for f in fields(AuditPlan)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise _fail(unknown[0], f"unknown plan field (known: {', '.join(sorted(known))})", source)
    for required in ("model_name", "intended_use", "population", "decision_requested", "subgroups", "metrics"):
        if required not in data:
            raise _fail(required, "missing (every plan states it)", source)
    subgroups = []
    for i, item in enumerate(_typed(data["subgroups"], list, "subgroups", source)):
        where = f"subgroups[{i}]"
        item = _typed(item, dict, where, source)
        extra = sorted(set(item) - {"attribute", "why", "reference_group"})
        if extra or "attribute" not in item:
            raise _fail(f"{where}.{extra[0] if extra else 'attribute'}",
                        "unknown field" if extra else "missing", source)
        subgroups.append(SubgroupAtRisk(
            attribute=_typed(item["attribute"], str, f"{where}.attribute", source),
            why=_typed(item.get("why", ""), str, f"{where}.why", source),
            reference_group=_typed(item.get("reference_group", ""), str, f"{where}.reference_group", source)))
    if not subgroups:
        raise _fail("subgroups", "name at least one attribute to audit", source)
    margins = []
    for i, item in enumerate(_typed(data["metrics"], list, "metrics", source)):
        where = f"metrics[{i}]"
        item = _typed(item, dict, where, source)
        extra = sorted(set(item) - {f.name for f in fields(MetricMargin)})
        if extra or "metric" not in item:
            raise _fail(f"{where}.{extra[0] if extra else 'metric'}",
                        "unknown field" if extra else "missing", source)
        metric = _typed(item["metric"], str, f"{where}.metric", source)
        if metric not in METRICS:
            raise _fail(f"{where}.metric", f"unknown metric {metric!r} (choose from {', '.join(METRICS)})", source)
        margin = MetricMargin(
            metric=metric,
            max_difference=_optional_number(item.get("max_difference"), f"{where}.max_difference", source),
            ratio_low=_optional_number(item.get("ratio_low"), f"{where}.ratio_low", source),
            ratio_high=_optional_number(item.get("ratio_high"), f"{where}.ratio_high", source),
            why=_typed(item.get("why", ""), str, f"{where}.why", source))
        if (margin.ratio_low is None) != (margin.ratio_high is None):
            raise _fail(where, "give both ratio_low and ratio_high, or neither", source)
        if margin.ratio_low is not None and not margin.ratio_low < 1.0 < margin.ratio_high:
            raise _fail(where, f"the ratio band [{margin.ratio_low}, {margin.ratio_high}] must contain 1", source)
        if margin.max_difference is None and margin.ratio_low is None:
            raise _fail(where, "give a max_difference, a ratio band (ratio_low, ratio_high), or both", source)
        margins.append(margin)
    if not margins:
        raise _fail("metrics", "name at least one metric", source)
    duplicates = sorted({m.metric for m in margins if [x.metric for x in margins].count(m.metric) > 1})
    if duplicates:
        raise _fail("metrics", f"metric {duplicates[0]!r} is planned twice", source)
    attributes = [s.attribute for s in subgroups]
    if len(set(attributes)) < len(attributes):
        raise _fail("subgroups", "an attribute is listed twice", source)
    text = {name: _typed(data.get(name, ""), str, name, source)
            for name in ("model_name", "intended_use", "population", "decision_requested", "prepared_by",
                         "reviewer_limitations")}
    correction = _typed(data.get("correction", "holm"), str, "correction", source).lower()
    if correction not in ("holm", "bh", "none"):
        raise _fail("correction", f"unknown correction {correction!r} (use holm, bh or none)", source)
    confidence = _typed(data.get("confidence", 0.95), float, "confidence", source)
    if not 0.5 <= confidence < 1.0:
        raise _fail("confidence", f"must be in [0.5, 1), got {confidence}", source)
    integers = {}
    for name, default, low in (("min_group_size", 30, 0), ("n_boot", 1000, 100), ("seed", 0, 0),
                               ("version", 1, 1), ("format_version", PLAN_FORMAT_VERSION, 1)):
        value = _typed(data.get(name, default), int, name, source)
        if value < low:
            raise _fail(name, f"must be at least {low}, got {value}", source)
        integers[name] = value
    if integers["format_version"] > PLAN_FORMAT_VERSION:
        raise _fail("format_version", f"written by a newer FairMed (format {integers['format_version']})", source)
    return AuditPlan(subgroups=tuple(subgroups), metrics=tuple(margins),
                     intersections=_typed(data.get("intersections", False), bool, "intersections", source),
                     correction=correction, confidence=confidence, **text, **integers)


def read_plan(path: str | Path) -> AuditPlan:
    """Read a plan from ``.json`` or ``.toml``."""
    path = Path(path)
    if not path.is_file():
        raise FairMedInputError("audit plan not found", source=str(path))
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise FairMedInputError(f"not a readable plan ({error})", source=str(path)) from error
    return plan_from_dict(data, source=str(path))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # JSON string escapes (\", \\, \n, \uXXXX) are valid TOML basic-string escapes.
    return json.dumps(str(value), ensure_ascii=False)


def plan_to_toml(plan: AuditPlan) -> str:
    """The plan as TOML: top-level keys, then ``[[subgroups]]`` and ``[[metrics]]`` tables (None is left out)."""
    data = plan_to_dict(plan)
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items()
             if key not in ("subgroups", "metrics") and value is not None]
    for table in ("subgroups", "metrics"):
        for item in data[table]:
            lines += ["", f"[[{table}]]"]
            lines += [f"{key} = {_toml_value(value)}" for key, value in item.items() if value is not None]
    return "\n".join(lines) + "\n"


def write_plan(plan: AuditPlan, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the plan as JSON or TOML (by the suffix), atomically; an existing file is kept unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FairMedInputError("a file already exists here; choose another name", source=str(path))
    if path.suffix.lower() == ".toml":
        return atomic_write_text(path, plan_to_toml(plan))
    if path.suffix.lower() != ".json":
        raise FairMedInputError("a plan file must end in .json or .toml", source=str(path))
    return atomic_write_json(path, plan_to_dict(plan))


def _run_columns(run_dir: Path) -> tuple[EvaluationRecord, list[str]]:
    from fairmed_core.runs.eval_store import read_evaluation

    run = read_evaluation(run_dir)
    with open(run.predictions_path, encoding="utf-8") as stream:
        header = stream.readline().strip().split(",")
    return run.record, header


def run_attributes(run_dir: str | Path) -> tuple[str, ...]:
    """The sensitive attributes of an evaluation run (``run.json``'s ``attributes``, present as columns)."""
    record, header = _run_columns(Path(run_dir))
    attributes = record.attributes or [c for c in ("sex", "age_group", "skin_tone", "race", "site")
                                            if c in header]
    return tuple(a for a in attributes if a in header)


def run_metrics(run_dir: str | Path) -> tuple[str, ...]:
    """Metrics an evaluation run supports: the confusion metrics, plus AUROC and ECE when it has a score."""
    _, header = _run_columns(Path(run_dir))
    return tuple(m for m in METRICS if not SPEC_BY_NAME[m].needs_score or "score" in header)


def plan_from_run(run_dir: str | Path, *, prepared_by: str = "") -> AuditPlan:
    """A starting plan for a run, for the reviewer to edit: its attributes, the screening metrics it supports
    (recall, specificity, accuracy, F1, FDR) with a 0.10 difference margin each, plus the 0.8-1.25 ratio band
    for metrics where higher is better (a ratio of two small error rates swings wildly, so FDR gets none)."""
    run_dir = Path(run_dir)
    record, _ = _run_columns(run_dir)
    attributes = run_attributes(run_dir)
    if not attributes:
        raise FairMedInputError("the run has no sensitive attribute columns to plan an audit on",
                                source=str(run_dir / "predictions.csv"))
    supported = run_metrics(run_dir)
    margins = []
    for metric in _DEFAULT_METRICS:
        if metric in supported:
            band = DEFAULT_RATIO_BAND if metric in HIGHER_IS_BETTER else (None, None)
            margins.append(MetricMargin(metric=metric, max_difference=DEFAULT_DIFFERENCE, ratio_low=band[0],
                                        ratio_high=band[1]))
    model = record.model or run_dir.name
    if model == "model" and (run_dir.parent / "config.json").is_file():
        model = run_dir.parent.name  # a shipped model's evaluation/ folder
    return AuditPlan(
        model_name=str(model),
        intended_use="(state the clinical task and the decision the model output feeds, e.g. triage of "
                     "chest X-rays for radiologist review)",
        population=f"(state who the model is for; this run: {record.dataset} [{record.split or 'all'}], "
                   f"{record.n_cases} cases)",
        decision_requested="(e.g. approve for a supervised pilot on adults)",
        subgroups=tuple(SubgroupAtRisk(attribute=a, why=_DEFAULT_WHY.get(a, "")) for a in attributes),
        metrics=tuple(margins),
        prepared_by=prepared_by,
    )


def check_plan_against_run(plan: AuditPlan, run_dir: str | Path, *, plan_source: str | None = None) -> None:
    """Raise if the plan names an attribute or metric the run does not have (naming which and where)."""
    run_dir = Path(run_dir)
    attributes = run_attributes(run_dir)
    for i, subgroup in enumerate(plan.subgroups):
        if subgroup.attribute not in attributes:
            raise FairMedInputError(
                f"subgroups[{i}].attribute: the run {str(run_dir)!r} has no attribute {subgroup.attribute!r}",
                source=plan_source, hint=f"its attributes: {', '.join(attributes) or 'none'}")
    supported = run_metrics(run_dir)
    for i, margin in enumerate(plan.metrics):
        if margin.metric not in supported:
            raise FairMedInputError(
                f"metrics[{i}].metric: the run {str(run_dir)!r} cannot give {margin.metric!r}",
                source=plan_source, hint=f"it supports {', '.join(supported)} (AUROC and ECE need a score column)")


def lock_path(plan_path: str | Path) -> Path:
    """Where the lock of a plan file lives: ``<plan file>.lock.json`` beside it."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".lock.json")


def read_lock(plan_path: str | Path) -> PlanLock | None:
    """The lock of a plan file, or None when it was never locked."""
    path = lock_path(plan_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return PlanLock(plan_sha256=str(data["plan_sha256"]), locked_utc=str(data["locked_utc"]),
                        plan=plan_from_dict(data["plan"], source=str(path)))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise FairMedInputError(f"unreadable plan lock ({error})", source=str(path)) from error


def lock_plan(plan_path: str | Path, *, now: float | None = None) -> PlanLock:
    """Lock the plan file (record its hash and content) unless it is locked already; return the lock in force.

    An existing lock is never rewritten: a plan edited after locking keeps its original lock, and the
    difference is reported as deviations.
    """
    existing = read_lock(plan_path)
    if existing is not None:
        return existing
    plan = read_plan(plan_path)
    lock = PlanLock(plan_sha256=plan_hash(plan),
                    locked_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), plan=plan)
    atomic_write_json(lock_path(plan_path), {"plan_sha256": lock.plan_sha256, "locked_utc": lock.locked_utc,
                                             "plan": plan_to_dict(plan)})
    return lock


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(value, list) and value and isinstance(value[0], dict):
        out = {}
        # Keyed by the metric or attribute, so inserting one item does not shift every later one.
        for i, item in enumerate(value):
            key = item.get("metric", item.get("attribute", i))
            out.update(_flatten(item, f"{prefix}[{key}]"))
        return out
    return {prefix: value}


def plan_deviations(locked: AuditPlan, current: AuditPlan) -> tuple[PlanDeviation, ...]:
    """Fields of ``current`` that differ from the ``locked`` plan (``metrics[recall].max_difference``, ...)."""
    before, after = _flatten(plan_to_dict(locked), ""), _flatten(plan_to_dict(current), "")
    return tuple(PlanDeviation(field=key, locked=before.get(key), current=after.get(key))
                 for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key))
