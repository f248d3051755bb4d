"""The shared worker's scheduler (issue 17): fair between cameras, the newest frame,
each camera's max_fps without added latency, a dead camera skipped.

Real buffers fed by real producer threads at camera rates; the consumer takes
frames as the pipeline thread would, spending a model's invoke time on each."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter

import numpy as np

from edged.service.scheduler import Lane, Scheduler
from edged.sources.base import Frame
from edged.sources.capture import LatestFrameBuffer

PIXELS = np.zeros((8, 8, 3), dtype=np.uint8)


def _frame(name: str, seq: int) -> Frame:
    return Frame(PIXELS, seq, time.time(), time.monotonic(), name)


class Camera:
    """A producer thread putting frames into a lane's buffer at `fps`."""

    def __init__(self, lane: Lane, fps: float) -> None:
        self.lane, self.fps = lane, fps
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq, period, next_at = 0, 1.0 / self.fps, time.monotonic()
        while not self.stop.is_set():
            self.lane.buffer.put(_frame(self.lane.name, seq))
            seq += 1
            next_at += period
            self.stop.wait(max(next_at - time.monotonic(), 0.0))


def _run(lanes: list[Lane], fps: list[float], seconds: float, invoke_s: float
         ) -> tuple[list[str], list[float]]:
    """Consume for `seconds`: the lanes in the order served, and each frame's age when
    taken."""
    cameras = [Camera(lane, f) for lane, f in zip(lanes, fps, strict=True)]
    for cam in cameras:
        cam.thread.start()
    scheduler = Scheduler(lanes)
    order: list[str] = []
    ages: list[float] = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            got = scheduler.get(timeout=0.25)
            if got is None:
                continue
            lane, frame = got
            ages.append(time.monotonic() - frame.captured_mono)
            order.append(lane.name)
            time.sleep(invoke_s)
    finally:
        for cam in cameras:
            cam.stop.set()
            cam.thread.join()
    return order, ages


def test_cameras_offered_the_same_rate_are_served_alike_when_the_model_is_the_limit() -> None:
    """Four cameras at 30 fps, a model good for ~100 frames/s: each gets a quarter,
    within 10 % of the others, and hardly ever twice in a row (only when no other
    camera had a frame waiting)."""
    lanes = [Lane(f"cam{i}", LatestFrameBuffer()) for i in range(4)]
    order, _ = _run(lanes, [30.0] * 4, 3.0, 0.010)
    counts = Counter(order)
    assert len(counts) == 4
    assert max(counts.values()) <= 1.1 * min(counts.values()), counts
    repeats = sum(a == b for a, b in itertools.pairwise(order))
    assert repeats <= 0.05 * len(order), order[:60]


def test_a_busy_camera_does_not_starve_a_slow_one() -> None:
    """One camera at 100 fps beside one at 5 fps: the slow one gets every frame it
    sends; the busy one gets the rest, not all."""
    busy, slow = Lane("busy", LatestFrameBuffer()), Lane("slow", LatestFrameBuffer())
    order, _ = _run([busy, slow], [100.0, 5.0], 2.0, 0.015)
    counts = Counter(order)
    assert 8 <= counts["slow"] <= 11, counts  # 5 fps for 2 s
    assert counts["busy"] >= 80, counts  # the model's ~66/s less the slow camera's


def test_the_newest_frame_wins() -> None:
    buffer = LatestFrameBuffer()
    lane = Lane("a", buffer)
    scheduler = Scheduler([lane])
    for seq in range(5):
        buffer.put(_frame("a", seq))
    got = scheduler.get(timeout=0.1)
    assert got is not None and got[1].seq == 4
    assert buffer.dropped == 4


def test_max_fps_per_camera_adds_no_latency() -> None:
    """A camera at 30 fps limited to 5, beside one unlimited: the limited one gets 5
    frames a second, each taken within a few ms of its capture (a fresh frame, not
    one that waited a period in the buffer)."""
    limited = Lane("limited", LatestFrameBuffer(), max_fps=5.0)
    free = Lane("free", LatestFrameBuffer())
    cameras = [Camera(limited, 30.0), Camera(free, 30.0)]
    for cam in cameras:
        cam.thread.start()
    scheduler = Scheduler([limited, free])
    ages: dict[str, list[float]] = {"limited": [], "free": []}
    end = time.monotonic() + 3.0
    try:
        while time.monotonic() < end:
            got = scheduler.get(timeout=0.25)
            if got is not None:
                ages[got[0].name].append(time.monotonic() - got[1].captured_mono)
                time.sleep(0.002)
    finally:
        for cam in cameras:
            cam.stop.set()
            cam.thread.join()
    assert 14 <= len(ages["limited"]) <= 16, len(ages["limited"])
    assert float(np.median(ages["limited"])) < 0.020, ages["limited"]  # stale: ~33 ms
    assert len(ages["free"]) >= 80


def test_a_dead_camera_is_skipped_and_all_ended_is_said_at_once() -> None:
    dead, alive = Lane("dead", LatestFrameBuffer()), Lane("alive", LatestFrameBuffer())
    scheduler = Scheduler([dead, alive])
    dead.buffer.close()
    alive.buffer.put(_frame("alive", 0))
    got = scheduler.get(timeout=0.5)
    assert got is not None and got[0] is alive
    assert not scheduler.closed
    waiter: list[object] = []
    thread = threading.Thread(target=lambda: waiter.append(scheduler.get(timeout=5.0)))
    thread.start()
    time.sleep(0.05)
    alive.buffer.close()  # the last one ends: get returns at once, with nothing
    thread.join(timeout=1.0)
    assert waiter == [None] and scheduler.closed


def test_a_replaced_buffer_wakes_the_wait_and_is_no_longer_watched() -> None:
    lane = Lane("cam", LatestFrameBuffer())
    scheduler = Scheduler([lane])
    old = lane.buffer
    waiter: list[object] = []
    thread = threading.Thread(target=lambda: waiter.append(scheduler.get(timeout=5.0)))
    thread.start()
    time.sleep(0.05)
    new = LatestFrameBuffer()
    scheduler.set_buffer(lane, new)  # a reload's new source, the wait still on
    old.close()  # the old source ends after the hand-over: nothing to do with the lane
    new.put(_frame("cam", 1))
    thread.join(timeout=1.0)
    got = waiter[0]
    assert isinstance(got, tuple) and got[1].seq == 1
    assert old._watchers == [] and new._watchers == [scheduler.wakeups.bump]


def test_a_look_that_found_nothing_is_redone_when_a_frame_comes_or_a_pace_changes() -> None:
    """The pipeline looks for a frame two or three times a result; after an empty look
    the scheduler answers from memory until something changes: a put, a new pace, or a
    camera falling due by the clock. Each of those must still be seen."""
    lane = Lane("a", LatestFrameBuffer())
    scheduler = Scheduler([lane])
    assert scheduler.get(timeout=0) is None
    lane.buffer.put(_frame("a", 0))  # a put bumps the wake-ups
    got = scheduler.get(timeout=0)
    assert got is not None and got[1].seq == 0

    # max_fps 5: the frame taken makes the camera due again 0.2 s later.
    scheduler.pace(lane, 5.0)
    assert scheduler.get(timeout=0) is None  # nothing waiting
    lane.buffer.put(_frame("a", 1))
    lane.buffer.put(_frame("a", 2))  # a fresh one, but taken only when due
    first = scheduler.get(timeout=1.0)
    assert first is not None and first[1].seq == 2
    lane.buffer.put(_frame("a", 3))
    assert scheduler.get(timeout=0) is None  # not due: this look is remembered
    assert scheduler.get(timeout=0) is None  # answered from memory, nothing changed
    # A new pace (0: no limit) is a change: the waiting frame is taken at once.
    scheduler.pace(lane, 0.0)
    got = scheduler.get(timeout=0)
    assert got is not None and got[1].seq == 3

    # Due by the clock alone, with no put in between.
    scheduler.pace(lane, 5.0)
    lane.buffer.put(_frame("a", 4))
    assert scheduler.get(timeout=0) is not None  # taken; due again in 0.2 s
    lane.buffer.put(_frame("a", 5))
    assert scheduler.get(timeout=0) is None
    t0 = time.monotonic()
    got = scheduler.get(timeout=1.0)  # the remembered look ends when the camera is due
    assert got is not None and got[1].seq == 5
    assert 0.1 < time.monotonic() - t0 < 0.5

    lane.buffer.close()
    assert scheduler.closed and scheduler.get(timeout=0.5) is None
