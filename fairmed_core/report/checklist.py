"""Checklist crosswalk: which TRIPOD+AI (BMJ 2024) and CLAIM 2024 items the evidence pack reports.

Each item is paraphrased (the published checklists hold the exact wording and numbering) and linked to the
pack section that answers it. Its status is "reported", "partly" or "left to authors", decided from what the
pack actually holds (a plan without reasons for its subgroups only partly reports known inequalities).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChecklistItem", "REPORTED", "PARTLY", "LEFT_TO_AUTHORS", "checklist_crosswalk"]

REPORTED = "reported"
PARTLY = "partly"
LEFT_TO_AUTHORS = "left to authors"


@dataclass(frozen=True)
class ChecklistItem:
    """One checklist item, what it asks (paraphrased), its status in this pack, and the section (anchor id)."""

    guideline: str
    item: str
    asks: str
    status: str
    section: str
    note: str


def checklist_crosswalk(*, every_subgroup_has_reason: bool, has_comparison: bool, has_failure_gallery: bool,
                        has_images: bool, has_reviewer_limitations: bool, has_intended_use: bool,
                        has_counterfactual: bool) -> tuple[ChecklistItem, ...]:
    """The crosswalk for a pack with the given contents."""
    def item(guideline, number, asks, status, section, note=""):
        return ChecklistItem(guideline, number, asks, status, section, note)

    return (
        item("TRIPOD+AI", "3c", "known health inequalities between sociodemographic groups",
             REPORTED if every_subgroup_has_reason else PARTLY, "plan",
             "" if every_subgroup_has_reason else "the plan gives no reason for some subgroups at risk"),
        item("TRIPOD+AI", "14", "methods used to assess (and address) model fairness, and their rationale",
             REPORTED, "plan", "metrics, margins, correction and smallest group stated before results"),
        item("TRIPOD+AI", "15", "the model's output and how any classification (threshold) was set", PARTLY,
             "results", "answers are parsed yes/no; an unparseable answer is scored wrong and counted per group"),
        item("TRIPOD+AI", "20b", "characteristics overall and per data source: demographics, sample size, "
             "number of outcome events", REPORTED, "data-card"),
        item("TRIPOD+AI", "23a", "performance with confidence intervals, including key (sociodemographic) "
             "subgroups", REPORTED, "results"),
        item("TRIPOD+AI", "25", "overall interpretation of the results, including fairness, in the context of "
             "the objectives", PARTLY if has_comparison else LEFT_TO_AUTHORS, "cover",
             "the pack gives verdicts; their clinical interpretation is the meeting's"),
        item("TRIPOD+AI", "26", "limitations: non-representative sample, sample size, missing data; effects on "
             "bias, uncertainty and generalisability", REPORTED if has_reviewer_limitations else PARTLY,
             "limitations", "" if has_reviewer_limitations else "generated from the data only; no reviewer text"),
        item("CLAIM 2024", "36", "performance estimates and their precision (e.g. 95% confidence intervals)",
             REPORTED, "results"),
        item("CLAIM 2024", "37", "failure analysis of incorrectly classified cases",
             (REPORTED if has_images else PARTLY) if has_failure_gallery else LEFT_TO_AUTHORS, "robustness",
             "" if has_images else "answers and reasoning shown; images not available on this machine"),
        item("CLAIM 2024", "38", "study limitations, including potential bias, statistical uncertainty and "
             "generalisability", REPORTED if has_reviewer_limitations else PARTLY, "limitations"),
        item("CLAIM 2024", "39", "implications for practice, including the intended use and clinical role",
             PARTLY if has_intended_use else LEFT_TO_AUTHORS, "plan",
             "intended use stated in the plan" + ("" if not has_counterfactual
                                                  else "; counterfactual invariance tested")),
    )
