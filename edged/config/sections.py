"""What every config section is built from: the base model, paths, cross-field errors.

The sections themselves are in `edged.config.frames` (the frame path),
`edged.config.publish` (what leaves the device) and `edged.config.integrations`
(Home Assistant, Prometheus); `edged.config` puts them together in `Config`.
Every field has a description (the annotated `config/edged.toml` is generated
from them by `edged.config.doc`) and a default that works. Cross-field rules
live in each section's validator and report every broken key at once, through
`raise_cross_field` here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo
from pydantic_core import PydanticCustomError

from edged.config.text import show


def _to_path(value: Any) -> Any:
    # Paths are written as strings; strict mode would otherwise demand Path objects.
    if isinstance(value, str):
        if not value:
            raise ValueError("must not be empty")
        return Path(value)
    return value


def _base_dir(info: ValidationInfo) -> Path | None:
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    return Path(base) if base is not None else None


def resolve_path(path: Path, info: ValidationInfo) -> Path:
    """`path` relative to the config file's directory, as systemd runs us in `/`."""
    path = path.expanduser()
    base = _base_dir(info)
    return base / path if base is not None and not path.is_absolute() else path


FilePath = Annotated[Path, BeforeValidator(_to_path), AfterValidator(resolve_path)]


def topic_levels_problem(value: str) -> str | None:
    """Why `value` cannot start the topics edged publishes to, or None if it can."""
    if not value or value.startswith("$") or any(
            not level or set(level) & set("+#") for level in value.split("/")):
        return ("must be topic levels separated by '/', without '+', '#', a leading '$' "
                "or empty levels")
    return None


def ids_given_twice(array: str, ids: Sequence[tuple[int, str]]
                   ) -> tuple[list[tuple[tuple[str | int, ...], str]], dict[str, int]]:
    """The elements of `array` ([[cameras]], [[models]]) whose id an earlier one has,
    each said at its own id; and where each id is first given."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    first: dict[str, int] = {}
    noun = array.removesuffix("s")
    for index, id_ in ids:
        if id_ in first:
            problems.append(((array, index, "id"), f"{show(id_)} is also {array}"
                             f"[{first[id_]}]'s id: each {noun} needs its own"))
        first.setdefault(id_, index)
    return problems, first


def raise_cross_field(problems: Sequence[tuple[str | tuple[str | int, ...], str]]) -> None:
    """Raise every cross-field problem of a section at once, each against its key (a
    name, or a key path below the model: a camera's)."""
    if problems:
        raise PydanticCustomError(
            "edged_cross", "{summary}",
            {"problems": problems, "summary": "; ".join(f"{k}: {m}" for k, m in problems)},
        )


class Section(BaseModel):
    # strict: a quoted "1883" or `true` for a number is a mistake worth naming,
    # not something to coerce silently.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
