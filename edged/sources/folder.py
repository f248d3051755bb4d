"""An image folder as a camera: PNG/JPEG/BMP files in natural sort order.

The folder is listed when opened and again at each loop, so files added while
running are picked up. An unreadable or corrupt file is skipped with one
warning line naming it (once per file, not once per loop) and counted.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from edged.sources.base import DriverBase, Pacer, Pixels, SourceError
from edged.sources.jpeg import JpegDecoder

log = logging.getLogger("edged.sources")

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """frame2.png before frame10.png; digits compare as numbers."""
    return tuple((0, int(part)) if part.isdigit() else (1, part.lower())
                 for part in re.split(r"(\d+)", name) if part)


def list_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir()
                   if p.suffix.lower() in EXTENSIONS and p.is_file()),
                  key=lambda p: natural_key(p.name))


class FolderSource(DriverBase):
    """Images of `path`, in order, at `fps` (0 = as fast as read); `loop` restarts.
    `min_size`: JPEGs are decoded reduced, as `HttpMjpegSource` does."""

    def __init__(self, path: str | Path, loop: bool = True, fps: float = 10.0,
                 min_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.name = f"folder:{self.path}"
        self._decode = JpegDecoder(min_size, self.name)
        self.loop = loop
        self._pacer = Pacer(fps)
        self._files: list[Path] = []
        self._next = 0
        self._warned: set[Path] = set()
        self._opened = False

    def _list(self) -> list[Path]:
        if not self.path.is_dir():
            raise SourceError(f"image folder not found: {self.path}")
        try:
            files = list_images(self.path)
        except OSError as e:
            raise SourceError(f"image folder {self.path}: cannot list: {e.strerror}") from e
        if not files:
            raise SourceError(f"image folder {self.path}: no {'/'.join(EXTENSIONS)} files")
        return files

    def open(self) -> None:
        self._files = self._list()
        self._next = 0
        self._pacer.reset()
        self._opened = True

    def read(self) -> Pixels | None:
        if not self._opened:
            raise SourceError(f"{self.name}: read before open")
        decoded_this_pass = False
        tried = 0
        while True:
            if self._next >= len(self._files):
                if not self.loop:
                    return None
                self._files = self._list()
                self._next = 0
            path = self._files[self._next]
            self._next += 1
            tried += 1
            try:
                picture = self._decode(path.read_bytes())
            except OSError:  # gone or unreadable since listed: skipped as a corrupt one is
                picture = None
            if picture is not None:
                decoded_this_pass = True
                break
            self._skipped += 1
            if path not in self._warned:
                self._warned.add(path)
                log.warning("image folder %s: skipping unreadable image %s", self.path, path)
            if not decoded_this_pass and tried >= len(self._files):
                raise SourceError(f"image folder {self.path}: no readable images")
        if not self._pacer.wait():
            return None
        self._origin = path.name
        rgb, self._full = picture.pixels, picture.full_size
        self._size = (int(rgb.shape[0]), int(rgb.shape[1]))
        return rgb

    def close(self) -> None:
        self._opened = False

    def abort(self) -> None:
        self._pacer.abort()
