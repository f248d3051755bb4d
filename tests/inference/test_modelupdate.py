"""A model update as delivered (edged.inference.modelupdate): the announcement's fields,
the signature binding every one of them, chunks in any order and nothing else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edged.config.updates import public_key_bytes
from edged.inference.modelupdate import (
    Announcement,
    Receiver,
    UpdateError,
    chunk,
    split_bundle,
    verify_signature,
)
from edged.inference.signmodel import keygen, make_update

MODELS = Path(__file__).resolve().parents[1] / "data" / "models"
FRAME = next((Path(__file__).resolve().parents[1] / "data" / "frames").glob("digit_3_*.png"))


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Announcement, bytes, Path]:
    public = keygen(tmp_path)
    a = make_update((tmp_path / "update.pem").read_bytes(), MODELS / "digits_uint8.tflite",
                    FRAME, version="v2", label_id=3, score=0.9, out=tmp_path / "b.bundle")
    key = public_key_bytes(public)
    assert key is not None
    return a, key, tmp_path / "b.bundle"


def test_the_signature_binds_every_field_a_device_acts_on(
        signed: tuple[Announcement, bytes, Path]) -> None:
    a, key, bundle = signed
    verify_signature(a, key)
    assert (bundle.parent / "update.pem").stat().st_mode & 0o777 == 0o600
    for change in ({"version": "v3"}, {"name": "other.tflite"}, {"golden_label_id": 4},
                   {"golden_score": 0.95}, {"sha256": "0" * 64}, {"model_size": 100}):
        with pytest.raises(UpdateError, match="signature: not made with the key"):
            verify_signature(dataclasses.replace(a, **change), key)


def test_announcements_missing_or_wrong_fields_are_refused_naming_them(
        signed: tuple[Announcement, bytes, Path]) -> None:
    a, _, _ = signed
    doc = a.to_json()
    assert Announcement.parse(doc, 1 << 20) == a
    for key, value, words in (("version", "../../etc", "version: missing or not valid"),
                              ("name", "x.bin", "name: missing or not valid"),
                              ("size", True, "size: missing or not valid"),
                              ("sha256", "XYZ", "sha256: missing or not valid"),
                              ("signature", "%%%", "signature: not base64"),
                              ("chunk_size", 10, "chunk_size: 1024 to 204800 bytes"),
                              ("golden", None, "golden: missing")):
        with pytest.raises(UpdateError, match=words):
            Announcement.parse({**doc, key: value}, 1 << 20)
    with pytest.raises(UpdateError, match="size: missing or not valid"):
        Announcement.parse(doc, 1024)  # over updates.max_model_bytes


def test_chunks_in_any_order_make_the_bundle_and_bad_ones_are_refused(
        signed: tuple[Announcement, bytes, Path], tmp_path: Path) -> None:
    a, _, bundle = signed
    a = dataclasses.replace(a, chunk_size=4096)
    data = bundle.read_bytes()
    receiver = Receiver(a, tmp_path / "in" / ".incoming")
    pieces = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    assert not receiver.add(chunk(len(pieces), b"x" * 4096))  # no such index
    assert not receiver.add(chunk(0, b"short"))
    done = [receiver.add(chunk(i, pieces[i])) for i in reversed(range(len(pieces)))]
    receiver.close()
    assert done[-1] and not any(done[:-1]) and receiver.rejected == 2
    model, golden = split_bundle(receiver.path, a, tmp_path / "model.tflite")
    assert model.read_bytes() == (MODELS / "digits_uint8.tflite").read_bytes()
    assert golden == FRAME.read_bytes()
    receiver.path.write_bytes(data[:-1] + b"\0")
    with pytest.raises(UpdateError, match="sha256 is not the one announced"):
        split_bundle(receiver.path, a, tmp_path / "model.tflite")
