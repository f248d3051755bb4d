"""Capture real result, status and stats messages for docs/payload.md.

    .venv/bin/python scripts/payload_examples.py > /tmp/examples.md

Runs the real `edged run` on each committed test model against a private
mosquitto and prints the first result (and the status and stats of the first
run) as they arrived, pretty-printed. Long `data` lists are kept whole: the
docs cut them by hand where they say so.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from broker import Mosquitto, Subscriber  # noqa: E402
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config  # noqa: E402

RUNS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("int8 classifier", "digits_int8.tflite", "digit_7_*.png", {}),
    ("uint8 classifier", "digits_uint8.tflite", "digit_7_*.png", {}),
    ("multi-output", "multi_output_int8.tflite", "digit_7_*.png", {}),
    ("mixed outputs (int32, int8 per-tensor, float32, int8 per-channel)",
     "mixed_outputs.tflite", "digit_7_*.png", {}),
    ("decoded: classification", "digits_int8.tflite", "digit_7_*.png",
     {"decoder": "classification", "top_k": 3, "min_score": 0.001}),
    ("decoded: detection, include_raw = false", "detect_yolo_int8.tflite", "shapes_64.png",
     {"decoder": "detection", "include_raw": False, "min_score": 0.5}),
]


def capture(tmp: Path, model: str, pattern: str, output: dict[str, Any]
            ) -> dict[str, bytes]:
    frames = tmp / "frames"
    frames.mkdir(exist_ok=True)
    for f in frames.iterdir():
        f.unlink()
    for f in FRAMES.glob(pattern):
        (frames / f.name).write_bytes(f.read_bytes())
    with Mosquitto(tmp / "broker") as broker, Subscriber(broker.port, "edged/#") as sub:
        cfg = base_config(broker.port, model=MODELS / model, frames=frames, device="cam-1",
                          output={"stats_interval_s": 1.0, **output})
        with DaemonProcess(write_config(tmp / "edged.toml", cfg)) as daemon:
            got = {suffix: sub.wait_for(lambda m, s=suffix: m.topic.endswith(s), 30).payload
                   for suffix in ("/results", "/status")}
            got["/stats"] = sub.wait_for(lambda m: m.topic.endswith("/stats") and
                                         orjson.loads(m.payload).get("frames", 0) > 5,
                                         30).payload
            daemon.stop()
    return got


def _flat(value: Any) -> list[Any]:
    return [x for v in value for x in _flat(v)] if isinstance(value, list) else [value]


def show(doc: dict[str, Any]) -> str:
    """Indented JSON with lists of numbers on one line; `data` over 40 values
    cut to its first 12 (marked, so nobody takes it for the payload)."""
    for out in doc.get("outputs", []):
        values = _flat(out.get("data"))
        if len(values) > 40:
            out["data"] = (f"<{len(values)} values nested like shape; first 12: "
                           f"{' '.join(str(v) for v in values[:12])}>")

    def fmt(value: Any, indent: str) -> str:
        if isinstance(value, dict):
            inner = indent + "  "
            items = [f"{inner}{orjson.dumps(k).decode()}: {fmt(v, inner)}"
                     for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + indent + "}" if items else "{}"
        if isinstance(value, list) and any(isinstance(v, dict) for v in value):
            inner = indent + "  "
            return "[\n" + ",\n".join(inner + fmt(v, inner) for v in value) + "\n" + \
                indent + "]"
        return orjson.dumps(value).decode().replace(",", ", ")

    return fmt(doc, "")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for i, (title, model, pattern, output) in enumerate(RUNS):
            got = capture(Path(tmp), model, pattern, output)
            print(f"### {title}: `{model}`\n\n```json")
            print(show(orjson.loads(got["/results"])))
            print("```\n")
            if i == 0:
                for suffix in ("/status", "/stats"):
                    print(f"### {suffix[1:]}\n\n```json")
                    print(show(orjson.loads(got[suffix])))
                    print("```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
