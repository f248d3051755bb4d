"""Config of model updates (issue 20): a new [model] delivered over MQTT or by path,
signed, checked, swapped in, and rolled back when health regresses (docs/fleet.md).

Off by default; rides on remote commands (`[commands]`), which say who may send.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from pydantic import Field

from edged.config.sections import FilePath, Section

Problems = list[tuple[tuple[str | int, ...], str]]


class UpdatesConfig(Section):
    enabled: bool = Field(default=False, description=(
        "Take new [model] files on <prefix>/<device>/cmd/model (needs commands.enabled "
        "and public_key)."))
    public_key: str = Field(default="", examples=["MCowBQYDK2VwAyEA..."], description=(
        "The Ed25519 public key updates must be signed with: base64 of its 32 raw bytes "
        "(`edged sign-model --keygen` makes a pair)."))
    models_dir: FilePath = Field(default=Path("/var/lib/edged/models"), description=(
        "Where received models are staged and kept (the new one and the one before it)."))
    max_model_bytes: int = Field(default=64 << 20, ge=1024, le=1 << 30, description=(
        "Larger updates are refused when announced."))
    receive_timeout_s: float = Field(default=120.0, gt=0, le=3600, description=(
        "An update whose chunks have not all arrived by then is dropped."))
    golden_tolerance: float = Field(default=0.05, ge=0, le=1, description=(
        "How far the golden frame's top score may be from the one announced."))
    trial_s: float = Field(default=300.0, ge=1, le=86400, description=(
        "After a swap, the previous model comes back if within this time the worker "
        "restarts or no result is published for no_results_s."))
    no_results_s: float = Field(default=30.0, gt=0, le=3600, description=(
        "Seconds without a result during the trial that roll the update back."))


def public_key_bytes(text: str) -> bytes | None:
    """The 32 raw bytes of a base64 Ed25519 public key (raw, or the SubjectPublicKeyInfo
    DER openssl writes, whose last 32 bytes are the key); None when it is not one."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) == 44 and raw.startswith(bytes.fromhex("302a300506032b6570032100")):
        raw = raw[12:]
    return raw if len(raw) == 32 else None


def updates_problems(updates: UpdatesConfig, commands: Any) -> Problems:
    if not updates.enabled:
        return []
    problems: Problems = []
    if not commands.enabled:
        problems.append((("updates", "enabled"), "needs commands.enabled: updates come as a "
                         "command, and [commands] says who may send them"))
    if public_key_bytes(updates.public_key) is None:
        problems.append((("updates", "public_key"), "needs the Ed25519 public key updates are "
                         "signed with, base64 (edged sign-model --keygen makes one)"))
    return problems
