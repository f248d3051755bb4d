"""picamera2 source against a STAND-IN picamera2 module (no Pi camera or libcamera
can exist here). The stand-in mimics the real API the source calls
(Picamera2(n), create_video_configuration(main=, lores=, buffer_count=),
configure, camera_configuration, start, capture_array(name, wait=False),
wait(job, timeout), stop, close), picamera2's array layouts (YUV420 with
padded stride; "BGR888" = R,G,B in memory) and the VC4 rule that a lores
stream must be YUV."""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import pytest
from sources_helpers import i420, picamera2_standin

from edged.preprocess import Preprocessor
from edged.sources import SourceError, open_source
from edged.sources.picamera2 import main_size_for, yuv420_to_rgb
from edged.sources.resilient import ResilientSource
from edged.sources.synthetic import pattern


def test_standin_pi4_falls_back_to_yuv420_and_converts_to_rgb(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    module, cams = picamera2_standin(platform="vc4", stride_pad=32)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    src = open_source("picamera2", size=(224, 224))
    src.open()
    cam = cams[0]
    assert [c for c in cam.calls if c[0] == "configure"] == [("configure", "BGR888"),
                                                             ("configure", "YUV420")]
    create = cam.calls[0]
    assert create[1] == {"size": (480, 480)} and create[2] == {"size": (224, 224),
                                                               "format": "BGR888"}
    assert src.delivered_size == (224, 224)
    px = src.read()
    assert px is not None and px.shape == (224, 224, 3) and px.flags.c_contiguous
    # YUV 4:2:0 loses chroma detail at edges: compare on average, and exactly
    # against OpenCV's own round trip.
    truth = pattern(0, 224, 224)
    assert np.abs(px.astype(int) - truth).mean() < 3
    expected = cv2.cvtColor(cv2.cvtColor(truth, cv2.COLOR_RGB2YUV_I420), cv2.COLOR_YUV2RGB_I420)
    assert np.array_equal(px, expected)
    # The ISP already scaled: the preprocessor passes the frame through untouched.
    assert Preprocessor((224, 224), 3)(px) is px
    src.close()
    assert ("close",) in cam.calls and not cam.started


def test_standin_pi5_rgb_lores_is_delivered_without_conversion(monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    module, cams = picamera2_standin(platform="pisp")
    monkeypatch.setitem(sys.modules, "picamera2", module)
    src = open_source("picamera2", size=(96, 128), fps=15)
    src.open()
    assert [c for c in cams[0].calls if c[0] == "configure"] == [("configure", "BGR888")]
    px = src.read()
    assert px is not None and np.array_equal(px, pattern(0, 96, 128))
    assert cams[0].config["controls"] == {"FrameRate": 15.0}


def test_standin_rgb888_is_swapped_to_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    module, _ = picamera2_standin(platform="pisp")
    monkeypatch.setitem(sys.modules, "picamera2", module)
    src = open_source("picamera2", size=(32, 32), lores_format="RGB888")
    src.open()
    px = src.read()
    assert px is not None and np.array_equal(px, pattern(0, 32, 32))


def test_standin_gray_takes_the_luma_plane(monkeypatch: pytest.MonkeyPatch) -> None:
    module, _ = picamera2_standin(platform="vc4", stride_pad=64)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    src = open_source("picamera2", size=(28, 28), gray=True, lores_format="YUV420")
    src.open()
    px = src.read()
    luma = i420(pattern(0, 28, 28), 28 + 64)[:28, :28]
    assert px is not None and px.shape == (28, 28) and np.array_equal(px, luma)
    out = Preprocessor((28, 28), 1)(px)
    assert out.shape == (28, 28, 1) and np.shares_memory(out, px)


def test_standin_stalled_camera_times_out_and_is_reopened(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    module, cams = picamera2_standin(platform="pisp", frames=2)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    src = ResilientSource(open_source("picamera2", size=(16, 16), read_timeout=0.05),
                          initial_backoff=0.01, max_backoff=0.02)
    frames = [src.read() for _ in range(3)]
    assert [f.seq for f in frames if f] == [0, 1, 2]
    assert len(cams) == 2 and src.reopen_count == 1
    assert src.last_error == "picamera2:0: no frame for 0.05 s"


def test_standin_camera_failing_to_open_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    module, cams = picamera2_standin(platform="pisp", fail_open=2)
    monkeypatch.setitem(sys.modules, "picamera2", module)
    src = ResilientSource(open_source("picamera2", size=(16, 16)),
                          initial_backoff=0.01, max_backoff=0.02)
    t0 = time.monotonic()
    frame = src.read()
    assert frame is not None and frame.seq == 0 and time.monotonic() - t0 < 1
    assert src.reopen_count == 2 and len(cams) == 1
    assert src.last_error == ("picamera2:0: cannot open camera: "
                              "Camera __init__ sequence did not complete.")


def test_picamera2_not_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import raises ImportError
    src = open_source("picamera2", size=(16, 16))
    with pytest.raises(SourceError, match=r"^picamera2 is not installed \(on Raspberry Pi OS: "
                                          r"apt install python3-picamera2"):
        src.open()


def test_main_stream_has_the_model_aspect_ratio() -> None:
    assert main_size_for((224, 224)) == (480, 480)
    assert main_size_for((300, 400)) == (480, 640)
    assert main_size_for((640, 640)) == (640, 640)
    with pytest.raises(SourceError, match=r"main_size .* is smaller than the lores size"):
        open_source("picamera2", size=(300, 300), main_size=(240, 320))


def test_yuv420_conversion_cuts_the_stride_padding() -> None:
    rgb = pattern(3, 20, 30)
    padded = i420(rgb, 30 + 34)
    direct = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), cv2.COLOR_YUV2RGB_I420)
    out = yuv420_to_rgb(padded, (20, 30))
    assert out.shape == (20, 30, 3) and out.flags.c_contiguous and np.array_equal(out, direct)


def test_yuv420_red_stays_red() -> None:
    """picamera2's YUV420 is I420; OpenCV's COLOR_YUV420p2RGB means YV12 and would
    turn a red scene blue. Guard the choice with a red frame."""
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 220
    out = yuv420_to_rgb(i420(red, 16), (16, 16))
    assert out[..., 0].min() > 200 and out[..., 2].max() < 30
