"""Form widgets derived from a job's config dataclass: one widget per setting, labelled from its name, with its
help as the tooltip and its default as the start value, so a page's form cannot drift from the command line.

The page turns the widgets' values into the config with :func:`build_config`, which runs the dataclass's own
checks: a bad setting is refused on the page, before any job starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import streamlit as st

from fairmed_core.settings import Setting, config_from_dict, config_settings

__all__ = ["build_config", "config_defaults", "config_widgets", "setting_label"]


def setting_label(setting: Setting) -> str:
    """A field name as a form label: ``num_generations`` -> "Num generations"."""
    return setting.name.replace("_", " ").capitalize()


def _widget(container, setting: Setting, key: str, default: Any) -> Any:
    label, help_text = setting_label(setting), setting.help or None
    if setting.kind == "bool":
        return container.checkbox(label, value=bool(default), help=help_text, key=key)
    if setting.choices is not None:
        options = list(setting.choices)
        return container.selectbox(label, options, index=options.index(default) if default in options else 0,
                                   help=help_text, key=key)
    if setting.kind == "int":
        # An optional count starts empty when its default is None; no bounds: the config says what is allowed.
        return container.number_input(label, value=None if default is None else int(default), step=1,
                                      help=help_text, key=key, placeholder="all" if setting.optional else None)
    if setting.kind == "float":
        return container.number_input(label, value=None if default is None else float(default), format="%.6g",
                                      help=help_text, key=key)
    if setting.kind == "list":
        text = container.text_input(label, value=", ".join(str(v) for v in default or ()), help=(help_text or "")
                                    + " (comma-separated)", key=key)
        return [part.strip() for part in text.split(",") if part.strip()]
    text = container.text_input(label, value="" if default is None else str(default), help=help_text, key=key)
    return None if setting.optional and not text.strip() else text


def config_widgets(cls: type, *, key_prefix: str, names: Iterable[str] | None = None,
                   skip: Iterable[str] = (), columns: int = 3, defaults: Mapping[str, Any] | None = None) -> dict:
    """One widget per setting of ``cls`` (leaf names ``names`` only, when given; ``skip`` left out), laid out in
    ``columns`` columns, keyed ``<key_prefix>_<name>``; returns ``{name: value}`` for :func:`build_config`.
    ``defaults`` overrides the dataclass defaults as start values."""
    wanted = None if names is None else list(names)
    settings = [s for s in config_settings(cls) if s.name not in set(skip) and s.kind != "mapping"
                and (wanted is None or s.name in wanted)]
    if wanted is not None:
        settings.sort(key=lambda s: wanted.index(s.name))
    cells = st.columns(columns)
    values = {}
    for index, setting in enumerate(settings):
        default = (defaults or {}).get(setting.name, setting.default)
        values[setting.name] = _widget(cells[index % columns], setting, f"{key_prefix}_{setting.name}", default)
    return values


def config_defaults(cls: type) -> dict[str, Any]:
    """``{setting name: default}`` of ``cls``: the start values of a hand-laid form (settings without a default
    are left out)."""
    return {s.name: s.default for s in config_settings(cls) if not s.required}


def build_config(cls: type, values: Mapping[str, Any]):
    """The config ``cls`` from widget values (flat, by setting name, as the JSON form is), checked by the
    dataclass; raises ``FairMedInputError`` naming the bad setting."""
    return config_from_dict(cls, {key: value for key, value in values.items()})
