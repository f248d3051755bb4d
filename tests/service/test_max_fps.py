"""`inference.max_fps` limits how often a frame is inferred, never how late a
result is: latency with it equals latency without it (issue 14, item 5).

Latency is the daemon's own: `published_at - captured_at` of each result. The
CPU stages it also reports (preprocess, quantize, invoke, dequantize, decode)
are taken out, because on a loaded machine they vary from run to run; what is
left is time spent waiting: in the frame buffer, between threads and
processes, and (the defect) for the next due time of max_fps.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

import orjson
import pytest
from broker import Mosquitto
from daemon_helpers import MODELS, DaemonProcess, base_config, write_config
from faults_helpers import copy_digit_frames, record_figure, subscribed

STAGES = ("preprocess", "quantize", "invoke", "dequantize", "decode")
WARM_UP = 3  # the first results pay for first-touch costs in every stage
SAMPLES = 30


def waits_ms(tmp_path: Path, port: int, source: dict[str, Any], max_fps: float
             ) -> tuple[list[float], float]:
    """Each result's latency minus its CPU stages, in ms, from one daemon run; and
    the median time between frames inferred, in s."""
    frames = copy_digit_frames(tmp_path / "frames")
    name = f"{source['kind']}-{max_fps:g}"
    config = write_config(tmp_path / f"{name}.toml", base_config(
        port, model=MODELS / "digits_int8.tflite", frames=frames, device=name,
        source=source, inference={"max_fps": max_fps}))
    with subscribed(port) as sub, DaemonProcess(config) as daemon:
        got = sub.wait_count(lambda m: m.topic == f"edged/{name}/results", WARM_UP + SAMPLES,
                             timeout=60)
        assert daemon.stop() == 0
    waits, captured = [], []
    for message in got[WARM_UP:WARM_UP + SAMPLES]:
        doc = orjson.loads(message.payload)
        cpu_us = sum(doc["timings_us"].get(stage, 0) for stage in STAGES)
        waits.append((doc["published_at"] - doc["captured_at"]) * 1e3 - cpu_us / 1e3)
        captured.append(doc["captured_at"])
    return waits, statistics.median(b - a for a, b in itertools.pairwise(captured))


@pytest.mark.parametrize("source", [
    {"kind": "folder", "loop": True, "fps": 30.0},  # a file: every frame is inferred
    {"kind": "synthetic", "fps": 30.0, "width": 64, "height": 64},  # a live camera
], ids=["folder", "camera"])
def test_max_fps_adds_no_latency(tmp_path: Path, mosquitto: Mosquitto,
                                 source: dict[str, Any]) -> None:
    free_waits, _ = waits_ms(tmp_path, mosquitto.port, source, 0.0)
    free = statistics.median(free_waits)
    limited, spacing = waits_ms(tmp_path, mosquitto.port, source, 10.0)
    record_figure(f"max_fps_latency_{source['kind']}", wait_ms_p50_free=round(free, 3),
                  wait_ms_p50_max_fps_10=round(statistics.median(limited), 3),
                  spacing_s_p50=round(spacing, 4))
    assert abs(statistics.median(limited) - free) < 1.0, (free, sorted(limited))
    assert 0.095 < spacing < 0.11, f"max_fps = 10 took a frame every {spacing:.3f} s"
