"""The settings changed by remote commands (issue 20), kept in a TOML file of their
own so a restart keeps them and the config file stays the user's:

    # Written by edged: settings changed by MQTT commands.
    [output]
    min_score = 0.4
    [cameras.porch]
    max_fps = 2.0
    [cameras.porch.output]
    min_score = 0.6

Only the keys in SETTABLE may be set; they are merged over the config's own
(a camera's into its [[cameras]] entry) before it is validated, so an override
is checked as if written in the file. The writer is hand-written: the values
are numbers, booleans, strings and lists (zones: of inline tables), which JSON
writes as TOML does but for the tables, and a TOML writer package would be a
dependency for 30 lines.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

import orjson

# Safe to change at runtime: what a result reports, how often, where the zones are,
# and a camera on or off.
SECTION_KEYS = frozenset({
    ("output", "min_score"), ("output", "top_k"), ("output", "classes_keep"),
    ("output", "classes_ignore"), ("output", "min_box_area"), ("cascade", "min_score"),
    ("events", "zones"), ("events", "lines"), ("output", "publish"),
})
SETTABLE = SECTION_KEYS | {("inference", "max_fps")}
# Written by a model update (edged.service.updates), never by `set`.
UPDATE_KEYS = frozenset({("model", "path"), ("model", "edgetpu_path")})
CAMERA_KEYS = frozenset({("enabled",), ("max_fps",)}) | SECTION_KEYS
DEFAULT_PATH = Path("/var/lib/edged/overrides.toml")  # the service's StateDirectory
HEADER = "# Written by edged: settings changed by MQTT commands (docs/fleet.md).\n"


class OverrideError(ValueError):
    """A set request or an overrides file that cannot be used; one line."""


def with_overrides(data: dict[str, Any], base_dir: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A config document with its commands' overrides merged (while commands are on),
    and each override as a line for check-config; OverrideError for an unusable file."""
    commands = data.get("commands")
    if not isinstance(commands, dict) or commands.get("enabled") is not True:
        return data, ()
    path = overrides_path(commands.get("overrides_file"), base_dir)
    try:
        out, said = merged(data, read_overrides(path))
    except OverrideError as exc:
        raise OverrideError(f"{path}: {exc}") from None
    return out, tuple(f"{line} (from {path})" for line in said)


def overrides_path(written: object, base_dir: Path) -> Path:
    """The overrides file a config names (relative to its directory), or the default."""
    path = Path(str(written)) if isinstance(written, str) and written else DEFAULT_PATH
    return path if path.is_absolute() else base_dir / path


def read_overrides(path: Path) -> dict[str, Any]:
    """The overrides file's document; {} when there is none."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise OverrideError(f"cannot read: {exc}") from None


def with_setting(overrides: dict[str, Any], camera: str | None, key: str, value: Any
                 ) -> dict[str, Any]:
    """`overrides` with dotted `key` set to `value` (for `camera`, or the shared
    sections); OverrideError when the key may not be set at runtime."""
    path = tuple(key.split("."))
    allowed = CAMERA_KEYS if camera is not None else SETTABLE
    if path not in allowed:
        keys = ", ".join(sorted(".".join(k) for k in allowed))
        raise OverrideError(f"{key!r} cannot be set at runtime (settable: {keys})")
    out = copy.deepcopy(overrides)
    _put(out, ("cameras", camera, *path) if camera is not None else path, value)
    return out


def merged(data: dict[str, Any], overrides: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The config document with the overrides written over it, and one line per
    override ("output.min_score = 0.4"); OverrideError for one that cannot be used (a
    key not settable, a camera gone, a table that is not one)."""
    out, said = copy.deepcopy(data), []
    for key, value in _flat({k: v for k, v in overrides.items() if k != "cameras"}):
        if key not in SETTABLE | UPDATE_KEYS:
            raise OverrideError(f"{'.'.join(key)} cannot be set at runtime")
        _put(out, key, value)
        said.append(f"{'.'.join(key)} = {_toml(value)}")
    cameras = overrides.get("cameras", {})
    if not isinstance(cameras, dict):
        raise OverrideError("cameras: must be a table of camera ids")
    for camera, keys in cameras.items():
        entries = out.get("cameras")
        entry = next((c for c in entries if isinstance(c, dict) and c.get("id") == camera),
                     None) if isinstance(entries, list) else None
        if entry is None or not isinstance(keys, dict):
            raise OverrideError(f"cameras.{camera}: no camera has this id in the config")
        for key, value in _flat(keys):
            if key not in CAMERA_KEYS:
                raise OverrideError(f"cameras.{camera}.{'.'.join(key)} cannot be set at runtime")
            _put(entry, key, value)
            said.append(f"cameras.{camera}.{'.'.join(key)} = {_toml(value)}")
    return out, said


def _put(table: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    for level in key[:-1]:
        table = table.setdefault(level, {})
        if not isinstance(table, dict):
            raise OverrideError(f"{level}: not a table in the config, so "
                                f"{'.'.join(key)} cannot go in it")
    table[key[-1]] = value


def write_overrides(path: Path, overrides: dict[str, Any]) -> None:
    """Replace the file at once (a crash leaves the old one or the new one)."""
    lines = [HEADER]
    for table, values in _tables(overrides):
        lines.append(f"[{'.'.join(table)}]\n")
        lines += [f"{key} = {_toml(value)}\n" for key, value in values]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _flat(table: dict[str, Any], prefix: tuple[str, ...] = ()
          ) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for key, value in table.items():
        if isinstance(value, dict):
            out += _flat(value, (*prefix, key))
        else:
            out.append(((*prefix, key), value))
    return out


def _tables(doc: dict[str, Any], prefix: tuple[str, ...] = ()
            ) -> list[tuple[tuple[str, ...], list[tuple[str, Any]]]]:
    """Each TOML table with its plain keys, parents first."""
    values = [(k, v) for k, v in doc.items() if not isinstance(v, dict)]
    out = [(prefix, values)] if values and prefix else []
    for key, value in doc.items():
        if isinstance(value, dict):
            out += _tables(value, (*prefix, key))
    return out


def _toml(value: Any) -> str:
    """A TOML value: zones are arrays of inline tables; scalars are written as JSON
    writes them (its strings, numbers and booleans are TOML's)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return orjson.dumps(value).decode()


def _key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else _toml(key)
