"""The ``fairmed plan`` and ``fairmed report`` commands: write a starting audit plan, build an evidence pack,
sign it, verify it. ``add_commands(subparsers)`` adds them to the ``fairmed`` parser."""

from __future__ import annotations

import argparse
from pathlib import Path

from fairmed_core.errors import FairMedInputError

__all__ = ["add_commands"]


def _plan_init(args: argparse.Namespace) -> int:
    from fairmed_core.report.plan import plan_from_run, write_plan

    plan = plan_from_run(args.run_dir, prepared_by=args.prepared_by)
    path = write_plan(plan, args.out)
    print(f"wrote a starting plan for {plan.model_name} to {path}: {len(plan.subgroups)} attributes, "
          f"{len(plan.metrics)} metrics; edit its intended use, population and margins before building a pack")
    return 0


def _report_build(args: argparse.Namespace) -> int:
    from fairmed_core.report.pack import build_pack

    files = build_pack(args.plan, args.run_dir, args.out, compare=tuple(args.compare), counterfactual=args.counterfactual,
                       data=args.data, prepared_by=args.prepared_by, pdf=not args.no_pdf)
    made = ", ".join(p.name for p in (files.html, files.pdf, files.json, files.manifest) if p is not None)
    print(f"wrote the evidence pack to {files.folder} ({made}) in {sum(files.seconds.values()):.1f} s")
    return 0


def _report_sign(args: argparse.Namespace) -> int:
    from fairmed_core.report.signoff import DECISION_LOG, sign_pack

    entry = sign_pack(args.dir, reviewers=args.reviewer, decision=args.decision, conditions=args.conditions,
                      date=args.date)
    print(f"recorded '{entry['decision']}' by {', '.join(entry['reviewers'])} on {entry['date']} in "
          f"{Path(args.dir) / DECISION_LOG} (pack {entry['pack_sha256'][:12]}...)")
    return 0


def _report_verify(args: argparse.Namespace) -> int:
    from fairmed_core.report.signoff import verify_pack

    result = verify_pack(args.dir)
    if result.ok:
        print(f"verified: {len(result.files)} files unchanged (pack, plan, run files, model weights); "
              f"{result.decisions} decision(s) in the log, chain intact")
        return 0
    for line in result.problems():
        print(line)
    raise FairMedInputError(f"the pack does not verify: {len(result.problems())} problem(s) listed above",
                            source=str(args.dir))


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``plan init`` and ``report build|sign|verify`` to the ``fairmed`` subcommands."""
    from fairmed_core.report.signoff import DECISIONS

    plan = commands.add_parser("plan", help="write an audit plan (what the review judges, before results)")
    plan_commands = plan.add_subparsers(dest="plan_command", required=True, metavar="ACTION")
    init = plan_commands.add_parser("init", help="a starting plan from an evaluation run, for the reviewer to edit")
    # dest run_dir: ``run`` is the handler that ``fairmed``'s main calls
    init.add_argument("--run", dest="run_dir", required=True, help="evaluation run folder (run.json + predictions.csv)")
    init.add_argument("--out", required=True, help="plan file to write (.json or .toml; never overwritten)")
    init.add_argument("--prepared-by", default="", help="who prepares the review")
    init.set_defaults(run=_plan_init)

    report = commands.add_parser("report", help="the review-meeting evidence pack: build, sign, verify")
    actions = report.add_subparsers(dest="report_command", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="build the pack (HTML, PDF, JSON) for a run against a plan")
    build.add_argument("--plan", required=True, help="audit plan file (.json or .toml); locked on first build")
    build.add_argument("--run", dest="run_dir", required=True, help="evaluation run folder under review")
    build.add_argument("--compare", action="append", default=[], metavar="RUN",
                       help="another evaluation run on the same cases (repeatable); compared with paired intervals")
    build.add_argument("--counterfactual", default=None, metavar="RUN", help="counterfactual run folder (optional)")
    build.add_argument("--data", default=None, metavar="MANIFEST",
                       help="dataset manifest, for images of failure cases (default: the run's recorded one)")
    build.add_argument("--prepared-by", default="", help="who prepared the pack (default: the plan's)")
    build.add_argument("--no-pdf", action="store_true", help="skip the PDF (no chromium needed)")
    build.add_argument("--out", required=True, help="new pack folder (refused when not empty)")
    build.set_defaults(run=_report_build)

    sign = actions.add_parser("sign", help="append a decision to the pack's append-only decision log")
    sign.add_argument("dir", help="pack folder")
    sign.add_argument("--reviewer", action="append", required=True, help="reviewer name (repeatable)")
    sign.add_argument("--decision", required=True, choices=DECISIONS)
    sign.add_argument("--conditions", default="", help="conditions of an approval with conditions")
    sign.add_argument("--date", default=None, help="date of the decision (default: today, UTC)")
    sign.set_defaults(run=_report_sign)

    verify = actions.add_parser("verify", help="recompute every hash and say what changed since the pack was built")
    verify.add_argument("dir", help="pack folder")
    verify.set_defaults(run=_report_verify)
