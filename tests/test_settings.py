"""Each job's settings are declared once: every field of every job config has a flag (on the command that runs the
job) and a help, its JSON form round-trips, unknown keys are refused, a flag overrides the config file, and bad
values are refused with the setting named."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from fairmed_core.cli import build_parser
from fairmed_core.errors import FairMedInputError
from fairmed_core.jobs.configs import (JOB_CONFIGS, CounterfactualAnalysisJobConfig, EvaluationJobConfig,
                                       FairGradImagesJobConfig, FairGradTabularJobConfig, GeneratorTrainingJobConfig,
                                       GRPOTrainingJobConfig, SFTJobConfig)
from fairmed_core.settings import (add_config_flags, config_from_args, config_from_dict, config_settings,
                                   config_to_dict, read_config, write_config)
from fairmed_core.training.grpo_config import METHODS, GRPOJobConfig

COMMANDS = {"evaluate": ["evaluate"], "train sft": ["train", "sft"], "train <grpo method>": ["train", "fairgrpo"],
            "train fairgrad": ["train", "fairgrad"], "train fairgrad-tabular": ["train", "fairgrad-tabular"],
            "train counterfactual": ["train", "counterfactual"], "counterfactual": ["counterfactual"]}
# Settings a command fixes itself rather than by a flag: the GRPO family's method is the subcommand's name.
FIXED = {"train <grpo method>": {"method"}}

EXAMPLES = {
    EvaluationJobConfig: dict(model="m", data="d.jsonl", limit=5, generation={"max_new_tokens": 12}),
    SFTJobConfig: dict(data="d.jsonl", sft={"epochs": 2, "sources": ["synth_cxr"], "model": {"text_layers": 1}}),
    GRPOTrainingJobConfig: dict(model="m", data="d.jsonl", training={"method": "grpo_dro", "dro_step_size": 0.05,
                                                                     "group_attributes": ["sex"], "eval_limit": 0}),
    FairGradImagesJobConfig: dict(data="d.jsonl", fairgrad={"attributes": ["sex", "skin_tone"], "epochs": 3}),
    FairGradTabularJobConfig: dict(table="t.csv", fairgrad={"label": "y", "attributes": ["sex", "race"],
                                                            "objectives": {"race": "equal_opportunity"}}),
    GeneratorTrainingJobConfig: dict(data="d.jsonl", generator={"classes": ["F", "M"], "block_out_channels": [8, 16]}),
    CounterfactualAnalysisJobConfig: dict(model="m", generator="g", data="d.jsonl", attribute="sex",
                                          analysis={"targets": ["M"], "thresholds": {"effectiveness": 0.7}}),
}


def _subparser(path: list[str]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("command", list(JOB_CONFIGS))
def test_every_setting_of_a_job_config_has_a_flag_on_its_command_and_a_help(command):
    options = {flag for action in _subparser(COMMANDS[command])._actions for flag in action.option_strings}
    assert "--config" in options
    for setting in config_settings(JOB_CONFIGS[command]):
        assert setting.help.strip(), f"{command}: {'.'.join(setting.path)} has no help"
        if setting.name in FIXED.get(command, ()):
            continue
        assert setting.flag in options, f"fairmed {command}: {'.'.join(setting.path)} has no flag {setting.flag}"


@pytest.mark.parametrize("cls", list(EXAMPLES))
def test_a_job_config_round_trips_through_its_json_file(cls, tmp_path):
    config = config_from_dict(cls, {**{k: v for k, v in EXAMPLES[cls].items() if not isinstance(v, dict)},
                                    **_flat(cls, EXAMPLES[cls])})
    path = write_config(config, tmp_path / "job.json")
    assert read_config(cls, path) == config
    assert json.loads(path.read_text()) == config_to_dict(config)


def _flat(cls, example: dict) -> dict:
    """Inline nested settings are JSON keys of the job itself; nested non-inline ones stay objects."""
    out = {}
    for spec in dataclasses.fields(cls):
        if isinstance(example.get(spec.name), dict) and spec.metadata.get("inline"):
            out.update(example[spec.name])
        elif spec.name in example:
            out[spec.name] = example[spec.name]
    return out


def test_unknown_keys_are_refused_naming_the_known_ones(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"model": "m", "data": "d", "stepz": 3}))
    with pytest.raises(FairMedInputError, match=r"unknown .*settings \['stepz'\].*known: \[.*'steps'") as error:
        read_config(GRPOTrainingJobConfig, path)
    assert str(path) in str(error.value)
    with pytest.raises(FairMedInputError, match=r"unknown model settings \['layers'\]"):
        config_from_dict(SFTJobConfig, {"data": "d", "model": {"layers": 1}})


def test_a_flag_overrides_the_config_file_which_overrides_the_default(tmp_path):
    job = write_config(config_from_dict(GRPOTrainingJobConfig, {"model": "m", "data": "d", "steps": 7,
                                                                "learning_rate": 1e-5}), tmp_path / "job.json")
    args = build_parser().parse_args(["train", "fairgrpo", "--config", str(job), "--out", "x", "--steps", "9"])
    config = config_from_args(GRPOTrainingJobConfig, args, method=args.method)
    assert (config.training.steps, config.training.learning_rate, config.training.beta) == (9, 1e-5, 0.0)


def test_the_command_and_the_job_file_must_agree_on_the_method(tmp_path):
    job = write_config(config_from_dict(GRPOTrainingJobConfig, {"model": "m", "data": "d", "method": "fairgrpo"}),
                       tmp_path / "job.json")
    args = build_parser().parse_args(["train", "grpo", "--config", str(job), "--out", "x"])
    with pytest.raises(FairMedInputError, match="says method 'fairgrpo' but the command says 'grpo'"):
        config_from_args(GRPOTrainingJobConfig, args, method=args.method)


def test_fairgrpo_options_have_flags_and_reach_the_trainer_config():
    from fairmed_core.training.fairgrpo_trainer import FairGRPOConfig

    args = build_parser().parse_args(["train", "fairgrpo", "--model", "m", "--data", "d", "--out", "x",
                                      "--rescale", "zero_mean", "--statistics", "batch_local", "--no-cluster-unknown",
                                      "--dro-step-size", "0.2", "--max-clusters", "2"])
    config = config_from_args(GRPOTrainingJobConfig, args, method=args.method).training
    assert (config.rescale, config.statistics, config.cluster_unknown, config.dro_step_size, config.max_clusters) \
        == ("zero_mean", "batch_local", False, 0.2, 2)
    # The job's defaults are the trainer's: one default, wherever the run starts.
    trainer_defaults = {f.name: f.default for f in dataclasses.fields(FairGRPOConfig)}
    for name, value in GRPOJobConfig().trainer_options().items():
        if name not in ("method", "group_attributes"):
            assert trainer_defaults[name] == value, name


@pytest.mark.parametrize(("values", "message"), [
    ({"num_generations": 1}, "num_generations must be at least 2"),
    ({"learning_rate": 0.0}, "learning_rate must be positive"),
    ({"learning_rate": float("nan")}, "learning_rate must be positive"),
    ({"method": "ppo"}, "unknown method 'ppo'"),
    ({"rescale": "sideways"}, "unknown rescale 'sideways'"),
    ({"steps": 0}, "steps must be a positive whole number"),
])
def test_bad_training_settings_are_refused_naming_the_setting(values, message):
    with pytest.raises(FairMedInputError, match=message):
        config_from_dict(GRPOTrainingJobConfig, {"model": "m", "data": "d", **values})


def test_bad_fairgrad_and_evaluation_settings_are_refused():
    with pytest.raises(FairMedInputError, match="learning_rate must be a positive number"):
        config_from_dict(FairGradImagesJobConfig, {"data": "d", "learning_rate": -1.0})
    with pytest.raises(FairMedInputError, match="method must be one of"):
        config_from_dict(FairGradTabularJobConfig, {"table": "t", "label": "y", "attributes": ["sex"],
                                                    "method": "magic"})
    with pytest.raises(FairMedInputError, match="missing --label"):
        config_from_dict(FairGradTabularJobConfig, {"table": "t"})
    with pytest.raises(FairMedInputError, match="device must be auto, cpu or cuda:N"):
        config_from_dict(EvaluationJobConfig, {"model": "m", "data": "d", "device": "gpu"})


def test_the_command_line_defaults_are_the_configs_defaults():
    """The drift the issue found (generator steps 1600 on the command line, 1000 in the config; 96 answer tokens
    on a page, 64 in the config) cannot come back: no flag states a default of its own."""
    args = build_parser().parse_args(["train", "counterfactual", "--data", "d", "--out", "x"])
    assert config_from_args(GeneratorTrainingJobConfig, args).generator.train_steps == 1000
    args = build_parser().parse_args(["evaluate", "--model", "m", "--data", "d", "--out", "x"])
    assert config_from_args(EvaluationJobConfig, args).generation.max_new_tokens == 64


def test_a_list_flag_a_keyed_flag_and_a_shared_flag():
    parser = argparse.ArgumentParser()
    add_config_flags(parser, FairGradTabularJobConfig)
    args = parser.parse_args(["--table", "t.csv", "--label", "y", "--attribute", "sex", "--attribute", "race",
                              "--objective", "demographic_parity", "--objective", "race=equal_opportunity",
                              "--drop", "id", "date"])
    config = config_from_args(FairGradTabularJobConfig, args).fairgrad
    assert config.attributes == ("sex", "race") and config.drop == ("id", "date")
    assert config.objective_of("sex") == "demographic_parity" and config.objective_of("race") == "equal_opportunity"
    # One --seed sets the analysis's seed and the decoding seed, as the command always did.
    args = build_parser().parse_args(["counterfactual", "--model", "m", "--generator", "g", "--data", "d",
                                      "--attribute", "sex", "--out", "x", "--seed", "4", "--no-reversibility"])
    config = config_from_args(CounterfactualAnalysisJobConfig, args)
    assert (config.analysis.seed, config.generation.seed, config.analysis.reversibility) == (4, 4, False)


def test_every_grpo_method_has_its_subcommand():
    parser = _subparser(["train"])
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(METHODS) <= set(action.choices)


JOB_MODULES = {"evaluate": "evaluation", "train sft": "sft", "train <grpo method>": "grpo_training",
               "train fairgrad": "fairgrad_images", "train fairgrad-tabular": "fairgrad_tabular",
               "train counterfactual": "generator_training", "counterfactual": "counterfactual_analysis"}


@pytest.mark.parametrize("command", list(JOB_CONFIGS))
def test_every_job_runs_behind_one_signature(command):
    """``fairmed_core.jobs.<job>.run(config, out_dir, progress)``: what the command line calls, and what any other
    caller (a benchmark, a notebook) calls with the same config."""
    import importlib
    import inspect
    import typing

    module = importlib.import_module(f"fairmed_core.jobs.{JOB_MODULES[command]}")
    parameters = list(inspect.signature(module.run).parameters.values())
    assert [p.name for p in parameters[:3]] == ["config", "out_dir", "progress"]
    assert all(p.kind is p.KEYWORD_ONLY for p in parameters[3:])
    hints = typing.get_type_hints(module.run, localns={JOB_CONFIGS[command].__name__: JOB_CONFIGS[command]})
    assert hints["config"] is JOB_CONFIGS[command]


def test_building_the_command_line_imports_no_model_library():
    """Job configs live in light modules: ``fairmed audit`` or ``--help`` never waits for torch or diffusers."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = ("import sys; from fairmed_core.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'transformers', 'diffusers', 'trl', 'streamlit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"


def test_the_fairgrad_objectives_are_the_estimators():
    from fairmed_core.training.fairgrad import FAIRNESS_OBJECTIVES
    from fairmed_core.training.fairgrad_config import OBJECTIVES

    assert tuple(FAIRNESS_OBJECTIVES) == OBJECTIVES


def test_a_training_result_round_trips_and_reads_files_of_other_versions():
    from fairmed_core.runs.training_store import TrainingResult

    result = TrainingResult("fairgrpo", 60, train_time_s=12.5, seconds_per_step=0.2, test_accuracy=0.81)
    assert TrainingResult.from_json(json.loads(json.dumps(result.to_json()))) == result
    # A file a later FairMed wrote, with a key this one does not know, still reads; a file missing a required
    # key does not.
    assert TrainingResult.from_json({"method": "grpo", "steps": 3, "gpu_hours": 1.0}).steps == 3
    with pytest.raises(FairMedInputError, match=r"training.json: the TrainingResult record lacks \['steps'\]"):
        TrainingResult.from_json({"method": "grpo"}, source="training.json")
