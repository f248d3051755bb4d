"""Frame sources against real things: video files written by OpenCV, an HTTP MJPEG
server run by the test, image folders on disk, the synthetic pattern."""

from __future__ import annotations

import base64
import http.server
import logging
import shutil
import socketserver
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from sources_helpers import MjpegServer, closest, jpeg, wait_for, write_video

from edged.sources import Frame, FrameSource, SourceError, open_source, redact_url
from edged.sources.capture import CaptureThread, LatestFrameBuffer, RateLimiter
from edged.sources.folder import natural_key
from edged.sources.httpread import boundary_of
from edged.sources.resilient import ResilientSource, backoff_delay, one_line
from edged.sources.synthetic import SyntheticSource, frame_index, pattern

FAST = {"initial_backoff": 0.05, "max_backoff": 0.2}


@pytest.fixture
def server() -> MjpegServer:
    srv = MjpegServer().start()
    yield srv
    srv.stop()


# --- synthetic -------------------------------------------------------------

def test_synthetic_is_deterministic_sized_rgb_and_numbered() -> None:
    src = open_source("synthetic", size=(30, 40), fps=0, frames=3)
    assert isinstance(src, FrameSource)
    src.open()
    got = [src.read() for _ in range(4)]
    assert got[3] is None  # ended after `frames`
    for i, px in enumerate(got[:3]):
        assert px is not None and px.shape == (30, 40, 3) and px.dtype == np.uint8
        assert frame_index(px) == i
        assert np.array_equal(px, pattern(i, 30, 40))
    assert not np.array_equal(got[0], got[1])


def test_synthetic_recycles_buffers_but_never_one_still_held() -> None:
    src = ResilientSource(open_source("synthetic", size=(48, 64), fps=0))
    held = [src.read() for _ in range(6)]  # more than it recycles
    addresses = set()
    for _ in range(50):
        frame = src.read()
        assert frame is not None and not frame.pixels.flags.writeable
        addresses.add(frame.pixels.ctypes.data)
        assert np.array_equal(frame.pixels, pattern(frame.seq, 48, 64))
    view = frame.pixels[10:20]  # a view keeps its frame's buffer from being redrawn
    del frame
    for _ in range(10):
        src.read()
    assert np.array_equal(view, pattern(55, 48, 64)[10:20])
    for f in held:
        assert f is not None and np.array_equal(f.pixels, pattern(f.seq, 48, 64))
    assert len(addresses) <= 2  # released frames' buffers were reused, not reallocated


def test_synthetic_paces_to_fps() -> None:
    src = ResilientSource(open_source("synthetic", size=(8, 8), fps=50))
    t0 = time.monotonic()
    frames = [src.read() for _ in range(11)]
    elapsed = time.monotonic() - t0
    assert all(f is not None for f in frames)
    assert 0.15 < elapsed < 0.6  # 10 intervals of 20 ms


def test_frames_carry_seq_and_both_clocks() -> None:
    src = ResilientSource(open_source("synthetic", size=(8, 8), fps=0))
    t_wall, t_mono = time.time(), time.monotonic()
    a, b = src.read(), src.read()
    assert isinstance(a, Frame) and isinstance(b, Frame)
    assert (a.seq, b.seq) == (0, 1)
    assert t_wall <= a.captured_at <= b.captured_at <= time.time()
    assert t_mono <= a.captured_mono <= b.captured_mono <= time.monotonic()
    assert a.source == "synthetic:8x8" and a.size == (8, 8)
    assert not a.pixels.flags.writeable


def test_unknown_kind_and_parameter_are_one_line_errors() -> None:
    with pytest.raises(SourceError, match=r"^unknown source kind 'webcam'; expected one of "):
        open_source("webcam")
    with pytest.raises(TypeError, match="bogus"):
        open_source("synthetic", bogus=1)
    with pytest.raises(TypeError, match=r"http MJPEG source: unknown parameter\(s\) bogus"):
        open_source("opencv", uri="http://127.0.0.1:1/x", loop=True, bogus=2)
    # Device/file settings from a shared config shape are accepted for streams.
    assert open_source("opencv", uri="http://127.0.0.1:1/x", width=640, height=480, fps=30,
                       loop=False).name == "http:http://127.0.0.1:1/x"


# --- backoff ---------------------------------------------------------------

def test_backoff_doubles_caps_and_jitters_down_only() -> None:
    assert [backoff_delay(a, 0.5, 30, 0.0, 0.7) for a in range(8)] == \
        [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(3, 0.5, 30, 0.25, 0.0) == 4.0
    assert backoff_delay(3, 0.5, 30, 0.25, 0.999) == pytest.approx(3.001, abs=1e-3)
    assert backoff_delay(10_000, 0.5, 30, 0.25, 0.5) <= 30


def test_one_line_never_spans_lines() -> None:
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(SourceError("video file not found: x")) == "video file not found: x"
    assert one_line(RuntimeError()) == "RuntimeError"


# --- video files -----------------------------------------------------------

def test_video_file_loops_by_rewinding(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    written = write_video(path, 5)
    src = ResilientSource(open_source("opencv", uri=str(path), loop=True, fps=0))
    frames = [src.read() for _ in range(12)]
    assert [closest(f.pixels, written) for f in frames if f] == [0, 1, 2, 3, 4] * 2 + [0, 1]
    assert [f.seq for f in frames if f] == list(range(12))
    assert src.reopen_count == 0 and src.state == "running"
    assert frames[6] is not None and frames[6].origin == "frame 1"


def test_video_file_that_ends_without_reopening(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 4)
    src = ResilientSource(open_source("opencv", uri=str(path), fps=0), reopen_on_end=False)
    frames = [src.read() for _ in range(4)]
    assert all(frames)
    assert src.read() is None and src.read() is None
    assert src.state == "ended" and src.frames == 4


def test_video_file_that_ends_is_reopened_and_seq_continues(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    written = write_video(path, 3)
    src = ResilientSource(open_source("opencv", uri=str(path), fps=0), **FAST)
    frames = [src.read() for _ in range(7)]
    assert [closest(f.pixels, written) for f in frames if f] == [0, 1, 2, 0, 1, 2, 0]
    assert [f.seq for f in frames if f] == list(range(7))
    assert src.reopen_count == 2 and src.last_error == "opencv:" + str(path) + ": ended"


def test_video_file_paces_at_its_own_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 8, fps=50)
    src = ResilientSource(open_source("opencv", uri=str(path)))
    t0 = time.monotonic()
    assert all(src.read() for _ in range(6))
    assert 0.07 < time.monotonic() - t0 < 0.5  # 5 intervals of 20 ms


def test_missing_video_file_names_the_file(tmp_path: Path) -> None:
    src = open_source("opencv", uri=str(tmp_path / "nope.avi"))
    with pytest.raises(SourceError, match=r"^video file not found: .*nope\.avi$"):
        src.open()


def test_video_file_deleted_then_restored_resumes(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    written = write_video(path, 6, fps=100)
    source = ResilientSource(open_source("opencv", uri=str(path), loop=True), **FAST)
    cap = CaptureThread(source).start()
    try:
        assert cap.buffer.get(2.0) is not None
        shutil.move(path, tmp_path / "away.avi")
        # The open file plays out, then the rewind notices and it is reopened.
        assert wait_for(lambda: source.state == "reopening"
                        and "not found" in (source.last_error or ""))
        assert source.last_error == f"video file not found: {path}"
        stuck_at = source.frames
        while cap.buffer.get(0.05) is not None:
            pass
        assert wait_for(lambda: source.reopen_count >= 3)  # retried while missing
        assert source.frames == stuck_at
        shutil.move(tmp_path / "away.avi", path)
        frame = cap.buffer.get(3.0)
        assert frame is not None and frame.seq == stuck_at
        assert closest(frame.pixels, written) == 0
        assert wait_for(lambda: source.state == "running")
    finally:
        assert cap.stop()


def test_a_source_is_opening_until_its_first_frame_not_reopening() -> None:
    source = ResilientSource(SyntheticSource((16, 16), fps=0))
    assert source.status().state == "opening"  # nothing has failed: not "reopening"
    assert source.read() is not None
    assert source.status().state == "running"
    source.close()


def test_vanished_camera_device_is_retried_with_its_path_in_the_error() -> None:
    source = ResilientSource(open_source("opencv", uri="/dev/video-edged-missing"), **FAST)
    cap = CaptureThread(source).start()
    try:
        assert wait_for(lambda: source.reopen_count >= 2)
        status = source.status()
        assert status.state == "reopening" and status.frames == 0
        assert status.last_error == "camera device not found: /dev/video-edged-missing"
    finally:
        t0 = time.monotonic()
        assert cap.stop()
        assert time.monotonic() - t0 < 0.5


# --- HTTP MJPEG ------------------------------------------------------------

def test_http_mjpeg_stream_reads_frames_in_order(server: MjpegServer) -> None:
    src = ResilientSource(open_source("opencv", uri=server.url))
    frames = [src.read() for _ in range(5)]
    values = [int(f.pixels[0, 0, 0]) for f in frames if f]
    assert len(values) == 5 and values == sorted(values)
    assert frames[0] is not None and frames[0].pixels.shape == (48, 64, 3)
    assert src.status().delivered_size == (48, 64)
    src.close()


def test_http_mjpeg_without_content_length(tmp_path: Path) -> None:
    srv = MjpegServer(content_length=False).start()
    try:
        src = ResilientSource(open_source("opencv", uri=srv.url))
        values = [int(f.pixels[0, 0, 0]) for f in (src.read() for _ in range(4)) if f]
        assert values == [0, 7, 14, 21]
        src.close()
    finally:
        srv.stop()


def test_http_corrupt_jpeg_parts_are_skipped_and_counted(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    def part(i: int) -> bytes:
        return b"\xff\xd8 not a jpeg" + bytes(100) if i % 3 == 1 else jpeg(i)

    srv = MjpegServer(make_part=part).start()
    try:
        src = ResilientSource(open_source("opencv", uri=srv.url))
        with caplog.at_level(logging.WARNING, logger="edged.sources"):
            values = [int(f.pixels[0, 0, 0]) for f in (src.read() for _ in range(6)) if f]
        assert values == [0, 2, 3, 5, 6, 8]
        status = src.status()
        assert status.skipped == 3 and status.reopen_count == 0 and srv.connections == 1
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 1  # rate-limited, not one per part
        assert warnings[0].startswith(f"http:{srv.url}: skipped a corrupt JPEG part")
        src.close()
    finally:
        srv.stop()


def test_http_stalled_stream_times_out_and_reconnects() -> None:
    srv = MjpegServer(stall_at=3).start()
    try:
        src = ResilientSource(open_source("opencv", uri=srv.url, read_timeout=0.3), **FAST)
        t0 = time.monotonic()
        frames = [src.read() for _ in range(5)]
        assert all(frames) and time.monotonic() - t0 < 3
        assert [f.seq for f in frames if f] == [0, 1, 2, 3, 4]
        assert src.reopen_count == 1 and srv.connections == 2
        assert src.last_error == f"http:{srv.url}: no data for 0.3 s (timed out)"
        src.close()
    finally:
        srv.stop()


def test_http_server_going_away_and_coming_back(server: MjpegServer) -> None:
    source = ResilientSource(open_source("opencv", uri=server.url, read_timeout=1.0), **FAST)
    cap = CaptureThread(source).start()
    try:
        assert cap.buffer.get(2.0) is not None
        server.stop()
        assert wait_for(lambda: source.state == "reopening")
        assert wait_for(lambda: source.last_error == f"http:{server.url}: connection refused")
        seen = source.frames
        time.sleep(0.3)
        assert source.frames == seen
        server.start()  # same port
        assert wait_for(lambda: source.frames > seen + 3)
        assert source.state == "running" and source.reopen_count >= 1
    finally:
        assert cap.stop()


def test_http_snapshot_url_is_polled() -> None:
    srv = MjpegServer(snapshot=True, make_part=lambda i: jpeg(i * 10)).start()
    try:
        src = open_source("opencv", uri=srv.url)
        src.open()
        values = [int(px[0, 0, 0]) for px in (src.read() for _ in range(3)) if px is not None]
        assert values == [0, 10, 20] and srv.connections == 3
        src.close()
    finally:
        srv.stop()


def test_http_that_is_not_mjpeg_says_what_to_do() -> None:
    srv = MjpegServer(content_type="video/mp4").start()
    try:
        src = open_source("opencv", uri=srv.url)
        with pytest.raises(SourceError, match=r'Content-Type video/mp4 is not MJPEG; set '
                                              r'http_reader = "ffmpeg"'):
            src.open()
    finally:
        srv.stop()


def test_http_credentials_are_sent_but_never_shown(server: MjpegServer) -> None:
    seen: list[str] = []
    url = server.url.replace("http://", "http://cam:s3cret@")
    src = open_source("opencv", uri=url)
    assert "s3cret" not in src.name and src.name == f"http:{redact_url(url)}"
    assert redact_url(url) == server.url.replace("http://", "http://cam:***@")
    # The header itself, checked by a server that refuses it.
    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with socketserver.TCPServer(("127.0.0.1", 0), Echo) as s:
        threading.Thread(target=s.handle_request, daemon=True).start()
        port = s.server_address[1]
        src = open_source("opencv", uri=f"http://cam:s3cret@127.0.0.1:{port}/")
        with pytest.raises(SourceError) as info:
            src.open()
    assert str(info.value) == f"http:http://cam:***@127.0.0.1:{port}/: HTTP 401 Unauthorized"
    assert seen == ["Basic " + base64.b64encode(b"cam:s3cret").decode()]


def test_boundary_parsing() -> None:
    assert boundary_of("multipart/x-mixed-replace; boundary=frame") == "frame"
    assert boundary_of('multipart/x-mixed-replace;boundary="--myb"') == "myb"
    assert boundary_of("multipart/x-mixed-replace") is None


def test_ffmpeg_backend_reads_http_mjpeg_too(server: MjpegServer) -> None:
    """This wheel's FFMPEG reads MJPEG over HTTP; the built-in reader is the default
    because FFMPEG ends the stream at a corrupt part (see mjpeg.py)."""
    src = ResilientSource(open_source("opencv", uri=server.url, http_reader="ffmpeg",
                                      read_timeout=2.0))
    assert src.source.name.startswith("opencv:")
    frames = [src.read() for _ in range(3)]
    assert all(f is not None and f.pixels.shape == (48, 64, 3) for f in frames)
    src.close()


# --- image folder ----------------------------------------------------------

def test_folder_natural_order_skips_corrupt_file_once_and_loops(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for i in (1, 2, 10):
        img = np.full((20, 30, 3), i * 20, dtype=np.uint8)
        img[..., 0] = 0  # B of BGR on disk
        cv2.imwrite(str(tmp_path / f"f{i}.png"), img)
    (tmp_path / "f3.jpg").write_bytes(b"not an image at all")
    (tmp_path / "notes.txt").write_text("ignored")
    src = ResilientSource(open_source("folder", path=tmp_path, fps=0))
    with caplog.at_level(logging.WARNING, logger="edged.sources"):
        frames = [src.read() for _ in range(7)]
    assert [f.origin for f in frames if f] == ["f1.png", "f2.png", "f10.png"] * 2 + ["f1.png"]
    first = frames[0]
    assert first is not None and tuple(first.pixels[0, 0]) == (20, 20, 0)  # RGB
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"image folder {tmp_path}: skipping unreadable image {tmp_path / 'f3.jpg'}"]
    assert src.status().skipped == 2  # once per pass, warned once
    assert natural_key("f2.png") < natural_key("f10.png")


def test_folder_without_loop_ends(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
    src = ResilientSource(open_source("folder", path=tmp_path, loop=False, fps=0),
                          reopen_on_end=False)
    assert src.read() is not None and src.read() is None and src.state == "ended"


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p: None, "image folder not found: {p}/missing"),
    (lambda p: (p / "missing").mkdir(), "image folder {p}/missing: no .png/.jpg/.jpeg/.bmp files"),
    (lambda p: ((p / "missing").mkdir(), (p / "missing" / "x.png").write_bytes(b"junk")),
     "image folder {p}/missing: no readable images"),
])
def test_folder_errors_name_the_folder(tmp_path: Path, setup: Callable[[Path], object],
                                       message: str) -> None:
    setup(tmp_path)
    src = open_source("folder", path=tmp_path / "missing", fps=0)
    with pytest.raises(SourceError) as info:
        src.open()
        src.read()
    assert str(info.value) == message.format(p=tmp_path)


# --- latest-frame buffer and capture thread --------------------------------

def _frame(seq: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), seq, time.time(), time.monotonic(), "t")


def test_latest_frame_buffer_keeps_one_and_counts_drops() -> None:
    buf = LatestFrameBuffer()
    for i in range(3):
        buf.put(_frame(i))
    got = buf.get(0)
    assert got is not None and got.seq == 2 and buf.dropped == 2
    assert buf.get(0.05) is None
    buf.put(_frame(3))
    assert buf.get(0) is not None and buf.dropped == 2
    threading.Timer(0.05, buf.close).start()
    t0 = time.monotonic()
    assert buf.get(5) is None and time.monotonic() - t0 < 1


def test_capture_runs_ahead_and_drops_for_a_slow_consumer() -> None:
    source = ResilientSource(open_source("synthetic", size=(32, 32), fps=400))
    cap = CaptureThread(source).start()
    seqs = []
    for _ in range(5):
        frame = cap.buffer.get(1.0)
        assert frame is not None
        seqs.append(frame.seq)
        time.sleep(0.03)  # a slow model
    t0 = time.monotonic()
    assert cap.stop()
    assert time.monotonic() - t0 < 0.5
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert cap.buffer.dropped > 5
    assert cap.buffer.dropped + cap.buffer.taken + 1 >= source.frames


def test_lossless_capture_hands_over_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    written = write_video(path, 6)
    source = ResilientSource(open_source("opencv", uri=str(path), fps=0), reopen_on_end=False)
    cap = CaptureThread(source, lossless=True).start()
    got = []
    while (frame := cap.buffer.get(2.0)) is not None:
        got.append(closest(frame.pixels, written))
        time.sleep(0.01)
    assert got == list(range(6)) and cap.buffer.dropped == 0
    assert cap.stop()


def test_stop_is_prompt_during_a_stalled_http_read_and_during_backoff() -> None:
    srv = MjpegServer(stall_at=2).start()
    try:
        source = ResilientSource(open_source("opencv", uri=srv.url, read_timeout=30))
        cap = CaptureThread(source).start()
        assert wait_for(lambda: source.frames == 2)
        time.sleep(0.1)  # now blocked in recv() on the stalled socket
        t0 = time.monotonic()
        assert cap.stop()
        assert time.monotonic() - t0 < 0.5
    finally:
        srv.stop()
    source = ResilientSource(open_source("folder", path="/nonexistent-edged"),
                             initial_backoff=30, max_backoff=30)
    cap = CaptureThread(source).start()
    assert wait_for(lambda: source.reopen_count == 0 and source.last_error is not None)
    t0 = time.monotonic()
    assert cap.stop()
    assert time.monotonic() - t0 < 0.5


def test_rate_limiter_spaces_frames_and_stops() -> None:
    stop = threading.Event()
    limiter = RateLimiter(50, stop)
    t0 = time.monotonic()
    for _ in range(6):
        assert limiter.wait()
    assert 0.09 < time.monotonic() - t0 < 0.3
    stop.set()
    assert not limiter.wait()
    assert RateLimiter(0).wait()


class FaultySynthetic(SyntheticSource):
    """The real synthetic source with faults injected: a driver bug (an unexpected
    exception type) on frame 2, a malformed array on frame 4."""

    def read(self) -> np.ndarray | None:
        px = super().read()
        if self._index == 3:
            raise RuntimeError("driver bug\nwith a second line")
        if self._index == 5:
            return np.zeros((4, 4), np.float32)  # type: ignore[return-value]
        return px


def test_driver_exceptions_and_bad_arrays_never_reach_the_caller() -> None:
    src = ResilientSource(FaultySynthetic(size=(4, 4), fps=0), **FAST)
    frames = [src.read() for _ in range(5)]
    assert [f.seq for f in frames if f] == [0, 1, 2, 3, 4]
    assert [frame_index(f.pixels) for f in frames if f] == [0, 1, 3, 5, 6]
    assert src.reopen_count == 2
    assert src.last_error == "synthetic:4x4: bad frame (dtype float32, expected uint8)"
