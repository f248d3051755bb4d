"""An event's picture: the frame (or the object cropped from it), its box drawn, as JPEG.

Pure apart from OpenCV's drawing and encoding; called off the hot path (see
`edged.service.eventstage`). Frames are RGB, as every source delivers them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from edged.events.tracker import Box

CROP_MARGIN = 0.10  # of the box's size, on every side
_COLOUR = (255, 64, 0)  # RGB: orange, visible on most scenes


@dataclass(frozen=True, slots=True)
class SnapshotSettings:
    crop: bool = False
    boxes: bool = True
    max_width: int = 640
    quality: int = 80


def render_snapshot(pixels: NDArray[np.uint8], box: Box, caption: str,
                    settings: SnapshotSettings) -> bytes:
    """JPEG bytes of `pixels` (HxWx3 RGB or HxW grey) with `box` (frame pixels)."""
    image = pixels if pixels.ndim == 3 else cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    h, w = image.shape[:2]
    x1, y1, x2, y2 = _clip(box, w, h)
    if settings.crop:
        mx, my = (x2 - x1) * CROP_MARGIN, (y2 - y1) * CROP_MARGIN
        cx1, cy1, cx2, cy2 = _clip((x1 - mx, y1 - my, x2 + mx, y2 + my), w, h)
        cx2, cy2 = max(cx2, cx1 + 1), max(cy2, cy1 + 1)
        image = image[cy1:cy2, cx1:cx2]
        x1, y1, x2, y2 = x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1
    scale = min(1.0, settings.max_width / image.shape[1])
    if scale < 1.0:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        x1, y1, x2, y2 = (round(v * scale) for v in (x1, y1, x2, y2))
    else:
        image = image.copy()  # drawn on: never the frame another stage may still read
    if settings.boxes:
        thick = max(1, image.shape[1] // 320)
        cv2.rectangle(image, (x1, y1), (x2, y2), _COLOUR, thick)
        if caption:
            cv2.putText(image, caption, (x1 + 2, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * thick, _COLOUR, thick, cv2.LINE_AA)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, settings.quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a {image.shape} frame")
    return bytes(jpeg)


def _clip(box: Box, w: int, h: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return (int(min(max(x1, 0), w - 1)), int(min(max(y1, 0), h - 1)),
            int(min(max(x2, 0), w - 1)), int(min(max(y2, 0), h - 1)))
