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
