"""A job's settings declared once: a frozen config dataclass whose fields carry their help becomes the job's
command-line flags, its JSON file (read with an unknown-key check) and, in ``pages/_forms.py``, its form.

Field metadata a config may use (only ``help`` is required)::

    help     what the setting means, with its unit: the flag's help and the form's tooltip
    flag     the flag's name when it is not ``--`` + the field name with dashes (``--lr``)
    choices  the allowed values (argparse checks them; ``__post_init__`` still validates)
    parse    a function from one flag value (text) to the field's value, for values text cannot say plainly
    nargs    "+" for a list field given as ``--flag A B C`` rather than one value per repeated flag
    keyed    for a flag that sets its field, the name of a mapping field that ``--flag KEY=VALUE`` sets one
             entry of instead (``--objective race=equal_opportunity``)
    inline   on a nested config dataclass: its fields are flags and JSON keys at this level (no prefix)
    prefix   on a nested config dataclass that is not inline: its flags' prefix (default ``<field>-``)

The value of a setting comes from, in order: the dataclass default, the ``--config`` JSON file, the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairmed_core.errors import FairMedInputError
from fairmed_core.files import atomic_write_json

__all__ = ["JOB_FILE", "JsonRecord", "Setting", "add_config_flags", "config_from_args", "config_from_dict", "config_settings",
           "config_to_dict", "read_config", "write_config"]

# The config file a page hands to a background job: written into the job's run folder before the job starts, and
# read again when the job resumes. A run folder holding only this file counts as empty.
JOB_FILE = "job.json"
_REGISTRY = "_fairmed_settings"  # namespace attribute: {dest: [paths]} of the flags a parser derived


@dataclass(frozen=True)
class Setting:
    """One leaf setting of a config: where it sits (``path`` of field names), its flag, help and type."""

    path: tuple[str, ...]
    flag: str
    help: str
    kind: str  # "bool", "int", "float", "str", "list" or "mapping"
    item: type | None  # the element type of a list, or None
    optional: bool  # None is allowed
    required: bool  # no default
    default: Any
    choices: tuple | None
    metadata: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def dest(self) -> str:
        """The flag's attribute on the parsed namespace (prefixed: a subcommand's own dests cannot clash)."""
        return "setting:" + self.flag.lstrip("-")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _kind(hint: Any) -> tuple[str, type | None]:
    origin = typing.get_origin(hint)
    if hint is bool:
        return "bool", None
    if hint in (int, float, str):
        return hint.__name__, None
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return "list", args[0] if args else str
    if origin in (dict, Mapping) or origin is typing.get_origin(Mapping[str, str]):
        return "mapping", None
    raise TypeError(f"unsupported setting type {hint!r}")


def _default(spec: dataclasses.Field) -> tuple[Any, bool]:
    if spec.default is not dataclasses.MISSING:
        return spec.default, False
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory(), False
    return None, True


def _nested(spec: dataclasses.Field, hint: Any) -> type | None:
    inner, _ = _unwrap_optional(hint)
    return inner if dataclasses.is_dataclass(inner) and isinstance(inner, type) else None


def config_settings(cls: type, *, _path: tuple[str, ...] = (), _prefix: str = "") -> list[Setting]:
    """Every leaf setting of config class ``cls`` (nested config dataclasses walked), in declaration order."""
    hints = _hints(cls)
    settings: list[Setting] = []
    for spec in dataclasses.fields(cls):
        if not spec.init:
            continue
        nested = _nested(spec, hints[spec.name])
        if nested is not None:
            prefix = _prefix if spec.metadata.get("inline") else _prefix + spec.metadata.get(
                "prefix", spec.name.replace("_", "-") + "-")
            settings += config_settings(nested, _path=(*_path, spec.name), _prefix=prefix)
            continue
        hint, optional = _unwrap_optional(hints[spec.name])
        kind, item = _kind(hint)
        default, required = _default(spec)
        flag = "--" + _prefix + (spec.metadata.get("flag") or spec.name.replace("_", "-")).lstrip("-")
        choices = spec.metadata.get("choices")
        settings.append(Setting(path=(*_path, spec.name), flag=flag, help=str(spec.metadata.get("help", "")),
                                kind=kind, item=item, optional=optional, required=required, default=default,
                                choices=tuple(choices) if choices is not None else None, metadata=spec.metadata))
    return settings


# ----------------------------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------------------------


def _number(kind: type, flag: str) -> Callable[[str], Any]:
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a {'whole ' if kind is int else ''}number, "
                                             f"got {text!r}") from None
    convert.__name__ = kind.__name__
    return convert


def _key_value(flag: str) -> Callable[[str], tuple[str, str]]:
    def convert(text: str) -> tuple[str, str]:
        key, equals, value = (part.strip() for part in text.partition("="))
        if not equals or not key or not value:
            raise argparse.ArgumentTypeError(f"{flag} takes KEY=VALUE, got {text!r}")
        return key, value
    return convert


class _KeyedAction(argparse.Action):
    """``--flag VALUE`` sets the field; ``--flag KEY=VALUE`` adds one entry to the mapping field ``keyed``."""

    def __init__(self, *args, keyed_dest: str, **kwargs) -> None:
        self.keyed_dest = keyed_dest
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        key, equals, value = (part.strip() for part in str(values).partition("="))
        if equals:
            entries = list(getattr(namespace, self.keyed_dest, None) or [])
            setattr(namespace, self.keyed_dest, [*entries, (key, value)])
        else:
            setattr(namespace, self.dest, key)


def _describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, fixed: tuple[str, ...] = (),
                     config_help: str | None = None) -> None:
    """Add one flag per setting of ``cls`` to ``parser`` (and ``--config FILE``); ``fixed`` names settings the
    command sets itself (a subcommand's method). Flags default to nothing given, so a config file's
    value stands unless the flag is given; read the result with :func:`config_from_args`."""
    registry: dict[str, list[tuple[str, ...]]] = {}
    by_dest: dict[str, Setting] = {}
    settings = [s for s in config_settings(cls) if s.name not in fixed]
    for setting in settings:
        if setting.dest in registry:  # two nested configs share a flag (a seed): one value sets both
            registry[setting.dest].append(setting.path)
            continue
        registry[setting.dest] = [setting.path]
        by_dest[setting.dest] = setting
        text = setting.help
        if not setting.required and setting.default not in (None, (), [], {}, "") and setting.kind != "bool":
            text += f" (default {_describe(setting.default)})"
        if setting.required:
            text += " (required, as a flag or in --config)"
        kwargs: dict[str, Any] = {"dest": setting.dest, "default": argparse.SUPPRESS, "help": text}
        if setting.kind != "bool" and setting.choices is None:
            kwargs["metavar"] = setting.flag.lstrip("-").upper().replace("-", "_")
        convert = setting.metadata.get("parse")
        if setting.kind == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        elif setting.kind == "list":
            kwargs["type"] = convert or (_number(setting.item, setting.flag) if setting.item in (int, float)
                                         else str)
            if setting.metadata.get("parse"):
                kwargs["action"] = "store"
            elif setting.metadata.get("nargs"):
                kwargs.update(action="extend", nargs=setting.metadata["nargs"])
            else:
                kwargs["action"] = "append"
        elif setting.kind == "mapping":
            kwargs.update(type=convert or _key_value(setting.flag), action="append", metavar="KEY=VALUE")
        else:
            kwargs["type"] = convert or (_number(int if setting.kind == "int" else float, setting.flag)
                                         if setting.kind in ("int", "float") else str)
        if setting.metadata.get("keyed"):
            target = next(s for s in settings if s.name == setting.metadata["keyed"])
            kwargs.update(action=_KeyedAction, keyed_dest=target.dest, metavar="[KEY=]VALUE")
            kwargs.pop("type", None)
        elif setting.choices is not None and setting.kind != "bool":
            kwargs["choices"] = setting.choices
        parser.add_argument(setting.flag, **kwargs)
    parser.add_argument("--config", dest="config", default=None, metavar="FILE",
                        help=config_help or f"JSON file of these settings ({cls.__name__}); flags given as well "
                        "override it")
    parser.set_defaults(**{_REGISTRY: registry})


def _set_path(values: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        values = values.setdefault(name, {})
    values[path[-1]] = value


def config_from_args(cls: type, args: argparse.Namespace, **fixed: Any):
    """The config ``cls`` from a parsed command line: the ``--config`` file (if given), then the flags given,
    then ``fixed`` top-level values; validated by the dataclass."""
    values: dict = {}
    source = getattr(args, "config", None)
    if source:
        values = _read_json_object(source)
        values = _nest_inline(cls, values)
    registry = getattr(args, _REGISTRY, {})
    for dest, paths in registry.items():
        if hasattr(args, dest):
            value = getattr(args, dest)
            for path in paths:
                _set_path(values, path, _plain(value))
    paths = {setting.name: setting.path for setting in config_settings(cls)}
    for name, value in fixed.items():
        inner = values
        for part in paths[name][:-1]:
            inner = inner.get(part, {}) if isinstance(inner, Mapping) else {}
        given = inner.get(name) if isinstance(inner, Mapping) else None
        if source and given is not None and given != value:
            raise FairMedInputError(f"the config file says {name} {given!r} but the command says {value!r}",
                                    source=str(source), hint=f"remove {name!r} from the file or run that command")
        _set_path(values, paths[name], value)
    return config_from_dict(cls, values, source=str(source) if source else None, nested=True)


def _plain(value: Any) -> Any:
    if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return dict(value)  # KEY=VALUE pairs of a mapping flag
    return value


# ----------------------------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------------------------


def _nest_inline(cls: type, data: Mapping) -> dict:
    """``data`` with the keys of inline nested configs moved under their field (the JSON form is flat there)."""
    data = dict(data)
    hints = _hints(cls)
    for spec in dataclasses.fields(cls):
        nested = _nested(spec, hints[spec.name])
        if nested is None:
            continue
        if spec.metadata.get("inline"):
            own, mine = _known(nested), {f.name for f in dataclasses.fields(cls)}
            inner = {k: data.pop(k) for k in list(data) if k in own and k not in mine}
            given = data.get(spec.name)
            data[spec.name] = _nest_inline(nested, {**(given if isinstance(given, Mapping) else {}), **inner})
        elif isinstance(data.get(spec.name), Mapping):
            data[spec.name] = _nest_inline(nested, data[spec.name])
    return data


def _known(cls: type) -> set[str]:
    hints = _hints(cls)
    known = set()
    for spec in dataclasses.fields(cls):
        nested = _nested(spec, hints[spec.name])
        if nested is not None and spec.metadata.get("inline"):
            known |= _known(nested)
        else:
            known.add(spec.name)
    return known


def _coerce(hint: Any, value: Any, name: str, source: str | None, what: str) -> Any:
    inner, optional = _unwrap_optional(hint)
    if value is None:
        return None
    if dataclasses.is_dataclass(inner) and isinstance(inner, type):
        return _nested_value(inner, value, name, source, what)
    origin = typing.get_origin(inner)
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        item = next((a for a in typing.get_args(inner) if a is not Ellipsis), None)
        if dataclasses.is_dataclass(item) and isinstance(item, type):  # a list of records: each built in turn
            return tuple(_nested_value(item, v, f"{name}[{i}]", source, what) for i, v in enumerate(value))
        return tuple(value)
    if origin in (tuple, list) and isinstance(value, str):
        return (value,)
    if origin in (dict, Mapping) or origin is typing.get_origin(Mapping[str, str]):
        if not isinstance(value, Mapping):
            raise FairMedInputError(f"{what}{name} must be a JSON object, got {value!r}", source=source,
                                    column=name)
        return dict(value)
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _nested_value(cls: type, value: Any, name: str, source: str | None, what: str) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise FairMedInputError(f"{what}{name} must be a JSON object of {cls.__name__} settings, got "
                                f"{value!r}", source=source, column=name)
    if issubclass(cls, JsonRecord):
        return cls.from_json(value, source=source)
    return config_from_dict(cls, value, what=name, source=source, nested=True)


def config_from_dict(cls: type, data: Mapping, *, what: str = "", source: str | None = None,
                     nested: bool = False):
    """Config ``cls`` from its JSON form: unknown keys are refused (naming the known ones), lists become
    tuples, nested configs are built in turn, and a value the dataclass rejects is reported with ``source``.
    ``what`` names the settings in messages ("unknown SFT settings [...]")."""
    if not isinstance(data, Mapping):
        raise FairMedInputError(f"{what + ' ' if what else ''}settings must be a JSON object, got "
                                f"{type(data).__name__}", source=source)
    if not nested:
        data = _nest_inline(cls, data)
    known = {spec.name for spec in dataclasses.fields(cls) if spec.init}
    unknown = sorted(set(data) - known)
    if unknown:
        label = what or cls.__name__
        raise FairMedInputError(f"unknown {label} settings {unknown}", source=source,
                                hint=f"known: {sorted(_known(cls))}")
    hints = _hints(cls)
    values = {name: _coerce(hints[name], value, name, source, f"{what}." if what else "")
              for name, value in data.items()}
    missing = [spec.name for spec in dataclasses.fields(cls)
               if spec.init and spec.name not in values and _default(spec)[1]]
    if missing and issubclass(cls, JsonRecord):
        raise FairMedInputError(f"the {what or cls.__name__} record lacks {missing}", source=source)
    if missing:
        flags = {s.name: s.flag for s in config_settings(cls)}
        raise FairMedInputError(f"missing {', '.join(flags.get(m, m) for m in missing)}", source=source,
                                hint="give it as a flag or in the --config file")
    try:
        return cls(**values)
    except FairMedInputError as error:
        if source is None or error.source is not None:
            raise
        raise FairMedInputError(error.message, source=source, column=error.column, row=error.row,
                                hint=error.hint) from None
    except (TypeError, ValueError) as error:
        raise FairMedInputError(f"{what or cls.__name__} settings: {error}", source=source) from None


def config_to_dict(config: Any) -> dict:
    """The JSON form of a config: nested configs as objects (inline ones merged in), tuples as lists."""
    out: dict = {}
    for spec in dataclasses.fields(config):
        value = getattr(config, spec.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if spec.metadata.get("inline"):
                out.update(config_to_dict(value))
            else:
                out[spec.name] = config_to_dict(value)
        elif isinstance(value, tuple):
            out[spec.name] = [config_to_dict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
                              for v in value]
        elif isinstance(value, Mapping):
            out[spec.name] = dict(value)
        elif isinstance(value, Path):
            out[spec.name] = str(value)
        else:
            out[spec.name] = value
    return out


class JsonRecord:
    """``to_json``/``from_json`` for a frozen dataclass record that crosses a boundary as a file (how a run ended,
    what it measured), written once: the JSON form of a config, read back through the same checks. Keys this
    FairMed does not know are ignored rather than refused: a record outlives the code that wrote it. A field may
    hold another record, or a tuple of records (or of plain dataclasses, built with every field named)."""

    def to_json(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_json(cls, data: Mapping, *, source: str | None = None):
        known = {spec.name for spec in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known} if isinstance(data, Mapping) else data
        return config_from_dict(cls, values, what=cls.__name__, source=source)


def _read_json_object(path: str | Path) -> dict:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FairMedInputError("the config file does not exist", source=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FairMedInputError(f"not a readable JSON file: {error}", source=str(path)) from None
    if not isinstance(value, dict):
        raise FairMedInputError("a config file must hold one JSON object", source=str(path))
    return value


def read_config(cls: type, path: str | Path, *, what: str = ""):
    """Config ``cls`` from the JSON file ``path`` (see :func:`config_from_dict`)."""
    return config_from_dict(cls, _read_json_object(path), what=what, source=str(path))


def write_config(config: Any, path: str | Path) -> Path:
    """Write ``config``'s JSON form to ``path`` atomically (temp file + rename); returns the path."""
    return atomic_write_json(path, config_to_dict(config))
