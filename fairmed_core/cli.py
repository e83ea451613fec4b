"""The ``fairmed`` command: every job the dashboard starts can be started here too.

User errors (bad files, columns, values) print one line naming the file, column and row, and exit with
code 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fairmed_core.errors import FairMedInputError

EXIT_USER_ERROR = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def _cmd_synth(args: argparse.Namespace) -> int:
    from fairmed_core.data import SynthConfig, generate, write_dataset

    config = SynthConfig(n=args.n, seed=args.seed, image_size=args.image_size)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FairMedInputError(
            f"output folder {str(out)!r} is not empty", hint="choose an empty folder or pass --overwrite"
        )
    manifest = write_dataset(generate(config), out, config=config)
    print(f"wrote {config.n} cases to {manifest}")
    return 0


def _cmd_reference(args: argparse.Namespace) -> int:
    from fairmed_core.data import read_manifest
    from fairmed_core.models.reference import reference_predictions
    from fairmed_core.runs.workspace import atomic_write_text

    dataset = read_manifest(args.data)
    predictions = reference_predictions(dataset, split=args.split, downsample=args.downsample, seed=args.seed)
    atomic_write_text(args.out, predictions.to_csv(index=False))
    accuracy = float((predictions["y_true"] == predictions["y_pred"]).mean())
    print(f"wrote {len(predictions)} predictions to {args.out} (accuracy {accuracy:.3f})")
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from fairmed_core.data import data_card, read_manifest

    card = data_card(read_manifest(args.data))
    table = card.group_counts
    table = table[table["split"] == "all"].drop(columns="split")
    if args.json:
        from fairmed_core.runs.workspace import atomic_write_json

        atomic_write_json(args.json, {"name": card.name, "n_cases": card.n_cases,
                                      "group_counts": json.loads(table.to_json(orient="records"))})
    print(f"{card.name}: {card.n_cases} cases")
    print(table.to_string(index=False))
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from fairmed_core.fairness import audit, load_predictions
    from fairmed_core.runs.workspace import atomic_write_json

    frame = load_predictions(
        args.predictions,
        label_col=args.label_col,
        pred_col=args.pred_col,
        sensitive=args.sensitive,
        score_col=args.score_col,
        source_col=args.source_col,
        label_values=args.label_values,
    )
    result = audit(
        frame,
        label_col=args.label_col,
        pred_col=args.pred_col,
        sensitive=args.sensitive,
        intersect=args.intersect,
        score_col=args.score_col,
        source_col=args.source_col,
        positive_label=args.positive_label,
        n_boot=args.n_boot,
        confidence=args.confidence,
        correction=args.correction,
        min_group_size=args.min_group_size,
        seed=args.seed,
        unknown_in_gaps=args.unknown_in_gaps,
    )
    payload = result.to_json_dict()
    if args.json:
        atomic_write_json(args.json, payload)
    if args.out_dir:
        from fairmed_core.runs.audit_store import save_audit

        save_audit(result, args.out_dir)
    summary = result.summary_frame()
    columns = ["source", "attribute", "predictive_parity", "equal_opportunity_difference",
               "equalized_odds_difference", "sigma_f1", "f1_es", "worst_group"]
    print(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    small = {(g["source"], g["attribute"], g["group"]) for g in payload["groups"] if g["small_group"]}
    if small:
        print(f"warning: {len(small)} group(s) too small to support a claim; see 'small_group_reason' in the JSON")
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    import subprocess

    app = Path(__file__).resolve().parents[1] / "app.py"
    if not app.is_file():
        raise FairMedInputError(f"cannot find the dashboard at {app}", hint="run from a source checkout")
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    return subprocess.call(command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fairmed`` (exposed for tests and for the docs)."""
    parser = argparse.ArgumentParser(prog="fairmed", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser("synth", help="write the embedded synthetic benchmark (PNG + manifest.jsonl)")
    synth.add_argument("--out", required=True, help="output folder (created; must be empty)")
    synth.add_argument("--n", type=_positive_int, default=6000, help="number of cases (default 6000)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    synth.add_argument("--image-size", type=_positive_int, default=64, help="image side in pixels (default 64)")
    synth.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    synth.set_defaults(run=_cmd_synth)

    reference = commands.add_parser(
        "reference", help="train the reference classifier (logistic regression on pixels) and write predictions")
    reference.add_argument("--data", required=True, help="manifest.jsonl of a dataset")
    reference.add_argument("--out", required=True, help="predictions CSV to write")
    reference.add_argument("--split", default="test", help="split to predict (default test)")
    reference.add_argument("--downsample", type=_positive_int, default=16, help="feature image side (default 16)")
    reference.add_argument("--seed", type=int, default=0)
    reference.set_defaults(run=_cmd_reference)

    card = commands.add_parser("card", help="print a dataset's data card: cases and prevalence per group")
    card.add_argument("--data", required=True, help="manifest.jsonl of a dataset")
    card.add_argument("--json", help="also write the group counts as JSON")
    card.set_defaults(run=_cmd_card)

    audit = commands.add_parser("audit", help="audit a predictions table per subgroup, with bootstrap intervals")
    audit.add_argument("predictions", help="predictions file (.csv or .parquet)")
    audit.add_argument("--sensitive", action="append", required=True, metavar="COL",
                       help="attribute column; repeat for several")
    audit.add_argument("--intersect", action="store_true", help="also audit the intersection of the attributes")
    audit.add_argument("--label-col", required=True, help="column with the true label")
    audit.add_argument("--pred-col", required=True, help="column with the predicted label")
    audit.add_argument("--score-col", help="column with P(positive) in [0, 1], enables AUROC and ECE")
    audit.add_argument("--source-col", help="column with the data source; audits each source and all pooled")
    audit.add_argument("--positive-label", help="the positive class (binary audit); default: inferred")
    audit.add_argument("--label-values", nargs="+", metavar="VALUE",
                       help="the declared label set; any other label or prediction is an error")
    audit.add_argument("--n-boot", type=_non_negative_int, default=1000, help="bootstrap resamples (default 1000)")
    audit.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    audit.add_argument("--correction", choices=["holm", "bh", "none"], default="holm",
                       help="multiple-comparison correction for pairwise gap tests (default holm)")
    audit.add_argument("--min-group-size", type=_positive_int, default=30,
                       help="groups smaller than this are flagged as too small to support a claim")
    audit.add_argument("--unknown-in-gaps", action="store_true",
                       help="count the UNK (missing demographics) group in gaps; by default it is reported only")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--json", help="write the audit as JSON here")
    audit.add_argument("--out-dir", help="also save JSON and CSV tables into this folder")
    audit.set_defaults(run=_cmd_audit)

    dashboard = commands.add_parser("dashboard", help="start the Streamlit dashboard")
    dashboard.add_argument("--port", type=_positive_int, default=8501)
    dashboard.set_defaults(run=_cmd_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fairmed`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except FairMedInputError as error:
        print(f"fairmed {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as error:
        print(f"fairmed {args.command}: error: {error.strerror}: {error.filename}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
