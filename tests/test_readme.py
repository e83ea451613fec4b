"""The README's two commands stay true: CI runs the README's test command, and setup names what CI installs."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT


def _readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.DOTALL)[:2]


def test_ci_runs_the_readme_test_command():
    _, test_command = _readme_commands()
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command.strip() in ci.splitlines()


def test_setup_command_installs_pinned_torch_and_requirements_then_starts_the_app():
    setup, _ = _readme_commands()
    assert "torch==2.13.0" in setup and "-r requirements.txt" in setup and "streamlit run app.py" in setup
    requirements = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    pins = [line for line in requirements if line and not line.startswith("#")]
    assert "torch==2.13.0" in pins
    assert all("==" in line for line in pins), [line for line in pins if "==" not in line]
    assert not any(line.startswith(("torchvision", "torchaudio")) for line in pins)
