"""The [[cameras]] and [[models]] problems a broken section would hide.

`Config` checks its arrays of tables against the sections only once every
section is valid; to report every problem of a file at once, `read_config`
checks them again against the sections that are valid (the others at their
defaults), with each element's own broken keys left out.
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

from pydantic import ValidationError

from edged.config.cameras import CameraConfig, camera_problems
from edged.config.models import ModelEntry, models_problems
from edged.config.sections import Section
from edged.config.wording import messages

Problems = list[tuple[tuple[str | int, ...], str]]
S = TypeVar("S", bound=Section)


def arrays_behind(data: dict[str, Any], sections: dict[str, type[Section]],
                  context: dict[str, Any]) -> Problems:
    cameras = _valid(data.get("cameras"), CameraConfig, "camera", context)
    models = _valid(data.get("models"), ModelEntry, "model", context)
    if not cameras and not models:
        return []
    top: dict[str, Section] = {}
    for name, model in sections.items():
        try:
            top[name] = model.model_validate(data.get(name, {}), context=context)
        except ValidationError:
            top[name] = model()
    used = [(index, camera.model) for index, camera in cameras if camera.enabled]
    return camera_problems(top, cameras, context) + models_problems(top, models, used, context)


def _valid(items: Any, kind: type[S], name: str, context: dict[str, Any]
           ) -> list[tuple[int, S]]:
    """Each element that validates, with its broken keys left out (reported already)."""
    if not isinstance(items, list):
        return []
    valid: list[tuple[int, S]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        try:
            valid.append((index, kind.model_validate(item, context=context)))
        except ValidationError as exc:
            broken = {loc[0] for loc, _ in messages(exc) if loc}
            rest = {"id": f"{name}{index}", **{k: v for k, v in item.items()
                                             if k not in broken}}
            with contextlib.suppress(ValidationError):
                valid.append((index, kind.model_validate(rest, context=context)))
    return valid
