"""`edged sign-model`: make a model update (issue 20) on the machine that holds the key.

    edged sign-model --keygen keys/            # keys/update.pem (private), prints the public key
    edged sign-model --key keys/update.pem --version birds-v2 \\
        --golden feeder.png --label-id 14 --score 0.91 birds_v2.tflite --out birds-v2.bundle

writes the bundle (the model, then the golden frame) and prints its announcement
(JSON), signed: what a backend publishes on `<device>/cmd/model` before the
chunks (scripts/push_model.py does both), or with "path" set to the bundle
copied onto a device. --label-id and --score are the golden frame's top result
as the model answers it in your own tests (this command does not run it); a
device takes the update only if its own run of the model agrees.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

import orjson

from edged.inference.modelupdate import Announcement, sha256_of

CHUNK_SIZE = 65536


def make_update(key_pem: bytes, model: Path, golden: Path, *, version: str, label_id: int,
                score: float, out: Path) -> Announcement:
    """Write the bundle to `out`; its signed announcement."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(key_pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the key is not an Ed25519 private key")
    model_bytes = model.read_bytes()
    out.write_bytes(model_bytes + golden.read_bytes())
    a = Announcement(version=version, name=model.name, size=out.stat().st_size,
                     model_size=len(model_bytes), sha256=sha256_of(out),
                     chunk_size=CHUNK_SIZE, golden_label_id=label_id, golden_score=score,
                     signature=b"")
    signed = key.sign(a.signed_message())
    return Announcement(**{**a.__dict__, "signature": signed})


def keygen(directory: Path) -> str:
    """A new key pair: the private key to `directory/update.pem` (0600); the public
    key, base64, for updates.public_key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    pem = directory / "update.pem"
    pem.touch(0o600)
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("sign-model", description=__doc__)
    p.add_argument("model", nargs="?", type=Path, help="the .tflite file")
    p.add_argument("--keygen", type=Path, metavar="DIR", help="make a key pair in DIR")
    p.add_argument("--key", type=Path, help="the Ed25519 private key (PEM)")
    p.add_argument("--version", help="the update's version (letters, digits, . _ -)")
    p.add_argument("--golden", type=Path, help="the golden frame (PNG or JPEG)")
    p.add_argument("--label-id", type=int, help="the golden frame's top class or label id")
    p.add_argument("--score", type=float, help="... and its score")
    p.add_argument("--out", type=Path, help="where to write the bundle")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.keygen is not None:
        print(keygen(args.keygen))
        return 0
    needed = ("model", "key", "version", "golden", "label_id", "score", "out")
    missing = [f"--{n.replace('_', '-')}" if n != "model" else "MODEL" for n in needed
               if getattr(args, n) is None]
    if missing:
        print(f"edged sign-model: needs {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        a = make_update(args.key.read_bytes(), args.model, args.golden, version=args.version,
                        label_id=args.label_id, score=args.score, out=args.out)
    except (OSError, ValueError) as exc:
        print(f"edged sign-model: {exc}", file=sys.stderr)
        return 1
    doc = a.to_json()
    del doc["path"]
    print(orjson.dumps(doc).decode())
    return 0
