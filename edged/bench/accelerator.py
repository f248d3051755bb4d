"""The `accelerator` row of `edged bench`: the daemon as a Coral user runs it, without a Coral.

The model runs on a delegate that claims the whole graph and sleeps a fixed
time per invoke (tests/stub_delegate/stub_delegate.c with `invoke_us`, built
here with the system's C compiler): the invoke leaves the CPU as an Edge TPU's
does (MobileNetV2 takes ~2.6 ms on a USB Accelerator), so what the row shows
is edged's own overhead around an accelerator. Its ratio is results/s times
the mean invoke time (1 / invoke is the most an accelerator allows); the CPU
per result is the daemon's and its worker's, all of which is edged's.

Then the `floor` row: the same daemon beside a stand-in that answers at once, its
camera at the most a source may offer (1000 frames/s). Nothing else holds a core
and no invoke is waited for, so its CPU per result is what this design costs a
result wherever it runs: the floor the daemon's CPU-per-result bar is read against.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.bench.daemon import MAX_SOURCE_FPS, BenchDaemon, BenchError, DaemonSpec
from edged.bench.procs import aggregate

if TYPE_CHECKING:
    from edged.bench.command import Settings

ROOT = Path(__file__).resolve().parents[2]
STUB_SOURCE = ROOT / "tests" / "stub_delegate" / "stub_delegate.c"
INVOKE_US = 2600  # a USB Accelerator's MobileNetV2 invoke
OFFER = 1.25  # frames offered, times 1 / invoke: the source never sets the pace
FLOOR_INVOKE_US = 1
NOTE = (f"accelerator: the daemon with a delegate that sleeps {INVOKE_US} us per invoke "
        "(no CPU, as an Edge TPU); ratio = results/s x mean invoke time; floor: the same "
        f"daemon beside a stand-in that answers at once, its camera at {MAX_SOURCE_FPS:.0f} "
        "frames/s")


def compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


def build_stub_delegate(directory: Path, name: str = "libstub_delegate.so") -> Path:
    """The stub delegate (tests/stub_delegate) as a shared library in `directory`: the
    one recipe, for this row and for the tests that stand it in for a Coral."""
    cc = compiler()
    if cc is None or not STUB_SOURCE.is_file():
        raise BenchError(f"the accelerator row needs a C compiler and {STUB_SOURCE} "
                         "(a checkout of edged)")
    out = directory / name
    done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(out),
                           str(STUB_SOURCE)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"building {STUB_SOURCE.name} failed: "
                         f"{(done.stderr.strip().splitlines() or ['?'])[0]}")
    return out


def stand_in(library: Path, invoke_us: int = INVOKE_US) -> dict[str, Any]:
    """A DaemonSpec's delegate settings for the stand-in accelerator built in `library`."""
    return {"delegate": "external", "external_library": str(library),
            "external_options": (("invoke_us", str(invoke_us)),)}


def accelerator_rows(model: Path, size: tuple[int, int], broker: Any, *, threads: int,
                     frames: int, runs: int) -> list[dict[str, Any]]:
    """The accelerator row, then the floor row (the module's docstring)."""
    h, w = size
    out = []
    with tempfile.TemporaryDirectory(prefix="edged-bench-accel-") as tmp:
        library = build_stub_delegate(Path(tmp))
        for row, invoke_us, fps in (("accelerator", INVOKE_US, OFFER * 1e6 / INVOKE_US),
                                    ("floor", FLOOR_INVOKE_US, MAX_SOURCE_FPS)):
            spec = DaemonSpec(str(model), threads, size, fps, **stand_in(library, invoke_us))
            measured = _measure(BenchDaemon(spec, broker[0], broker[1],
                                            f"{model.stem}-{row}"), frames, runs)
            # The accelerator's ratio: results/s against 1 / invoke; the floor has none.
            ratio = (measured["fps"] * measured["stages_us"]["invoke"] / 1e6
                     if row == "accelerator" else None)
            out.append({"model": model.name, "source": f"{w}x{h}", "row": row,
                        "title": row, **measured, "ratio": ratio, "offered_fps": fps,
                        "invoke_us_configured": invoke_us})
    return out


def _measure(daemon: BenchDaemon, frames: int, runs: int) -> dict[str, Any]:
    results = []
    try:
        daemon.warm_up(frames)
        for _ in range(runs):
            run = daemon.run(frames)[0]
            cpu = run["cpu_us_per_result"]
            run["cpu_us_per_result"] = {"daemon": cpu["daemon"], "worker": cpu["worker"],
                                        "edged": cpu["daemon"] + cpu["worker"]}
            results.append(run)
    finally:
        daemon.stop()
    return aggregate(results)


def accelerator_section(s: Settings, model: Path, size: tuple[int, int], broker: Any,
                        notes: list[str]) -> list[dict[str, Any]]:
    """The row for `edged bench`, or a note saying why it is left out (no compiler, no
    checkout): the other rows still stand."""
    try:
        rows = accelerator_rows(model, size, broker, threads=s.threads, frames=s.frames,
                                runs=s.runs)
    except BenchError as exc:
        notes.append(f"accelerator row left out: {exc}")
        return []
    notes.append(NOTE)
    return rows
