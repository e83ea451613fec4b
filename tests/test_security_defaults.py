"""The dashboard is safe by default: it listens on this machine only and shows visitors the viewer's menu."""

from __future__ import annotations

import tomllib

from tests.conftest import REPO_ROOT


def _streamlit_config() -> dict:
    with open(REPO_ROOT / ".streamlit" / "config.toml", "rb") as handle:
        return tomllib.load(handle)


def test_server_binds_to_the_loopback_interface_only():
    assert _streamlit_config()["server"]["address"] == "127.0.0.1"


def test_visitors_get_the_viewer_toolbar_without_developer_options():
    assert _streamlit_config()["client"]["toolbarMode"] == "viewer"


def test_every_option_in_the_config_is_one_streamlit_knows():
    # A misspelt key is ignored by Streamlit with a log line only, which would silently undo the defaults above.
    from streamlit import config

    known = set(config.get_config_options())
    for section, options in _streamlit_config().items():
        for name in options:
            assert f"{section}.{name}" in known, f"{section}.{name}"


def test_readme_documents_the_security_model_and_the_proxy():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Security model", 1)[1].split("\n## ", 1)[0]
    assert "127.0.0.1" in section and "reverse proxy" in section
    assert "proxy_set_header Upgrade" in section  # Streamlit's WebSocket needs it behind a proxy
    assert "What is protected" in section and "What is not" in section


def test_fairmed_dashboard_listens_on_this_machine_unless_told_otherwise(monkeypatch):
    """Streamlit reads .streamlit/config.toml only from the folder it starts in, so the command passes the address."""
    import subprocess

    from fairmed_core.cli import main

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command, env=None: calls.append(command) or 0)
    assert main(["dashboard"]) == 0
    assert calls[-1][calls[-1].index("--server.address") + 1] == "127.0.0.1"
    assert calls[-1][calls[-1].index("--client.toolbarMode") + 1] == "viewer"
    assert main(["dashboard", "--host", "0.0.0.0", "--port", "8600"]) == 0
    assert calls[-1][calls[-1].index("--server.address") + 1] == "0.0.0.0"


def test_a_negative_audit_seed_is_a_one_line_error_not_a_traceback(capsys):
    from fairmed_core.cli import main
    from fairmed_core.runs.workspace import REFERENCE_PREDICTIONS

    code = main(["audit", str(REFERENCE_PREDICTIONS), "--sensitive", "sex", "--label-col", "y_true",
                 "--pred-col", "y_pred", "--seed", "-5", "--n-boot", "10"])  # fmt: skip
    assert code == 2 and "seed must be a whole number >= 0" in capsys.readouterr().err


def test_fairmed_card_opens_every_image_header(tmp_path, capsys):
    import json

    from fairmed_core.cli import main

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    record = {"problem": "<image> Is there an opacity?", "images": ["img/broken.png"], "answer": "yes",
              "demo": "sex: Female, age: 40", "dataset": "synth_cxr"}  # fmt: skip
    (tmp_path / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    assert main(["card", "--data", str(tmp_path / "manifest.jsonl")]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_fairmed_dashboard_fixes_the_workspace_for_the_streamlit_child(monkeypatch, tmp_path, capsys):
    import subprocess

    from fairmed_core.cli import main

    envs = []
    monkeypatch.setenv("FAIRMED_WORKSPACE", str(tmp_path / "from-env"))
    monkeypatch.setattr(subprocess, "call", lambda command, env=None: envs.append(env) or 0)
    assert main(["dashboard"]) == 0
    assert envs[-1]["FAIRMED_WORKSPACE"] == str(tmp_path / "from-env")  # the environment's, passed on
    monkeypatch.chdir(tmp_path)
    assert main(["dashboard", "--workspace", "ws"]) == 0
    assert envs[-1]["FAIRMED_WORKSPACE"] == str((tmp_path / "ws").resolve())  # absolute: the child may move
    (tmp_path / "a-file").write_text("x")
    assert main(["dashboard", "--workspace", "a-file"]) == 2
    assert "a-file is a file, not a folder" in capsys.readouterr().err
    assert len(envs) == 2


def test_the_dashboard_workspace_defaults_to_the_checkout_not_the_current_folder(monkeypatch, tmp_path):
    from fairmed_core.runs.workspace import CHECKOUT_WORKSPACE, Workspace

    monkeypatch.delenv("FAIRMED_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert CHECKOUT_WORKSPACE == REPO_ROOT / "workspace"
    assert Workspace.from_env(default=CHECKOUT_WORKSPACE).root == (REPO_ROOT / "workspace").resolve()
