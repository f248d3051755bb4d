"""The daemon's cameras (issue 17): each one's capture, figures and events stage.

A config without `[[cameras]]` is one camera, its `[source]`; with them, one
part per enabled camera. They share the device's connection, worker and
pipeline thread (the scheduler serves them in turn); what is a camera's own
is here: its source and one-slot buffer, its figures (frames, fps, latency,
drops, the source's state) and its events stage, kept across reloads that do
not change it. The device's figures sum the cameras'.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from edged.config import Camera, Config
from edged.service.eventstage import EventStages, SnapshotEncoder
from edged.service.pipeline import Pipeline
from edged.service.stats import Stats
from edged.sources.capture import CaptureThread
from edged.sources.jpeg import JpegCamera

# The counts of a capture that a reload replaces, carried so they only grow.
CAPTURE_COUNTS = ("frames_dropped", "source_reopens", "frames_skipped")


@dataclass(eq=False)
class CameraPart:
    camera: Camera
    stats: Stats
    event_stages: EventStages
    capture: CaptureThread | None = None
    carried: Counter[str] = field(default_factory=Counter)
    input_size: tuple[int, int] = (0, 0)  # the model input its capture makes frames for

    @property
    def id(self) -> str:
        return self.camera.id

    @property
    def cfg(self) -> Config:
        return self.camera.config

    @property
    def topic_camera(self) -> str | None:
        return self.camera.topic_id

    def set_capture(self, capture: CaptureThread, input_size: tuple[int, int]
                    ) -> CaptureThread | None:
        """Use `capture` (making frames for `input_size`, for a Pi camera's ISP) from now
        on; the replaced one is stopped, its counts kept."""
        old, self.capture, self.input_size = self.capture, capture, input_size
        if old is not None:
            old.stop()
            self.carried.update(dict(zip(CAPTURE_COUNTS, _capture_counts(old), strict=True)))
        return old

    def stop(self, timeout: float = 0.5) -> None:
        if self.capture is not None:
            self.capture.stop(timeout=timeout)

    def counts(self) -> dict[str, int]:
        """frames_dropped, source_reopens, frames_skipped: for the life of the process."""
        now = _capture_counts(self.capture) if self.capture else (0, 0, 0)
        return {key: self.carried[key] + value
                for key, value in zip(CAPTURE_COUNTS, now, strict=True)}

    def source_state(self) -> str:
        return self.capture.source.state if self.capture else "stopped"

    def source_error(self) -> str:
        cap = self.capture
        # Kept by the source for its logs; history once frames flow again.
        return (cap.source.last_error or "") if cap and cap.source.state != "running" else ""

    def jpeg_decoding(self) -> str | None:
        """Where its JPEGs are decoded now (`JpegCamera.jpeg_decoding`); None for a
        camera that sends none."""
        driver = self.capture.source.source if self.capture else None
        return driver.jpeg_decoding if isinstance(driver, JpegCamera) else None

    def figures(self) -> dict[str, Any]:
        """This camera's own figures, for the stats message's `cameras`."""
        snap: dict[str, Any] = {key: value for key, value in self.stats.snapshot().items()
                                if key != "uptime_s"}
        snap.update(self.counts(), source=self.source_state(),
                    last_error=self.source_error())
        if (where := self.jpeg_decoding()) is not None:
            snap["jpeg_decoding"] = where
        return snap


def parts_for(config: Config, device_stats: Stats, snapshots: SnapshotEncoder
              ) -> list[CameraPart]:
    """A part for every enabled camera of `config`."""
    return [part_for(camera, device_stats, snapshots)
            for camera in config.camera_list() if camera.enabled]


def part_for(camera: Camera, device_stats: Stats, snapshots: SnapshotEncoder) -> CameraPart:
    return CameraPart(camera, Stats(parent=device_stats), EventStages(snapshots))


def pace(parts: Sequence[CameraPart], pipeline: Pipeline) -> None:
    """Each camera's max_fps (its own, else inference.max_fps): a file (every frame
    inferred) is read at that rate, a camera's frames are taken at it; either way no
    result waits for it. `parts` in the pipeline's lane order."""
    for lane, part in enumerate(parts):
        if part.capture is not None:
            max_fps, lossless = part.camera.max_fps, part.capture.lossless
            part.capture.pace(max_fps if lossless else 0.0)
            pipeline.pace(0.0 if lossless else max_fps, lane)


def source_state(parts: Sequence[CameraPart]) -> str:
    """The device's one word for its sources: every camera's when they agree, else the
    first that is not running (its camera named)."""
    states = [(part.id, part.source_state()) for part in parts]
    if not states:
        return "stopped"
    if len({state for _, state in states}) == 1 or len(states) == 1:
        return states[0][1]
    camera, state = next((c, s) for c, s in states if s != "running")
    return f"{state} ({camera})"


def jpeg_decoding(parts: Sequence[CameraPart]) -> str | None:
    """The device's word for where its JPEG cameras' frames are decoded: theirs when
    they agree, else "mixed"; None without a JPEG camera."""
    where = {w for part in parts if (w := part.jpeg_decoding()) is not None}
    return None if not where else where.pop() if len(where) == 1 else "mixed"


def _capture_counts(capture: CaptureThread) -> tuple[int, int, int]:
    return (capture.buffer.dropped, capture.source.reopen_count,
            capture.source.status().skipped)
