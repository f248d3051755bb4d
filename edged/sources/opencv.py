"""OpenCV `VideoCapture`: V4L2/USB devices, RTSP (and other FFMPEG) URLs, video files.

`http(s)://` URLs go to the built-in MJPEG reader (mjpeg.py) by default: the
FFMPEG backend ends the whole stream at the first corrupt JPEG part and cannot
be interrupted from another thread. `http_reader="ffmpeg"` sends them here.

Blocking: FFMPEG opens and reads are bounded by CAP_PROP_OPEN_TIMEOUT_MSEC and
CAP_PROP_READ_TIMEOUT_MSEC (its interrupt callback); V4L2 reads wait in
select() with OpenCV's own timeout. A `VideoCapture` must not be released
from another thread while it reads, so `abort` only cuts pacing short and the
capture thread is left to return from the read on its own (see capture.py).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Literal

import cv2

from edged.sources.base import (
    DriverBase,
    FrameSource,
    Pacer,
    Pixels,
    SourceError,
    as_pixels,
    redact_url,
)
from edged.sources.mjpeg import HttpMjpegSource

UriKind = Literal["device", "stream", "file"]
_DEVICE_ONLY = {"width", "height", "fps", "fourcc", "loop", "rtsp_transport"}


def classify(uri: int | str) -> UriKind:
    if isinstance(uri, int) or re.fullmatch(r"\d+", uri) or uri.startswith("/dev/"):
        return "device"
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri):
        return "stream"
    return "file"


def open_opencv(uri: int | str, http_reader: Literal["builtin", "ffmpeg"] = "builtin",
                **params: Any) -> FrameSource:
    """The driver for `uri`: the MJPEG reader for http(s) URLs, else `OpenCVSource`."""
    if http_reader not in ("builtin", "ffmpeg"):
        raise SourceError(f"http_reader must be 'builtin' or 'ffmpeg', got {http_reader!r}")
    if (isinstance(uri, str) and re.match(r"^https?://", uri, re.IGNORECASE)
            and http_reader == "builtin"):
        allowed = {"open_timeout", "read_timeout", "min_size", "verify_tls", "fps", "defer_decode"}
        unknown = sorted(set(params) - allowed - _DEVICE_ONLY)
        if unknown:
            raise TypeError(f"http MJPEG source: unknown parameter(s) {', '.join(unknown)}")
        # One config shape serves every opencv uri: what only a device or a file
        # can honour (size, loop) is accepted and means nothing to a stream.
        return HttpMjpegSource(uri, **{k: v for k, v in params.items() if k in allowed})
    return OpenCVSource(uri, **params)


class OpenCVSource(DriverBase):
    """One `cv2.VideoCapture`, converted to RGB.

    Devices get width/height/fps/fourcc as requested (the device may choose
    otherwise; `delivered_size` reports what it chose) and a one-frame driver
    buffer so a slow consumer reads a fresh frame, not one seconds old. Video
    files play at `fps` (None = the file's own rate, 0 = as fast as read); with
    `loop` they rewind at the end, and a file that vanished or was replaced
    is reported as an error so the wrapper reopens it.
    """

    def __init__(self, uri: int | str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, fourcc: str | None = None, loop: bool = False,
                 rtsp_transport: Literal["tcp", "udp"] = "tcp", open_timeout: float = 10.0,
                 read_timeout: float = 5.0) -> None:
        super().__init__()
        self.uri = uri
        self.kind = classify(uri)
        self.name = f"opencv:{redact_url(str(uri))}"
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        if fourcc is not None and len(fourcc) != 4:
            raise SourceError(f"{self.name}: fourcc must be 4 characters, got {fourcc!r}")
        self.loop = loop
        self.rtsp_transport = rtsp_transport
        self.open_timeout, self.read_timeout = open_timeout, read_timeout
        self._cap: Any = None
        self._pacer = Pacer(0.0)
        self._file_id: tuple[int, int] | None = None
        self._position = 0

    @property
    def origin(self) -> str | None:
        return f"frame {self._position - 1}" if self.kind == "file" and self._position else None

    def _timeouts(self) -> list[int]:
        return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000)]

    def open(self) -> None:
        self.close()
        if self.kind == "device":
            cap = self._open_device()
        elif self.kind == "file":
            path = Path(str(self.uri))
            if not path.is_file():
                raise SourceError(f"video file not found: {path}")
            st = path.stat()
            self._file_id = (st.st_dev, st.st_ino)
            cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, self._timeouts())
        else:
            if str(self.uri).lower().startswith("rtsp"):
                # Read by FFMPEG at each open; UDP loses packets and smears frames.
                options = f"rtsp_transport;{self.rtsp_transport}"
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = options
            cap = cv2.VideoCapture(str(self.uri), cv2.CAP_FFMPEG, self._timeouts())
        if not cap.isOpened():
            cap.release()
            what = {"device": "camera device", "file": "video file", "stream": "stream"}[self.kind]
            raise SourceError(f"{self.name}: cannot open {what}")
        self._cap = cap
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._size = (h, w) if h > 0 and w > 0 else None
        rate = self.fps
        if self.kind == "file" and rate is None:
            native = float(cap.get(cv2.CAP_PROP_FPS))
            rate = native if 0.5 <= native <= 240 else 25.0
        self._pacer = Pacer(rate if self.kind == "file" and rate else 0.0)
        self._position = 0

    def _open_device(self) -> Any:
        uri = self.uri
        index_or_path: int | str = int(uri) if isinstance(uri, int) or str(uri).isdigit() else uri
        if isinstance(index_or_path, str) and not os.path.exists(index_or_path):
            raise SourceError(f"camera device not found: {index_or_path}")
        cap = cv2.VideoCapture(index_or_path, cv2.CAP_V4L2)
        if not cap.isOpened():
            return cap
        # The order matters for some UVC drivers: format before size before rate.
        if self.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000))
        return cap

    def _file_replaced(self) -> str | None:
        try:
            st = os.stat(str(self.uri))
        except OSError:
            return "vanished"
        return "was replaced" if (st.st_dev, st.st_ino) != self._file_id else None

    def read(self) -> Pixels | None:
        cap = self._cap
        if cap is None:
            raise SourceError(f"{self.name}: read before open")
        ok, bgr = cap.read()
        if not ok or bgr is None:
            if self.kind != "file":
                raise SourceError(f"{self.name}: no frame (device gone or stream stalled "
                                  f"past {self.read_timeout:g} s)")
            if not self.loop:
                return None
            # Rewinding a file that was deleted or swapped would replay stale data.
            change = self._file_replaced()
            if change:
                raise SourceError(f"video file {change}: {self.uri}")
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._position = 0
            ok, bgr = cap.read()
            if not ok or bgr is None:
                raise SourceError(f"{self.name}: no frame after rewinding")
        if not self._pacer.wait():
            return None
        self._position += 1
        code = cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB
        rgb = as_pixels(cv2.cvtColor(bgr, code))
        self._size = (int(rgb.shape[0]), int(rgb.shape[1]))
        return rgb

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            # Releasing a broken device must not stop a reopen.
            with contextlib.suppress(Exception):
                cap.release()

    def abort(self) -> None:
        self._pacer.abort()
