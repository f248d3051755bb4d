"""MJPEG over HTTP (`multipart/x-mixed-replace`), read with `http.client`.

Why not OpenCV's FFMPEG backend, which can read these streams: one corrupt
JPEG part ends its whole stream (a reconnect and lost frames for one bad
frame), and its blocking read cannot be interrupted from another thread.
Here a corrupt part is skipped and counted, a whole frame (not only each
socket read: a server dripping one byte every 2 s never times one out) must
arrive within `read_timeout`, and `abort` shuts the socket down so a read in
progress returns at once. A URL that answers with a single `image/jpeg` is polled as a
snapshot camera (one request per frame).

Credentials in the URL (`http://user:pass@host/`) are sent as HTTP Basic auth
and never appear in `name`, logs or errors.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import socket
import ssl
import threading
import time
import urllib.parse

from edged.sources.base import (
    Pacer,
    Pixels,
    SourceError,
    Thinner,
    Undecoded,
    redact_url,
)
from edged.sources.decodeplace import DecodeThread
from edged.sources.httpread import FrameReader, boundary_of, describe
from edged.sources.jpeg import JpegCamera

log = logging.getLogger("edged.sources")

MAX_PART_BYTES = 16 * 1024 * 1024
MAX_HEADER_LINES = 64


class HttpMjpegSource(JpegCamera):
    """Frames from an HTTP MJPEG stream or a JPEG snapshot URL.

    `min_size` (height, width) decodes each JPEG at the smallest of 1/2, 1/4, 1/8
    of its size still covering it (`edged.sources.jpeg`): far cheaper than
    decoding it whole and resizing afterwards when the stream is much larger than
    the model's input. None decodes every frame whole.

    `fps` (None or 0: every frame, as fast as the camera answers): a stream's frames
    beyond it are dropped before they are decoded (`Thinner`), and a snapshot URL is
    asked no more often (a cheap camera answering a request a few ms apart would
    otherwise be asked, and its JPEG decoded, hundreds of times a second).

    `defer_decode`: `read` returns each JPEG whose header reads as `Undecoded`, decoded
    by whoever takes the frame (the daemon's pipeline): a camera sending faster than
    the model runs then costs a decode per result, not per frame sent; or, as
    `decode_thread` says (`edged.sources.decodeplace`), decoded here as it arrives.
    """

    def __init__(self, url: str, *, open_timeout: float = 10.0, read_timeout: float = 5.0,
                 min_size: tuple[int, int] | None = None, verify_tls: bool = True,
                 fps: float | None = None, defer_decode: bool = False,
                 decode_thread: DecodeThread = "pipeline") -> None:
        super().__init__()
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme.lower() not in ("http", "https") or not parsed.hostname:
            raise SourceError(f"not an http(s) URL: {redact_url(url)}")
        self.url = url
        self.name = f"http:{redact_url(url)}"
        self._parsed = parsed
        self.open_timeout, self.read_timeout = open_timeout, read_timeout
        self._init_jpeg(min_size, defer_decode, decode_thread)
        self._pacer, self._thinner = Pacer(fps or 0.0), Thinner(fps or 0.0)
        self.verify_tls = verify_tls
        self._conn: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._reader: FrameReader | None = None
        self._boundary: bytes | None = None
        self._snapshot = False
        self._lock = threading.Lock()
        self._aborted = False
        self._opened = False

    def _request(self) -> http.client.HTTPResponse:
        p = self._parsed
        conn: http.client.HTTPConnection
        if p.scheme.lower() == "https":
            ctx = ssl.create_default_context()
            if not self.verify_tls:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(p.hostname or "", p.port, timeout=self.open_timeout,
                                               context=ctx)
        else:
            conn = http.client.HTTPConnection(p.hostname or "", p.port, timeout=self.open_timeout)
        headers = {"Accept": "multipart/x-mixed-replace, image/jpeg", "Connection": "close"}
        if p.username is not None:
            cred = f"{urllib.parse.unquote(p.username)}:{urllib.parse.unquote(p.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode("ascii")
        path = p.path or "/"
        if p.query:
            path += "?" + p.query
        with self._lock:
            if self._aborted:
                raise SourceError(f"{self.name}: aborted")
            self._conn = conn
        try:
            conn.request("GET", path, headers=headers)
            # Keep the socket: getresponse() drops the connection's reference to it
            # when the server says it will close, but the response still reads it.
            with self._lock:
                self._sock = conn.sock
            if self._aborted:
                raise SourceError(f"{self.name}: aborted")
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            raise SourceError(f"{self.name}: {describe(e, self.open_timeout)}") from e
        if resp.status != 200:
            resp.close()
            raise SourceError(f"{self.name}: HTTP {resp.status} {resp.reason}")
        if self._sock is not None:
            self._sock.settimeout(self.read_timeout)
        return resp

    def open(self) -> None:
        self.close()
        self._aborted = False
        self._pacer.reset()
        resp = self._request()
        content_type = resp.getheader("Content-Type", "")
        media = content_type.split(";")[0].strip().lower()
        if media.startswith("multipart/"):
            boundary = boundary_of(content_type)
            if not boundary:
                raise SourceError(f"{self.name}: multipart response without a boundary")
            self._boundary = b"--" + boundary.encode("latin-1")
            self._snapshot = False
        elif media == "image/jpeg":
            self._snapshot = True
        else:
            raise SourceError(f"{self.name}: Content-Type {media or 'missing'} is not MJPEG; "
                              f"set http_reader = \"ffmpeg\" for other streams")
        self._resp = resp
        self._reader = None if self._snapshot else FrameReader(resp, self._sock,
                                                                  self.read_timeout, self.name)
        self._opened = True

    def _readline(self) -> bytes:
        assert self._reader is not None
        line = self._reader.readline(65537)
        if not line:
            raise SourceError(f"{self.name}: connection closed by the server")
        return line

    def _next_part(self) -> bytes:
        """The body of the next multipart part."""
        assert self._boundary is not None and self._reader is not None
        skipped_bytes = 0
        while True:
            line = self._readline()
            if line.startswith(self._boundary):
                break
            skipped_bytes += len(line)
            if skipped_bytes > MAX_PART_BYTES:
                raise SourceError(f"{self.name}: no multipart boundary in {MAX_PART_BYTES} bytes")
        length: int | None = None
        for _ in range(MAX_HEADER_LINES):
            line = self._readline().strip()
            if not line:
                break
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    length = None
        else:
            raise SourceError(f"{self.name}: part headers do not end")
        if length is not None:
            if not 0 <= length <= MAX_PART_BYTES:
                raise SourceError(f"{self.name}: part of {length} bytes is over the "
                                  f"{MAX_PART_BYTES} byte limit")
            body = self._reader.read(length)
            if len(body) < length:
                raise SourceError(f"{self.name}: connection closed by the server mid-frame")
            return body
        # No Content-Length: the part runs to the next boundary line.
        chunks: list[bytes] = []
        total = 0
        while True:
            peek = self._reader.peek(len(self._boundary))
            if peek.startswith(self._boundary):
                body = b"".join(chunks)
                return body[:-2] if body.endswith(b"\r\n") else body
            line = self._readline()
            chunks.append(line)
            total += len(line)
            if total > MAX_PART_BYTES:
                raise SourceError(f"{self.name}: part over the {MAX_PART_BYTES} byte limit")

    def read(self) -> Pixels | Undecoded | None:
        if not self._opened:
            raise SourceError(f"{self.name}: read before open")
        try:
            while True:
                if self._reader is not None:  # each part, corrupt or not, has its time
                    self._reader.start_frame()
                if self._snapshot:
                    if not self._pacer.wait():
                        return None  # aborted
                    data = self._snapshot_body()
                else:
                    data = self._next_part()
                    if not self._thinner.admit(time.monotonic()):
                        continue
                frame = self._jpeg_frame(data)
                if frame is not None:
                    return frame
        except (OSError, http.client.HTTPException) as e:
            if self._aborted:
                return None
            raise SourceError(f"{self.name}: {describe(e, self.read_timeout)}") from e
        except SourceError:
            if self._aborted:
                return None
            raise

    def _snapshot_body(self) -> bytes:
        # The response from open() serves the first frame; later ones ask again.
        resp = self._resp or self._request()
        self._resp = None
        try:
            reader = FrameReader(resp, self._sock, self.read_timeout, self.name)
            data = reader.read(MAX_PART_BYTES + 1)
        finally:
            resp.close()
        if len(data) > MAX_PART_BYTES:
            raise SourceError(f"{self.name}: image over {MAX_PART_BYTES} bytes")
        return data

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            self._sock = None
        resp, self._resp = self._resp, None
        self._reader = None
        self._opened = False
        for thing in (resp, conn):
            if thing is not None:
                # Closing a dead socket must not stop a reopen.
                with contextlib.suppress(Exception):
                    thing.close()

    def abort(self) -> None:
        # shutdown() (unlike close()) wakes a recv() blocked in another thread.
        with self._lock:
            self._aborted = True
            sock = self._sock
        self._pacer.abort()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
