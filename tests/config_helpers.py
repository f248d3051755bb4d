"""Helpers for the config tests: fixture expectations and a small TOML writer."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parent / "data" / "configs"
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def expected_problems(path: Path, shown: str) -> list[str]:
    """The `# expect: ...` lines of a fixture, with `{file}` replaced by `shown`."""
    return [line.split("# expect: ", 1)[1].rstrip().replace("{file}", shown)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("# expect: ")]


def config_problems(path: Path) -> list[str]:
    """The problems `load_config` says of `path`, as the daemon would; [] when it loads."""
    from edged.config import ConfigError, load_config

    try:
        load_config(path)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def toml_key(key: str) -> str:
    return key if _BARE.match(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """TOML for the values hypothesis generates (JSON strings are TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(sections: dict[str, Any]) -> str:
    """Tables as `[section]` blocks, anything else as a top-level key."""
    top = [f"{toml_key(k)} = {toml_value(v)}" for k, v in sections.items()
           if not isinstance(v, dict)]
    blocks = []
    for name, table in sections.items():
        if isinstance(table, dict):
            body = "\n".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())
            blocks.append(f"[{toml_key(name)}]\n{body}")
    return "\n".join(top) + "\n\n" + "\n\n".join(blocks) + "\n"
