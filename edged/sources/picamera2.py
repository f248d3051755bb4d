"""Raspberry Pi cameras through picamera2 (libcamera): the ISP does the resize.

Two streams: `main` (unused pixels, but it sets the field of view) and `lores`
at the model's input size, scaled by the ISP, so no CPU resize is needed and
the preprocessor passes frames straight through.

Formats, in picamera2's (DRM) naming, which reads backwards to numpy users:
"BGR888" arrays are R,G,B per pixel (numpy RGB) and "RGB888" arrays are
B,G,R (OpenCV's BGR). A Pi 5 (PiSP) gives RGB lores streams; a Pi 4 and
older (VC4) only YUV420 for lores, which `configure` refuses otherwise
("lores stream must be YUV"). `lores_format="auto"` asks for "BGR888" and
falls back to "YUV420", converted here with `COLOR_YUV2RGB_I420`; a one-channel
model (`gray=True`) takes the Y plane of YUV420 as it is.

The main stream gets the model's aspect ratio, so the ISP crops the sensor
image to it (like `mode = "crop"`) rather than stretching it.

Reads use `capture_array(..., wait=False)` and `Picamera2.wait(job, timeout)`
so a camera that stops delivering raises after `read_timeout` seconds instead
of blocking forever.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Literal

import cv2
import numpy as np

from edged.sources.base import DriverBase, Pixels, SourceError, as_pixels

LoresFormat = Literal["auto", "BGR888", "RGB888", "YUV420", "XBGR8888", "XRGB8888"]
_FORMATS = ("auto", "BGR888", "RGB888", "YUV420", "XBGR8888", "XRGB8888")


def main_size_for(lores: tuple[int, int], minimum: int = 480) -> tuple[int, int]:
    """(h, w) of a main stream with the lores aspect ratio, at least `minimum` high/wide."""
    h, w = lores
    scale = max(1.0, minimum / min(h, w))
    return round(h * scale / 2) * 2, round(w * scale / 2) * 2


def yuv420_to_rgb(array: Pixels, size: tuple[int, int], v_first: bool = False) -> Pixels:
    """picamera2's YUV420 array (h*3/2 rows of `stride` bytes) -> RGB (h, w, 3).

    The planes keep the stride's padding; the array is a valid I420 image
    `stride` wide, so convert it whole and cut the padding off afterwards.
    picamera2's "YUV420" is I420 (U plane first): `COLOR_YUV2RGB_I420`. Beware
    OpenCV's `COLOR_YUV420p2RGB`: it is an alias of `COLOR_YUV2RGB_YV12` (V
    first) and on I420 data gives roughly red and blue swapped.
    """
    h, w = size
    code = cv2.COLOR_YUV2RGB_YV12 if v_first else cv2.COLOR_YUV2RGB_I420
    rgb = as_pixels(cv2.cvtColor(array, code))
    if rgb.shape[1] != w:
        rgb = np.ascontiguousarray(rgb[:h, :w])
    return rgb


def to_rgb(array: Pixels, fmt: str, size: tuple[int, int], gray: bool) -> Pixels:
    """A captured lores array in `fmt` -> RGB (h, w, 3), or (h, w) luma when `gray`."""
    h, w = size
    if fmt in ("YUV420", "YVU420"):
        if gray:
            return np.ascontiguousarray(array[:h, :w])
        return yuv420_to_rgb(array, size, v_first=fmt == "YVU420")
    if fmt == "BGR888":
        rgb = array
    elif fmt == "RGB888":
        rgb = as_pixels(cv2.cvtColor(array, cv2.COLOR_BGR2RGB))
    elif fmt == "XBGR8888":
        rgb = as_pixels(cv2.cvtColor(array, cv2.COLOR_RGBA2RGB))
    elif fmt == "XRGB8888":
        rgb = as_pixels(cv2.cvtColor(array, cv2.COLOR_BGRA2RGB))
    else:
        raise SourceError(f"picamera2: lores format {fmt} is not supported")
    out: Pixels = np.ascontiguousarray(rgb)
    if gray:
        out = as_pixels(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY))
    return out


class Picamera2Source(DriverBase):
    """A Pi camera's lores stream at `size` (h, w), RGB (or luma when `gray`)."""

    def __init__(self, size: tuple[int, int], *, main_size: tuple[int, int] | None = None,
                 camera_num: int = 0, lores_format: LoresFormat = "auto",
                 fps: float | None = None, gray: bool = False, buffer_count: int = 4,
                 read_timeout: float = 2.0, controls: dict[str, Any] | None = None) -> None:
        super().__init__()
        if lores_format not in _FORMATS:
            raise SourceError(f"picamera2: lores_format must be one of {', '.join(_FORMATS)}, "
                              f"got {lores_format!r}")
        self.size = (int(size[0]), int(size[1]))
        self.main_size = main_size_for(self.size) if main_size is None else \
            (int(main_size[0]), int(main_size[1]))
        if self.main_size[0] < self.size[0] or self.main_size[1] < self.size[1]:
            raise SourceError(f"picamera2: main_size {self.main_size} is smaller than the "
                              f"lores size {self.size}")
        self.name = f"picamera2:{camera_num}"
        self.camera_num = camera_num
        self.lores_format = lores_format
        self.fps, self.gray, self.buffer_count = fps, gray, buffer_count
        self.read_timeout = read_timeout
        self.controls = dict(controls or {})
        self._cam: Any = None
        self._fmt = ""

    def _config(self, cam: Any, fmt: str) -> Any:
        controls = dict(self.controls)
        if self.fps:
            controls.setdefault("FrameRate", float(self.fps))
        h, w = self.size
        mh, mw = self.main_size
        # picamera2 sizes are (width, height).
        return cam.create_video_configuration(
            main={"size": (mw, mh)}, lores={"size": (w, h), "format": fmt},
            buffer_count=self.buffer_count, controls=controls, encode=None, display=None)

    def open(self) -> None:
        self.close()
        try:
            module = importlib.import_module("picamera2")
        except ImportError as e:
            raise SourceError("picamera2 is not installed (on Raspberry Pi OS: "
                              "apt install python3-picamera2, and create the venv with "
                              "--system-site-packages)") from e
        try:
            cam = module.Picamera2(self.camera_num)
        except Exception as e:
            raise SourceError(f"{self.name}: cannot open camera: {_line(e)}") from e
        self._cam = cam
        try:
            fmt = "BGR888" if self.lores_format == "auto" else self.lores_format
            try:
                cam.configure(self._config(cam, fmt))
            except RuntimeError as e:
                if self.lores_format != "auto" or "YUV" not in str(e):
                    raise
                fmt = "YUV420"  # VC4 (Pi 4 and older): lores must be YUV
                cam.configure(self._config(cam, fmt))
            actual = cam.camera_configuration()["lores"]
            w, h = actual["size"]
            self._fmt = str(actual.get("format", fmt))
            self._size = (int(h), int(w))
            cam.start()
        except SourceError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise SourceError(f"{self.name}: cannot configure lores {self.size[1]}x"
                              f"{self.size[0]}: {_line(e)}") from e

    def read(self) -> Pixels | None:
        cam = self._cam
        if cam is None or self._size is None:
            raise SourceError(f"{self.name}: read before open")
        try:
            job = cam.capture_array("lores", wait=False)
            array = cam.wait(job, timeout=self.read_timeout)
        except TimeoutError as e:
            raise SourceError(f"{self.name}: no frame for {self.read_timeout:g} s") from e
        except Exception as e:
            raise SourceError(f"{self.name}: capture failed: {_line(e)}") from e
        return to_rgb(np.asarray(array, dtype=np.uint8), self._fmt, self._size, self.gray)

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for method in ("stop", "close"):
            # A camera that is already gone cannot be stopped; carry on closing.
            with contextlib.suppress(Exception):
                getattr(cam, method)()

    def abort(self) -> None:
        """Reads are bounded by `read_timeout`; nothing to interrupt safely."""


def _line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
