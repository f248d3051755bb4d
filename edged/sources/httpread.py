"""Reading an HTTP camera's response frame by frame, each read bounded in time.

For `edged.sources.mjpeg`: a socket timeout bounds one recv(), not a frame, so a
server dripping a byte every 2 s would keep a read going forever; `FrameReader`
gives every recv only the time left until the frame's deadline. Also the
multipart boundary from a Content-Type, and the one-line wording of what went
wrong on the wire.
"""

from __future__ import annotations

import http.client
import socket
import time

from edged.sources.base import SourceError


def boundary_of(content_type: str) -> str | None:
    """The multipart boundary from a Content-Type header, without leading dashes."""
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            value = value.strip().strip('"')
            # Some cameras put the dashes in the header too; the body has two more.
            return value[2:] if value.startswith("--") else value
    return None



class FrameReader:
    """Buffered reads of a response, each bounded by `deadline` (set per frame).

    A socket timeout bounds one recv(); `readline()` on the response makes as
    many as it needs, so a server that sends a byte every 2 s keeps a read
    going forever under a 5 s timeout. Here every recv gets only the time left
    until the deadline, through `read1` (one recv at most, chunked bodies too).
    """

    def __init__(self, resp: http.client.HTTPResponse, sock: socket.socket | None,
                 timeout: float, name: str) -> None:
        self._resp, self._sock, self._timeout, self._name = resp, sock, timeout, name
        self._buf = bytearray()
        self._eof = False  # the response closed its socket: never touch it again
        self.start_frame()

    def start_frame(self) -> None:
        self.deadline = time.monotonic() + self._timeout
        self._trickle = False  # bytes came since: a timeout is then a stall, not silence

    def _more(self) -> bool:
        if self._eof:
            return False
        left = self.deadline - time.monotonic()
        stalled = SourceError(f"{self._name}: no complete frame for {self._timeout:g} s "
                              "(stalled)")
        if left <= 0:
            raise stalled
        if self._sock is not None:
            self._sock.settimeout(min(self._timeout, left))
        try:
            chunk = self._resp.read1(1 << 16)
        except TimeoutError:
            if self._trickle:  # data came, too slowly: the frame's time ran out
                raise stalled from None
            raise  # silence for the whole read timeout
        self._trickle = self._trickle or bool(chunk)
        self._buf += chunk
        self._eof = not chunk
        return not self._eof

    def readline(self, limit: int) -> bytes:
        start = 0
        while (end := self._buf.find(b"\n", start)) < 0 and len(self._buf) < limit:
            start = len(self._buf)
            if not self._more():
                break
        size = min(end + 1 if end >= 0 else len(self._buf), limit)
        line = bytes(self._buf[:size])
        del self._buf[:size]
        return line

    def peek(self, n: int) -> bytes:
        while len(self._buf) < n and self._more():
            pass
        return bytes(self._buf[:n])

    def read(self, n: int) -> bytes:
        data = self.peek(n)
        del self._buf[:len(data)]
        return data


def describe(e: BaseException, timeout: float) -> str:
    if isinstance(e, TimeoutError | socket.timeout):
        return f"no data for {timeout:g} s (timed out)"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, http.client.HTTPException):
        return f"bad HTTP response ({type(e).__name__})"
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return str(text).splitlines()[0]
