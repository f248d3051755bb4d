"""docs/payload.md: every example validates against the shipped JSON Schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "edged" / "schemas"


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}-v1.schema.json").read_text())


def test_every_payload_example_in_the_docs_is_schema_valid() -> None:
    text = (ROOT / "docs" / "payload.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, re.S)]
    kinds = {"result": 0, "status": 0, "stats": 0, "event": 0, "occupancy": 0}
    for doc in blocks:
        if "camera" in doc:
            kind = "event" if "type" in doc else "occupancy"
        elif "outputs" in doc:
            kind = "result"
            for out in doc["outputs"]:
                if isinstance(out["data"], str):  # a marked cut in the docs, never on the wire
                    assert out["data"].startswith("<") and out["data"].endswith(">")
                    out["data"] = []
        else:
            kind = "status" if "state" in doc else "stats"
        jsonschema.Draft202012Validator(_schema(kind)).validate(doc)
        kinds[kind] += 1
    assert kinds == {"result": 6, "status": 1, "stats": 1, "event": 3, "occupancy": 1}
    # The worked number in the int8 example is what the payload says.
    first = blocks[0]["outputs"][0]
    q = first["quantization"]
    assert first["data"][0][7] == (127 - q["zero_point"]) * q["scale"] == 0.99609375
