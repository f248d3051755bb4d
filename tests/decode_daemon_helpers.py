"""Helpers for decoders end to end: a real `mosquitto_sub`, frames and expected results.

`MosquittoSub` is the mosquitto project's own command-line subscriber in a
child process, as a user would run it (`mosquitto_sub -v -t 'edged/+/results'`);
the tests read what it prints.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import orjson
from broker import Mosquitto
from daemon_helpers import FRAMES, MODELS, DaemonProcess, base_config, write_config
from numpy.typing import NDArray

from edged.system.childproc import stop_process

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "edged" / "schemas" / "result-v1.schema.json").read_text())
REFERENCE = json.loads((ROOT / "tests" / "data" / "reference.json").read_text())
_ids = itertools.count()


def validate_result(doc: Mapping[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


class MosquittoSub:
    """`mosquitto_sub -v` in a child process; each printed line is `topic payload`."""

    def __init__(self, port: int, topic: str = "edged/+/results") -> None:
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1", "-v",
             "-i", f"edged-decode-test-{os.getpid()}-{next(_ids)}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self._docs: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            topic, _, payload = line.rstrip(b"\n").partition(b" ")
            if topic.endswith(b"/results"):
                with self._cond:
                    self._docs.append(orjson.loads(payload))
                    self._cond.notify_all()

    @property
    def docs(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._docs)

    def wait_for(self, count: int, predicate: Callable[[dict[str, Any]], bool] = lambda _: True,
                 timeout: float = 60.0, why: Callable[[], str] = lambda: "") -> list[
                     dict[str, Any]]:
        """At least `count` results matching `predicate`; AssertionError (with `why()`) if not."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [d for d in self._docs if predicate(d)]
                if len(got) >= count:
                    return got
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    stderr = self.proc.stderr.read().decode() if self.proc.poll() is not None \
                        and self.proc.stderr else ""
                    raise AssertionError(f"mosquitto_sub printed {len(got)} of {count} results "
                                         f"in {timeout} s {stderr}\n{why()}")
                self._cond.wait(min(left, 0.2))

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_process(self.proc, 5.0)
        self._reader.join(5)


@contextmanager
def decoding_daemon(tmp_path: Path, broker: Mosquitto, *, model: Path, frames: Path,
                    labels: Path | None = None, **sections: Mapping[str, Any]
                    ) -> Iterator[tuple[DaemonProcess, MosquittoSub]]:
    """`edged run` on a config built from `base_config` + `sections`, and a mosquitto_sub."""
    sub = MosquittoSub(broker.port)
    cfg = base_config(broker.port, model=model, frames=frames)
    for name, keys in sections.items():
        cfg.setdefault(name, {}).update(keys)
    if labels is not None:
        cfg["model"]["labels"] = str(labels)
    config = write_config(tmp_path / "edged.toml", cfg)
    daemon = DaemonProcess(config)
    try:
        yield daemon, sub
    finally:
        sub.stop()
        code = daemon.stop()
        assert code == 0, daemon.log_text()


def frame_folder(tmp_path: Path, frames: Mapping[str, NDArray[np.uint8] | Path]) -> Path:
    """A folder source: RGB arrays are written as PNG, paths are copied (by bytes)."""
    folder = tmp_path / "frames"
    folder.mkdir(exist_ok=True)
    for name, frame in frames.items():
        if isinstance(frame, Path):
            (folder / name).write_bytes(frame.read_bytes())
        else:
            assert cv2.imwrite(str(folder / name), frame[:, :, ::-1])
    return folder


def read_rgb(path: Path) -> NDArray[np.uint8]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return np.ascontiguousarray(bgr[:, :, ::-1])


# shapes_64.png rows 8..56 (grid rows 1..6: every coloured cell) scaled 10x: a 640x480
# frame. Letterboxed into the 64x64 input it scales by 0.1 with 8-pixel bars above and
# below, so the model sees shapes_64.png itself (its rows 0..8 and 56..64 are black too).
SHAPES_CROP_Y = 8
SHAPES_SCALE = 10


def shapes_vga() -> NDArray[np.uint8]:
    crop = read_rgb(FRAMES / "shapes_64.png")[SHAPES_CROP_Y:64 - SHAPES_CROP_Y]
    return np.repeat(np.repeat(crop, SHAPES_SCALE, axis=0), SHAPES_SCALE, axis=1)


def shapes_vga_boxes() -> list[tuple[int, list[float]]]:
    """(class, [x1, y1, x2, y2] in 640x480 frame pixels) of each coloured cell, by class.

    From reference.json (normalised to the 64x64 model input), through the
    letterbox's inverse: frame = (model - bar) / 0.1.
    """
    dets = REFERENCE["models"]["ssd_postprocess.tflite"]["frames"]["shapes_64.png"]["detections"]
    out = []
    for d in sorted(dets, key=lambda d: d["class"]):
        y1, x1, y2, x2 = (v * 64 for v in d["yxyx"])
        out.append((d["class"], [x1 * SHAPES_SCALE, (y1 - SHAPES_CROP_Y) * SHAPES_SCALE,
                                 x2 * SHAPES_SCALE, (y2 - SHAPES_CROP_Y) * SHAPES_SCALE]))
    return out


def yolo_box_atol() -> float:
    """Frame pixels a box corner may be off: two int8 steps of the head (centre and half
    size), scaled from the 64-pixel input to the frame."""
    atol = REFERENCE["models"]["detect_yolo_int8.tflite"]["outputs"][0]["atol"]
    return float(atol * 1.5 * 64 * SHAPES_SCALE)


def digit_folder(tmp_path: Path) -> Path:
    return frame_folder(tmp_path, {f.name: f for f in sorted(FRAMES.glob("digit_*.png"))})


def digit_of(doc: Mapping[str, Any], frames: list[Path]) -> int:
    """The digit shown in the frame a result came from (folder frames loop in name order)."""
    return int(frames[int(doc["seq"]) % len(frames)].name.split("_")[1])


def write_labels(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


__all__ = ["MODELS", "MosquittoSub", "decoding_daemon", "digit_folder", "digit_of",
           "frame_folder", "read_rgb", "shapes_vga", "shapes_vga_boxes", "validate_result",
           "write_labels", "yolo_box_atol"]
