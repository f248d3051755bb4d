"""Bounds-checked reading of a flatbuffer: tables, vectors, strings, offsets.

This is the layer that knows how a flatbuffer is laid out and nothing about
what a TFLite model means; `edged.inference.modelfile` reads the TFLite schema through
it. It is separate because the two change for different reasons: these
primitives follow the flatbuffer wire format, the model checks follow the
schema and the runtimes' crashes. Every offset followed here is checked
against the buffer size, so a truncated or corrupt file raises
`MalformedError` instead of reading past the end or spinning.
"""

from __future__ import annotations

import struct


class MalformedError(Exception):
    """A structural problem; `edged.inference.modelfile` raises it as `ModelFileError`."""


class Reader:
    """Bounds-checked access to flatbuffer tables, vectors and strings."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        # Every element of every vector we walk is read once; in a sound file
        # they occupy distinct bytes, so more visits than bytes means offsets
        # that point back at the same data (a corrupt file could otherwise
        # make the walk quadratic).
        self.budget = self.size + 1024

    def spend(self, n: int, what: str) -> None:
        self.budget -= n
        if self.budget < 0:
            raise MalformedError(f"{what}: offsets refer to the same data repeatedly: corrupt")

    def _need(self, pos: int, n: int, what: str) -> None:
        if pos < 0 or n < 0 or pos + n > self.size:
            raise MalformedError(f"{what} at offset {pos} runs past the end of the file "
                                 f"({self.size} bytes): truncated or corrupt")

    def u16(self, pos: int, what: str) -> int:
        self._need(pos, 2, what)
        value: int = struct.unpack_from("<H", self.data, pos)[0]
        return value

    def u32(self, pos: int, what: str) -> int:
        self._need(pos, 4, what)
        value: int = struct.unpack_from("<I", self.data, pos)[0]
        return value

    def i32(self, pos: int, what: str) -> int:
        self._need(pos, 4, what)
        value: int = struct.unpack_from("<i", self.data, pos)[0]
        return value

    def deref(self, pos: int, what: str) -> int:
        """Follow the uoffset stored at `pos`."""
        target = pos + self.u32(pos, what)
        self._need(target, 4, what)
        return target

    def table(self, pos: int, what: str) -> Table:
        vtable = pos - self.i32(pos, what)
        vt_size = self.u16(vtable, f"{what} vtable")
        table_size = self.u16(vtable + 2, f"{what} vtable")
        if vt_size < 4 or vt_size % 2:
            raise MalformedError(f"{what}: bad vtable size {vt_size}")
        self._need(vtable, vt_size, f"{what} vtable")
        self._need(pos, max(table_size, 4), what)
        return Table(self, pos, vtable, vt_size=vt_size, table_size=table_size, what=what)


class Table:
    """One table: its fields by schema slot, each checked against the table's extent."""

    def __init__(self, r: Reader, pos: int, vtable: int, *, vt_size: int, table_size: int,
                 what: str) -> None:
        self.r, self.pos, self.vtable = r, pos, vtable
        self.vt_size, self.table_size, self.what = vt_size, table_size, what

    def _field(self, slot: int, width: int) -> int | None:
        """Absolute position of field `slot`, or None when absent."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vt_size:
            return None
        offset = self.r.u16(self.vtable + entry, self.what)
        if offset == 0:
            return None
        if offset + width > self.table_size:
            raise MalformedError(f"{self.what}: field {slot} lies outside its table")
        return self.pos + offset

    def scalar(self, slot: int, fmt: str, default: int) -> int:
        width = struct.calcsize("<" + fmt)
        pos = self._field(slot, width)
        if pos is None:
            return default
        self.r._need(pos, width, self.what)
        value: int = struct.unpack_from("<" + fmt, self.r.data, pos)[0]
        return value

    def vector(self, slot: int, elem_size: int, what: str) -> tuple[int, int]:
        """(position of the first element, length); (0, 0) when absent."""
        pos = self._field(slot, 4)
        if pos is None:
            return 0, 0
        start = self.r.deref(pos, what)
        length = self.r.u32(start, what)
        # Checking the whole extent here bounds every loop over the vector
        # by the file size: a corrupt length cannot make us spin.
        self.r._need(start + 4, length * elem_size, what)
        self.r.spend(length, what)
        return start + 4, length

    def string(self, slot: int, what: str) -> str:
        start, length = self.vector(slot, 1, what)
        if not length:
            return ""
        try:
            # Flatbuffer strings are UTF-8, and the runtimes' Python wrappers
            # decode tensor names strictly: a damaged one fails there, untidily.
            return self.r.data[start:start + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedError(f"{what}: not UTF-8 ({exc.reason}): corrupt") from None

    def ints(self, slot: int, what: str) -> tuple[int, ...]:
        start, length = self.vector(slot, 4, what)
        return struct.unpack_from(f"<{length}i", self.r.data, start) if length else ()

    def table(self, slot: int, what: str) -> Table | None:
        """The sub-table in field `slot`, or None when absent."""
        pos = self._field(slot, 4)
        if pos is None:
            return None
        return self.r.table(self.r.deref(pos, what), what)

    def tables(self, slot: int, what: str) -> list[Table]:
        start, length = self.vector(slot, 4, what)
        return [self.r.table(self.r.deref(start + 4 * i, what), f"{what}[{i}]")
                for i in range(length)]
