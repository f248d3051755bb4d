"""The pipeline's deliveries (edged.service.delivery) alone: a cascade's frame is
published after the next frame's deliver has queued its crops, frames stay in order,
a failing deliver is counted and logged, a dying worker's held frame counted lost.
The cascade through the real daemon is tests/service/test_cascade.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from edged.inference.messages import WorkerError
from edged.service.delivery import Deliveries, Later, owned


class _Result:
    def __init__(self, seq: int) -> None:
        self.frame_seq = seq


class Camera:
    """A deliver that logs what happens when: `crops` frames wait for an answer."""

    def __init__(self, crops: set[int], fail: set[int] | None = None) -> None:
        self.crops, self.fail = crops, fail or set()
        self.log: list[str] = []

    def deliver(self, result: Any) -> Later | None:
        seq = result.frame_seq
        self.log.append(f"start {seq}")
        if seq in self.fail:
            raise ValueError(f"frame {seq} does not encode")
        if seq in self.crops:
            return Later(lambda: self.log.append(f"publish {seq}"))
        self.log.append(f"publish {seq}")
        return None

    def record(self, seq: int) -> Callable[[], None]:
        return lambda: self.log.append(f"record {seq}")


def _run(deliveries: Deliveries, camera: Camera, seqs: range) -> None:
    for seq in seqs:
        deliveries.deliver(camera.deliver, _Result(seq), camera.record(seq))  # type: ignore[arg-type]


def test_a_frame_waiting_for_its_crops_is_published_after_the_next_one_queued_its_own() -> None:
    deliveries, camera = Deliveries(), Camera(crops={0, 1, 2})
    _run(deliveries, camera, range(3))
    assert camera.log == ["start 0", "start 1", "publish 0", "record 0",
                          "start 2", "publish 1", "record 1"]
    deliveries.flush()  # no next frame: the held one goes now
    assert camera.log[-2:] == ["publish 2", "record 2"]
    deliveries.flush()
    assert camera.log.count("publish 2") == 1


def test_a_frame_with_nothing_to_classify_waits_for_the_one_held_before_it() -> None:
    deliveries, camera = Deliveries(), Camera(crops={0})

    def no_crops(result: Any) -> Later | None:
        seq = result.frame_seq
        if seq == 0:
            return camera.deliver(result)
        return Later(lambda: camera.log.append(f"publish {seq}"), waits=False)

    for seq in range(2):
        deliveries.deliver(no_crops, _Result(seq), camera.record(seq))  # type: ignore[arg-type]
    assert camera.log == ["start 0", "publish 0", "record 0", "publish 1", "record 1"]


def test_a_deliver_that_fails_is_counted_logged_and_the_frames_around_it_go_on(
        caplog: pytest.LogCaptureFixture) -> None:
    deliveries, camera = Deliveries(), Camera(crops={0, 2}, fail={1})
    with caplog.at_level(logging.ERROR, "edged.pipeline"):
        _run(deliveries, camera, range(3))
        deliveries.flush()
    assert [line for line in camera.log if line.startswith("publish")] == [
        "publish 0", "publish 2"]
    assert "record 1" in camera.log  # its latency still counts
    assert deliveries.errors == 1 and deliveries.last_error == "ValueError: frame 1 does not encode"
    assert "result 1 not delivered (1 so far): ValueError: frame 1 does not encode" in caplog.text


def test_the_worker_dying_loses_the_frame_held_and_the_one_waiting_on_it() -> None:
    deliveries = Deliveries()

    def dies(result: Any) -> Later | None:
        def finish() -> None:
            raise WorkerError("worker died")
        return Later(finish)

    deliveries.deliver(dies, _Result(0), lambda: None)  # type: ignore[arg-type]
    with pytest.raises(WorkerError):
        deliveries.deliver(dies, _Result(1), lambda: None)  # type: ignore[arg-type]
    assert deliveries.lost == 1
    deliveries.drop()  # what the pipeline does before restarting the worker
    assert deliveries.lost == 2
    deliveries.flush()
    assert deliveries.lost == 2


def test_a_held_frame_keeps_its_outputs_not_views_of_the_slot() -> None:
    slot = np.arange(6, dtype=np.float32)
    view = slot[:3]
    kept = owned(view)
    slot[:] = -1  # the next frame's invoke
    assert kept.tolist() == [0.0, 1.0, 2.0]
    table = np.arange(256, dtype=np.float32)
    dequantized = np.take(table, np.array([1, 2], np.uint8))
    assert owned(dequantized) is dequantized  # already its own: no copy


def test_how_long_the_pipeline_may_wait_for_a_next_frame_is_until_the_answer_is_due() -> None:
    deliveries = Deliveries()
    assert deliveries.due_in() == 0.0  # nothing held: publish, take frames as they come
    soon = time.monotonic() + 0.5

    def crops(result: Any) -> Later | None:
        return Later(lambda: None, due=soon if result.frame_seq == 0 else 0.0)

    deliveries.deliver(crops, _Result(0), lambda: None)  # type: ignore[arg-type]
    assert 0.4 < deliveries.due_in() <= 0.5
    deliveries.deliver(crops, _Result(1), lambda: None)  # type: ignore[arg-type]
    assert deliveries.due_in() == 0.0  # overdue: publish it rather than wait
