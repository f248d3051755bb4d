"""A deterministic moving test pattern: a source that needs no hardware.

Frame n is a pure function of (n, height, width): a fixed colour gradient,
a white square moving diagonally, and n itself written into the first pixels
so a test can tell which frame reached the far end of the pipeline.

Frames are drawn into a few recycled buffers, as a camera driver recycles its
DMA buffers: only the square moves, so a frame costs two small copies instead
of a fresh full-frame copy (measured at 224x224 right after an invoke, with
cold caches: 42 us per frame before). A buffer is reused only when nothing
outside the source holds it or a view of it, so a frame never changes under
the code that has it.
"""

from __future__ import annotations

import sys

import numpy as np

from edged.sources.base import DriverBase, Pacer, Pixels, SourceError


def gradient(height: int, width: int) -> Pixels:
    """The static background: red along x, green along y, blue constant."""
    base = np.empty((height, width, 3), dtype=np.uint8)
    base[..., 0] = (np.arange(width, dtype=np.uint32) * 255 // max(width - 1, 1))[None, :]
    base[..., 1] = (np.arange(height, dtype=np.uint32) * 255 // max(height - 1, 1))[:, None]
    base[..., 2] = 96
    return base


def frame_index(pixels: Pixels) -> int:
    """Read back the frame number written by `pattern` (first 3 pixels, red channel)."""
    row = pixels.reshape(-1, pixels.shape[-1] if pixels.ndim == 3 else 1)[:3, 0]
    return int(row[0]) << 16 | int(row[1]) << 8 | int(row[2])


def _square(index: int, height: int, width: int) -> tuple[slice, slice]:
    side = max(2, min(height, width) // 4)
    y = index * 3 % max(height - side, 1)
    x = index * 5 % max(width - side, 1)
    return slice(y, y + side), slice(x, x + side)


def _draw(out: Pixels, index: int) -> None:
    """Draw frame `index`'s moving parts onto a copy of the background."""
    out[_square(index, *out.shape[:2])] = 255
    flat = out.reshape(-1, 3)
    n = min(3, flat.shape[0])
    flat[:n, 0] = [(index >> 16) & 0xFF, (index >> 8) & 0xFF, index & 0xFF][:n]


def pattern(index: int, height: int, width: int, base: Pixels | None = None) -> Pixels:
    """Frame `index` of the test pattern, RGB uint8 (a new array)."""
    out = (gradient(height, width) if base is None else base).copy()
    _draw(out, index)
    return out


class _Buffer:
    """A recycled frame buffer and the frame last drawn into it."""

    __slots__ = ("index", "pixels")

    def __init__(self, pixels: Pixels, index: int) -> None:
        self.pixels, self.index = pixels, index

    def free(self) -> bool:
        # References: this slot and getrefcount's argument. Any other (a Frame, a
        # view's base, a buffer export in a C call) means someone still reads it.
        return sys.getrefcount(self.pixels) <= 2

    def redraw(self, base: Pixels, index: int) -> Pixels:
        px = self.pixels
        px.flags.writeable = True  # the source owns it again (consumers got it read-only)
        old = _square(self.index, *px.shape[:2])
        px[old] = base[old]
        px.reshape(-1, 3)[:3] = base.reshape(-1, 3)[:3]
        _draw(px, index)
        self.index = index
        return px


_BUFFERS = 4  # in use at once: the frame being read, the latest, one in the pipeline


class SyntheticSource(DriverBase):
    """`size` (height, width) frames at `fps` (0 = as fast as read), `frames` then end
    (None = forever). The frame counter survives reopening, so frames stay distinct."""

    def __init__(self, size: tuple[int, int] = (480, 640), fps: float = 30.0,
                 frames: int | None = None) -> None:
        super().__init__()
        height, width = (int(v) for v in size)
        if height < 1 or width < 1:
            raise SourceError(f"synthetic source: size must be positive, got {size}")
        self.name = f"synthetic:{width}x{height}"
        self._hw = (height, width)
        self._size = self._hw  # known before open: the source makes it
        self._limit = frames
        self._pacer = Pacer(fps)
        self._base: Pixels | None = None
        self._buffers: list[_Buffer] = []
        self._index = 0
        self._emitted = 0

    @property
    def origin(self) -> str | None:
        return f"frame {self._index - 1}" if self._index else None

    def open(self) -> None:
        self._base = gradient(*self._hw)
        self._buffers = []
        self._emitted = 0
        self._pacer.reset()

    def read(self) -> Pixels | None:
        if self._base is None:
            raise SourceError(f"{self.name}: read before open")
        if self._limit is not None and self._emitted >= self._limit:
            return None
        if not self._pacer.wait():
            return None
        out = self._next_buffer(self._base, self._index)
        self._index += 1
        self._emitted += 1
        return out

    def _next_buffer(self, base: Pixels, index: int) -> Pixels:
        for buf in self._buffers:
            if buf.free():
                return buf.redraw(base, index)
        out = pattern(index, *self._hw, base=base)
        if len(self._buffers) < _BUFFERS:
            self._buffers.append(_Buffer(out, index))
        else:  # all held (a consumer keeps frames): its oldest stays with it, not here
            oldest = min(range(_BUFFERS), key=lambda i: self._buffers[i].index)
            self._buffers[oldest] = _Buffer(out, index)
        return out

    def close(self) -> None:
        self._base = None
        self._buffers = []

    def abort(self) -> None:
        self._pacer.abort()
