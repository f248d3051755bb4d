"""Frame -> model input pixels: resize (stretch / letterbox / crop), colour order, channels.

Everything that depends only on the sizes is worked out once (`Plan`): the
interpolation, the letterbox offsets, the crop window, the output buffer
(its letterbox padding painted once). Per frame there is one `cv2.resize`
into that buffer and, when needed, one `cv2.cvtColor`.

Shrinking a camera frame ("auto"): while a side is more than twice the
model's, it is halved by averaging each pair of pixels (a 2x2 box, or 2x1
when only one side is still over 2x), anti-aliased and cheap, then
INTER_LINEAR covers the last factor of at most 2 (it changes the model's
answers less than moving the frame by a pixel does). The halvings are done by
INTER_LINEAR at exactly 2x, which samples midway between each pair: the same
average as INTER_AREA's (to a level of rounding), but where one side alone is
halved OpenCV's INTER_AREA takes its general path (one core here, `python
scripts/jpeg_decode.py`: 640x360 -> 320x360 770 us against 172; 2x2 halvings
cost the same; 320x240 -> 224x224 in one step 523 us against 80). One
INTER_AREA step at a fractional factor averages exactly but slowly (640x480 ->
224x224 1.7 ms against 0.2-0.3 ms, 1920x1080 9.4 ms against 1.6 ms, measured
when "auto" came in); the top-1 agreement with it is in BENCHMARKS.md.
`interpolation = "area"` keeps the single exact step. A frame whose size
changes (a camera renegotiating) gets a new plan once, not per frame.

Frames come in RGB (see edged.sources). The output is uint8 (H, W, C),
C-contiguous, what `edged.numerics.quantize.PixelQuantizer` consumes. When the frame
already is the model's size and colour order, it is returned as it is: no
copy at all. Otherwise the returned array is the preprocessor's own buffer,
overwritten by the next call: consume it (quantize it) before calling again.

`Geometry` maps model-input coordinates back to frame pixels for decoders.
Coordinates are continuous: pixel i covers [i, i + 1), so model x = 0 maps to
the left edge of what the model saw and x = input width to its right edge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from edged.numerics.quantize import input_channels
from edged.numerics.tensors import TensorInfo

log = logging.getLogger("edged.preprocess")

ResizeMode = Literal["stretch", "letterbox", "crop"]
ColorOrder = Literal["rgb", "bgr"]
Interpolation = Literal["auto", "area", "linear", "nearest"]
MODES = ("stretch", "letterbox", "crop")
_MAX_PLANS = 4  # frame sizes kept planned at once (a folder of mixed sizes)
_INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


@dataclass(frozen=True, slots=True)
class Geometry:
    """frame_x = model_x * scale_x + offset_x (and likewise y), in pixels.

    `frame_size` and `input_size` are (height, width). The content window
    (`content`: x0, y0, x1, y1 in model pixels) is where the frame's pixels
    are; outside it is letterbox padding.
    """

    frame_size: tuple[int, int]
    input_size: tuple[int, int]
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    content: tuple[int, int, int, int]

    def to_frame(self, x: float, y: float, *, normalized: bool = False) -> tuple[float, float]:
        """A model-input point (pixels, or 0..1 when `normalized`) -> frame pixels."""
        if normalized:
            x, y = x * self.input_size[1], y * self.input_size[0]
        return x * self.scale_x + self.offset_x, y * self.scale_y + self.offset_y

    def to_model(self, x: float, y: float, *, normalized: bool = False) -> tuple[float, float]:
        """The inverse of `to_frame`."""
        mx, my = (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y
        if normalized:
            return mx / self.input_size[1], my / self.input_size[0]
        return mx, my

    def box_to_frame(self, x1: float, y1: float, x2: float, y2: float, *,
                     normalized: bool = False, clip: bool = True
                     ) -> tuple[float, float, float, float]:
        """A box in model coordinates -> frame pixels, clipped to the frame by default
        (letterbox padding maps outside it)."""
        fx1, fy1 = self.to_frame(x1, y1, normalized=normalized)
        fx2, fy2 = self.to_frame(x2, y2, normalized=normalized)
        if clip:
            h, w = self.frame_size
            fx1, fx2 = min(max(fx1, 0.0), w), min(max(fx2, 0.0), w)
            fy1, fy2 = min(max(fy1, 0.0), h), min(max(fy2, 0.0), h)
        return fx1, fy1, fx2, fy2

    def scaled_to(self, frame_size: tuple[int, int]) -> Geometry:
        """The same mapping onto `frame_size` (height, width): the picture this frame
        is a reduced decode of (`edged.sources.Frame.full_size`)."""
        kx, ky = frame_size[1] / self.frame_size[1], frame_size[0] / self.frame_size[0]
        return Geometry(frame_size, self.input_size, self.scale_x * kx, self.scale_y * ky,
                        self.offset_x * kx, self.offset_y * ky, self.content)

    def points_to_frame(self, xy: NDArray[np.floating], *, normalized: bool = False
                        ) -> NDArray[np.float64]:
        """Many points at once: `xy[..., 0]` is x, `xy[..., 1]` is y (keypoints, anchors)."""
        pts = np.asarray(xy, dtype=np.float64)
        if normalized:
            pts = pts * np.array([self.input_size[1], self.input_size[0]], dtype=np.float64)
        scale = np.array([self.scale_x, self.scale_y], dtype=np.float64)
        offset = np.array([self.offset_x, self.offset_y], dtype=np.float64)
        out: NDArray[np.float64] = pts * scale + offset
        return out


def box_in_pixels(box: tuple[float, float, float, float], frame_size: tuple[int, int],
                  pixels_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box in `frame_size` pixels (height, width) -> the same box in a reduced decode
    of that frame, `pixels_size`; the box itself when the two are one size."""
    if frame_size == pixels_size:
        return box
    kx, ky = pixels_size[1] / frame_size[1], pixels_size[0] / frame_size[0]
    return box[0] * kx, box[1] * ky, box[2] * kx, box[3] * ky


def plan_geometry(frame_size: tuple[int, int], input_size: tuple[int, int],
                  mode: ResizeMode) -> tuple[Geometry, tuple[int, int, int, int]]:
    """Geometry and the source window (x0, y0, x1, y1 in frame pixels) to resize.

    Pure: the same sizes always give the same integer windows.
    """
    fh, fw = frame_size
    ih, iw = input_size
    if mode == "stretch":
        geo = Geometry(frame_size, input_size, fw / iw, fh / ih, 0.0, 0.0, (0, 0, iw, ih))
        return geo, (0, 0, fw, fh)
    if mode == "letterbox":
        s = min(iw / fw, ih / fh)
        cw, ch = max(1, min(iw, round(fw * s))), max(1, min(ih, round(fh * s)))
        px, py = (iw - cw) // 2, (ih - ch) // 2
        sx, sy = fw / cw, fh / ch
        geo = Geometry(frame_size, input_size, sx, sy, -px * sx, -py * sy,
                       (px, py, px + cw, py + ch))
        return geo, (0, 0, fw, fh)
    if mode == "crop":
        s = max(iw / fw, ih / fh)
        cw, ch = max(1, min(fw, round(iw / s))), max(1, min(fh, round(ih / s)))
        x0, y0 = (fw - cw) // 2, (fh - ch) // 2
        geo = Geometry(frame_size, input_size, cw / iw, ch / ih, float(x0), float(y0),
                       (0, 0, iw, ih))
        return geo, (x0, y0, x0 + cw, y0 + ch)
    raise ValueError(f"preprocess.mode must be one of {', '.join(MODES)}, got {mode!r}")


@dataclass(frozen=True)
class Plan:
    """Everything per frame size, computed once."""

    frame_shape: tuple[int, ...]
    geometry: Geometry
    passthrough: bool
    window: tuple[int, int, int, int]  # source crop, frame pixels
    interpolation: int
    resized: NDArray[np.uint8]  # where cv2.resize writes (a view of a buffer)
    convert: int | None  # cvtColor code from `resized`'s buffer into `output`, or None
    resize_buffer: NDArray[np.uint8]
    output: NDArray[np.uint8]  # (H, W, C) returned
    halvings: tuple[NDArray[np.uint8], ...] = ()  # 2x averaging steps before `resized`


class Preprocessor:
    """Built once at start-up for one model input; call it on each frame."""

    def __init__(self, input_size: tuple[int, int], channels: int = 3, *,
                 mode: ResizeMode = "stretch", pad_value: int | tuple[int, ...] = 0,
                 color_order: ColorOrder = "rgb", frame_size: tuple[int, int] | None = None,
                 interpolation: Interpolation = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"preprocess.mode must be one of {', '.join(MODES)}, got {mode!r}")
        if channels not in (1, 3):
            raise ValueError(f"model input has {channels} channels; edged feeds 1 (grey) or 3")
        if color_order not in ("rgb", "bgr"):
            raise ValueError(f"preprocess.color_order must be 'rgb' or 'bgr', got {color_order!r}")
        if interpolation not in ("auto", *_INTERP):
            raise ValueError(f"preprocess.interpolation must be auto, area, linear or nearest, "
                             f"got {interpolation!r}")
        ih, iw = (int(v) for v in input_size)
        if ih < 1 or iw < 1:
            raise ValueError(f"model input size must be positive, got {input_size}")
        self.input_size = (ih, iw)
        self.channels, self.mode, self.color_order = channels, mode, color_order
        self.interpolation = interpolation
        pads = (pad_value,) if isinstance(pad_value, int) else tuple(pad_value)
        if len(pads) not in (1, 3) or any(not 0 <= int(p) <= 255 for p in pads):
            raise ValueError(f"preprocess.pad_value must be 0..255 or three of them, "
                             f"got {pad_value!r}")
        rgb_pad = pads * 3 if len(pads) == 1 else pads
        if channels == 1:  # the grey a padded RGB pixel would become
            self._pad: tuple[int, ...] = (round(0.299 * rgb_pad[0] + 0.587 * rgb_pad[1]
                                                + 0.114 * rgb_pad[2]),)
        else:
            self._pad = tuple(rgb_pad[::-1]) if color_order == "bgr" else tuple(rgb_pad)
        self._plan: Plan | None = None
        self._plans: dict[tuple[int, ...], Plan] = {}
        if frame_size is not None:
            self._plan = self.plan((int(frame_size[0]), int(frame_size[1]), 3))

    @classmethod
    def for_input(cls, t: TensorInfo, **options: object) -> Preprocessor:
        """For an NHWC image input tensor (its height, width and channels)."""
        if len(t.shape) != 4:
            raise ValueError(f"input tensor {t.name!r}: shape {list(t.shape)} is not "
                             f"[1, height, width, channels]")
        return cls((t.shape[1], t.shape[2]), input_channels(t), **options)  # type: ignore[arg-type]

    @property
    def geometry(self) -> Geometry | None:
        """The geometry of the current frame size (None before the first frame
        when the frame size was not given)."""
        return self._plan.geometry if self._plan else None

    def plan(self, frame_shape: tuple[int, ...]) -> Plan:
        """The plan for frames of `frame_shape` ((h, w) grey or (h, w, 3) RGB)."""
        fh, fw = frame_shape[0], frame_shape[1]
        grey_in = len(frame_shape) == 2 or frame_shape[2] == 1
        ih, iw = self.input_size
        geo, window = plan_geometry((fh, fw), self.input_size, self.mode)
        x0, y0, x1, y1 = window
        cx0, cy0, cx1, cy1 = geo.content
        src_w, src_h, dst_w, dst_h = x1 - x0, y1 - y0, cx1 - cx0, cy1 - cy0
        if self.interpolation != "auto":
            interp = _INTERP[self.interpolation]
        elif dst_w <= src_w and dst_h <= src_h:
            steps = halving_steps((src_h, src_w), (dst_h, dst_w))
            # Within 2x (after halvings or from the start): linear changes the model's
            # answers less than moving the frame by a pixel does, and is 5-10x cheaper
            # (320x240 -> 224x224: 80 us against 523, scripts/jpeg_decode.py; the
            # agreement: scripts/resize_agreement.py).
            # An odd side still over 2x keeps the exact average.
            small = steps[-1][0] <= 2 * dst_h and steps[-1][1] <= 2 * dst_w
            interp = cv2.INTER_LINEAR if small else cv2.INTER_AREA
        else:
            interp = cv2.INTER_LINEAR
        channels_in = () if grey_in else (3,)
        halvings = tuple(np.empty((h, w, *channels_in), dtype=np.uint8) for h, w in
                         halving_steps((src_h, src_w), (dst_h, dst_w))[1:]
                         ) if self.interpolation == "auto" else ()
        same_size = (fh, fw) == (ih, iw)
        want_grey = self.channels == 1
        passthrough = same_size and (want_grey == grey_in) and (
            want_grey or self.color_order == "rgb")
        # The resize keeps the frame's channels; a conversion (if any) goes to output.
        convert: int | None = None
        if want_grey and not grey_in:
            convert = cv2.COLOR_RGB2GRAY
        elif not want_grey and grey_in:
            convert = cv2.COLOR_GRAY2BGR if self.color_order == "bgr" else cv2.COLOR_GRAY2RGB
        elif not want_grey and self.color_order == "bgr":
            convert = cv2.COLOR_RGB2BGR
        output = np.empty((ih, iw, self.channels), dtype=np.uint8)
        output[...] = np.asarray(self._pad, dtype=np.uint8)
        if convert is None:
            resize_buffer = output if not want_grey else output[..., 0]
        else:
            resize_buffer = np.empty((ih, iw) if grey_in else (ih, iw, 3), dtype=np.uint8)
            # Padding goes through the conversion too, so paint it in frame colours.
            resize_buffer[...] = (self._pad[0] if grey_in or want_grey
                                  else np.asarray(self._frame_pad(), dtype=np.uint8))
        resized = resize_buffer[cy0:cy1, cx0:cx1]
        if not passthrough:
            via = "".join(f"{b.shape[1]}x{b.shape[0]} (halved) -> " for b in halvings)
            log.debug("preprocess plan: frame %dx%d -> %sinput %dx%d (%s, %s)", fw, fh, via,
                      iw, ih, self.mode, "area" if interp == cv2.INTER_AREA else "linear")
        return Plan(tuple(frame_shape), geo, passthrough, window, interp, resized, convert,
                    resize_buffer, output, halvings)

    def _frame_pad(self) -> tuple[int, ...]:
        # The pad in the frame's (RGB) order, before any colour conversion.
        return tuple(self._pad[::-1]) if self.color_order == "bgr" else self._pad

    def __call__(self, pixels: NDArray[np.uint8], out: NDArray[np.uint8] | None = None
                 ) -> NDArray[np.uint8]:
        """Model-input pixels (H, W, C) for one RGB (or grey) frame.

        With `out` (C-contiguous, the input's size in any shape: the worker's
        slot), the pixels are written there and `out` is returned; a stretch or
        crop without colour conversion resizes straight into it, with no copy.
        """
        if out is not None and not out.flags.c_contiguous:
            raise ValueError("preprocess: the output buffer must be C-contiguous")
        plan = self._plan
        if plan is None or pixels.shape != plan.frame_shape:
            plan = self._plans.get(pixels.shape)
            if plan is None:
                # A folder of mixed sizes alternates: plan each size once, log it once.
                if self._plans:
                    log.info("frame size %s: preprocessing planned for it too", pixels.shape)
                if len(self._plans) >= _MAX_PLANS:
                    self._plans.pop(next(iter(self._plans)))
                plan = self._plans[pixels.shape] = self.plan(tuple(pixels.shape))
            self._plan = plan
        if plan.passthrough:
            if out is not None:
                np.copyto(out.reshape(pixels.shape), pixels)
                return out
            if pixels.flags.c_contiguous:
                return pixels if pixels.ndim == 3 else pixels.reshape(*pixels.shape, 1)
            np.copyto(plan.output.reshape(pixels.shape), pixels)
            return plan.output
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[..., 0]
        x0, y0, x1, y1 = plan.window
        src = pixels[y0:y1, x0:x1]
        for buffer in plan.halvings:  # bilinear at exactly 2x: pair averages (see above)
            cv2.resize(src, (buffer.shape[1], buffer.shape[0]), dst=buffer,
                       interpolation=cv2.INTER_LINEAR)
            src = buffer
        # The frame fills the whole input and needs no conversion: resize into `out`.
        direct = (out is not None and plan.convert is None
                  and plan.resized.shape[:2] == plan.output.shape[:2])
        resized = out.reshape(plan.resized.shape) if direct and out is not None else plan.resized
        if src.shape[:2] == resized.shape[:2]:
            np.copyto(resized, src)  # same size, colour work only
        else:
            cv2.resize(src, (resized.shape[1], resized.shape[0]), dst=resized,
                       interpolation=plan.interpolation)
        if direct and out is not None:
            return out
        if plan.convert is not None:
            out2d = plan.output if self.channels == 3 else plan.output[..., 0]
            cv2.cvtColor(plan.resize_buffer, plan.convert, dst=out2d)
        if out is not None:
            np.copyto(out.reshape(plan.output.shape), plan.output)
            return out
        return plan.output


def halving_steps(src: tuple[int, int], dst: tuple[int, int]) -> list[tuple[int, int]]:
    """(h, w) sizes from `src` down by exact halvings of each even side still more
    than twice `dst`'s; the first is `src` itself."""
    steps = [src]
    h, w = src
    while True:
        nh = h // 2 if h > 2 * dst[0] and h % 2 == 0 else h
        nw = w // 2 if w > 2 * dst[1] and w % 2 == 0 else w
        if (nh, nw) == (h, w):
            return steps
        h, w = nh, nw
        steps.append((h, w))
