"""Frame sources: where camera pixels come from.

Every source delivers **RGB uint8** frames, HxWx3 (or HxW grey when a source
is asked for one channel, e.g. the luma plane of a Pi camera). Sources that
read BGR (OpenCV devices, streams, files, JPEG decoding) convert once, in the
source, so everything downstream sees one colour order.

Two layers:

* a *driver* (`FrameSource`): open / read / close one device, stream, file or
  folder. It raises `SourceError` (one line naming the source) and knows
  nothing about retries;
* `ResilientSource` (resilient.py) wraps a driver: numbers and timestamps the
  frames (`Frame`), reopens with exponential backoff and jitter when the
  driver fails or ends, never raises to its caller, and reports its state.

`open_source(kind, **params)` builds a driver by kind name; the capture thread
and the one-slot latest-frame buffer live in capture.py.
"""

from __future__ import annotations

from typing import Any

from edged.sources.base import (
    Frame,
    FrameSource,
    Pacer,
    Pixels,
    SourceError,
    as_pixels,
    redact_url,
)
from edged.sources.folder import FolderSource
from edged.sources.opencv import open_opencv
from edged.sources.picamera2 import Picamera2Source
from edged.sources.synthetic import SyntheticSource

KINDS = ("picamera2", "opencv", "folder", "synthetic")


def open_source(kind: str, **params: Any) -> FrameSource:
    """Build (but do not open) the driver for `kind` with its parameters.

    kinds and their parameters (see each module for details):

    * ``picamera2``: size (h, w) of the lores stream = the model input,
      main_size, camera_num, lores_format, fps, gray, buffer_count,
      read_timeout, controls;
    * ``opencv``: uri (device index, /dev/videoN, rtsp:// or http(s):// URL,
      video file), width, height, fps, fourcc, loop, http_reader,
      rtsp_transport, open_timeout, read_timeout; http(s) JPEGs also min_size,
      defer_decode, decode_thread;
    * ``folder``: path, loop, fps, min_size (JPEG files decoded reduced);
    * ``synthetic``: size (h, w), fps, frames.

    Raises `SourceError` for an unknown kind and `TypeError` for an unknown
    parameter, both naming what was wrong.
    """
    if kind == "picamera2":
        return Picamera2Source(**params)
    if kind == "opencv":
        return open_opencv(**params)
    if kind == "folder":
        return FolderSource(**params)
    if kind == "synthetic":
        return SyntheticSource(**params)
    raise SourceError(f"unknown source kind {kind!r}; expected one of {', '.join(KINDS)}")


__all__ = [
    "KINDS",
    "Frame",
    "FrameSource",
    "Pacer",
    "Pixels",
    "SourceError",
    "as_pixels",
    "open_source",
    "redact_url",
]
