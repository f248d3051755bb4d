"""A V4L2 (USB) camera against a STAND-IN `cv2.VideoCapture` (tests/v4l2_standin.py:
no V4L2 device can exist here): MJPEG asked for and its JPEGs decoded by edged,
reduced and only once taken; a camera without MJPEG keeps its own format; one
that must give MJPEG and cannot is one line naming the camera."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import simplejpeg
from v4l2_standin import WEBCAM, StandinV4l2Camera

from edged.sources import SourceError, open_source
from edged.sources.base import Undecoded
from edged.sources.resilient import ResilientSource
from edged.sources.synthetic import pattern


def _camera(monkeypatch: pytest.MonkeyPatch, formats: dict[str, list[tuple[int, int]]],
            **kw: frozenset[int]) -> StandinV4l2Camera:
    camera = StandinV4l2Camera(formats, **kw)
    monkeypatch.setattr(cv2, "VideoCapture", camera.capture)
    return camera


def test_standin_webcam_gives_mjpeg_decoded_by_edged_reduced_once_taken(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    camera = _camera(monkeypatch, WEBCAM)
    src = ResilientSource(open_source("opencv", uri="0", width=1920, height=1080, fps=30,
                                      v4l2_format="auto", min_size=(224, 224),
                                      defer_decode=True))
    decodes = []
    with caplog.at_level(logging.INFO, logger="edged.sources"):
        frames = [src.read() for _ in range(5)]
    assert ("opencv:0: MJPG 1920x1080 from the camera, decoded by edged, at least 224x224, "
            "once taken") in caplog.messages
    assert camera.fourccs_asked == ["MJPG"] and camera.decoded_by_opencv == 0
    assert all(f is not None and f.pending is not None for f in frames)
    inner = src.source._decode  # type: ignore[attr-defined]
    src.source._decode = lambda data: decodes.append(1) or inner(data)  # type: ignore[attr-defined]
    last = frames[-1]
    assert last is not None
    ready = last.ready()
    assert ready is not None and len(decodes) == 1, "only the frame taken is decoded"
    # 1/4 of 1920x1080 still covers 224x224 in both sides; boxes map back to 1920x1080.
    assert ready.pixels.shape == (270, 480, 3) and ready.full_size == (1080, 1920)
    want = simplejpeg.decode_jpeg(camera.sent[-1], colorspace="RGB", min_factor=4.0,
                                  min_height=270, min_width=480)
    assert np.array_equal(ready.pixels, want)
    # The picture is the camera's (the pattern of frame 4, within JPEG and 1/4 scaling).
    small = cv2.resize(pattern(4, 1080, 1920), (480, 270), interpolation=cv2.INTER_AREA)
    assert np.abs(ready.pixels.astype(int) - small).mean() < 6


def test_standin_webcam_mjpeg_without_pending_decodes_on_the_capture_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    camera = _camera(monkeypatch, WEBCAM)
    src = open_source("opencv", uri=0, width=1280, height=720, v4l2_format="mjpeg",
                      min_size=(224, 224))
    src.open()
    pixels = src.read()
    assert isinstance(pixels, np.ndarray) and pixels.shape == (360, 640, 3)
    assert src.full_size == (720, 1280) and camera.decoded_by_opencv == 0


def test_standin_camera_without_mjpeg_keeps_its_own_format(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    camera = _camera(monkeypatch, {"YUYV": [(640, 480)]})
    src = open_source("opencv", uri=0, width=640, height=480, v4l2_format="auto",
                      min_size=(224, 224), defer_decode=True)
    with caplog.at_level(logging.INFO, logger="edged.sources"):
        src.open()
    assert ("opencv:0: YUYV 640x480 from the camera, converted by OpenCV (it offers no MJPEG "
            "at this size)") in caplog.messages
    pixels = src.read()
    assert not isinstance(pixels, Undecoded) and pixels is not None
    assert np.array_equal(pixels, pattern(0, 480, 640)), "RGB, as every source delivers"
    assert camera.fourccs_asked == ["MJPG"]


def test_standin_camera_that_must_give_mjpeg_and_cannot_is_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _camera(monkeypatch, {"YUYV": [(640, 480), (1280, 720)]})
    src = open_source("opencv", uri=0, width=1280, height=720, v4l2_format="mjpeg")
    with pytest.raises(SourceError) as err:
        src.open()
    assert str(err.value) == ('opencv:0: the camera does not offer MJPEG at 1280x720 (it gives '
                              'YUYV); v4l2_format = "auto" takes what it offers')


def test_standin_uncompressed_never_asks_for_mjpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    camera = _camera(monkeypatch, WEBCAM)
    src = open_source("opencv", uri=0, width=1280, height=720, v4l2_format="uncompressed")
    src.open()
    pixels = src.read()
    assert camera.fourccs_asked == [] and isinstance(pixels, np.ndarray)
    assert pixels.shape == (720, 1280, 3) and np.array_equal(pixels, pattern(0, 720, 1280))


def test_standin_webcam_corrupt_jpeg_is_skipped_counted_and_the_next_one_read(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    camera = _camera(monkeypatch, WEBCAM, corrupt=frozenset({1}))
    src = ResilientSource(open_source("opencv", uri=0, width=640, height=480,
                                      min_size=(224, 224), defer_decode=True,
                                      v4l2_format="auto"))
    with caplog.at_level(logging.WARNING, logger="edged.sources"):
        frames = [src.read() for _ in range(3)]
    ready = [f.ready() for f in frames if f is not None]
    assert all(r is not None for r in ready) and camera.frame == 4
    assert src.source.skipped == 1
    assert [m for m in caplog.messages if "corrupt" in m] == [
        f"opencv:0: skipped a corrupt JPEG frame ({len(camera.sent[1])} bytes); 1 skipped "
        f"so far"]
