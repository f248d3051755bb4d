"""Shared pieces of the fault-injection tests (tests/test_faults_*.py).

Everything here is real: the daemon is `python -m edged run`, the broker is
mosquitto, faults are signals, deleted files, stalled sockets and network
namespaces. Figures the tests measure are appended as JSON lines to
`$EDGED_FAULT_FIGURES` when that is set, which is how RELIABILITY.md's
numbers were collected (`EDGED_FAULT_FIGURES=/tmp/figures.jsonl pytest ...`).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from broker import Received, Subscriber
from daemon_helpers import FRAMES, MODELS

from edged.bench import accelerator

DIGITS = MODELS / "digits_int8.tflite"


def record_figure(test: str, **figures: Any) -> None:
    """Append one measurement to $EDGED_FAULT_FIGURES (JSON lines), if set."""
    path = os.environ.get("EDGED_FAULT_FIGURES")
    if path:
        with open(path, "ab") as f:
            f.write(orjson.dumps({"test": test, "at": time.time(), **figures}) + b"\n")


def copy_digit_frames(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for f in sorted(FRAMES.glob("digit_*.png")):
        shutil.copy(f, directory)
    return directory


def stats_of(messages: Iterable[Received]) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in messages if m.topic.endswith("/stats")]


def is_stats(pred: Callable[[dict[str, Any]], bool]) -> Callable[[Received], bool]:
    """A `Subscriber.wait_for` predicate on the decoded stats payload."""
    def check(m: Received) -> bool:
        return m.topic.endswith("/stats") and pred(orjson.loads(m.payload))
    return check


def stats_after(t: float, pred: Callable[[dict[str, Any]], bool]) -> Callable[[Received], bool]:
    """Stats received after `t` (time.time()) whose payload satisfies `pred`."""
    check = is_stats(pred)
    return lambda m: m.received_at > t and check(m)


def result_after(t: float) -> Callable[[Received], bool]:
    return lambda m: m.topic.endswith("/results") and m.received_at > t


@dataclass(frozen=True)
class Accounting:
    """What a subscriber got against what the daemon says it dropped.

    `span` is every seq from the first to the last one received; `missing`
    the seqs in it never received; `duplicates` the deliveries beyond the
    first of a seq (QoS 1 is at-least-once: a message in flight when the
    connection broke is sent again).
    """

    received: int
    distinct: int
    span: int
    missing: frozenset[int]
    duplicates: int

    @classmethod
    def of(cls, seqs: list[int]) -> Accounting:
        distinct = set(seqs)
        span = max(distinct) - min(distinct) + 1 if distinct else 0
        missing = (frozenset(range(min(distinct), max(distinct) + 1)) - distinct
                   if distinct else frozenset())
        return cls(len(seqs), len(distinct), span, missing, len(seqs) - len(distinct))


def gaps(missing: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive runs of missing seqs as (first, last): each outage is one run."""
    runs: list[tuple[int, int]] = []
    for s in sorted(missing):
        if runs and s == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs


def wait_until(cond: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05) -> float:
    """Poll `cond`; the seconds it took, or AssertionError naming `what`."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


def process_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in status


# ------------------------------------------------------------- stub delegate


def build_stub_delegate(directory: Path, name: str = "libstub_coral.so") -> Path:
    """The stand-in for a Coral's libedgetpu (tests/stub_delegate), built as `edged bench`
    builds it; skips without a C compiler, fails on a build error."""
    if accelerator.compiler() is None:
        pytest.skip("a C compiler is needed to build the stub delegate (the Coral stand-in)")
    return accelerator.build_stub_delegate(directory, name)


# ------------------------------------------------------------ MJPEG server


class MjpegServer:
    """A real HTTP MJPEG camera on 127.0.0.1 whose behaviour the test steers.

    `frames` are JPEG bytes sent in turn; `corrupt_every` N replaces every
    N-th part by garbage; `stall()` stops sending (the connection stays open,
    nothing arrives: a frozen camera), `drip()` sends one byte every
    `drip_interval` seconds (a link that nearly died: no read ever times out),
    `resume()` carries on.
    """

    def __init__(self, frames: list[bytes], fps: float = 20.0) -> None:
        self.frames = frames
        self.interval = 1.0 / fps
        self.corrupt_every = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._dripping = threading.Event()
        self.drip_interval = 2.0
        self._closing = threading.Event()
        self.parts_sent = 0
        self.corrupt_sent = 0
        self.connections = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                with contextlib.suppress(OSError):
                    while not server._closing.is_set():
                        if not server._flowing.wait(0.1):
                            continue
                        if server._dripping.is_set():
                            head = b"--frame\r\nContent-Type: image/jpeg\r\n"
                            for byte in head:
                                if not server._dripping.is_set() or server._closing.is_set():
                                    break
                                self.wfile.write(bytes([byte]))
                                self.wfile.flush()
                                time.sleep(server.drip_interval)
                            return  # what it sent is not a whole part: a new connection
                        body = server.frames[i % len(server.frames)]
                        i += 1
                        if server.corrupt_every and i % server.corrupt_every == 0:
                            body = b"\xff\xd8" + bytes(range(256)) * 4  # not a JPEG
                            server.corrupt_sent += 1
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: " + str(len(body)).encode()
                                         + b"\r\n\r\n" + body + b"\r\n")
                        self.wfile.flush()
                        server.parts_sent += 1
                        time.sleep(server.interval)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def stall(self) -> None:
        self._flowing.clear()

    def drip(self) -> None:
        self._dripping.set()

    def resume(self) -> None:
        self._dripping.clear()
        self._flowing.set()

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()


# ------------------------------------------------------------ running daemon


@contextlib.contextmanager
def subscribed(port: int, client_id: str = "", clean_session: bool = True
               ) -> Iterator[Subscriber]:
    sub = Subscriber(port, "edged/#", client_id=client_id, clean_session=clean_session).start()
    try:
        yield sub
    finally:
        sub.stop()


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# ------------------------------------------------------------ systemd notify


class NotifyRecorder:
    """Records every datagram a NotifyListener gets, on a thread, with its time."""

    def __init__(self, listener: Any) -> None:
        self.listener = listener
        self.messages: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.messages.append(self.listener.receive(0.2))

    def pings(self, after: float = 0.0) -> list[float]:
        """Monotonic times of WATCHDOG=1 pings after `after`."""
        return [m.at for m in list(self.messages) if m.raw == b"WATCHDOG=1\n" and m.at > after]

    def statuses(self) -> list[str]:
        return [s for m in list(self.messages) if (s := m.get("STATUS")) is not None]

    def __enter__(self) -> NotifyRecorder:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def make_video(path: Path, frames: int = 30, size: int = 32) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (size, size))
    for i in range(frames):
        writer.write(np.full((size, size, 3), (i * 8) % 256, np.uint8))
    writer.release()
    return path


def jpeg_frames() -> list[bytes]:
    import cv2

    out = []
    for f in sorted(FRAMES.glob("digit_*.png")):
        ok, data = cv2.imencode(".jpg", cv2.imread(str(f)))
        assert ok
        out.append(data.tobytes())
    return out
