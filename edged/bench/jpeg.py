"""The `jpeg` rows of `edged bench`: the daemon fed by an MJPEG camera over HTTP.

For each camera size of `--sizes`, an MJPEG server child process
(`edged.bench.jpegserver`) offers 1.25 x the model's limit frame rate, and two
daemons read it, run by run interleaved with a limit row: one with
`source.jpeg_decode = "reduced"` (the default: each JPEG decoded at 1/2-1/8 for
the model's input) and one with `"full"` (decoded whole, then resized). The
decode is the daemon's pipeline thread's work (for the frames it takes), so it
shows in the daemon's CPU per result and, with the interpreter on every core,
in the ratio.

Then 1, 2 and 4 such cameras (together 1.25 x 1 / invoke) before the stand-in
accelerator of the `accelerator` row, decoding reduced: a Coral user's IP cameras,
where the invoke leaves the CPU and the JPEG decodes are what the daemon's cores
do; ratio = results/s x the mean invoke time, as on the accelerator row.

Last, 4 cameras before it, one daemon with `source.jpeg_decode_thread =
"pipeline"` (each JPEG decoded by the pipeline thread once taken, in turn) and one
with `"auto"` (`edged.sources.decodeplace`): together at 0.9 x 1 / invoke, where
the accelerator sets the pace, and before a stand-in taking 1.0 ms an invoke at
0.6 x, where the pipeline decoding every camera's frames sets it. Ratio =
results/s over the frames offered.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edged.bench import accelerator
from edged.bench.cameras import spread, spread_figures
from edged.bench.command import OFFER, Settings, add_ceilings
from edged.bench.daemon import MAX_SOURCE_FPS, BenchDaemon, BenchError, DaemonSpec
from edged.bench.procs import RowProcess, aggregate
from edged.bench.rows import RowSpec
from edged.system.childproc import stop_process

WAYS = ("reduced", "full")
ACCELERATED = (1, 2, 4)  # cameras before the stand-in accelerator (--quick: 1 and 2)
PLACED = 4  # cameras of the decode-thread rows
# (stand-in invoke us, frames offered together x 1 / invoke): the accelerator sets the
# pace (a MobileNetV2 on a Coral, every frame taken); then one 2.6 x faster (a small
# model), where a pipeline decoding every camera's 1080p JPEGs in turn sets it.
REGIMES = ((accelerator.INVOKE_US, 0.9), (1000, 0.6))
PLACES = ("pipeline", "auto")  # source.jpeg_decode_thread
NOTE = ("jpeg: the daemon reading an MJPEG camera over HTTP (a child process serving the "
        "synthetic pattern as quality-85 JPEGs at 1.25 x the limit), source.jpeg_decode "
        "reduced and full; ratio = results/s over the limit row of the same runs; "
        "accel N cam: N such cameras, together 1.25 x 1 / invoke, before the accelerator "
        "row's stand-in; ratio = results/s x mean invoke time; 4 cam Xms pipe / auto: "
        "4 cameras before a stand-in taking X ms an invoke (2.6: together 0.9 x 1 / invoke; "
        "1.0: 0.6 x), source.jpeg_decode_thread pipeline and auto; ratio = results/s over "
        "the frames offered")


class JpegCamera:
    """The MJPEG server child process for one frame size and rate."""

    def __init__(self, size: tuple[int, int], fps: float) -> None:
        h, w = size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edged.bench.jpegserver", str(w), str(h), f"{fps:.3f}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            stop_process(self.proc, 5.0)
            raise BenchError(f"the MJPEG camera did not start: {line or self.proc.stderr}")
        self.url = f"http://127.0.0.1:{line}/stream.mjpg"

    def close(self) -> None:
        stop_process(self.proc, 5.0)


def jpeg_rows(s: Settings, model: Path, size: tuple[int, int], broker: Any
              ) -> list[dict[str, Any]]:
    limit = RowProcess(RowSpec("limit", str(model), s.threads, size, s.runtime, s.delegate))
    daemons: dict[str, BenchDaemon] = {}
    camera = None
    runs: dict[str, list[dict[str, Any]]] = {"limit": [], **{way: [] for way in WAYS}}
    h, w = size
    try:
        limit.run(max(20, s.frames // 4))  # warm-up
        offered = min(MAX_SOURCE_FPS, OFFER * limit.run(s.frames)["fps"])
        camera = JpegCamera(size, offered)
        for way in WAYS:
            daemons[way] = BenchDaemon(
                DaemonSpec(str(model), s.threads, size, offered, s.runtime, s.delegate,
                           client_id=f"edged-bench-jpeg-{way}", source_uri=camera.url,
                           jpeg_decode=way),
                broker[0], broker[1], f"{model.stem}-{w}x{h}-jpeg-{way}")
            daemons[way].warm_up(s.frames)  # paused after
        for _ in range(s.runs):
            runs["limit"].append(limit.run(s.frames))
            for way, daemon in daemons.items():
                runs[way].append(daemon.run(s.frames)[0])
    finally:
        limit.close()
        for daemon in daemons.values():
            daemon.stop()
        if camera is not None:
            camera.close()
    label = f"{w}x{h} MJPEG"
    base = aggregate(runs["limit"])
    rows = [{"model": model.name, "source": label, "row": "limit", "title": "limit", **base,
             "ratio": 1.0}]
    for way in WAYS:
        row = aggregate(runs[way])
        rows.append({"model": model.name, "source": label, "row": "jpeg",
                     "title": f"jpeg {way}", **row, "offered_fps": offered,
                     "ratio": row["fps"] / base["fps"] if base["fps"] else None})
        add_ceilings(rows[-1], base["fps"], s.threads)
    return rows


def accelerated_rows(s: Settings, model: Path, size: tuple[int, int], broker: Any
                     ) -> list[dict[str, Any]]:
    h, w = size
    total = accelerator.OFFER * 1e6 / accelerator.INVOKE_US
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edged-bench-jpeg-") as tmp:
        delegate = accelerator.stand_in(accelerator.build_stub_delegate(Path(tmp)))
        for n in ACCELERATED[:2] if s.quick else ACCELERATED:
            camera, daemon, runs = JpegCamera(size, total / n), None, []
            try:
                daemon = BenchDaemon(DaemonSpec(
                    str(model), s.threads, size, total / n, **delegate,
                    cameras=n if n > 1 else 0, client_id=f"edged-bench-jpeg-accel{n}",
                    source_uri=camera.url), broker[0], broker[1],
                    f"{model.stem}-{w}x{h}-jpeg-accel{n}")
                daemon.warm_up(s.frames)
                for _ in range(s.runs):
                    run, received = daemon.run(s.frames)
                    run["spread"] = spread(received, n) if n > 1 else 0.0
                    runs.append(run)
            finally:
                if daemon is not None:
                    daemon.stop()
                camera.close()
            row = aggregate(runs)
            spreads = [r["spread"] for r in runs]
            rows.append({"model": model.name, "source": f"{w}x{h} MJPEG", "row": "jpeg",
                         "title": f"accel {n} cam", **row, "offered_fps": total,
                         "ratio": row["fps"] * row["stages_us"]["invoke"] / 1e6,
                         **(spread_figures(spreads) if n > 1 else {})})
    return rows


def placement_rows(s: Settings, model: Path, size: tuple[int, int], broker: Any
                   ) -> list[dict[str, Any]]:
    """`PLACED` cameras before the stand-in accelerator, for each of `REGIMES`, with
    `source.jpeg_decode_thread` pipeline and auto, interleaved run by run."""
    h, w = size
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edged-bench-jpeg-") as tmp:
        library = accelerator.build_stub_delegate(Path(tmp))
        for invoke_us, offer in REGIMES[1:] if s.quick else REGIMES:
            total = offer * 1e6 / invoke_us
            runs: dict[str, list[dict[str, Any]]] = {way: [] for way in PLACES}
            daemons: dict[str, BenchDaemon] = {}
            camera = JpegCamera(size, total / PLACED)
            try:
                for way in PLACES:
                    daemons[way] = BenchDaemon(DaemonSpec(
                        str(model), s.threads, size, total / PLACED,
                        **accelerator.stand_in(library, invoke_us), cameras=PLACED,
                        client_id=f"edged-bench-jpeg-{way}", source_uri=camera.url,
                        jpeg_decode_thread=way), broker[0], broker[1],
                        f"{model.stem}-{w}x{h}-jpeg-{way}-{invoke_us}")
                    # Long enough for auto's first windows (30 frames a camera) to decide.
                    daemons[way].measure(max(40, s.frames // 2), keep=False)
                for _ in range(s.runs):
                    for way, daemon in daemons.items():
                        run, received = daemon.run(s.frames)
                        run["spread"] = spread(received, PLACED)
                        runs[way].append(run)
            finally:
                for daemon in daemons.values():
                    daemon.stop()
                camera.close()
            for way in PLACES:
                row = aggregate(runs[way])
                rows.append({"model": model.name, "source": f"{w}x{h} MJPEG", "row": "jpeg",
                             "title": f"{PLACED} cam {invoke_us / 1000:.1f}ms {way[:4]}", **row,
                             "offered_fps": total, "ratio": row["fps"] / total,
                             **spread_figures([r["spread"] for r in runs[way]])})
    return rows


def jpeg_section(s: Settings, model: Path, model_size: tuple[int, int], broker: Any,
                 notes: list[str]) -> list[dict[str, Any]]:
    """The rows for each camera size of `--sizes` larger than the model's input."""
    rows: list[dict[str, Any]] = []
    for size in (c for c in s.sizes if c != model_size):
        for kind, make in (("jpeg", jpeg_rows), ("jpeg accelerator", accelerated_rows),
                           ("decode thread", placement_rows)):
            try:
                rows += make(s, model, size, broker)
            except BenchError as exc:
                notes.append(f"{kind} rows at {size[1]}x{size[0]} left out: {exc}")
    notes.append(NOTE)
    return rows
