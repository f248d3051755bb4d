"""What makes a model input an image, and which way round its axes are.

edged feeds pixels: an input is an image when it is `[1, H, W, C]` (NHWC,
TensorFlow's order) or `[1, C, H, W]` (NCHW, what LiteRT exports of PyTorch
and Ultralytics models keep) with C = 1 (grey) or 3 (colour), or `[1, H, W]`
(one grey channel), and both sides at least `MIN_SIDE` pixels. Anything else
(an audio model's `[1, 3, 40]`, a flat `[1, 1960]`, a 4-channel or a 3-D
tensor) is refused in one line rather than fed as a picture of noise.
Where both readings fit (`[1, 3, H, 3]`) NHWC wins unless `preprocess.layout`
says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edged.numerics.tensors import TensorInfo

Layout = Literal["nhwc", "nchw"]
LayoutSetting = Literal["auto", "nhwc", "nchw"]
CHANNELS = (1, 3)
MIN_SIDE = 8  # pixels: a smaller "image" is a feature vector, not a picture


class NotAnImageError(ValueError):
    """The input tensor cannot be fed camera pixels (one line naming it)."""


@dataclass(frozen=True)
class ImageInput:
    layout: Layout
    height: int
    width: int
    channels: int

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """The uint8 frame edged prepares for it, always (H, W, C)."""
        return self.height, self.width, self.channels

    def describe(self) -> str:
        colour = "RGB" if self.channels == 3 else "grey"
        return f"{self.layout.upper()} {self.width}x{self.height} {colour}"


def image_input(t: TensorInfo, layout: LayoutSetting = "auto") -> ImageInput:
    """Read `t` as an image input, or raise NotAnImageError saying why."""
    shape = tuple(int(n) for n in t.shape)
    found: ImageInput | None = None
    if len(shape) == 3 and shape[0] == 1 and layout != "nchw":
        found = ImageInput("nhwc", shape[1], shape[2], 1)
    elif len(shape) == 4 and shape[0] == 1:
        last_fits, second_fits = shape[3] in CHANNELS, shape[1] in CHANNELS
        if layout == "nhwc" or (layout == "auto" and last_fits):
            found = ImageInput("nhwc", shape[1], shape[2], shape[3]) if last_fits else None
        elif layout == "nchw" or second_fits:
            found = ImageInput("nchw", shape[2], shape[3], shape[1]) if second_fits else None
    if found is None or min(found.size) < MIN_SIDE:
        forced = f" read as {layout.upper()} (preprocess.layout)" if layout != "auto" else ""
        raise NotAnImageError(
            f"input tensor {t.name!r} {list(shape)} {t.dtype}{forced} is not an image: edged "
            f"feeds pixels to [1, H, W, 1|3], [1, 1|3, H, W] or [1, H, W] inputs of at "
            f"least {MIN_SIDE}x{MIN_SIDE}; this model wants other data (audio, features)")
    return found


def channels_of(t: TensorInfo) -> int:
    """The colour channels of an image input; 1 for anything else (tables, checks)."""
    try:
        return image_input(t).channels
    except NotAnImageError:
        return 1
