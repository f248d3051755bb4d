"""A scripted scene for the daemon-level event tests: objects rendered moving along
known paths through known zones, found by tests/data/scene/detect_centroid_int8.tflite.

256x256 RGB frames, solid rectangles on black: red = person, green = car
(the model's classes). The model's 64x64 input is an exact 4x area reduction
of these frames, and its boxes are the rectangles' extents, so a box in the
frame is known to a pixel or two.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "data" / "scene" / "detect_centroid_int8.tflite"
LABELS = ROOT / "tests" / "data" / "scene" / "detect_centroid_labels.txt"
SIZE = 256
FPS = 20.0
# The bottom half is the driveway; the gate is the vertical line at x = 0.5, drawn
# downwards, so its right (as seen on the image) is the left half: leftwards is "in".
ZONES = [{"name": "driveway", "points": [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]}]
LINES = [{"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}]
PERSON_WH = (48, 64)  # its score: (12/64)(16/64) * 16 = 0.75
CAR_WH = (80, 48)  # 0.94


@dataclass(frozen=True)
class Shape:
    channel: int
    x: int
    y: int
    wh: tuple[int, int]

    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.wh[0], self.y + self.wh[1]


def person_path() -> Iterator[tuple[int, int]]:
    """Frames 0-99: walks right along the top (x 200 -> 8, crossing the gate leftwards at
    frame ~35), then down into the driveway (frames 60-99); missing every third frame
    between frames 12 and 30 (flicker)."""
    x, y = 200, 24
    for frame in range(100):
        yield x, y
        if frame < 48:
            x -= 4
        elif y < 160:
            y += 4


def scene() -> list[list[Shape]]:
    """Every frame's shapes. The person walks from frame 0 to 99 and is gone after; the
    car is parked in the driveway, lower right, from frame 30 to 79."""
    frames: list[list[Shape]] = []
    for frame, (x, y) in enumerate(person_path()):
        shapes = []
        if not (12 <= frame <= 30 and frame % 3 == 0):
            shapes.append(Shape(0, x, y, PERSON_WH))
        if 30 <= frame < 80:
            shapes.append(Shape(1, 160, 176, CAR_WH))
        frames.append(shapes)
    frames += [[] for _ in range(30)]  # 1.5 s of empty frames: every object ends
    return frames


def render(shapes: list[Shape]) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    for s in shapes:
        x1, y1, x2, y2 = s.box()
        img[y1:y2, x1:x2, s.channel] = 255
    return img


def write_scene(directory: Path, frames: list[list[Shape]] | None = None) -> Path:
    """The scene as PNGs (lossless: a video codec would blur the rectangles' edges)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, shapes in enumerate(frames if frames is not None else scene()):
        cv2.imwrite(str(directory / f"{i:04d}.png"), render(shapes)[:, :, ::-1])
    return directory
