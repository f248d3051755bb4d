"""Does the fast camera-frame resize change what the model says? (issue 21)

Runs MobileNetV2-224 (../shared/models) on camera-size frames resized two ways:
one exact INTER_AREA step (`preprocess.interpolation = "area"`, the reference)
and edged's default (`auto`: 2x2 averaging halvings, then bilinear). Frames:
crops of the real photographs in ../shared/models brought to 640x480,
1280x720 and 1920x1080, and synthetic scenes (textures, stripes, shapes).
Prints the top-1 agreement and the score differences, per frame size.

The last column is a JPEG camera's case (`source.jpeg_decode`): each frame as a
quality-90 JPEG, decoded at 1/2-1/4 for the model and resized (edged), against
the same JPEG decoded whole and resized in one exact INTER_AREA step.

    .venv/bin/python scripts/resize_agreement.py [--frames-per-size N] [--sizes 640x480,...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from edged.bench.table import parse_sizes
from edged.inference.model import Model
from edged.inference.runtime import select_runtime
from edged.numerics.quantize import PixelQuantizer
from edged.preprocess import Preprocessor
from edged.sources.jpeg import JpegDecoder

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models"
PHOTOS = ("cat.bmp", "grace_hopper.bmp", "squat.bmp", "cat_720p.jpg", "cat_1080p.jpg")


def photo_frames(size: tuple[int, int], n: int, rng: np.random.Generator
                 ) -> list[NDArray[np.uint8]]:
    """Random crops (40-100 % of a side) of the photographs, brought to `size`."""
    photos = [cv2.cvtColor(cv2.imread(str(SHARED / p)), cv2.COLOR_BGR2RGB) for p in PHOTOS]
    frames = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        f = rng.uniform(0.4, 1.0)
        ch, cw = int(h * f), int(w * f)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = photo[y:y + ch, x:x + cw]
        frames.append(cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_CUBIC))
    return frames


def synthetic_frames(size: tuple[int, int], n: int, rng: np.random.Generator
                     ) -> list[NDArray[np.uint8]]:
    """Noise textures at several grain sizes, stripes and filled shapes."""
    h, w = size
    frames = []
    for i in range(n):
        grain = int(rng.choice([1, 2, 4, 8, 16]))
        base = rng.integers(0, 256, (h // grain + 1, w // grain + 1, 3), dtype=np.uint8)
        frame = np.ascontiguousarray(np.repeat(np.repeat(base, grain, 0), grain, 1)[:h, :w])
        if i % 3 == 1:
            period = int(rng.integers(2, 9))
            frame[:, (np.arange(w) // period) % 2 == 0] //= 3
        for _ in range(int(rng.integers(1, 6))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(frame, centre, int(rng.integers(h // 20, h // 3)), colour, -1)
        frames.append(frame)
    return frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames-per-size", type=int, default=200)
    parser.add_argument("--sizes", default="640x480,1280x720,1920x1080",
                        help="camera frame sizes, WxH, comma-separated")
    args = parser.parse_args()
    sizes = parse_sizes(args.sizes)
    model_path = SHARED / "mobilenet_v2_1.0_224_quant.tflite"
    if not model_path.is_file():
        print(f"{model_path} is absent: this measurement needs ../shared/models", file=sys.stderr)
        return 1
    model = Model.load(model_path, select_runtime())
    quantizer = PixelQuantizer(model.inputs[0])
    exact = Preprocessor((224, 224), 3, interpolation="area")
    ways = {"auto": Preprocessor((224, 224), 3),
            "linear": Preprocessor((224, 224), 3, interpolation="linear")}
    rng = np.random.default_rng(21)
    print("Top-1 agreement with one exact INTER_AREA step (and the mean / max change of "
          "that class's score). 'area, 1 px' is the exact step on the frame moved by one "
          "pixel: how often the top class flips under a change nobody would see.\n")
    print("| frames | size | auto (edged) | linear alone | area, 1 px | auto, where area's "
          "top-1 score >= 0.5 | JPEG reduced + auto (edged) vs whole + area |")
    print("|---|---|---|---|---|---|---|")
    whole, reduced = JpegDecoder(), JpegDecoder((224, 224))
    for kind, make in (("photos", photo_frames), ("synthetic", synthetic_frames)):
        for size in sizes:
            frames = make(size, args.frames_per_size, rng)
            same: dict[str, int] = {"auto": 0, "linear": 0, "shift": 0, "jpeg": 0}
            diffs: dict[str, list[float]] = {k: [] for k in same}
            sure, sure_same = 0, 0
            for frame in frames:
                ref = model.run(exact(frame), quantizer)[0].reshape(-1).copy()
                top = int(np.argmax(ref))
                shifted = np.ascontiguousarray(np.pad(frame, ((1, 0), (1, 0), (0, 0)),
                                                      mode="edge")[:-1, :-1])
                for way, pixels in (("auto", ways["auto"](frame)),
                                    ("linear", ways["linear"](frame)),
                                    ("shift", exact(shifted))):
                    got = model.run(pixels, quantizer)[0].reshape(-1)
                    same[way] += top == int(np.argmax(got))
                    if way == "auto" and ref[top] >= 0.5:
                        sure += 1
                        sure_same += top == int(np.argmax(got))
                    diffs[way].append(abs(float(got[top]) - float(ref[top])))
                ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                        [cv2.IMWRITE_JPEG_QUALITY, 90])
                big, small = whole(bytes(data)), reduced(bytes(data))
                assert ok and big is not None and small is not None
                ref = model.run(exact(big.pixels), quantizer)[0].reshape(-1).copy()
                got = model.run(ways["auto"](small.pixels), quantizer)[0].reshape(-1)
                top = int(np.argmax(ref))
                same["jpeg"] += top == int(np.argmax(got))
                diffs["jpeg"].append(abs(float(got[top]) - float(ref[top])))
            cells = [f"{100 * same[w] / len(frames):.1f} % ({np.mean(diffs[w]):.3f} / "
                     f"{np.max(diffs[w]):.3f})" for w in same]
            cells.insert(3, f"{sure_same}/{sure}")
            print(f"| {kind} | {size[1]}x{size[0]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
