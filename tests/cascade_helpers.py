"""A detector cascaded into a classifier, on frames whose answers are known
(tests/service/test_cascade.py, the bench's cascade row uses its own frames).

The scene detector (tests/scene_helpers.py) finds, per colour channel, the
extent of the lit pixels; a grey digit lights all three channels, so each digit
drawn on black is found three times (person, car, dog) with the digit's extent
as its box. The digits classifier then reads the digit from the crop.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from daemon_helpers import MODELS
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT / "tests" / "data" / "frames"
CLASSIFIER = MODELS / "digits_int8.tflite"
CLASSIFIER_LABELS = ROOT / "edged" / "data" / "digits_labels.txt"
FRAME_WH = (320, 256)  # not square: the crops are cut from the camera's frame


def digit(n: int) -> NDArray[np.uint8]:
    """The test frame of digit `n` (32x32 RGB)."""
    path = next(FRAMES.glob(f"digit_{n}_*.png"))
    return cv2.imread(str(path))[:, :, ::-1].copy()


def digit_frame(n: int, at: tuple[int, int], side: int) -> NDArray[np.uint8]:
    """A black frame with digit `n` drawn `side` pixels square at `at` (x, y)."""
    frame = np.zeros((FRAME_WH[1], FRAME_WH[0], 3), np.uint8)
    x, y = at
    frame[y:y + side, x:x + side] = cv2.resize(digit(n), (side, side),
                                               interpolation=cv2.INTER_NEAREST)
    return frame


def write_digit_frames(folder: Path, placements: list[tuple[int, tuple[int, int], int]]
                       ) -> list[NDArray[np.uint8]]:
    """PNG frames in `folder` (in order), each one digit placed; returned as arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (n, at, side) in enumerate(placements):
        frame = digit_frame(n, at, side)
        cv2.imwrite(str(folder / f"{i:04d}.png"), frame[:, :, ::-1])
        frames.append(frame)
    return frames


# The payload rounds a box to 0.01 px: a crop edge the box puts this close to a whole
# pixel can be either pixel in the crop edged cut (the centre off by up to 0.005, the
# padded half side by up to 0.006).
ROUNDING = 0.02


def crop_windows(box: list[float], padding: float, height: int, width: int
                 ) -> set[tuple[int, int, int, int]]:
    """The crops (left, top, right, bottom) a published `box` can stand for: the box
    squared about its centre (the classifier's input is square), grown by `padding`,
    rounded outwards, clipped; several where the payload's rounding leaves an edge on
    either side of a whole pixel."""
    x1, y1, x2, y2 = box
    half = max(x2 - x1, y2 - y1) * (0.5 + padding)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2

    def edges(v: float, outward: Callable[[float], int], size: int) -> set[int]:
        return {min(size, max(0, outward(v + d))) for d in (-ROUNDING, 0.0, ROUNDING)}

    return set(itertools.product(edges(cx - half, math.floor, width),
                                 edges(cy - half, math.floor, height),
                                 edges(cx + half, math.ceil, width),
                                 edges(cy + half, math.ceil, height)))


def reference_scores(frame: NDArray[np.uint8], box: list[float], padding: float
                     ) -> list[NDArray[np.float64]]:
    """The classifier's ten class scores on each crop `box` can stand for
    (`crop_windows`), worked out here without edged: resized, quantized and
    dequantized with the tensors' own parameters, by the real interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(CLASSIFIER))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    size = (int(inp["shape"][2]), int(inp["shape"][1]))
    scale, zero = inp["quantization"]
    o_scale, o_zero = out["quantization"]
    answers = []
    for left, top, right, bottom in sorted(crop_windows(box, padding, *frame.shape[:2])):
        crop = frame[top:bottom, left:right]
        shrink = crop.shape[0] > size[1] or crop.shape[1] > size[0]
        pixels = cv2.resize(crop, size,
                            interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        q = np.clip(np.round(pixels / 255.0 / scale) + zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], q[None])
        interpreter.invoke()
        answers.append(
            (interpreter.get_tensor(out["index"])[0].astype(np.float64) - o_zero) * o_scale)
    return answers


def off_reference(got: NDArray[np.float64], frame: NDArray[np.uint8], box: list[float],
                  padding: float) -> float:
    """How far published scores are from the classifier's own on the crop of `box`
    (the nearest of the crops the rounded box can stand for)."""
    return min(float(np.abs(got - e).max()) for e in reference_scores(frame, box, padding))
