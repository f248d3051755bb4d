"""Kept for subscribers' code: `edged.payload.decode_result` reads a result in
either encoding. The payload code lives in `edged.mqtt.payload`; the JSON
Schemas stay in `edged/schemas/` (`SCHEMAS_DIR`)."""

from pathlib import Path

from edged.mqtt.payload import decode_result, encode_result_binary, encode_result_json

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"

__all__ = ["SCHEMAS_DIR", "decode_result", "encode_result_binary", "encode_result_json"]
