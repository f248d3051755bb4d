"""JPEG decoding for the sources that receive JPEGs: HTTP MJPEG streams, snapshot
URLs and image folders.

libjpeg can decode a JPEG straight at 1/2, 1/4 or 1/8 of its size by running a
smaller inverse DCT per 8x8 block: the fine detail a model input too small to
hold it would lose anyway is never computed, and what remains is a block
average, anti-aliased like an area resize. `JpegDecoder` picks the smallest of
those sizes that still covers `min_size` (the model's input, see
`edged.service.wiring`), so the CPU resize afterwards is one short step.
Measured here (`python scripts/jpeg_decode.py`): a 1920x1080 JPEG decoded at
1/4 and resized to 224x224 costs about half of decoding it whole and resizing.

Only powers of two: libjpeg-turbo's other factors cost more than the power of two
above them (720p: 5/8 3.0 ms, the whole 1.9 ms, 3/8 1.8 ms, 1/2 1.4 ms; the same
command).

simplejpeg (libjpeg-turbo) rather than OpenCV's `IMREAD_REDUCED_*`: it reads the
header alone (the picture's full size, exact, for mapping boxes back to camera
pixels, ~1 us), decodes straight to RGB (OpenCV gives BGR and a conversion),
and is faster at full size (the same command's "whole" columns).
Anything that is not a JPEG (a snapshot URL serving PNG, a BMP in a folder)
goes to OpenCV, whole.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from edged.sources.base import DriverBase, Pixels, Undecoded, as_pixels
from edged.sources.decodeplace import DecodePlace, DecodeThread

log = logging.getLogger("edged.sources")

_SOI = b"\xff\xd8"
REDUCTIONS = (8, 4, 2)
# One warning per this many seconds about corrupt JPEGs: a camera with a bad
# cable can send thousands and must not flood the journal.
CORRUPT_LOG_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded picture; `full_size` (height, width) is the picture's own size
    when `pixels` hold a reduced decode of it, else None."""

    pixels: Pixels
    full_size: tuple[int, int] | None = None


def reduction(full: tuple[int, int], min_size: tuple[int, int] | None) -> int:
    """The largest of 8, 4, 2 by which a `full` (height, width) picture can be
    decoded and still be at least `min_size` in both; 1 when none (or no minimum)."""
    if min_size is None:
        return 1
    h, w = full
    for k in REDUCTIONS:
        if -(-h // k) >= min_size[0] and -(-w // k) >= min_size[1]:
            return k
    return 1


class JpegDecoder:
    """bytes -> `Decoded`, or None when they are not a picture. `min_size` (height,
    width): decode JPEGs at the smallest power-of-two reduction still covering it;
    None decodes every picture whole. The reduction is logged, naming `source`, when
    it is first chosen and whenever the pictures' size changes it."""

    def __init__(self, min_size: tuple[int, int] | None = None, source: str = "") -> None:
        self.min_size = min_size
        self.source = source
        self._chosen: tuple[int, int, int] | None = None

    @staticmethod
    def readable(data: bytes) -> bool:
        """Whether `data` is a JPEG whose header libjpeg-turbo reads (~1 us): one whose
        decode can be left for later (`edged.sources.base.Undecoded`)."""
        if data[:2] != _SOI:
            return False
        try:
            simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return False
        return True

    def __call__(self, data: bytes) -> Decoded | None:
        if not data:
            return None
        if data[:2] == _SOI:
            try:
                return self._jpeg(data)
            except ValueError:
                pass  # not one libjpeg-turbo reads (a CMYK or lossless JPEG): OpenCV's turn
        return _whole(data)

    def _jpeg(self, data: bytes) -> Decoded:
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        k = reduction((h, w), self.min_size)
        if self._chosen != (h, w, k) and self.min_size is not None:
            self._chosen = (h, w, k)
            mh, mw = self.min_size
            log.info("%s: JPEGs of %dx%d decoded at %s (%dx%d; at least %dx%d needed)",
                     self.source, w, h, f"1/{k}" if k > 1 else "full size", -(-w // k),
                     -(-h // k), mw, mh)
        # Lenient (strict=False), as OpenCV is: cameras send JPEGs with recoverable
        # flaws (stray bytes before a marker) on every frame; refusing them would
        # refuse the camera. A truncated frame decodes with its missing rows grey.
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=False,
                                        min_height=-(-h // k), min_width=-(-w // k),
                                        min_factor=float(k))
        return Decoded(as_pixels(pixels), (h, w) if k > 1 else None)


def _whole(data: bytes) -> Decoded | None:
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return Decoded(as_pixels(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))


class JpegCamera(DriverBase):
    """What a driver of a camera that sends JPEGs shares (HTTP MJPEG, a V4L2 camera
    in MJPEG): each JPEG decoded reduced (`JpegDecoder`), now or, with `defer_decode`,
    where `decode_thread` says (`edged.sources.decodeplace`): by whoever takes the
    frame (`Undecoded`: a camera sending faster than the model runs then costs a
    decode per result, not per frame sent) or on this thread as it arrives (in
    parallel with the pipeline); a corrupt one skipped, counted, and logged at most
    once a minute."""

    name: str
    corrupt_what = "JPEG part"  # in the warning: what the camera sends one JPEG in

    def _init_jpeg(self, min_size: tuple[int, int] | None, defer_decode: bool,
                   decode_thread: DecodeThread = "pipeline") -> None:
        self._decode = JpegDecoder(min_size, self.name)
        self.defer_decode = defer_decode
        self.place = DecodePlace(decode_thread, self.name)
        self._last_corrupt_log = -CORRUPT_LOG_INTERVAL

    @property
    def jpeg_decoding(self) -> str | None:
        """Where this camera's JPEGs are decoded now, for the stats: "camera" (on its
        thread, as each arrives) or "pipeline" (once taken); None before its first
        JPEG, and for a device that sends none (a V4L2 camera in YUYV)."""
        if not self.place.decodes:
            return None
        return "camera" if self.place.on_camera or not self.defer_decode else "pipeline"

    def _jpeg_frame(self, data: bytes) -> Pixels | Undecoded | None:
        """The frame `read` returns for one JPEG; None when it is corrupt (counted)."""
        if not self.defer_decode or not self._decode.readable(data):
            got, _ = self._decode_now(data)
            return got[0] if got is not None else None
        mono = time.monotonic()
        if not self.place.arrived(mono):
            return Undecoded(functools.partial(self._decode_taken, data))
        wall = time.time()
        got, seconds = self._decode_now(data)
        if got is None:
            return None
        return Undecoded(functools.partial(self._taken, got, seconds), (wall, mono))

    def _decode_taken(self, data: bytes) -> tuple[Pixels, tuple[int, int] | None] | None:
        got, seconds = self._decode_now(data)
        self.place.taken(seconds)
        return got

    def _taken(self, got: tuple[Pixels, tuple[int, int] | None], seconds: float
               ) -> tuple[Pixels, tuple[int, int] | None]:
        self.place.taken(seconds)
        return got

    def _decode_now(self, data: bytes
                    ) -> tuple[tuple[Pixels, tuple[int, int] | None] | None, float]:
        """((pixels, full size) of one JPEG, or None (counted, logged) when corrupt; the
        seconds it took). On the capture thread, or the pipeline's for an `Undecoded`."""
        t0 = time.perf_counter()
        try:
            picture = self._decode(data)
        except Exception:  # a decoder's surprise is one bad frame, not a dead pipeline
            picture = None
        seconds = time.perf_counter() - t0
        self.place.decoded(seconds)
        if picture is None:
            self._corrupt(len(data))
            return None, seconds
        rgb, self._full = picture.pixels, picture.full_size
        self._size = (int(rgb.shape[0]), int(rgb.shape[1]))
        return (rgb, picture.full_size), seconds

    def _corrupt(self, size: int) -> None:
        self._skipped += 1
        now = time.monotonic()
        if now - self._last_corrupt_log >= CORRUPT_LOG_INTERVAL:
            self._last_corrupt_log = now
            log.warning("%s: skipped a corrupt %s (%d bytes); %d skipped so far",
                        self.name, self.corrupt_what, size, self._skipped)
