"""Where a key sits in the TOML text, and how a problem with it reads.

`tomllib` returns plain dicts with no positions, so error lines are recovered
by scanning the text: `[table]` headers, `key = value` lines (dotted and
quoted keys) and the keys of one-line inline tables. It is a locator for
messages, not a parser: the document has already parsed when it runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from edged.system.secrecy import redact_credentials

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY = rf"(?:{_BARE}|{_QUOTED})"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER_RE = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_INLINE_KEY_RE = re.compile(rf"[{{,]\s*({_DOTTED})\s*=")
_PART_RE = re.compile(_KEY)

KeyPath = tuple[str | int, ...]  # ints: the index of an array of tables ([[a.b]])


def _split(dotted: str) -> KeyPath:
    parts = []
    for match in _PART_RE.finditer(dotted):
        part = match.group(0)
        if part[0] in "\"'":
            # Basic strings may hold escapes; keys that need them are rare
            # enough that an approximate name (no line number) is acceptable.
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


def key_lines(text: str) -> dict[KeyPath, int]:
    """Map every table and key path in `text` to its 1-based line number."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    arrays: dict[KeyPath, int] = {}  # [[a.b]] headers seen so far, per array
    in_multiline = False
    for number, line in enumerate(text.splitlines(), start=1):
        # A multi-line string may hold text that looks like `key = value`.
        triples = line.count('"""') + line.count("'''")
        if in_multiline:
            in_multiline = triples % 2 == 0
            continue
        if triples % 2 == 1:
            in_multiline = True
        header = _HEADER_RE.match(line)
        if header:
            table = _in_arrays(_split(header.group(1)), arrays)
            lines.setdefault(table, number)
            if line.lstrip().startswith("[["):  # one more element of an array of tables
                index = arrays.get(table, 0)
                arrays[table] = index + 1
                table = (*table, index)
                lines[table] = number
            continue
        assign = _ASSIGN_RE.match(line)
        if not assign:
            continue
        path = table + _split(assign.group(1))
        lines.setdefault(path, number)
        rest = line[assign.end():]
        if rest.lstrip().startswith("{"):
            for inner in _INLINE_KEY_RE.finditer(rest):
                lines.setdefault(path + _split(inner.group(1)), number)
    return lines


def _in_arrays(path: KeyPath, arrays: dict[KeyPath, int]) -> KeyPath:
    """`path` with the index of the latest element of each array of tables it is under:
    `[cameras.source]` after the second `[[cameras]]` is cameras[1].source."""
    out: KeyPath = ()
    for part in path:
        out = (*out, part)
        if out in arrays and len(out) < len(path):
            out = (*out, arrays[out] - 1)
    return out


def line_of(lines: Mapping[KeyPath, int], path: Sequence[str | int]) -> int | None:
    """The line of the longest prefix of `path` written in the file.

    A table that has no header of its own (only dotted keys such as
    `mqtt.port = 1`) is placed at its first key.
    """
    keys = list(path)  # a list index not written as [[a.b]]: the list's own line is found
    for n in range(len(keys), 0, -1):
        prefix = tuple(keys[:n])
        if prefix in lines:
            return lines[prefix]
        below = [line for key, line in lines.items() if key[:n] == prefix]
        if below:
            return min(below)
    return None


def show(value: Any, limit: int = 40) -> str:
    """A value as it would be written in TOML, shortened for a one-line message."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        value = redact_credentials(value)  # a URL given with its password
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k} = {show(v, limit)}" for k, v in value.items()) + "}"
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(show(v, limit) for v in value) + "]"
    else:
        text = str(value)
    # Control characters would break the one-line promise.
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_SYNTAX_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_END_RE = re.compile(r"\s*\(at end of document\)\s*$")


def syntax_error(message: str, text: str) -> tuple[int | None, str]:
    """Split tomllib's `... (at line 3, column 8)` into the line and the words."""
    match = _SYNTAX_RE.search(message)
    if match:
        words = message[: match.start()]
        return int(match.group(1)), f"{_lower_first(words)} (column {match.group(2)})"
    match = _END_RE.search(message)
    if match:
        last = max(1, len(text.splitlines()))
        return last, f"{_lower_first(message[: match.start()])} (at end of file)"
    return None, _lower_first(message)


def _lower_first(words: str) -> str:
    return words[:1].lower() + words[1:]


class ConfigError(Exception):
    """One or more problems, each already a complete one-line message."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = tuple(problems)


def os_error(exc: BaseException) -> str:
    """`[Errno 13] Permission denied`, without the file name the caller already shows."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return str(exc)
