"""The ``fairmed`` command: every job the dashboard starts can be started here too.

User errors (bad files, columns, values) print one line naming the file, column and row, and exit with
code 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fairmed_core.errors import FairMedInputError
from fairmed_core.settings import add_config_flags, config_from_args

# The audit's choices, spelled here so that parsing does not import the fairness engine (a test keeps them equal
# to fairmed_core.fairness.FORMAT_FAILURE_POLICIES, PROTOCOLS and INTERVAL_METHODS).
AUDIT_FORMAT_FAILURES = ("wrong", "other_label", "abstain")
AUDIT_PROTOCOLS = ("fairmed", "fairgrpo_paper")
AUDIT_INTERVAL_METHODS = ("wilson", "clopper-pearson", "bootstrap")

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


def _empty_folder(path: str, *, kind: str = "run folder", overwrite: bool | None = None,
                  config: str | None = None) -> Path:
    """``path`` as a folder to write into: refused when it holds anything (stored runs are never overwritten),
    unless ``overwrite`` is True; ``overwrite=None`` means the command has no --overwrite flag. The ``--config``
    file a page handed over inside the run folder does not count."""
    out = Path(path)
    handed = Path(config).resolve() if config else None
    if out.exists() and any(p.resolve() != handed for p in out.iterdir()) and not overwrite:
        hint = "choose a new run folder" if overwrite is None else "choose an empty folder or pass --overwrite"
        raise FairMedInputError(f"{kind} {str(out)!r} is not empty", hint=hint)
    return out


def _cmd_synth(args: argparse.Namespace) -> int:
    from fairmed_core.data import SynthConfig, generate, write_dataset

    config = SynthConfig(n=args.n, seed=args.seed, image_size=args.image_size)
    out = _empty_folder(args.out, kind="output folder", overwrite=args.overwrite)
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

    dataset = read_manifest(args.data)
    dataset.check_images()  # headers only: a manifest naming unreadable or oversized images is refused here
    card = data_card(dataset)
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
    from fairmed_core.fairness import PredictionColumns, audit, load_predictions
    from fairmed_core.runs.workspace import atomic_write_json

    columns = PredictionColumns(args.label_col, args.pred_col, tuple(args.sensitive), args.score_col,
                                args.source_col)
    frame = load_predictions(args.predictions, columns=columns, label_values=args.label_values)
    result = audit(
        frame,
        columns=columns,
        intersect=args.intersect,
        positive_label=args.positive_label,
        n_boot=args.n_boot,
        confidence=args.confidence,
        correction=args.correction,
        min_group_size=args.min_group_size,
        seed=args.seed,
        unknown_in_gaps=args.unknown_in_gaps,
        format_failures=args.format_failures,
        protocol=args.protocol,
        interval_method=args.interval_method,
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
    if result.format_failure_rates:
        rates = result.format_failures_frame()
        overall = rates[(rates["source"] == "ALL") & (rates["attribute"] == "overall")].iloc[0]
        print(f"format failures: {overall['failures']} of {overall['n']} ({100 * overall['rate']:.1f}%), scored as "
              f"'{result.settings.format_failures}'; per group in the JSON (format_failure_rate)")
    paper = result.paper_summary
    if paper is not None:
        print("FairGRPO paper protocol (the authors' evaluation code; PP and EOD in percentage points):")
        if paper.aggregate is None:
            print("  aggregate not defined: " + "; ".join(paper.notes))
        else:
            row = paper.aggregate
            print(f"  PP {row.predictive_parity:.2f}  EOD {row.equal_opportunity_difference:.2f}  "
                  f"sigma F1 {row.sigma_f1:.4f}  F1 {row.f1:.4f}  Acc {100 * row.accuracy:.2f}%  "
                  f"F1_ES {row.f1_es:.4f}  over {row.n_sources} source(s)")
    print(f"intervals: {result.settings.interval_method}")
    print(f"tests: {result.settings.tests}")
    small = {(g["source"], g["attribute"], g["group"]) for g in payload["groups"] if g["small_group"]}
    if small:
        print(f"warning: {len(small)} group(s) too small to support a claim; see 'small_group_reason' in the JSON")
    if args.json:
        print(f"wrote {args.json}")
    return 0


class _Progress:
    """``progress(done, total, what)`` for a job run from here: one tqdm bar on stderr per stage, and the job's
    progress file when it runs as a background job (at most every half second: the file is rewritten atomically,
    which per epoch of a small table would cost more than the epoch)."""

    def __init__(self, description: str | None = None) -> None:
        from fairmed_core.runs.jobs import report_progress

        self.description, self.bars, self.report = description, {}, _every(0.5, report_progress)

    def __call__(self, done: int, total: int, what: str) -> None:
        from tqdm import tqdm

        bar = self.bars.get(what)
        if bar is None:
            bar = self.bars[what] = tqdm(total=total, desc=self.description or what, unit=what.split()[0],
                                         file=sys.stderr, dynamic_ncols=True)
        bar.total = total
        bar.update(done - bar.n)
        self.report(done, total, what)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        for bar in self.bars.values():
            bar.close()


def _every(seconds: float, report):
    """``report(done, total, what)`` at most once per ``seconds`` (and always at the start and the end)."""
    last = [-math.inf]

    def throttled(done: int, total: int, what: str) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last[0] >= seconds:
            last[0] = now
            report(done, total, what)
    return throttled


def _print_run(run) -> None:
    record = run.record
    print(f"{record.n_cases} cases: accuracy {record.accuracy:.3f}, format failures "
          f"{100 * record.format_failure_rate:.1f}%, {record.cases_per_s} cases/s on {record.device}")
    print(f"wrote {run.path} (predictions.csv, audit/, run.json)")


def _job(cls, args: argparse.Namespace, **fixed):
    """The job's config from the command line (``--config`` file, then flags), checked; torch's thread count."""
    import torch

    config = config_from_args(cls, args, **fixed)
    torch.set_num_threads(args.threads)
    return config


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fairmed_core.jobs import evaluation
    from fairmed_core.jobs.configs import EvaluationJobConfig

    config = _job(EvaluationJobConfig, args)
    out = _empty_folder(args.out, config=args.config)
    with _Progress(f"{Path(config.model).name} on {Path(config.data).parent.name} [{config.split}]") as progress:
        run = evaluation.run(config, out, progress)
    _print_run(run)
    return 0


def _cmd_train_sft(args: argparse.Namespace) -> int:
    from fairmed_core.jobs import sft
    from fairmed_core.jobs.configs import SFTJobConfig

    config = _job(SFTJobConfig, args)
    out = _empty_folder(args.out, kind="output folder", overwrite=args.overwrite, config=args.config)

    def log(record: dict) -> None:
        if record["step"] % 50 == 0:
            print(f"step {record['step']} epoch {record['epoch']} loss {record['loss']:.4f}", file=sys.stderr)

    with _Progress() as progress:
        result = sft.run(config, out, progress, log=log)
    training = result.training
    print(f"trained {training.steps} steps on {training.train_cases} cases in {training.train_time_s:.0f} s "
          f"(loss {training.first_loss:.3f} -> {training.final_loss:.3f}); saved to {out}")
    if result.evaluation is not None:
        _print_run(result.evaluation)
        print(f"wrote the model card {result.card}")
    return 0


def _cmd_train_fairgrad(args: argparse.Namespace) -> int:
    from fairmed_core.jobs import fairgrad_images
    from fairmed_core.jobs.configs import FairGradImagesJobConfig

    config = _job(FairGradImagesJobConfig, args)
    out = _empty_folder(args.out, config=args.config)
    with _Progress(f"training {config.fairgrad.model_name}") as progress:
        run = fairgrad_images.run(config, out, progress)
    print(f"{run.record.n_cases} cases: accuracy {run.record.accuracy:.3f}; wrote {run.path} "
          "(predictions.csv, audit/, run.json, training_history.csv)")
    return 0


def _cmd_train_fairgrad_tabular(args: argparse.Namespace) -> int:
    from fairmed_core.jobs import fairgrad_tabular
    from fairmed_core.jobs.configs import FairGradTabularJobConfig

    config = _job(FairGradTabularJobConfig, args)
    out = _empty_folder(args.out, config=args.config)
    with _Progress(f"training {config.fairgrad.model_name}") as progress:
        run = fairgrad_tabular.run(config, out, progress)
    record = run.record
    print(f"{record.n_test} test rows ({record.n_train} trained on): accuracy {record.accuracy:.3f}, "
          f"AUROC {record.auroc:.3f}; wrote {run.path} (predictions.csv, audit/, run.json, training_history.csv)")
    for note in record.notes:
        print(f"note: {note}")
    return 0


def _cmd_train_grpo(args: argparse.Namespace) -> int:
    from fairmed_core.jobs import grpo_training
    from fairmed_core.jobs.configs import GRPOTrainingJobConfig

    config = _job(GRPOTrainingJobConfig, args, method=args.method)
    already = args.resume and (Path(args.out) / grpo_training.FINISHED_FILE).is_file()
    with _Progress(f"{config.training.method} training") as progress:
        finished = grpo_training.run(config, args.out, progress, resume=args.resume,
                                     reset_statistics=args.reset_statistics)
    if finished.rank is not None:  # a helper rank of a multi-process launch: rank 0 wrote the run and reports it
        return 0
    if already:
        print(f"{finished.method}: already finished ({finished.steps} steps), nothing to train; {args.out}")
        return 0
    print(f"{finished.method}: {finished.steps} steps in {finished.train_time_s} s ({finished.seconds_per_step} s/step)"
          + (f", test accuracy {finished.test_accuracy:.3f}" if finished.test_accuracy is not None else "")
          + f"; wrote {args.out}")
    return 0


def _cmd_train_counterfactual(args: argparse.Namespace) -> int:
    from fairmed_core.jobs import generator_training
    from fairmed_core.jobs.configs import GeneratorTrainingJobConfig

    config = _job(GeneratorTrainingJobConfig, args)
    with _Progress(f"training the {config.generator.attribute} generator") as progress:
        result = generator_training.run(config, args.out, progress, restart=args.restart)
    summary = result.summary
    recent = summary.losses[-100:]
    print(f"{summary.step} steps ({'resumed from ' + str(summary.resumed_from) if summary.resumed_from else 'fresh'}"
          f", {summary.seconds:.0f} s in all); mean loss of the last {len(recent)} steps "
          f"{sum(recent) / max(1, len(recent)):.4f}; wrote {args.out}")
    if result.classifier is not None:
        quality = ", ".join(f"{s} {i.val_balanced_accuracy:.2f}" if i.val_balanced_accuracy is not None
                            else f"{s} unknown" for s, i in result.classifier.infos.items())
        print(f"attribute classifier (judges effectiveness): balanced accuracy on val {quality}")
    print(f"wrote the card {result.card}")
    return 0


def _cmd_counterfactual(args: argparse.Namespace) -> int:
    from fairmed_core.jobs import counterfactual_analysis
    from fairmed_core.jobs.configs import CounterfactualAnalysisJobConfig

    config = _job(CounterfactualAnalysisJobConfig, args)
    out = _empty_folder(args.out, config=args.config)
    with _Progress() as progress:
        result = counterfactual_analysis.run(config, out, progress)
    tests = result.tests
    overall = tests.flips.overall
    if overall is None:
        print(f"no pairs of {tests.n_cases} cases")
    else:
        print(f"{tests.n_pairs} pairs of {tests.n_cases} cases ({tests.n_valid_pairs} valid): flip rate "
              f"{overall.flip_rate:.3f} [{overall.ci_low:.3f}, {overall.ci_high:.3f}], McNemar p "
              f"{overall.p_value if overall.p_value is not None else float('nan'):.3g}")
    ci_test = tests.ci_test
    print(f"conditional-independence test: p = {ci_test.p_value:.3g}" if ci_test.ran else
          f"conditional-independence test: {ci_test.note}")
    if tests.true_counterfactuals is not None:
        eca = tests.true_counterfactuals.eca
        print(f"true counterfactuals (benchmark): ECA {eca.eca:.3f} [{eca.ci_low:.3f}, {eca.ci_high:.3f}]")
    print(f"wrote {out} (pairs/, pairs.csv, tests.json, run.json)")
    return 0


def _add_threads(parser: argparse.ArgumentParser, default: int) -> None:
    """``--threads``: how many CPU threads torch uses on this machine (a property of the run, not the job)."""
    parser.add_argument("--threads", type=_positive_int, default=default,
                        help=f"CPU threads for torch (default {default})")


def _cmd_dashboard(args: argparse.Namespace) -> int:
    import os
    import subprocess

    app = Path(__file__).resolve().parents[1] / "app.py"
    if not app.is_file():
        raise FairMedInputError(f"cannot find the dashboard at {app}", hint="run from a source checkout")
    env = dict(os.environ)
    if args.workspace is not None:
        # The workspace is fixed here, at start, for every visitor: the page shows it but cannot change it.
        root = Path(args.workspace).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise FairMedInputError(f"--workspace {args.workspace} is a file, not a folder")
        env["FAIRMED_WORKSPACE"] = str(root)
    # The address is passed, not left to .streamlit/config.toml, which Streamlit reads only from the folder it
    # starts in: the dashboard listens on this machine alone unless --host says otherwise.
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port),
               "--server.address", args.host, "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "viewer"]
    return subprocess.call(command, env=env)


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
    audit.add_argument("--n-boot", type=_non_negative_int, default=1000,
                       help="bootstrap resamples and permutations per gap test (default 1000; 0: no tests)")
    audit.add_argument("--interval-method", choices=AUDIT_INTERVAL_METHODS, default="wilson",
                       help="interval of proportions and F1 on binary data: wilson (score, default), clopper-pearson "
                            "(exact, conservative) or bootstrap (percentile); see docs/RESULTS.md for coverage")
    audit.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    audit.add_argument("--correction", choices=["holm", "bh", "none"], default="holm",
                       help="multiple-comparison correction for pairwise gap tests (default holm)")
    audit.add_argument("--min-group-size", type=_positive_int, default=30,
                       help="groups smaller than this are flagged as too small to support a claim")
    audit.add_argument("--unknown-in-gaps", action="store_true",
                       help="count the UNK (missing demographics) group in gaps; by default it is reported only")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--format-failures", choices=AUDIT_FORMAT_FAILURES, default="wrong",
                       help="how predictions '(format failure)' are scored: wrong for the true class (default; "
                       "binary: a missed positive), the other label (binary), or abstain (left out, counted)")
    audit.add_argument("--protocol", choices=AUDIT_PROTOCOLS, default="fairmed",
                       help="fairmed (FairMed's clinical convention, default) or fairgrpo_paper (also the FairGRPO "
                       "paper's statistics, computed as the authors' evaluation code does)")
    audit.add_argument("--json", help="write the audit as JSON here")
    audit.add_argument("--out-dir", help="also save JSON and CSV tables into this folder")
    audit.set_defaults(run=_cmd_audit)

    # The job commands' flags come from their config dataclasses (fairmed_core.jobs.configs): each setting is
    # declared once, with its help, and `--config FILE` reads the same settings from JSON.
    from fairmed_core.jobs.configs import (CounterfactualAnalysisJobConfig, EvaluationJobConfig,
                                           FairGradImagesJobConfig, FairGradTabularJobConfig,
                                           GeneratorTrainingJobConfig, GRPOTrainingJobConfig, SFTJobConfig)
    from fairmed_core.training.methods import METHODS as GRPO_METHODS

    evaluate = commands.add_parser(
        "evaluate", help="run a Gemma 3 image-text model over a dataset split, store predictions and audit")
    add_config_flags(evaluate, EvaluationJobConfig)
    evaluate.add_argument("--out", required=True, help="run folder to create (predictions.csv, audit/, run.json)")
    _add_threads(evaluate, 1)
    evaluate.set_defaults(run=_cmd_evaluate)

    train = commands.add_parser("train", help="train models (sft: the tiny FairMedGemma warm start; GRPO, "
                                "RLOO, REINFORCE++, GRPO with resampling or Group DRO, FairGRPO (EQPO) with or without "
                                "demographics; fairgrad: CNNs or tables with FairGrad; counterfactual: the generator)")
    methods = train.add_subparsers(dest="method", required=True, metavar="METHOD")
    sft = methods.add_parser("sft", help="supervised warm start of the tiny FairMedGemma on a benchmark manifest")
    add_config_flags(sft, SFTJobConfig, config_help="JSON file of the warm start's settings (model sizes under "
                     "\"model\"); flags given as well override it")
    sft.add_argument("--out", required=True, help="model folder to write (save_pretrained + model card)")
    _add_threads(sft, 1)
    sft.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    sft.set_defaults(run=_cmd_train_sft)
    fairgrad = methods.add_parser(
        "fairgrad", help="train one small CNN per source on the benchmark's images with ERM, penalty or FairGrad, "
        "predict the test split and store it as an audited run")
    add_config_flags(fairgrad, FairGradImagesJobConfig)
    fairgrad.add_argument("--out", required=True, help="run folder to create (predictions.csv, audit/, run.json)")
    _add_threads(fairgrad, 1)
    fairgrad.set_defaults(run=_cmd_train_fairgrad)
    fairgrad_tabular = methods.add_parser(
        "fairgrad-tabular", help="train a logistic regression or MLP on your own table (CSV, TSV, Parquet) with "
        "ERM, penalty or FairGrad, predict a held-out test split and store it as an audited run")
    add_config_flags(fairgrad_tabular, FairGradTabularJobConfig)
    fairgrad_tabular.add_argument("--out", required=True, help="run folder to create (predictions.csv, audit/, "
                                  "run.json)")
    _add_threads(fairgrad_tabular, 1)
    fairgrad_tabular.set_defaults(run=_cmd_train_fairgrad_tabular)
    # One subcommand per registered training method (fairmed_core.training.methods), with the registry's help.
    for method in GRPO_METHODS.values():
        grpo = methods.add_parser(method.name, help=f"{method.label}: {method.help}",
                                  description=f"Train a FairMedGemma-family model with {method.label}: {method.help}.")
        add_config_flags(grpo, GRPOTrainingJobConfig, fixed=("method",))
        grpo.add_argument("--out", required=True, help="run folder (config, metrics.jsonl, checkpoints, model)")
        grpo.add_argument("--resume", action="store_true",
                          help="continue from the run folder's newest complete checkpoint, up to the configured steps")
        grpo.add_argument("--reset-statistics", action="store_true",
                          help="with --resume: go on even though no checkpoint holds the method's state (FairGRPO "
                               "statistics, Group DRO weights), which then restarts from zero")
        _add_threads(grpo, 1)
        grpo.set_defaults(run=_cmd_train_grpo, method=method.name)

    counterfactual_train = methods.add_parser(
        "counterfactual", help="train the class-conditional diffusion generator of counterfactual images "
        "(resumes from the folder's last checkpoint) and the attribute classifier that judges its edits")
    add_config_flags(counterfactual_train, GeneratorTrainingJobConfig)
    counterfactual_train.add_argument("--out", required=True, help="generator folder (diffusers format)")
    counterfactual_train.add_argument("--restart", action="store_true",
                                      help="start over instead of resuming from the folder's checkpoint")
    _add_threads(counterfactual_train, 2)
    counterfactual_train.set_defaults(run=_cmd_train_counterfactual)

    counterfactual = commands.add_parser(
        "counterfactual", help="counterfactual analysis of a model: generated pairs, answers on both sides, "
        "validity of each pair, flip rates with McNemar, the conditional-independence test")
    add_config_flags(counterfactual, CounterfactualAnalysisJobConfig)
    counterfactual.add_argument("--out", required=True, help="run folder to create")
    _add_threads(counterfactual, 2)
    counterfactual.set_defaults(run=_cmd_counterfactual)

    dashboard = commands.add_parser("dashboard", help="start the Streamlit dashboard")
    dashboard.add_argument("--port", type=_positive_int, default=8501)
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default 127.0.0.1: this machine only; put a shared "
                                "deployment behind a reverse proxy with authentication, see README)")
    dashboard.add_argument("--workspace", metavar="DIR",
                           help="the folder the dashboard reads and writes (datasets, runs, audits, jobs); fixed "
                                "for every visitor (default $FAIRMED_WORKSPACE, else the checkout's workspace/)")
    dashboard.set_defaults(run=_cmd_dashboard)
    from fairmed_core.report.cli_commands import add_commands as add_report_commands
    add_report_commands(commands)
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
    import os

    from fairmed_core.runs.jobs import JOB_DIR_ENV, run_recorded

    # Started as a background job (fairmed_core.runs.jobs.start_job): record how the command ends.
    job_dir = os.environ.get(JOB_DIR_ENV)
    sys.exit(run_recorded(job_dir, main) if job_dir else main())
