"""What a JPEG camera's frame costs before the model: decode and resize (issue 21).

For each frame size, the same JPEGs three ways, interleaved run by run, on one
core: OpenCV's whole decode + BGR->RGB (edged before `source.jpeg_decode`),
simplejpeg's whole decode (`jpeg_decode = "full"`), and the reduced decode
(`"reduced"`, the default), each followed by edged's resize to the model's
input (`Preprocessor`, interpolation auto); and 1/8 whatever the model needs,
the floor: the entropy decoding of every coefficient no reduction skips.
Frames: the real photographs in ../shared/models (cat_720p.jpg, cat_1080p.jpg,
and cat.bmp encoded at 640x480) when present, else a synthetic scene; quality
90 where edged encodes them.

Then libjpeg-turbo's M/8 decode factors on the 720p JPEG, and the resize's steps
(INTER_AREA against bilinear) on random frames.

    .venv/bin/python scripts/jpeg_decode.py [--model-size 224] [--runs 7] [--frames 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from edged.preprocess import Preprocessor
from edged.sources.jpeg import JpegDecoder

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models"
SIZES = ((480, 640), (720, 1280), (1080, 1920))


def _encode(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(buf)


def jpeg_of(size: tuple[int, int]) -> tuple[bytes, str]:
    """A JPEG of `size` (height, width) and where it came from."""
    name = {(720, 1280): "cat_720p.jpg", (1080, 1920): "cat_1080p.jpg"}.get(size)
    if name and (SHARED / name).is_file():
        return (SHARED / name).read_bytes(), name
    if (SHARED / "cat.bmp").is_file():
        photo = cv2.cvtColor(cv2.imread(str(SHARED / "cat.bmp")), cv2.COLOR_BGR2RGB)
        return _encode(cv2.resize(photo, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)), \
            "cat.bmp, encoded"
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    scene = np.stack([x * 255 // w, y * 255 // h, (x ^ y) & 255], -1).astype(np.uint8)
    return _encode(scene), "synthetic"


def per_frame_us(step: Callable[[], object], frames: int) -> float:
    t0 = time.perf_counter()
    for _ in range(frames):
        step()
    return (time.perf_counter() - t0) / frames * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the capture's
    cv2.setNumThreads(1)
    need = (args.model_size, args.model_size)
    resize = Preprocessor(need, 3)
    out = np.empty((*need, 3), np.uint8)
    whole, reduced = JpegDecoder(), JpegDecoder(need)

    def opencv(data: bytes) -> None:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), out=out)

    def decoded(decoder: JpegDecoder) -> Callable[[bytes], None]:
        def run(data: bytes) -> None:
            picture = decoder(data)
            assert picture is not None
            resize(picture.pixels, out=out)
        return run

    # 1/8 whatever the need: the floor a JPEG's entropy decoding sets.
    ways = {"opencv whole": opencv, "simplejpeg whole": decoded(whole),
            "reduced (edged)": decoded(reduced), "1/8 (floor)": decoded(JpegDecoder((1, 1)))}
    print(f"decode + resize to {need[1]}x{need[0]}, microseconds per frame, one core, median "
          f"of {args.runs} interleaved runs x {args.frames} frames (min-max)\n")
    print("| frames | JPEG | decoded at | " + " | ".join(ways) + " | reduced / opencv |")
    print("|---|---|---|" + "---|" * (len(ways) + 1))
    for size in SIZES:
        data, origin = jpeg_of(size)
        times: dict[str, list[float]] = {way: [] for way in ways}
        for way in ways.values():
            way(data)  # warm: the plan for this frame size, libjpeg's tables
        for _ in range(args.runs):
            for way, run in ways.items():
                times[way].append(per_frame_us(lambda r=run, d=data: r(d), args.frames))
        small = reduced(data)
        assert small is not None
        at = f"{small.pixels.shape[1]}x{small.pixels.shape[0]}"
        cells = [f"{np.median(t):.0f} ({min(t):.0f}-{max(t):.0f})" for t in times.values()]
        ratio = np.median(times["reduced (edged)"]) / np.median(times["opencv whole"])
        print(f"| {size[1]}x{size[0]} | {origin}, {len(data) // 1024} kB | {at} | "
              + " | ".join(cells) + f" | {ratio:.2f} |")
    factors(args.runs, args.frames)
    resize_steps(args.runs, args.frames)
    return 0


def median_us(step: Callable[[], object], runs: int, frames: int) -> float:
    step()
    return float(np.median([per_frame_us(step, frames) for _ in range(runs)]))


def factors(runs: int, frames: int) -> None:
    """Why edged decodes at powers of two only: libjpeg-turbo's other M/8 factors."""
    data, origin = jpeg_of((720, 1280))
    h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    print(f"\ndecode alone at M/8 of its size ({origin}), microseconds, median of {runs}:")
    for m in range(8, 0, -1):
        mh, mw = -(-h * m // 8), -(-w * m // 8)
        us = median_us(lambda mh=mh, mw=mw, m=m: simplejpeg.decode_jpeg(
            data, colorspace="RGB", strict=False, min_height=mh, min_width=mw,
            min_factor=8 / m), runs, frames)
        print(f"  {m}/8 ({mw}x{mh}): {us:.0f}")


def resize_steps(runs: int, frames: int) -> None:
    """The resize's steps (edged.preprocess.resize): INTER_AREA against bilinear."""
    rng = np.random.default_rng(0)
    print(f"\nresize steps of random frames, microseconds, median of {runs}: area / linear")
    for (h, w), (th, tw) in (((360, 640), (360, 320)), ((1080, 1920), (540, 960)),
                             ((240, 320), (224, 224))):
        src = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        area, linear = (median_us(lambda i=i, a=src, to=(tw, th): cv2.resize(
            a, to, interpolation=i), runs, frames) for i in (cv2.INTER_AREA, cv2.INTER_LINEAR))
        print(f"  {w}x{h} -> {tw}x{th}: {area:.0f} / {linear:.0f}")


if __name__ == "__main__":
    sys.exit(main())
