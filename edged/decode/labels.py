"""Labels files: one label a line, or `id label` lines (pycoral's `read_label_file`).

The format is decided once per file from its first label line: `0  background`,
`0 background` and `0: background` make an id file, where every label line
must have that form; anything else makes a plain file, where line n (from 0)
is class n. In a plain file, a blank line ends the labels: text after it is a
note people left for people (the shared PASCAL VOC file ends with one), and
it is ignored and reported, because an empty label is never meant. Blank lines
in an id file carry no id and are skipped.

Off-by-one background: a classifier with 1001 outputs read with a 1000-line
file has an extra background class at output 0 (and the reverse); `align`
detects it from the counts and says so in `notes`, which the daemon logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

_ID_LINE = re.compile(r"^\s*(\d+)(?:\s*:\s*|\s+)(\S.*?)\s*$")


class LabelsError(ValueError):
    """A labels file that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class Labels:
    """Label names by class id; output index = label id + `offset`."""

    source: str
    entries: tuple[tuple[int, str], ...]
    offset: int = 0
    notes: tuple[str, ...] = ()
    _by_id: dict[int, str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", dict(self.entries))

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...], source: str = "<labels>") -> Labels:
        return cls(source, tuple(enumerate(names)))

    @property
    def size(self) -> int:
        """How many classes the file describes: highest id + 1."""
        return max(self._by_id) + 1 if self._by_id else 0

    def get(self, class_id: int) -> str | None:
        """The label of model output `class_id`, or None when the file has none."""
        return self._by_id.get(int(class_id) - self.offset)

    def names(self) -> dict[int, str]:
        """Model class id -> label, with the offset applied."""
        return {i + self.offset: n for i, n in self.entries if i + self.offset >= 0}

    def align(self, num_classes: int) -> Labels:
        """These labels fitted to a model output with `num_classes` classes."""
        name = Path(self.source).name
        count = self.size
        if count == num_classes:
            return replace(self, offset=0)
        if count + 1 == num_classes:
            note = (f"labels file {name!r} has {count} labels for {num_classes} outputs: "
                    f"output 0 is taken as an unlabelled background class "
                    f"(label n names output n+1)")
            return replace(self, offset=1, notes=(*self.notes, note))
        if count == num_classes + 1:
            first = self._by_id.get(0)
            note = (f"labels file {name!r} has {count} labels for {num_classes} outputs: "
                    f"its first label {first!r} is taken as a background class the model "
                    f"does not output (output n is label n+1)")
            return replace(self, offset=-1, notes=(*self.notes, note))
        what = ("outputs beyond them are reported by id only" if count < num_classes
                else "the extra labels are never used")
        note = f"labels file {name!r} has {count} labels for {num_classes} outputs: {what}"
        return replace(self, offset=0, notes=(*self.notes, note))


def parse_labels(text: str, source: str = "<labels>") -> Labels:
    """Parse a labels file's text; `source` names it in errors and notes."""
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), None)
    if first is None:
        raise LabelsError(f"labels file {source!r}: no labels in it")
    if _ID_LINE.match(first):
        return _parse_id_lines(lines, source)
    return _parse_plain(lines, source)


def _parse_plain(lines: list[str], source: str) -> Labels:
    names: list[str] = []
    notes: tuple[str, ...] = ()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            rest = [ln for ln in lines[number:] if ln.strip()]
            if rest:
                notes = (f"labels file {Path(source).name!r}: {len(names)} labels; ignored "
                         f"{len(rest)} line(s) of text after the blank line {number}",)
            break
        names.append(line.strip())
    return Labels(source, tuple(enumerate(names)), notes=notes)


def _parse_id_lines(lines: list[str], source: str) -> Labels:
    seen: dict[int, int] = {}
    entries: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = _ID_LINE.match(line)
        if match is None:
            raise LabelsError(f"labels file {source!r} line {number}: expected 'id label' like "
                              f"the first line, got {line.strip()[:60]!r}")
        class_id = int(match.group(1))
        if class_id in seen:
            raise LabelsError(f"labels file {source!r} line {number}: id {class_id} already "
                              f"given on line {seen[class_id]}")
        seen[class_id] = number
        entries.append((class_id, match.group(2)))
    return Labels(source, tuple(sorted(entries)))


def load_labels(path: str | Path) -> Labels:
    """Read a labels file (UTF-8, BOM and CRLF tolerated)."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise LabelsError(f"labels file {source!r}: not found") from None
    except IsADirectoryError:
        raise LabelsError(f"labels file {source!r}: is a directory") from None
    except OSError as exc:
        raise LabelsError(f"labels file {source!r}: cannot read ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelsError(f"labels file {source!r}: not UTF-8 text (byte 0x{raw[exc.start]:02x} "
                          f"at offset {exc.start})") from None
    return parse_labels(text, source)
