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


def _documented_cli_calls() -> list[str]:
    """Every ``fairmed ...`` (or ``-m fairmed_core.cli ...``) call in the README's bash blocks, continuation lines
    joined, comments and optional ``[...]`` parts kept as written (the brackets removed)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    calls = []
    for block in re.findall(r"```bash\n(.+?)\n```", text, flags=re.DOTALL):
        lines, current = [], ""
        for raw in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", raw).rstrip()  # a trailing "# comment"
            if not line.strip():
                continue
            if current:
                current += " " + line.strip()
            elif re.match(r"^(fairmed |accelerate launch )", line.strip()):
                current = line.strip()
            if current and not current.endswith("\\"):
                lines.append(current)
                current = ""
            elif current:
                current = current[:-1].rstrip()
        for line in lines:
            match = re.search(r"(?:^fairmed|-m fairmed_core\.cli)\s+(.*)$", line)
            if match:
                calls.append(match.group(1).replace("[", "").replace("]", ""))
    return calls


def test_every_documented_cli_call_parses():
    import shlex

    from fairmed_core.cli import build_parser

    calls = _documented_cli_calls()
    assert len(calls) >= 12 and any("--lora-rank" in call for call in calls)
    parser = build_parser()
    for call in calls:
        try:
            parser.parse_args(shlex.split(call))
        except SystemExit as error:  # argparse reports and exits on a flag the CLI does not have
            raise AssertionError(f"README call does not parse: fairmed {call}") from error
