"""Test helpers for frame sources: real video files, a real HTTP MJPEG server,
and a stand-in for picamera2 (the only part that cannot exist here)."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edged.sources.synthetic import pattern


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def closest(frame: np.ndarray, written: list[np.ndarray]) -> int:
    """Index of the written frame this decoded (lossy) frame is."""
    diffs = [np.abs(frame.astype(np.int16) - w).mean() for w in written]
    best = int(np.argmin(diffs))
    assert diffs[best] < 6, f"frame matches no written frame (best diff {diffs[best]:.1f})"
    return best


def write_video(path: Path, frames: int, size: tuple[int, int] = (48, 64), fps: float = 25.0
                ) -> list[np.ndarray]:
    """An MJPG .avi of the synthetic pattern; returns the RGB frames written."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    written = []
    for i in range(frames):
        rgb = pattern(i, h, w)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written.append(rgb)
    writer.release()
    return written


def jpeg(value: int, size: tuple[int, int] = (48, 64)) -> bytes:
    """A flat-colour JPEG whose pixels decode to about `value` (distinguishes frames)."""
    img = np.full((*size, 3), value, dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return bytes(buf.tobytes())


class MjpegServer:
    """`multipart/x-mixed-replace` JPEG parts over HTTP on 127.0.0.1.

    `make_part(i)` gives the bytes of part i (None: end the response); `stall_at`
    sleeps before that part; `interval` between parts. `stop()`/`start()` on the
    same port make the server go away and come back.
    """

    def __init__(self, make_part: Callable[[int], bytes | None] | None = None, *,
                 interval: float = 0.02, content_length: bool = True,
                 stall_at: int | None = None, stall_for: float = 30.0,
                 content_type: str = "multipart/x-mixed-replace; boundary=frame",
                 snapshot: bool = False) -> None:
        self.make_part = make_part or (lambda i: jpeg(i * 7 % 256))
        self.interval, self.content_length = interval, content_length
        self.stall_at, self.stall_for = stall_at, stall_for
        self.content_type = "image/jpeg" if snapshot else content_type
        self.snapshot = snapshot
        self.port = 0
        self.connections = 0
        self._server: socketserver.ThreadingTCPServer | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.connections += 1
                if outer.snapshot:  # one JPEG per request, like a camera's snapshot URL
                    body = outer.make_part(outer.connections - 1) or b""
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("Content-Type", outer.content_type)
                self.end_headers()
                i = 0
                try:
                    while not outer._stopping.is_set():
                        if outer.stall_at is not None and i == outer.stall_at:
                            outer._stopping.wait(outer.stall_for)
                        part = outer.make_part(i)
                        if part is None:
                            return
                        head = b"--frame\r\nContent-Type: image/jpeg\r\n"
                        if outer.content_length:
                            head += b"Content-Length: %d\r\n" % len(part)
                        self.wfile.write(head + b"\r\n" + part + b"\r\n")
                        self.wfile.flush()
                        i += 1
                        time.sleep(outer.interval)
                except OSError:
                    return

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> MjpegServer:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._stopping.clear()
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- picamera2 stand-in (no Pi camera exists here) ---------------------------

class StandinJob:
    def __init__(self, result: np.ndarray | None) -> None:
        self.result = result


def i420(rgb: np.ndarray, stride: int) -> np.ndarray:
    """RGB -> picamera2's YUV420 layout: (h*3/2, stride) with padded planes."""
    h, w = rgb.shape[:2]
    planar = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).reshape(-1)
    y = planar[:h * w].reshape(h, w)
    u = planar[h * w:h * w * 5 // 4].reshape(h // 2, w // 2)
    v = planar[h * w * 5 // 4:].reshape(h // 2, w // 2)
    out = np.zeros((h * 3 // 2, stride), dtype=np.uint8)
    out[:h, :w] = y
    # Each chroma plane: h/2 rows of stride/2 bytes, two per array row.
    for plane, start in ((u, h), (v, h + h // 4)):
        padded = np.zeros((h // 2, stride // 2), dtype=np.uint8)
        padded[:, :w // 2] = plane
        out[start:start + h // 4] = padded.reshape(h // 4, stride)
    return out


def picamera2_standin(platform: str = "vc4", stride_pad: int = 32, frames: int | None = None,
                      fail_open: int = 0) -> tuple[types.ModuleType, list[Any]]:
    """A module standing in for `picamera2`, mimicking its API and the platform rule
    that VC4 lores streams must be YUV. Returns (module, cameras made)."""
    cameras: list[Any] = []
    plan = {"fail_open": fail_open}

    class Picamera2:
        def __init__(self, camera_num: int = 0) -> None:
            if plan["fail_open"] > 0:
                plan["fail_open"] -= 1
                raise RuntimeError("Camera __init__ sequence did not complete.")
            self.camera_num = camera_num
            self.calls: list[Any] = []
            self.config: dict[str, Any] | None = None
            self.started = False
            self.index = 0
            cameras.append(self)

        def create_video_configuration(self, main: dict[str, Any] | None = None, *,
                                       lores: dict[str, Any] | None = None,
                                       buffer_count: int = 6, controls: Any = None,
                                       encode: str | None = "main",
                                       display: str | None = "main") -> dict[str, Any]:
            self.calls.append(("create_video_configuration", main, lores, buffer_count))
            return {"main": dict(main or {}), "lores": dict(lores) if lores else None,
                    "buffer_count": buffer_count, "controls": controls}

        def configure(self, config: dict[str, Any]) -> None:
            lores = config["lores"]
            self.calls.append(("configure", lores["format"]))
            if platform == "vc4" and not lores["format"].startswith("YU"):
                raise RuntimeError("lores stream must be YUV")
            w, _ = lores["size"]
            width = w * 3 if lores["format"].endswith("888") else w
            lores["stride"] = width + stride_pad
            self.config = config

        def camera_configuration(self) -> dict[str, Any]:
            assert self.config is not None
            return self.config

        def start(self) -> None:
            self.started = True

        def capture_array(self, name: str = "main", wait: bool | None = None) -> Any:
            assert self.started and name == "lores" and wait is False
            if frames is not None and self.index >= frames:
                return StandinJob(None)
            assert self.config is not None
            lores = self.config["lores"]
            w, h = lores["size"]
            rgb = pattern(self.index, h, w)
            self.index += 1
            fmt = lores["format"]
            if fmt == "YUV420":
                return StandinJob(i420(rgb, lores["stride"]))
            if fmt == "BGR888":  # picamera2 naming: R,G,B in memory
                return StandinJob(rgb.copy())
            return StandinJob(np.ascontiguousarray(rgb[..., ::-1]))

        def wait(self, job: StandinJob, timeout: float | None = None) -> np.ndarray:
            if job.result is None:
                time.sleep(min(timeout or 0.0, 0.05))
                raise TimeoutError
            return job.result

        def stop(self) -> None:
            self.started = False

        def close(self) -> None:
            self.calls.append(("close",))

    module = types.ModuleType("picamera2")
    module.Picamera2 = Picamera2  # type: ignore[attr-defined]
    return module, cameras
