"""A model update as delivered (issue 20): its announcement, its bytes, its proof.

An update is a bundle: the .tflite file followed by a golden frame (PNG) whose top
result is announced with it. The announcement (JSON on `<device>/cmd/model`) says

    {"version": "birds-v2", "name": "birds_v2_int8.tflite", "size": 151234,
     "model_size": 142000, "sha256": "<hex of the bundle>", "chunk_size": 65536,
     "golden": {"label_id": 3, "score": 0.82}, "signature": "<base64>"}

and the signature is Ed25519 over `signed_message()`: the version, the name, the
sizes, the bundle's sha256 and the golden result, so none can be swapped without
the key. The bytes come as chunks on `<device>/cmd/model/chunk` (a 4-byte
big-endian index, then chunk_size bytes, the last shorter; any order), or from a
file on the device (`"path"`). Nothing here runs a model: edged.service.updates
checks and swaps.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}\.tflite$")
_INDEX = struct.Struct(">I")


class UpdateError(ValueError):
    """An update refused: one line, its answer's error."""


@dataclass(frozen=True)
class Announcement:
    version: str
    name: str
    size: int
    model_size: int
    sha256: str
    chunk_size: int
    golden_label_id: int
    golden_score: float
    signature: bytes
    path: str = ""  # the bundle is on the device already

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk_size)

    def signed_message(self) -> bytes:
        return (f"edged-model-update-v1\n{self.version}\n{self.name}\n{self.size}\n"
                f"{self.model_size}\n{self.sha256}\n{self.golden_label_id}\n"
                f"{self.golden_score:.6f}\n").encode()

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "name": self.name, "size": self.size,
                "model_size": self.model_size, "sha256": self.sha256,
                "chunk_size": self.chunk_size,
                "golden": {"label_id": self.golden_label_id, "score": self.golden_score},
                "signature": base64.b64encode(self.signature).decode(), "path": self.path}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Announcement:
        return cls.parse(doc, 1 << 62)

    @classmethod
    def parse(cls, doc: dict[str, Any], max_bytes: int) -> Announcement:
        def field(key: str, kind: type, check: Any = None) -> Any:
            value = doc.get(key)
            if not isinstance(value, kind) or isinstance(value, bool) or (
                    check is not None and not check(value)):
                raise UpdateError(f"announcement: {key}: missing or not valid")
            return value

        golden = doc.get("golden")
        if not isinstance(golden, dict):
            raise UpdateError("announcement: golden: missing (label_id and score of the "
                              "golden frame's top result)")
        size = field("size", int, lambda v: 0 < v <= max_bytes)
        try:
            signature = base64.b64decode(field("signature", str), validate=True)
        except (binascii.Error, ValueError):
            raise UpdateError("announcement: signature: not base64") from None
        return cls(
            version=field("version", str, _VERSION.match), name=field("name", str, _NAME.match),
            size=size, model_size=field("model_size", int, lambda v: 0 < v < size),
            sha256=field("sha256", str, lambda v: re.fullmatch(r"[0-9a-f]{64}", v)),
            chunk_size=int(doc.get("chunk_size", 65536)) if isinstance(
                doc.get("chunk_size", 65536), int) else 0,
            golden_label_id=int(golden.get("label_id", -1)) if isinstance(
                golden.get("label_id"), int) else -1,
            golden_score=float(golden["score"]) if isinstance(
                golden.get("score"), (int, float)) else -1.0,
            signature=signature, path=str(doc.get("path") or ""),
        )._checked(max_bytes)

    def _checked(self, max_bytes: int) -> Announcement:
        if not 1024 <= self.chunk_size <= 200 * 1024:
            raise UpdateError("announcement: chunk_size: 1024 to 204800 bytes")
        if self.golden_label_id < 0 or not 0.0 <= self.golden_score <= 1.0:
            raise UpdateError("announcement: golden: needs label_id >= 0 and score 0..1")
        if self.size > max_bytes:
            raise UpdateError(f"announcement: size {self.size}: over updates.max_model_bytes")
        return self


def verify_signature(a: Announcement, public_key: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(a.signature, a.signed_message())
    except (InvalidSignature, ValueError):
        raise UpdateError("signature: not made with the key in updates.public_key") from None


class Receiver:
    """Chunks of one update written into its staging file, in any order (network
    thread); `missing()` says which have not come."""

    def __init__(self, a: Announcement, path: Path) -> None:
        self.a, self.path = a, path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self._fd, a.size)
        self._have: set[int] = set()
        self.rejected = 0  # chunks refused: bad index or length
        # add() runs on the network thread, close() on another: a closed descriptor's
        # number may already be another file's.
        self._lock = threading.Lock()

    def add(self, payload: bytes) -> bool:
        """File one chunk; True once every chunk has come."""
        with self._lock:
            return self._add(payload)

    def _add(self, payload: bytes) -> bool:
        if len(payload) < _INDEX.size or self._fd < 0:
            self.rejected += 1
            return False
        (index,) = _INDEX.unpack_from(payload)
        data = memoryview(payload)[_INDEX.size:]
        last = self.a.chunks - 1
        want = self.a.size - last * self.a.chunk_size if index == last else self.a.chunk_size
        if index > last or len(data) != want:
            self.rejected += 1
            return False
        os.pwrite(self._fd, data, index * self.a.chunk_size)
        self._have.add(index)
        return len(self._have) == self.a.chunks

    def missing(self) -> int:
        return self.a.chunks - len(self._have)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def chunk(index: int, data: bytes) -> bytes:
    """One chunk's payload, as a sender writes it."""
    return _INDEX.pack(index) + data


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def split_bundle(bundle: Path, a: Announcement, into: Path) -> tuple[Path, bytes]:
    """The bundle's model, written to `into`, and its golden frame's bytes; the bundle
    must hash to the announced sha256 first."""
    if bundle.stat().st_size != a.size:
        raise UpdateError(f"bundle: {bundle.stat().st_size} bytes, {a.size} announced")
    if sha256_of(bundle) != a.sha256:
        raise UpdateError("bundle: its sha256 is not the one announced (damaged or altered)")
    data = bundle.read_bytes()
    into.parent.mkdir(parents=True, exist_ok=True)
    into.write_bytes(data[:a.model_size])
    return into, data[a.model_size:]
