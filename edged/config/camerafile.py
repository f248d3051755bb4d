"""A camera of `[[cameras]]` seen as the one-camera file it amounts to, for messages.

The checks of what a file points to (a folder source that is not there, a
decoder that does not fit the model) look at one camera's config at a time;
`CameraFile.problem` places what they say on the line where that camera's
key is written (`cameras[1].source.uri`), or on the shared key's line when
the camera takes it from the top-level section.
"""

from __future__ import annotations

from dataclasses import dataclass

from edged.config import Camera, ConfigFile, format_problem


@dataclass(frozen=True)
class CameraFile(ConfigFile):
    index: int | None = None
    enabled: bool = True
    model: int | None = None  # its [[models]] entry's index; None: [model] and [inference]

    def problem(self, key: str, message: str, *, warning: bool = False) -> str:
        loc: tuple[str | int, ...] = tuple(key.split("."))
        if self.model is not None and loc[0] in ("model", "inference"):
            # The model's files are its entry's keys; where it runs, its accelerator.
            loc = ("models", self.model, *loc[1:]) if loc[0] == "model" else (
                "models", self.model, "accelerator")
        elif self.index is not None and ("cameras", self.index, *loc) in self.lines:
            loc = ("cameras", self.index, *loc)
        return format_problem(self.path, self.lines, loc, message, warning=warning)


def camera_files(cf: ConfigFile) -> list[CameraFile]:
    """Each camera of `cf` as its own file (the file itself when it has no cameras)."""
    cameras: list[Camera] = cf.config.camera_list()
    models = {entry.id: index for index, entry in enumerate(cf.config.models)}
    return [CameraFile(cf.path, camera.config, cf.text, cf.lines, cf.overrides,
                       index=camera.index, enabled=camera.enabled, model=models.get(camera.model))
            for camera in cameras]
