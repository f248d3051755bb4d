"""Detections into published events, occupancy and snapshots (output.publish events/both).

`EventStage.step` runs on the pipeline thread after decoding: the engine
(`edged.events`) is pure and cheap; each event is one queued message. The
JPEG of a snapshot is not made here: `SnapshotEncoder`, one thread owned by
the daemon, encodes it later (the newest request per topic wins), so a
snapshot never delays a result.

Occupancy is retained and published whole on every change. A new stage (a
start, a reload of [events]) publishes zeros for every configured zone and
label before its first frame: a restart never leaves a stale count, and
Home Assistant's entities follow the device's status (its LWT), so a daemon
that died shows as unavailable rather than as a stale "on".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edged.config import Config
from edged.decode.results import Detection
from edged.events.engine import Event, EventEngine, EventSettings
from edged.events.snapshot import SnapshotSettings, render_snapshot
from edged.events.tracker import Box, TrackerSettings
from edged.events.zones import Line, Zone
from edged.mqtt.eventpayload import (
    ALL,
    camera_topics,
    encode_event,
    encode_occupancy,
    snapshot_topic,
)
from edged.mqtt.publisher import Publisher
from edged.preprocess import box_in_pixels
from edged.system.threads import NamedThread

log = logging.getLogger("edged.events")

Publish = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class _Job:
    topics: tuple[str, ...]
    pixels: NDArray[np.uint8]
    box: Box
    caption: str
    settings: SnapshotSettings
    publish: Publish


class SnapshotEncoder:
    """One thread encoding snapshots off the hot path; the newest request per topic
    wins (an older one not yet encoded is replaced)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: dict[tuple[str, ...], _Job] = {}
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.encoded = self.failed = 0

    def submit(self, job: _Job) -> None:
        with self._cond:
            if self._thread is None and not self._stopped:
                self._thread = NamedThread(target=self._run, name="edged-snapshot", daemon=True)
                self._thread.start()
            self._jobs[job.topics] = job
            self._cond.notify()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopped:
                    self._cond.wait()
                if not self._jobs:
                    return
                job = self._jobs.pop(next(iter(self._jobs)))
            try:
                jpeg = render_snapshot(job.pixels, job.box, job.caption, job.settings)
            except Exception as exc:  # a frame OpenCV cannot draw must not end the thread
                self.failed += 1
                if self.failed <= 3:
                    log.error("snapshot for %s not encoded: %s", job.topics[0], exc)
                continue
            for topic in job.topics:
                job.publish(topic, jpeg)
            self.encoded += 1


class EventStage:
    """The engine for one camera and what it publishes."""

    def __init__(self, cfg: Config, publisher: Publisher, snapshots: SnapshotEncoder) -> None:
        ev, out = cfg.events, cfg.output
        self.device_id, self.camera = cfg.device.id, cfg.source.name
        self.base = cfg.topic_base
        self.topics = camera_topics(self.base, self.camera)
        self.publisher, self.snapshots = publisher, snapshots
        self.engine = EventEngine(
            EventSettings(min_frames=ev.min_frames, min_s=ev.min_s, hold_s=ev.hold_s,
                          min_score=ev.min_score, label_min_score=dict(ev.label_min_score),
                          better_by=ev.better_by, update_every_s=ev.update_every_s,
                          labels=tuple(ev.labels)),
            zones=[Zone(z.name, tuple((p[0], p[1]) for p in z.points),
                        normalized=z.units == "normalized", anchor=z.anchor,
                        labels=tuple(z.labels)) for z in ev.zones],
            lines=[Line(ln.name, (ln.points[0][0], ln.points[0][1]),
                        (ln.points[1][0], ln.points[1][1]),
                        normalized=ln.units == "normalized") for ln in ev.lines],
            tracker=TrackerSettings(high_score=ev.min_score,
                                    low_score=min(out.min_score, ev.min_score),
                                    match_iou=ev.match_iou, max_age_s=ev.hold_s))
        snap = ev.snapshot
        self.snapshot_settings = SnapshotSettings(crop=snap.crop, boxes=snap.boxes,
                                                  max_width=snap.max_width,
                                                  quality=snap.quality) if snap.enabled else None
        # Always listed, at 0 when empty: what Home Assistant's entities read.
        self._zero = {where: dict.fromkeys(ev.labels, 0)
                      for where in (ALL, *(z.name for z in ev.zones))}

    def start(self) -> None:
        """Fresh occupancy before the first frame (see the module's docstring)."""
        self._publish_occupancy({}, time.time())

    def step(self, detections: Sequence[Detection], frame: NDArray[np.uint8],
             captured_at: float, captured_mono: float,
             full_size: tuple[int, int] | None = None) -> list[Event]:
        """`full_size`: the picture's (height, width) when `frame` is a reduced decode
        of it; boxes and zones are in its pixels."""
        pixels_size = (int(frame.shape[0]), int(frame.shape[1]))
        size = full_size or pixels_size
        events, occupancy = self.engine.step(detections, captured_mono, size)
        clock = captured_at - captured_mono
        for event in events:
            snapshot = self._snapshot(event, frame, box_in_pixels(event.box, size, pixels_size))
            self.publisher.publish_event(self.topics["events"], encode_event(
                self.device_id, self.camera, captured_at, event.to_json(clock), snapshot))
        if occupancy is not None:
            self._publish_occupancy(occupancy, captured_at)
        return events

    def _snapshot(self, event: Event, frame: NDArray[np.uint8],
                  box: Box) -> str | None:
        if self.snapshot_settings is None:
            return None
        if event.type != "new" and "score" not in event.why:
            return None
        label = event.label or str(event.label_id)
        topics = (snapshot_topic(self.base, self.camera, label),
                  snapshot_topic(self.base, self.camera))
        self.snapshots.submit(_Job(topics, frame, box,
                                   f"{label} {event.best_score:.2f}", self.snapshot_settings,
                                   self.publisher.publish_control))
        return topics[0]

    def _publish_occupancy(self, counts: dict[tuple[str | None, str], int], at: float
                           ) -> None:
        zones = {where: dict(labels) for where, labels in self._zero.items()}
        for (where, label), n in counts.items():
            zones.setdefault(where or ALL, {})[label] = n
        self.publisher.publish_control(self.topics["occupancy"], encode_occupancy(
            self.device_id, self.camera, at, zones))


class EventStages:
    """A camera's events stage across reloads: the running one is kept unless the
    reload's plan says its settings changed (`ReloadPlan.events`), so a reload of top_k
    or of the encoding does not announce every object in view again as `new`, nor drop
    occupancy to 0 for min_frames frames. A fresh stage starts with zeros, then counts
    the objects again."""

    def __init__(self, snapshots: SnapshotEncoder) -> None:
        self.snapshots = snapshots
        self.current: EventStage | None = None
        # A snapshot asked for by a command (edged.service.commands): the next frame
        # delivered. deque: appended on one thread, taken on the pipeline's, lock-free.
        self._asked: deque[tuple[str, Publish]] = deque(maxlen=1)

    def ask_snapshot(self, topic: str, publish: Publish) -> None:
        """Publish the next frame this camera delivers as a JPEG on `topic`; any thread."""
        self._asked.append((topic, publish))

    def deliver_snapshot(self, pixels: NDArray[np.uint8]) -> None:
        """On the pipeline thread, each frame delivered: the snapshot asked for, if any."""
        if not self._asked:  # nearly always: no exception raised and caught per frame
            return
        topic, publish = self._asked.popleft()  # only this thread takes
        h, w = pixels.shape[:2]
        self.snapshots.submit(_Job((topic,), pixels, (0.0, 0.0, float(w), float(h)), "",
                                   SnapshotSettings(boxes=False), publish))

    def for_config(self, cfg: Config, publisher: Publisher, fresh: bool = False) -> EventStage:
        if self.current is None or fresh:
            self.current = EventStage(cfg, publisher, self.snapshots)
            self.current.start()
        return self.current
