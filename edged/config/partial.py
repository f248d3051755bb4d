"""A config file `edged.config.read_config` refused, read as far as it goes.

For `edged check-config`: a value the schema refuses in one section must not
hide what the files named by the other sections say.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edged.config import SECTIONS, Config, ConfigFile, read_toml
from edged.config.text import key_lines


def read_valid_sections(path: str | os.PathLike[str]) -> tuple[ConfigFile, frozenset[str]]:
    """A file `read_config` refused, as far as it goes: every section that
    validates on its own, the others at their defaults, and the names of those.

    For `edged check-config`, which still looks at the files the valid sections
    name. Raises ConfigError when the file cannot be read or parsed at all.
    """
    shown = Path(path)
    text, data = read_toml(shown)
    context = {"base_dir": shown.absolute().parent}
    valid: dict[str, Any] = {}
    broken: set[str] = set()
    for name, model in SECTIONS.items():
        if name not in data:
            continue
        try:
            model.model_validate(data[name], context=context)
        except ValidationError:
            broken.add(name)
        else:
            valid[name] = data[name]
    config = Config.model_validate(valid, context=context)
    return ConfigFile(shown, config, text, key_lines(text)), frozenset(broken)
