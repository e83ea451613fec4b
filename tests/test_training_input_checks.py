"""Bad training input is refused before any job starts: an unknown method, G < 2, a learning rate that is not a
positive number, a dataset without demographics for a method that needs them. The command
line exits with code 2 and says why, having loaded no model and written nothing; the Training page shows the
reason and starts no job."""

from __future__ import annotations

import json
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from fairmed_core.cli import main
from fairmed_core.data import read_manifest
from fairmed_core.runs import jobs as jobs_module
from fairmed_core.runs.jobs import list_jobs
from fairmed_core.runs.workspace import Workspace
from fairmed_core.training.grpo_config import GRPOJobConfig
from tests.conftest import REPO_ROOT

N_CASES = 60


def _small_copy(default_manifest, folder, change) -> object:
    """The benchmark's first cases (all splits), images copied, each row passed through ``change``."""
    folder.mkdir(parents=True)
    rows = [json.loads(line) for line in default_manifest.read_text().splitlines()[:N_CASES]]
    for row in rows:
        for image in row["images"]:
            (folder / image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(default_manifest.parent / image, folder / image)
        change(row)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder / "manifest.jsonl"


@pytest.fixture(scope="module")
def anonymous_manifest(default_manifest, tmp_path_factory):
    """No case has demographics (the demo text is empty)."""
    return _small_copy(default_manifest, tmp_path_factory.mktemp("data") / "anonymous", lambda row: row.update(demo=""))


def _train(method, manifest, out, *flags) -> list[str]:
    # A model folder that does not exist: a refusal that came after loading the model would say so instead.
    return ["train", method, "--model", str(out.parent / "no-model-here"), "--data", str(manifest), "--out", str(out),
            "--steps", "1", *flags]


def test_an_unknown_method_exits_2_naming_the_methods(default_manifest, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(_train("ppo", default_manifest, tmp_path / "run"))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'ppo'" in err and "rloo" in err and "reinforce_plus_plus" in err


@pytest.mark.parametrize(("flags", "message"), [
    (("--generations", "1"), "num_generations must be at least 2"),
    (("--lr", "0"), "learning_rate must be positive"),
    (("--lr=-2e-5",), "learning_rate must be positive"),
    (("--lr", "nan"), "learning_rate must be positive"),
])
def test_bad_settings_exit_2_with_the_reason_and_write_nothing(default_manifest, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(_train("rloo", default_manifest, out, *flags)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_learning_rate_that_is_not_a_number_exits_2(default_manifest, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(_train("grpo", default_manifest, tmp_path / "run", "--lr", "fast"))
    assert exit_.value.code == 2 and "--lr" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["fairgrpo", "grpo_dro", "grpo_resample"])
def test_a_dataset_without_demographics_exits_2_before_the_model_loads(anonymous_manifest, tmp_path, capsys,
                                                                        method):
    out = tmp_path / "run"
    assert main(_train(method, anonymous_manifest, out)) == 2
    err = capsys.readouterr().err
    assert "no training case has demographics" in err and "fairgrpo_nd" in err and "no-model-here" not in err
    assert not out.exists() or not any(out.iterdir())


def test_the_check_lets_through_what_each_method_can_use(anonymous_manifest):
    # (A manifest row without a source takes the dataset's name as its source, so the data contract never lacks
    # one; tests/test_training_methods.py checks the refusal on the keys themselves.)
    anonymous = read_manifest(anonymous_manifest)
    for method in ("grpo", "rloo", "reinforce_plus_plus", "fairgrpo_nd"):
        assert sum(GRPOJobConfig(method=method).check_data(anonymous).values()) > 0
    # Only the cases it would train on count: the first train_limit of the train split.
    counts = GRPOJobConfig(method="fairgrpo_nd", train_limit=5).check_data(anonymous)
    assert sum(counts.values()) == 5 and {group for _, group in counts} == {"UNK"}


def test_the_training_page_refuses_a_dataset_without_demographics_and_starts_no_job(default_workspace,
                                                                                    anonymous_manifest, tmp_path,
                                                                                    monkeypatch):
    root = tmp_path / "ws"
    (root / "datasets").mkdir(parents=True)
    (root / "datasets" / "synth-default").symlink_to(default_workspace / "datasets" / "synth-default",
                                                     target_is_directory=True)
    shutil.copytree(anonymous_manifest.parent, root / "datasets" / "anonymous")
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(root))
    monkeypatch.chdir(REPO_ROOT)

    def no_job(*args, **kwargs):
        raise AssertionError("the page started a training job")

    monkeypatch.setattr(jobs_module, "start_job", no_job)  # a failing check must not leave jobs running
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/training.py").run()
    at.session_state["dataset_choice"] = str(root / "datasets" / "anonymous" / "manifest.jsonl")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("dataset **anonymous**" in c.value for c in at.caption)
    labels = at.multiselect(key="training_methods")
    assert "EQPO" in labels.help and "FAIRGRPO_DEVIATIONS" in labels.help and "REINFORCE++" in labels.help
    labels.set_value(["grpo", "fairgrpo"])
    # The page run alone (AppTest) does not render the sidebar, so its choice is given again with the click.
    at.session_state["dataset_choice"] = str(root / "datasets" / "anonymous" / "manifest.jsonl")
    at.button[0].click().run()
    assert not at.exception
    assert any("dataset **anonymous**" in c.value for c in at.caption)
    assert any("no training case has demographics" in e.value and "fairgrpo_nd" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert not at.success and list_jobs(Workspace(root)) == []
    assert not (root / "runs").exists() or not any((root / "runs").iterdir())
