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


def _empty_folder(path: str, *, kind: str = "run folder", overwrite: bool | None = None) -> Path:
    """``path`` as a folder to write into: refused when it holds anything (stored runs are never overwritten),
    unless ``overwrite`` is True; ``overwrite=None`` means the command has no --overwrite flag."""
    out = Path(path)
    if out.exists() and any(out.iterdir()) and not overwrite:
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


def _generation_options(args: argparse.Namespace):
    from fairmed_core.models.generation import GenerationOptions

    return GenerationOptions(do_sample=args.sample, temperature=args.temperature, top_p=args.top_p,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed)


def _progress_bar(description: str):
    """A tqdm bar on stderr driven by ``progress(done, total)`` callbacks; returns (callback, bar)."""
    from tqdm import tqdm

    bar = tqdm(total=0, desc=description, unit="case", file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update, bar


def _evaluate_into(loaded, dataset, out: Path, *, split, options, limit, n_boot: int):
    from fairmed_core.runs.evaluation_job import run_evaluation

    progress, bar = _progress_bar(f"{loaded.name} on {dataset.name} [{split or 'all'}]")
    try:
        return run_evaluation(loaded, dataset, out, split=split, options=options, limit=limit, n_boot=n_boot,
                              progress=progress)
    finally:
        bar.close()


def _print_run(run) -> None:
    info = run.info
    print(f"{info['n_cases']} cases: accuracy {info['accuracy']:.3f}, format failures "
          f"{100 * info['format_failure_rate']:.1f}%, {info['cases_per_s']} cases/s on {info['device']}")
    print(f"wrote {run.path} (predictions.csv, audit/, run.json)")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from fairmed_core.data import read_manifest
    from fairmed_core.models.loading import load_model

    torch.set_num_threads(args.threads)
    out = _empty_folder(args.out)
    dataset = read_manifest(args.data)
    loaded = load_model(args.model, adapter=args.adapter, device=args.device)
    split = None if args.split == "all" else args.split
    run = _evaluate_into(loaded, dataset, out, split=split, options=_generation_options(args), limit=args.limit,
                         n_boot=args.n_boot)
    _print_run(run)
    return 0


def _cmd_train_sft(args: argparse.Namespace) -> int:
    import torch

    from fairmed_core.data import read_manifest
    from fairmed_core.models.generation import GenerationOptions
    from fairmed_core.models.loading import load_model
    from fairmed_core.models.model_card import write_model_card
    from fairmed_core.training.sft import SFTConfig, train_sft

    torch.set_num_threads(args.threads)
    values = {}
    if args.config:
        try:
            values = json.loads(Path(args.config).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise FairMedInputError(f"not valid JSON: {error}", source=args.config) from error
        if not isinstance(values, dict):
            raise FairMedInputError("the SFT config must be a JSON object", source=args.config)
    for name in ("epochs", "seed"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    config = SFTConfig.from_dict(values)
    out = _empty_folder(args.out, kind="output folder", overwrite=args.overwrite)
    last = {}

    def log(record: dict) -> None:
        last.update(record)
        if record["step"] % 50 == 0:
            print(f"step {record['step']} epoch {record['epoch']} loss {record['loss']:.4f}", file=sys.stderr)

    result = train_sft(args.data, out, config, log=log)
    print(f"trained {result.steps} steps on {result.train_cases} cases in {result.train_time_s:.0f} s "
          f"(loss {result.first_loss:.3f} -> {result.final_loss:.3f}); saved to {out}")
    if args.eval_split == "none":
        return 0
    dataset = read_manifest(args.data)
    loaded = load_model(out, device="cpu")
    # The evaluation lives inside the model folder, so the card's numbers sit beside the card.
    run = _evaluate_into(loaded, dataset, out / "evaluation", split=args.eval_split,
                         options=GenerationOptions(batch_size=32), limit=None, n_boot=1000)
    training = json.loads((out / "training_config.json").read_text(encoding="utf-8"))
    card = write_model_card(out, name=out.name, training=training, evaluation=run.info, result=run.audit,
                            parameter_count=loaded.parameter_count, architecture=config.model.to_dict())
    _print_run(run)
    print(f"wrote the model card {card}")
    return 0


def _add_generation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=_positive_int, default=16, help="cases per forward pass (default 16)")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=64, help="answer length limit (default 64)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def _cmd_train_fairgrad(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from fairmed_core.data import read_manifest
    from fairmed_core.runs.jobs import report_progress
    from fairmed_core.training.fairgrad_images import FairGradImageConfig, run_fairgrad_images

    torch.set_num_threads(args.threads)
    out = _empty_folder(args.out)
    config = FairGradImageConfig(method=args.method, attributes=tuple(args.attribute or ("sex",)),
                                 objective=args.objective, penalty_weight=args.penalty_weight, epochs=args.epochs,
                                 warmup_epochs=args.warmup_epochs, learning_rate=args.lr, seed=args.seed,
                                 split=args.split)
    dataset = read_manifest(args.data)
    bar = tqdm(total=len(dataset.sources) * config.epochs, unit="epoch",
               desc=f"training {config.model_name} ({len(dataset.sources)} sources x {config.epochs} epochs)")
    report = _every(0.5, report_progress)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)
        report(done, total, "epochs (all sources)")

    try:
        run = run_fairgrad_images(dataset, out, config, n_boot=args.n_boot, progress=progress)
    finally:
        bar.close()
    print(f"{run.info['n_cases']} cases: accuracy {run.info['accuracy']:.3f}; wrote {run.path} "
          "(predictions.csv, audit/, run.json, training_history.csv)")
    return 0


def _every(seconds: float, report):
    """``report(done, total, what)`` at most once per ``seconds`` (and always at the start and the end): a job's
    progress file is rewritten atomically, which per epoch of a small table would cost more than the epoch."""
    last = [-math.inf]

    def throttled(done: int, total: int, what: str) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last[0] >= seconds:
            last[0] = now
            report(done, total, what)
    return throttled


def _cmd_train_fairgrad_tabular(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from fairmed_core.runs.jobs import report_progress
    from fairmed_core.training.fairgrad_tabular import FairGradTabularConfig, run_fairgrad_tabular

    torch.set_num_threads(args.threads)
    out = _empty_folder(args.out)
    if not Path(args.table).is_file():
        raise FairMedInputError("the table does not exist or is not a file", source=args.table)
    attributes = tuple(args.attribute or ())
    # --objective NAME sets every attribute's objective; --objective ATTR=NAME one attribute's
    objective, objectives = "equalized_odds", {}
    for value in args.objective or ():
        attribute, equals, name = (part.strip() for part in value.partition("="))
        if not equals:
            objective = attribute
        elif attribute not in attributes:
            raise FairMedInputError(f"--objective {value!r} names {attribute!r}, which is not an --attribute",
                                    column=attribute, hint=f"attributes: {list(attributes)}")
        else:
            objectives[attribute] = name
    config = FairGradTabularConfig(
        label=args.label, positive_label=args.positive_label, attributes=attributes, objective=objective,
        objectives=objectives, method=args.method, model=args.model, epochs=args.epochs,
        warmup_epochs=args.warmup_epochs, learning_rate=args.lr, penalty_weight=args.penalty_weight,
        test_fraction=args.test_fraction, seed=args.seed, numeric=tuple(args.numeric) if args.numeric else None,
        categorical=tuple(args.categorical) if args.categorical else None, drop=tuple(args.drop or ()))
    bar = tqdm(total=config.epochs, unit="epoch", desc=f"training {config.model_name}")
    report = _every(0.5, report_progress)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)
        report(done, total, "epochs")

    try:
        run = run_fairgrad_tabular(args.table, out, config, n_boot=args.n_boot, progress=progress)
    finally:
        bar.close()
    info = run.info
    print(f"{info['n_test']} test rows ({info['n_train']} trained on): accuracy {info['accuracy']:.3f}, "
          f"AUROC {info['auroc']:.3f}; wrote {run.path} (predictions.csv, audit/, run.json, training_history.csv)")
    for note in info.get("notes", []):
        print(f"note: {note}")
    return 0


def _cmd_train_grpo(args: argparse.Namespace) -> int:
    import torch

    from fairmed_core.runs.jobs import report_progress
    from fairmed_core.training.grpo_job import GRPOJobConfig, run_grpo_training

    torch.set_num_threads(args.threads)
    config = GRPOJobConfig(
        method=args.method, steps=args.steps, prompts_per_step=args.prompts, num_generations=args.generations,
        learning_rate=args.lr, beta=args.beta, max_completion_length=args.max_completion_length,
        eval_every=args.eval_every, eval_limit=args.eval_limit or None, save_every=args.save_every,
        train_limit=args.train_limit, seed=args.seed, temperature=args.temperature, lora_rank=args.lora_rank,
        gradient_checkpointing=args.gradient_checkpointing,
        group_attributes=tuple(args.group_attribute or ("sex", "age_group")),
        test_split=None if args.test_split == "none" else args.test_split)

    def progress(done: int, total: int) -> None:
        report_progress(done, total, "steps")

    finished = run_grpo_training(args.model, args.data, args.out, config, resume=args.resume, progress=progress)
    if "rank" in finished:  # a helper rank of a multi-process launch: rank 0 wrote the run and reports it
        return 0
    print(f"{finished['method']}: {finished['steps']} steps in {finished['train_time_s']} s "
          f"({finished['seconds_per_step']} s/step)"
          + (f", test accuracy {finished['test_accuracy']:.3f}" if "test_accuracy" in finished else "")
          + f"; wrote {args.out}")
    return 0


def _cmd_train_counterfactual(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from fairmed_core.counterfactual import CounterfactualGeneratorConfig, train_generator
    from fairmed_core.counterfactual.analysis import CLASSIFIER_DIR
    from fairmed_core.counterfactual.attribute_classifier import train_attribute_classifier
    from fairmed_core.data import read_manifest
    from fairmed_core.runs.jobs import report_progress

    torch.set_num_threads(args.threads)
    config = CounterfactualGeneratorConfig(
        attribute=args.attribute, classes=tuple(args.classes.split(",")) if args.classes else (),
        sources=tuple(args.source or ()), train_steps=args.steps, batch_size=args.batch_size,
        learning_rate=args.lr, checkpoint_every=args.checkpoint_every, seed=args.seed)
    dataset = read_manifest(args.data)
    bar = tqdm(total=config.train_steps, unit="step", desc=f"training the {args.attribute} generator")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)
        report_progress(done, total, "steps")

    try:
        summary = train_generator(dataset, args.out, config, progress=progress, resume=not args.restart)
    finally:
        bar.close()
    recent = summary.losses[-100:]
    print(f"{summary.step} steps ({'resumed from ' + str(summary.resumed_from) if summary.resumed_from else 'fresh'}"
          f", {summary.seconds:.0f} s in all); mean loss of the last {len(recent)} steps "
          f"{sum(recent) / max(1, len(recent)):.4f}; wrote {args.out}")
    if args.classifier_epochs:
        from fairmed_core.counterfactual import load_generator

        generator = load_generator(args.out)
        classifier = train_attribute_classifier(dataset, args.attribute, generator.config.classes,
                                                sources=generator.config.sources, epochs=args.classifier_epochs,
                                                seed=args.seed)
        classifier.save(Path(args.out) / CLASSIFIER_DIR)
        quality = ", ".join(f"{s} {i.val_balanced_accuracy:.2f}" if i.val_balanced_accuracy is not None
                            else f"{s} unknown" for s, i in classifier.infos.items())
        print(f"attribute classifier (judges effectiveness): balanced accuracy on val {quality}")
    from fairmed_core.counterfactual.card import write_generator_card

    command = (f"fairmed train counterfactual --data {args.data} --attribute {args.attribute} --out {args.out} "
               f"--steps {args.steps} --batch-size {args.batch_size} --lr {args.lr:g} --seed {args.seed}")
    print(f"wrote the card {write_generator_card(args.out, command=command)}")
    return 0


def _load_predictor(args: argparse.Namespace):
    """The model under review: a Gemma 3 image-text model folder, or a FairMed image classifier folder."""
    from fairmed_core.counterfactual.analysis import ClassifierPredictor, VLMPredictor
    from fairmed_core.models.loading import load_model

    folder = Path(args.model)
    if (folder / "classifier_config.json").is_file():
        from fairmed_core.counterfactual.classifiers import load_image_classifier

        return ClassifierPredictor(load_image_classifier(folder), name=str(folder))
    return VLMPredictor(load_model(folder, adapter=args.adapter, device=args.device), _generation_options(args),
                        name=str(folder))


def _cmd_counterfactual(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from fairmed_core.counterfactual import load_generator
    from fairmed_core.counterfactual.analysis import AnalysisSettings, generator_classifier, run_counterfactual_analysis
    from fairmed_core.counterfactual.validity import ValidityThresholds
    from fairmed_core.data import read_manifest
    from fairmed_core.runs.jobs import report_progress

    torch.set_num_threads(args.threads)
    out = _empty_folder(args.out)
    generator = load_generator(args.generator)
    dataset = read_manifest(args.data)
    generator.check_compatible(dataset, args.attribute)
    settings = AnalysisSettings(
        split=args.split, n=args.n, group=args.group, targets=tuple(args.target or ()), seed=args.seed,
        guidance=args.guidance, steps=args.steps, strength=args.strength, batch_size=args.generator_batch,
        reversibility=not args.no_reversibility,
        thresholds=ValidityThresholds(args.min_effectiveness, args.max_composition_error,
                                      args.max_reversibility_error))
    predictor = _load_predictor(args)
    bars: dict = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, unit="item"))
        bar.update(done - bar.n)
        report_progress(done, total, stage)

    try:
        result = run_counterfactual_analysis(predictor, generator, dataset, settings, out_dir=out,
                                             classifier=generator_classifier(generator), progress=progress)
    finally:
        for bar in bars.values():
            bar.close()
    tests = result.tests
    overall = tests["flips"]["rows"][0]
    print(f"{tests['n_pairs']} pairs of {tests['n_cases']} cases ({tests['n_valid_pairs']} valid): flip rate "
          f"{overall['flip_rate']:.3f} [{overall['ci_low']:.3f}, {overall['ci_high']:.3f}], McNemar p "
          f"{overall['p_value'] if overall['p_value'] is not None else float('nan'):.3g}")
    ci = tests["ci_test"]
    print(f"conditional-independence test: p = {ci['p_value']:.3g}" if ci.get("ran") else
          f"conditional-independence test: {ci['note']}")
    if "true_counterfactuals" in tests:
        eca = tests["true_counterfactuals"]["eca"]
        print(f"true counterfactuals (benchmark): ECA {eca['eca']:.3f} [{eca['ci_low']:.3f}, {eca['ci_high']:.3f}]")
    print(f"wrote {out} (pairs/, pairs.csv, tests.json, run.json)")
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

    evaluate = commands.add_parser(
        "evaluate", help="run a Gemma 3 image-text model over a dataset split, store predictions and audit")
    evaluate.add_argument("--model", required=True, help="model folder (config.json, processor, safetensors)")
    evaluate.add_argument("--adapter", help="LoRA adapter folder (peft, safetensors) applied to the model")
    evaluate.add_argument("--data", required=True, help="manifest.jsonl of a dataset")
    evaluate.add_argument("--split", default="test", help="split to answer, or 'all' (default test)")
    evaluate.add_argument("--limit", type=_positive_int, help="answer only the first N cases of the split")
    evaluate.add_argument("--out", required=True, help="run folder to create (predictions.csv, audit/, run.json)")
    evaluate.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda:N")
    evaluate.add_argument("--n-boot", type=_non_negative_int, default=1000, help="audit bootstrap resamples")
    evaluate.add_argument("--threads", type=_positive_int, default=1, help="CPU threads for torch (default 1)")
    _add_generation_flags(evaluate)
    evaluate.set_defaults(run=_cmd_evaluate)

    train = commands.add_parser("train", help="train models (sft: the tiny FairMedGemma warm start; fairgrad: CNNs with FairGrad)")
    methods = train.add_subparsers(dest="method", required=True, metavar="METHOD")
    sft = methods.add_parser("sft", help="supervised warm start of the tiny FairMedGemma on a benchmark manifest")
    sft.add_argument("--data", required=True, help="manifest.jsonl written by `fairmed synth`")
    sft.add_argument("--out", required=True, help="model folder to write (save_pretrained + model card)")
    sft.add_argument("--config", help="JSON file of SFTConfig fields (model sizes under \"model\")")
    sft.add_argument("--epochs", type=_positive_int, help="override the config's epochs")
    sft.add_argument("--seed", type=int, help="override the config's seed")
    sft.add_argument("--eval-split", default="test",
                     help="split to evaluate for the model card and predictions file, or 'none' (default test)")
    sft.add_argument("--threads", type=_positive_int, default=1, help="CPU threads for torch (default 1)")
    sft.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    sft.set_defaults(run=_cmd_train_sft)
    fairgrad = methods.add_parser(
        "fairgrad", help="train one small CNN per source on the benchmark's images with ERM, penalty or FairGrad, "
        "predict the test split and store it as an audited run")
    fairgrad.add_argument("--data", required=True, help="manifest.jsonl of an image dataset")
    fairgrad.add_argument("--out", required=True, help="run folder to create (predictions.csv, audit/, run.json)")
    fairgrad.add_argument("--method", choices=["erm", "penalty", "fairgrad"], default="fairgrad")
    fairgrad.add_argument("--attribute", action="append",
                          help="sensitive attribute with its own fairness objective (repeat; default sex)")
    fairgrad.add_argument("--objective", choices=["equalized_odds", "equal_opportunity", "demographic_parity"],
                          default="equalized_odds")
    fairgrad.add_argument("--penalty-weight", type=float, default=1.0, help="fairness weight of --method penalty")
    fairgrad.add_argument("--epochs", type=_positive_int, default=15)
    fairgrad.add_argument("--warmup-epochs", type=int, default=8, help="ERM epochs before fairness starts")
    fairgrad.add_argument("--lr", type=float, default=3e-3)
    fairgrad.add_argument("--seed", type=int, default=0)
    fairgrad.add_argument("--split", default="test", help="split to predict (default test)")
    fairgrad.add_argument("--n-boot", type=_positive_int, default=1000, help="audit bootstrap resamples")
    fairgrad.add_argument("--threads", type=_positive_int, default=1, help="CPU threads for torch (default 1)")
    fairgrad.set_defaults(run=_cmd_train_fairgrad)
    fairgrad_tabular = methods.add_parser(
        "fairgrad-tabular", help="train a logistic regression or MLP on your own table (CSV, TSV, Parquet) with "
        "ERM, penalty or FairGrad, predict a held-out test split and store it as an audited run")
    fairgrad_tabular.add_argument("--table", required=True, help="the table: one row per patient, a header row")
    fairgrad_tabular.add_argument("--label", required=True, help="outcome column")
    fairgrad_tabular.add_argument("--positive-label", help="the label value meaning the outcome happened "
                                  "(not needed for a 0/1 or true/false label)")
    fairgrad_tabular.add_argument("--attribute", action="append", required=True,
                                  help="sensitive attribute column with its own fairness objective (repeat)")
    fairgrad_tabular.add_argument("--objective", action="append", metavar="[ATTR=]OBJECTIVE",
                                  help="equalized_odds, equal_opportunity or demographic_parity, for every "
                                  "attribute or, as ATTR=OBJECTIVE, for one (repeat; default equalized_odds)")
    fairgrad_tabular.add_argument("--numeric", action="extend", nargs="+", metavar="COL",
                                  help="columns to read as numbers")
    fairgrad_tabular.add_argument("--categorical", action="extend", nargs="+", metavar="COL",
                                  help="columns to one-hot encode (text feature columns must be declared)")
    fairgrad_tabular.add_argument("--drop", action="extend", nargs="+", metavar="COL",
                                  help="columns to ignore (identifiers, dates, free text, other outcomes)")
    fairgrad_tabular.add_argument("--out", required=True, help="run folder to create (predictions.csv, audit/, "
                                  "run.json)")
    fairgrad_tabular.add_argument("--method", choices=["erm", "penalty", "fairgrad"], default="fairgrad")
    fairgrad_tabular.add_argument("--model", choices=["logistic", "mlp"], default="logistic")
    fairgrad_tabular.add_argument("--penalty-weight", type=float, default=1.0, help="fairness weight of --method "
                                  "penalty")
    fairgrad_tabular.add_argument("--epochs", type=_positive_int, default=100)
    fairgrad_tabular.add_argument("--warmup-epochs", type=_non_negative_int, default=0,
                                  help="ERM epochs before fairness starts")
    fairgrad_tabular.add_argument("--lr", type=float, default=1e-2)
    fairgrad_tabular.add_argument("--test-fraction", type=float, default=0.2, help="held-out share (default 0.2)")
    fairgrad_tabular.add_argument("--seed", type=int, default=0)
    fairgrad_tabular.add_argument("--n-boot", type=_positive_int, default=1000, help="audit bootstrap resamples")
    fairgrad_tabular.add_argument("--threads", type=_positive_int, default=1, help="CPU threads for torch (default 1)")
    fairgrad_tabular.set_defaults(run=_cmd_train_fairgrad_tabular)
    for method, text in (("grpo", "plain GRPO (TRL)"), ("fairgrpo", "FairGRPO"),
                         ("fairgrpo_nd", "FairGRPO without demographics (all prompts clustered)"),
                         ("grpo_dro", "GRPO with online Group DRO weights"),
                         ("grpo_resample", "GRPO with group-balanced resampling")):
        grpo = methods.add_parser(method, help=f"train a FairMedGemma-family model with {text}")
        grpo.add_argument("--model", required=True, help="model folder to start from (e.g. the tiny SFT model)")
        grpo.add_argument("--data", required=True, help="manifest.jsonl (trains on its train split)")
        grpo.add_argument("--out", required=True, help="run folder (config, metrics.jsonl, checkpoints, model)")
        grpo.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
        grpo.add_argument("--steps", type=_positive_int, default=60)
        grpo.add_argument("--prompts", type=_positive_int, default=8,
                          help="prompts per step and process (N processes: N times as many per step)")
        grpo.add_argument("--generations", type=_positive_int, default=4, help="rollouts per prompt (G)")
        grpo.add_argument("--lr", type=float, default=2e-5)
        grpo.add_argument("--beta", type=float, default=0.0, help="KL coefficient (default 0, as the authors)")
        grpo.add_argument("--max-completion-length", type=_positive_int, default=40)
        grpo.add_argument("--temperature", type=float, default=1.0, help="rollout sampling temperature")
        grpo.add_argument("--lora-rank", type=int, default=0,
                          help="LoRA rank on the language model's projections (default 0: train every weight); "
                          "the adapter is merged into the saved model")
        grpo.add_argument("--gradient-checkpointing", action="store_true",
                          help="recompute activations in the backward pass (less GPU memory)")
        grpo.add_argument("--eval-every", type=_positive_int, default=10, help="held-out evaluation interval")
        grpo.add_argument("--eval-limit", type=int, default=300, help="held-out cases per evaluation (0: all)")
        grpo.add_argument("--save-every", type=_positive_int, default=20, help="checkpoint interval")
        grpo.add_argument("--train-limit", type=_positive_int, default=None, help="train on the first N cases")
        grpo.add_argument("--group-attribute", action="append", help="demographic group attributes (repeat)")
        grpo.add_argument("--test-split", default="test", help="split evaluated at the end, or 'none'")
        grpo.add_argument("--seed", type=int, default=0)
        grpo.add_argument("--threads", type=_positive_int, default=1, help="CPU threads for torch (default 1)")
        grpo.set_defaults(run=_cmd_train_grpo, method=method)

    counterfactual_train = methods.add_parser(
        "counterfactual", help="train the class-conditional diffusion generator of counterfactual images "
        "(resumes from the folder's last checkpoint) and the attribute classifier that judges its edits")
    counterfactual_train.add_argument("--data", required=True, help="manifest.jsonl (trains on its train split)")
    counterfactual_train.add_argument("--attribute", required=True, help="sensitive attribute: the condition")
    counterfactual_train.add_argument("--out", required=True, help="generator folder (diffusers format)")
    counterfactual_train.add_argument("--classes", help="comma-separated groups to learn (default: all known)")
    counterfactual_train.add_argument("--source", action="append", help="data source to learn (repeat; default all)")
    counterfactual_train.add_argument("--steps", type=_positive_int, default=1600, help="optimiser steps in all")
    counterfactual_train.add_argument("--batch-size", type=_positive_int, default=16)
    counterfactual_train.add_argument("--lr", type=float, default=1e-3)
    counterfactual_train.add_argument("--checkpoint-every", type=_positive_int, default=100)
    counterfactual_train.add_argument("--classifier-epochs", type=_non_negative_int, default=12,
                                      help="epochs of the attribute classifier (0: none)")
    counterfactual_train.add_argument("--restart", action="store_true",
                                      help="start over instead of resuming from the folder's checkpoint")
    counterfactual_train.add_argument("--seed", type=int, default=0)
    counterfactual_train.add_argument("--threads", type=_positive_int, default=2, help="CPU threads for torch")
    counterfactual_train.set_defaults(run=_cmd_train_counterfactual)

    counterfactual = commands.add_parser(
        "counterfactual", help="counterfactual analysis of a model: generated pairs, answers on both sides, "
        "validity of each pair, flip rates with McNemar, the conditional-independence test")
    counterfactual.add_argument("--model", required=True, help="model under review (Gemma 3 folder or classifier)")
    counterfactual.add_argument("--adapter", help="LoRA adapter folder applied to the model")
    counterfactual.add_argument("--generator", required=True, help="generator folder (fairmed train counterfactual)")
    counterfactual.add_argument("--data", required=True, help="manifest.jsonl of a dataset")
    counterfactual.add_argument("--attribute", required=True, help="the attribute the generator changes")
    counterfactual.add_argument("--out", required=True, help="run folder to create")
    counterfactual.add_argument("--split", default="test")
    counterfactual.add_argument("--n", type=_positive_int, default=48, help="cases, stratified by source and group")
    counterfactual.add_argument("--group", help="only cases of this factual group")
    counterfactual.add_argument("--target", action="append", help="target group (repeat; default every other)")
    counterfactual.add_argument("--steps", type=_positive_int, help="DDIM steps (default: the generator's)")
    counterfactual.add_argument("--guidance", type=float, help="guidance scale (default: the generator's)")
    counterfactual.add_argument("--strength", type=float, help="share of the chain inverted (default: generator's)")
    counterfactual.add_argument("--generator-batch", type=_positive_int, default=8, help="images per edit batch")
    counterfactual.add_argument("--no-reversibility", action="store_true", help="skip the there-and-back check")
    counterfactual.add_argument("--min-effectiveness", type=float, default=0.5)
    counterfactual.add_argument("--max-composition-error", type=float, default=12.0)
    counterfactual.add_argument("--max-reversibility-error", type=float, default=15.0)
    counterfactual.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda:N")
    counterfactual.add_argument("--threads", type=_positive_int, default=2, help="CPU threads for torch")
    _add_generation_flags(counterfactual)
    counterfactual.set_defaults(run=_cmd_counterfactual)

    dashboard = commands.add_parser("dashboard", help="start the Streamlit dashboard")
    dashboard.add_argument("--port", type=_positive_int, default=8501)
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
    sys.exit(main())
