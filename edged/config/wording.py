"""How a refused config value reads: one line, in the user's words, not pydantic's.

`messages` turns a ValidationError into (key path, message) pairs; the key
path is placed on its line by `edged.config.text.line_of`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from edged.config.text import show
from edged.system.secrecy import is_secret_key, what_it_is

# Names people reach for that are not ours (issue text, other tools).
SECTION_ALIASES = {"camera": "source", "broker": "mqtt", "log": "logging",
                    "home_assistant": "homeassistant", "hass": "homeassistant",
                    "prometheus": "metrics",
                    "decoder": "output", "delegate": "inference", "tpu": "inference"}



def messages(exc: ValidationError, prefix: tuple[str | int, ...] = ()
             ) -> list[tuple[tuple[str | int, ...], str]]:
    """Each error of `exc` as (key path, message); `prefix`: where the model validated
    sits in the file (a camera's section: its section name, for the wording)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    for error in exc.errors(include_url=False):
        loc = (*prefix, *(p for p in error["loc"] if p != "[key]"))
        ctx = error.get("ctx") or {}
        if error["type"] == "edged_cross":
            # A key is a name, or a path below this model (a camera's section).
            out.extend(((*loc, *(key if isinstance(key, tuple) else (key,))), message)
                       for key, message in ctx["problems"])
        else:
            out.append((loc, message(error["type"], loc, error.get("input"), ctx,
                                      error["msg"])))
    return out


_TYPE_WORDS = {
    "int_type": "must be a whole number", "int_from_float": "must be a whole number",
    "float_type": "must be a number", "bool_type": "must be true or false",
    "string_type": "must be a string (in quotes)", "list_type": "must be a list, e.g. [1, 2]",
    "dict_type": "must be a table", "model_type": "must be a table",
    "finite_number": "must be a finite number", "model_attributes_type": "must be a table",
    "path_type": "must be a string (a file path)",
}


def message(kind: str, loc: tuple[str | int, ...], value: Any, ctx: Mapping[str, Any],
             pydantic_msg: str) -> str:
    # A secret key's value is never quoted, whatever its type: a list or a
    # table holding the password is as secret as the string would be.
    shown = f"{what_it_is(value)}, not shown" if is_secret_key(loc) else show(value)
    got = f" (got {shown})"
    if kind == "extra_forbidden":
        return unknown(loc, value)
    if kind == "missing":
        return "required: it has no default"
    if kind == "list_type" and len(loc) == 1 and isinstance(value, dict):
        return f"must be written [[{loc[0]}]], once per item (an array of tables){got}"
    if kind in _TYPE_WORDS:
        if kind in ("model_type", "dict_type") and len(loc) == 1:
            return f"must be a table (a [{loc[0]}] section){got}"
        return _TYPE_WORDS[kind] + got
    bounds = {"less_than_equal": "<=", "greater_than_equal": ">=",
              "less_than": "<", "greater_than": ">"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        if isinstance(limit, float) and limit.is_integer():
            limit = int(limit)  # `gt=0` on a float field reads better as 0 than 0.0
        return f"must be {bounds[kind]} {limit}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected'].replace(chr(39), chr(34))}{got}"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items{got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return f"{ctx.get('error', pydantic_msg)}{got}"
    return f"{pydantic_msg[:1].lower()}{pydantic_msg[1:]}{got}"


def unknown(loc: tuple[str | int, ...], value: Any) -> str:
    from edged.config import ARRAYS, SECTIONS  # the sections are defined from the models

    *parents, name = (str(p) for p in loc)
    if not parents:
        owner = [s for s, model in SECTIONS.items() if name in model.model_fields]
        if not isinstance(value, dict | list):
            # A key written above the first [section] header.
            where = f"; it belongs in [{owner[0]}]" if owner else ""
            return f"unknown top-level key{where}"
        valid = [*SECTIONS, *ARRAYS]
        close = difflib.get_close_matches(name, valid, n=1)
        hint = SECTION_ALIASES.get(name) or (close[0] if close else None)
        if hint:
            return f'unknown section (did you mean "{hint}"?)'
        return f"unknown section (valid: {', '.join(valid)})"
    sections: dict[str, type[BaseModel]] = dict(SECTIONS)
    if parents[0] in ARRAYS and len(parents) == 2:  # a key of the element itself
        array = ARRAYS[parents[0]]
        sections = {f"{parents[0]}.{s}": m for s, m in SECTIONS.items()
                    if s in array.model_fields}
        model: type[BaseModel] | None = array
    else:
        if parents[0] in ARRAYS:  # [cameras.source]: the section's keys
            parents = parents[2:]
        model = SECTIONS.get(parents[0])
    fields = list(model.model_fields) if model else []
    close = difflib.get_close_matches(name, fields, n=1)
    if close:
        return f'unknown key (did you mean "{close[0]}"?)'
    elsewhere = [s for s, m in sections.items() if name in m.model_fields and s != parents[0]]
    if elsewhere:
        return f"unknown key here; it belongs in [{elsewhere[0]}]"
    return "unknown key"
