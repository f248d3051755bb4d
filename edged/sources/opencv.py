"""OpenCV `VideoCapture`: V4L2/USB devices, RTSP (and other FFMPEG) URLs, video files.

`http(s)://` URLs go to the built-in MJPEG reader (mjpeg.py) by default: the
FFMPEG backend ends the whole stream at the first corrupt JPEG part and cannot
be interrupted from another thread. `http_reader="ffmpeg"` sends them here.

Blocking: FFMPEG opens and reads are bounded by CAP_PROP_OPEN_TIMEOUT_MSEC and
CAP_PROP_READ_TIMEOUT_MSEC (its interrupt callback); V4L2 reads wait in
select() with OpenCV's own timeout. A `VideoCapture` must not be released
from another thread while it reads, so `abort` only cuts pacing short and the
capture thread is left to return from the read on its own (see capture.py).

A V4L2 camera that offers MJPEG (most USB webcams: their uncompressed formats
fit USB 2.0 only at low sizes or rates) is asked for it, and OpenCV hands over
each JPEG as the camera sent it (`CAP_PROP_CONVERT_RGB` off): decoded by edged
at the smallest 1/2..1/8 still covering the model's input, and only when the
pipeline takes the frame (`edged.sources.jpeg.JpegCamera`). OpenCV would decode
every frame whole, taken or not: at 30 fps from a 1080p webcam and a few
results a second on a Pi's CPU, most of a core. `v4l2_format = "uncompressed"`
keeps the format OpenCV picks (uncompressed first), converted by OpenCV.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import cv2

from edged.sources.base import (
    FrameSource,
    Pacer,
    Pixels,
    SourceError,
    Undecoded,
    as_pixels,
    redact_url,
)
from edged.sources.decodeplace import DecodeThread
from edged.sources.jpeg import JpegCamera
from edged.sources.mjpeg import HttpMjpegSource

log = logging.getLogger("edged.sources")

UriKind = Literal["device", "stream", "file"]
V4l2Format = Literal["auto", "mjpeg", "uncompressed"]
_DEVICE_ONLY = {"width", "height", "fps", "fourcc", "loop", "rtsp_transport"}
_JPEG_FOURCCS = ("MJPG", "JPEG")


def classify(uri: int | str) -> UriKind:
    if isinstance(uri, int) or re.fullmatch(r"\d+", uri) or uri.startswith("/dev/"):
        return "device"
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri):
        return "stream"
    return "file"


_WHEN = {"pipeline": ", once taken", "camera": ", as each arrives",
         "auto": ", once taken or as each arrives (jpeg_decode_thread = auto)"}


def open_opencv(uri: int | str, http_reader: Literal["builtin", "ffmpeg"] = "builtin",
                **params: Any) -> FrameSource:
    """The driver for `uri`: the MJPEG reader for http(s) URLs, else `OpenCVSource`."""
    if http_reader not in ("builtin", "ffmpeg"):
        raise SourceError(f"http_reader must be 'builtin' or 'ffmpeg', got {http_reader!r}")
    if (isinstance(uri, str) and re.match(r"^https?://", uri, re.IGNORECASE)
            and http_reader == "builtin"):
        allowed = {"open_timeout", "read_timeout", "min_size", "verify_tls", "fps", "defer_decode",
                   "decode_thread"}
        unknown = sorted(set(params) - allowed - _DEVICE_ONLY)
        if unknown:
            raise TypeError(f"http MJPEG source: unknown parameter(s) {', '.join(unknown)}")
        # One config shape serves every opencv uri: what only a device or a file
        # can honour (size, loop) is accepted and means nothing to a stream.
        return HttpMjpegSource(uri, **{k: v for k, v in params.items() if k in allowed})
    return OpenCVSource(uri, **params)


def fourcc_text(code: float) -> str:
    """`CAP_PROP_FOURCC`'s number as its four characters ("MJPG", "YUYV")."""
    n = int(code)
    return "".join(chr((n >> 8 * i) & 0xFF) for i in range(4)).strip("\0 ") or "?"


class OpenCVSource(JpegCamera):
    """One `cv2.VideoCapture`, converted to RGB.

    Devices get width/height/fps/fourcc as requested (the device may choose
    otherwise; `delivered_size` reports what it chose) and a one-frame driver
    buffer so a slow consumer reads a fresh frame, not one seconds old. In
    MJPEG (`v4l2_format`, see the module's note) their JPEGs are decoded here,
    reduced to `min_size` and, with `defer_decode`, where `decode_thread` says. Video
    files play at `fps` (None = the file's own rate, 0 = as fast as read); with
    `loop` they rewind at the end, and a file that vanished or was replaced
    is reported as an error so the wrapper reopens it.
    """

    corrupt_what = "JPEG frame"

    def __init__(self, uri: int | str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, fourcc: str | None = None, loop: bool = False,
                 rtsp_transport: Literal["tcp", "udp"] = "tcp", open_timeout: float = 10.0,
                 read_timeout: float = 5.0, v4l2_format: V4l2Format = "uncompressed",
                 min_size: tuple[int, int] | None = None, defer_decode: bool = False,
                 decode_thread: DecodeThread = "pipeline") -> None:
        super().__init__()
        self.uri = uri
        self.kind = classify(uri)
        self.name = f"opencv:{redact_url(str(uri))}"
        if v4l2_format not in ("auto", "mjpeg", "uncompressed"):
            raise SourceError(f"{self.name}: v4l2_format must be auto, mjpeg or uncompressed, "
                              f"got {v4l2_format!r}")
        self.v4l2_format = v4l2_format
        self._init_jpeg(min_size, defer_decode, decode_thread)
        self._jpegs = False  # the device hands over its JPEGs undecoded
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
        self._jpegs = False
        if not cap.isOpened():
            return cap
        # The order matters for some UVC drivers: format before size before rate.
        fourcc = self.fourcc or ("MJPG" if self.v4l2_format != "uncompressed" else None)
        if fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*fourcc))
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000))
        try:
            self._choose_format(cap)
        except SourceError:
            cap.release()
            raise
        return cap

    def _choose_format(self, cap: Any) -> None:
        """MJPEG handed over undecoded when the camera took it; else OpenCV converts."""
        got = fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
        size = f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
        if got in _JPEG_FOURCCS and self.v4l2_format != "uncompressed":
            # Last: a size or rate set after it resets the device, and with it this.
            self._jpegs = (bool(cap.set(cv2.CAP_PROP_CONVERT_RGB, 0))
                           and not cap.get(cv2.CAP_PROP_CONVERT_RGB))
        if self._jpegs:
            how = (f"decoded by edged, at least {self._decode.min_size[1]}x"
                   f"{self._decode.min_size[0]}" if self._decode.min_size else "decoded by edged")
            log.info("%s: %s %s from the camera, %s%s", self.name, got, size, how,
                     _WHEN.get(self.place.mode, "") if self.defer_decode else "")
            return
        if self.v4l2_format == "mjpeg":
            why = ("OpenCV would not hand its JPEGs over undecoded" if got in _JPEG_FOURCCS
                   else f"it gives {got}")
            raise SourceError(f"{self.name}: the camera does not offer MJPEG at {size} ({why}); "
                              f"v4l2_format = \"auto\" takes what it offers")
        log.info("%s: %s %s from the camera, converted by OpenCV%s", self.name, got, size,
                 " (it offers no MJPEG at this size)" if self.v4l2_format == "auto"
                 and got not in _JPEG_FOURCCS else "")

    def _file_replaced(self) -> str | None:
        try:
            st = os.stat(str(self.uri))
        except OSError:
            return "vanished"
        return "was replaced" if (st.st_dev, st.st_ino) != self._file_id else None

    def read(self) -> Pixels | Undecoded | None:
        cap = self._cap
        if cap is None:
            raise SourceError(f"{self.name}: read before open")
        if self._jpegs:
            return self._read_jpeg(cap)
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

    def _read_jpeg(self, cap: Any) -> Pixels | Undecoded | None:
        """The device's next JPEG (one row of bytes from OpenCV); a corrupt one is
        skipped and counted, as an HTTP camera's is."""
        while True:
            ok, data = cap.read()
            if not ok or data is None:
                raise SourceError(f"{self.name}: no frame (device gone or stream stalled "
                                  f"past {self.read_timeout:g} s)")
            frame = self._jpeg_frame(data.tobytes())
            if frame is not None or self._pacer.aborted:  # stopping: no more corrupt ones
                return frame

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            # Releasing a broken device must not stop a reopen.
            with contextlib.suppress(Exception):
                cap.release()

    def abort(self) -> None:
        self._pacer.abort()
