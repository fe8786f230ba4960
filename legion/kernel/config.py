"""Config machinery: read a config document, build and check sections, resolve paths.

Components own their sections (a frozen dataclass with `validate()` in the component's
`config.py`); the glue composes them into the whole-file config (legion/cli/config.py). This module
names no component. Every problem is collected with its key path and raised at once as one
`ConfigError`. One rule resolves relative paths: against the directory of the config file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from legion.kernel.errors import ConfigError

CONFIG_FILENAME = "monitoring_config.json"
CONFIG_ENV = "LEGION_CONFIG"
POSITIVE = "must be > 0"

S = TypeVar("S")
# (key path below the section, check of the value, message); "" checks the whole section.
Rule = tuple[str, Callable[[Any], bool], str]


def default_config_path() -> str:
    """The config file to use: $LEGION_CONFIG, else ./monitoring_config.json."""
    return os.environ.get(CONFIG_ENV) or CONFIG_FILENAME


def read_document(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The parsed JSON object of a config file and the directory its relative paths start from."""
    p = Path(path).expanduser().resolve()
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError([f"{p}: file not found (create one with `legionctl init --dir DIR`)"]
                          ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError([f"{p}: {exc}"]) from exc
    return raw, p.parent


def resolve_path(base_dir: str | Path, p: str) -> Path:
    """The one path rule: `~` expanded, relative paths taken from the config file's directory."""
    q = Path(p).expanduser()
    return q if q.is_absolute() else (Path(base_dir) / q).resolve()


def resolve_endpoint(base_dir: str | Path, ep: str) -> str:
    """A ZeroMQ endpoint with a relative ipc:// path resolved by `resolve_path`."""
    if ep.startswith("ipc://") and not ep.startswith("ipc:///"):
        return "ipc://" + str(resolve_path(base_dir, ep[len("ipc://"):]))
    return ep


@dataclass(frozen=True, slots=True)
class Section:
    """One entry of the table of sections: build it from its JSON value, write it back."""

    parse: Callable[[Any, str, list[str]], Any]  # (JSON value or None, key path, problems)
    dump: Callable[[Any], Any] = lambda section: to_plain(section)


def dataclass_section(cls: type[Any]) -> Section:
    """The table entry of a section that is a frozen dataclass with a `validate()`."""
    return Section(lambda raw, path, problems: parse_section(cls, raw, path, problems))


def parse_section(cls: type[S], raw: Any, path: str, problems: list[str]) -> S:
    """A section from its JSON value (None: absent, the defaults), checked by its `validate()`."""
    if raw is None:
        section = cls()
    elif not isinstance(raw, dict):
        problems.append(f"{path}: must be an object")
        return cls()
    else:
        values = build(cls, raw, path + ".", problems)
        try:
            section = freeze(cls, values)
        except TypeError:  # a nested object lacks a required key, which is listed already
            return cls()
    validate = getattr(section, "validate", None)
    if validate is not None:
        problems.extend(validate())
    return section


def check_rules(section: Any, prefix: str, rules: Sequence[Rule]) -> list[str]:
    """Problems of a built section against its rules; unset (None) values are skipped."""
    problems = []
    for key, ok, msg in rules:
        v: Any = section
        for part in key.split(".") if key else ():
            v = getattr(v, part, None)
        if v is not None and not ok(v):
            path = f"{prefix}.{key}" if key and prefix else (key or prefix)
            problems.append(f"{path}: {msg} (got {v!r})")
    return problems


def to_plain(obj: Any) -> Any:
    """The JSON form of a built section (dataclasses to objects, tuples to lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (dict, types.MappingProxyType)):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return [to_plain(v) for v in obj]
    return obj


def build(cls: type, raw: dict[str, Any], prefix: str, problems: list[str],
          skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Checked field values of dataclass `cls` from a JSON object; problems are appended."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - skip
    for key in raw:
        if key not in names:
            problems.append(f"{prefix}{key}: unknown key")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if f.name in raw:
            out[f.name] = _coerce(hints[f.name], raw[f.name], f"{prefix}{f.name}", problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{prefix}{f.name}: missing required key")
    return out


def _coerce(tp: Any, val: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):  # `X | None`: null means "not set"
        return None if val is None else _coerce(typing.get_args(tp)[0], val, path, problems)
    if dataclasses.is_dataclass(tp):
        if not isinstance(val, dict):
            problems.append(f"{path}: must be an object")
            return None
        return build(typing.cast(type, tp), val, path + ".", problems)
    if origin is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        if not isinstance(val, list):
            problems.append(f"{path}: must be a list of objects")
            return None
        return [_coerce(typing.get_args(tp)[0], v, f"{path}[{i}]", problems)
                for i, v in enumerate(val)]
    if origin is tuple:
        if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
            problems.append(f"{path}: must be a list of strings")
            return None
        return tuple(val)
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(val, dict):
            problems.append(f"{path}: must be an object")
            return None
        return {k: _coerce(vt, v, f"{path}.{k}", problems) for k, v in val.items()}
    if tp is bool:
        if not isinstance(val, bool):
            problems.append(f"{path}: must be true or false (got {val!r})")
        return val
    if tp is float:
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            problems.append(f"{path}: must be a number (got {val!r})")
            return None
        return float(val)
    if tp is int:
        if isinstance(val, bool) or not isinstance(val, int):
            problems.append(f"{path}: must be an integer (got {val!r})")
            return None
        return val
    if tp is str:
        if not isinstance(val, str) or not val:
            problems.append(f"{path}: must be a non-empty string (got {val!r})")
            return None
        return val
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # pragma: no cover


def freeze(cls: type, values: dict[str, Any]) -> Any:
    """An instance of dataclass `cls` from `build`'s values (nested sections, read-only maps)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, val in values.items():
        tp = hints[name]
        if val is None:  # a value that failed its check: the problem is already listed
            pass
        elif dataclasses.is_dataclass(tp) and isinstance(val, dict):
            val = freeze(typing.cast(type, tp), val)
        elif typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            val = tuple(freeze(typing.get_args(tp)[0], v) if isinstance(v, dict) else v
                        for v in val)
        elif typing.get_origin(tp) is dict:
            _, vt = typing.get_args(tp)
            if dataclasses.is_dataclass(vt):
                val = {k: freeze(typing.cast(type, vt), v) if isinstance(v, dict) else v
                       for k, v in val.items()}
            val = types.MappingProxyType(dict(val))
        kwargs[name] = val
    return cls(**kwargs)
