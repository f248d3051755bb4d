"""JPEGs decoded at 1/2, 1/4 or 1/8 (edged.sources.jpeg), alone and in the drivers that
receive them: the folder source and the HTTP MJPEG reader against a real HTTP server."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from sources_helpers import MjpegServer

from edged.sources.base import NO_PIXELS, Frame, Thinner, Undecoded
from edged.sources.folder import FolderSource
from edged.sources.jpeg import JpegDecoder, reduction
from edged.sources.mjpeg import HttpMjpegSource
from edged.sources.resilient import ResilientSource

SHARED = Path(__file__).resolve().parents[3] / "shared" / "models"


def _scene(h: int, w: int) -> np.ndarray:
    """Smooth gradients and a few flat shapes: what a camera sees, not noise."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (h + w))], -1)
    img = img.astype(np.uint8)
    cv2.rectangle(img, (w // 5, h // 4), (w // 2, h // 2), (250, 30, 30), -1)
    cv2.circle(img, (3 * w // 4, 2 * h // 3), h // 6, (20, 200, 60), -1)
    return img


def _jpeg(rgb: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(buf)


@pytest.mark.parametrize(("full", "need", "k"), [
    ((1080, 1920), (224, 224), 4),   # 270x480
    ((720, 1280), (224, 224), 2),    # 180 < 224 at 1/4
    ((480, 640), (224, 224), 2),
    ((480, 640), (300, 300), 1),     # 240 < 300: whole
    ((1080, 1920), (64, 64), 8),
    ((1080, 1920), (224, 640), 2),   # an event snapshot 640 wide
    ((1081, 1921), (136, 241), 8),   # libjpeg rounds up: 136x241 at 1/8
    ((1080, 1920), None, 1),
])
def test_the_reduction_is_the_largest_power_of_two_still_covering_the_need(
        full: tuple[int, int], need: tuple[int, int] | None, k: int) -> None:
    assert reduction(full, need) == k


def test_a_reduced_decode_is_the_area_resize_of_the_whole_to_a_level_or_two() -> None:
    rgb = _scene(720, 1280)
    data = _jpeg(rgb)
    got = JpegDecoder((224, 224))(data)
    assert got is not None and got.full_size == (720, 1280)
    assert got.pixels.shape == (360, 640, 3) and got.pixels.dtype == np.uint8
    whole = JpegDecoder()(data)
    assert whole is not None and whole.full_size is None and whole.pixels.shape == rgb.shape
    area = cv2.resize(whole.pixels, (640, 360), interpolation=cv2.INTER_AREA)
    diff = np.abs(got.pixels.astype(int) - area.astype(int))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (diff.mean(), diff.max())


def test_pictures_that_are_not_jpegs_decode_whole_and_garbage_is_none(tmp_path: Path) -> None:
    rgb = _scene(96, 128)
    _, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    got = JpegDecoder((16, 16))(bytes(png))
    assert got is not None and got.full_size is None
    assert np.array_equal(got.pixels, rgb)  # lossless, RGB as every source delivers
    decode = JpegDecoder((16, 16))
    assert decode(b"") is None and decode(b"not a picture") is None
    assert decode(b"\xff\xd8 a JPEG's first two bytes, then nothing") is None


def test_grey_and_truncated_jpegs_decode_as_opencv_decoded_them() -> None:
    grey = _scene(160, 256)[..., 0]
    _, buf = cv2.imencode(".jpg", grey)
    got = JpegDecoder((40, 64))(bytes(buf))
    assert got is not None and got.pixels.shape == (40, 64, 3) and got.full_size == (160, 256)
    # A truncated frame (a camera's dropped packet) decodes with its missing rows grey,
    # as cv2.imdecode did: lenient, so a camera whose every JPEG has a flaw still works.
    data = _jpeg(_scene(480, 640))
    cut = JpegDecoder((120, 160))(data[:len(data) * 2 // 3])
    assert cut is not None and cut.pixels.shape == (120, 160, 3)
    assert (cut.pixels[-10:] == 128).all()  # the rows that never came


def test_the_reduction_is_logged_once_naming_the_source(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    decode = JpegDecoder((224, 224), "http:cam")
    data = _jpeg(_scene(1080, 1920))
    with caplog.at_level(logging.INFO, "edged.sources"):
        for _ in range(3):
            decode(data)
        decode(_jpeg(_scene(480, 640)))
    assert [r.getMessage() for r in caplog.records] == [
        "http:cam: JPEGs of 1920x1080 decoded at 1/4 (480x270; at least 224x224 needed)",
        "http:cam: JPEGs of 640x480 decoded at 1/2 (320x240; at least 224x224 needed)"]


@pytest.mark.skipif(not (SHARED / "cat_1080p.jpg").exists(), reason="../shared/models absent")
def test_a_real_camera_photo_decodes_reduced_with_its_full_size() -> None:
    data = (SHARED / "cat_1080p.jpg").read_bytes()
    got = JpegDecoder((224, 224))(data)
    assert got is not None and got.full_size == (1080, 1920) and got.pixels.shape[:2] == (270, 480)


def test_the_folder_source_decodes_jpegs_reduced_and_other_files_whole(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_jpeg(_scene(480, 640)))
    cv2.imwrite(str(tmp_path / "b.png"), _scene(480, 640))
    src = FolderSource(tmp_path, loop=False, fps=0, min_size=(100, 100))
    src.open()
    first = src.read()
    assert first is not None and first.shape == (120, 160, 3)
    assert src.full_size == (480, 640) and src.origin == "a.jpg"
    second = src.read()
    assert second is not None and second.shape == (480, 640, 3) and src.full_size is None
    assert src.read() is None


def test_the_mjpeg_reader_decodes_each_part_reduced_over_real_http() -> None:
    parts = [_jpeg(_scene(720, 1280)), b"corrupt", _jpeg(_scene(480, 640))]
    server = MjpegServer(lambda i: parts[i] if i < len(parts) else None).start()
    try:
        src = HttpMjpegSource(server.url, min_size=(224, 224), read_timeout=5)
        src.open()
        first = src.read()
        assert first is not None and first.shape == (360, 640, 3)
        assert src.full_size == (720, 1280) and src.delivered_size == (360, 640)
        second = src.read()  # the corrupt part is skipped and counted
        assert second is not None and second.shape == (240, 320, 3) and src.skipped == 1
        assert src.full_size == (480, 640)
        src.close()
    finally:
        server.stop()


@pytest.mark.parametrize(("camera_fps", "fps", "through"), [
    (30, 20, 20), (30, 10, 10), (30, 30, 30), (25, 30, 25), (60, 7.5, 7.5)])
def test_the_thinner_lets_fps_frames_a_second_through_whatever_the_camera_sends(
        camera_fps: float, fps: float, through: float) -> None:
    thinner = Thinner(fps)
    rng = np.random.default_rng(3)
    # 20 s of a camera's frames, each up to a fifth of an interval early or late.
    times = np.arange(int(20 * camera_fps)) / camera_fps
    times = times + rng.uniform(-0.2, 0.2, times.size) / camera_fps
    passed = sum(thinner.admit(float(t)) for t in np.sort(times))
    assert passed / 20 == pytest.approx(through, abs=0.3)
    assert thinner.thinned == times.size - passed
    unthinned = Thinner(0)
    assert all(unthinned.admit(t / 1000) for t in range(100)) and unthinned.thinned == 0


def test_a_stream_faster_than_fps_is_thinned_before_decoding_over_real_http() -> None:
    server = MjpegServer(lambda i: _jpeg(_scene(48, 64)), interval=0.01).start()  # ~100/s
    try:
        src = HttpMjpegSource(server.url, fps=20.0)
        src.open()
        start = time.monotonic()
        frames = 0
        while time.monotonic() - start < 1.5:
            assert src.read() is not None
            frames += 1
        assert 25 <= frames <= 36, frames  # 20/s, and a first frame's credit
        assert src._thinner.thinned > 2 * frames
        src.close()
    finally:
        server.stop()


def test_a_snapshot_url_is_asked_no_more_than_fps_times_a_second() -> None:
    server = MjpegServer(snapshot=True, make_part=lambda i: _jpeg(_scene(48, 64))).start()
    try:
        src = HttpMjpegSource(server.url, fps=10.0)
        src.open()
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            assert src.read() is not None
        assert 9 <= server.connections <= 12, server.connections
        # An abort ends a paced wait at once.
        src.abort()
        t0 = time.monotonic()
        assert src.read() is None and time.monotonic() - t0 < 0.2
        src.close()
    finally:
        server.stop()


def test_a_deferred_camera_leaves_each_jpeg_to_the_frame_that_is_taken() -> None:
    """defer_decode (the daemon's HTTP cameras): read returns each JPEG undecoded; the
    consumer's `Frame.ready()` decodes it, reduced, with its full size. A part whose
    header does not read is decoded (refused, counted) on the capture thread as before."""
    parts = [_jpeg(_scene(720, 1280)), b"corrupt", _jpeg(_scene(480, 640))]
    server = MjpegServer(lambda i: parts[i] if i < len(parts) else None).start()
    try:
        src = ResilientSource(HttpMjpegSource(server.url, min_size=(224, 224),
                                              defer_decode=True))
        first = src.read()
        assert first is not None and first.pending is not None and first.pixels.size == 0
        second = src.read()  # the corrupt part was skipped on the way: not a frame
        assert second is not None and second.seq == first.seq + 1
        assert src.source.skipped == 1
        ready = second.ready()
        assert ready is not None and ready.pending is None and ready.seq == second.seq
        assert ready.pixels.shape == (240, 320, 3) and ready.full_size == (480, 640)
        assert not ready.pixels.flags.writeable
        assert first.ready() is not None  # taken late, still decodes
        src.close()
    finally:
        server.stop()
    # A frame read whole is its own ready().
    whole = Frame(np.zeros((2, 2, 3), np.uint8), 0, 0.0, 0.0, "t")
    assert whole.ready() is whole
    # One whose JPEG does not decode after all: None, the source counts it.
    bad = Frame(NO_PIXELS, 1, 0.0, 0.0, "t", pending=lambda: None)
    assert bad.ready() is None


def test_a_decode_that_raises_is_one_corrupt_frame_not_a_dead_pipeline() -> None:
    server = MjpegServer(lambda i: _jpeg(_scene(48, 64)) if i < 2 else None).start()
    try:
        src = HttpMjpegSource(server.url, defer_decode=True)
        src.open()
        part = src.read()
        assert isinstance(part, Undecoded)

        def broken(data: bytes) -> None:
            raise MemoryError("libjpeg-turbo ran out")

        src._decode = broken  # type: ignore[assignment]
        assert part.decode() is None and src.skipped == 1
        src.close()
    finally:
        server.stop()
