"""What one frame of the events engine costs, by object count, and against another revision.

    python scripts/events_cost.py                      # this tree: 1, 5 and 50 objects a frame
    python scripts/events_cost.py --against 85b7c1d    # and that revision's engine, interleaved

The scene is `edged bench`'s events_50_detections row (objects walking through
3 zones and across a line, the detections made beforehand), cut to the first
N objects. It is written out here rather than imported, so that an older tree
whose bench lacks it can be measured the same way: each measurement runs in a
child that imports `edged` from the tree under test. The pairs are
interleaved (this tree, the other, again), so the host's drift falls on both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COUNTS = (1, 5, 50)
FRAMES = 300  # per batch; the child reports the median of its batches


def measure(objects: int, batches: int) -> float:
    """Microseconds per frame, median of `batches` batches, with `edged` from sys.path."""
    from edged.decode.results import Detection
    from edged.events.engine import EventEngine
    from edged.events.zones import Line, Zone

    zones = [Zone(f"z{i}", ((i * 600.0, 0.0), (i * 600.0 + 500, 0.0), (i * 600.0 + 500, 1080.0),
                            (i * 600.0, 1080.0))) for i in range(3)]
    engine = EventEngine(zones=zones, lines=[Line("gate", (960.0, 0.0), (960.0, 1080.0))])
    scenes = [[Detection(i % 3, ("person", "car", "dog")[i % 3], 0.8,
                         ((i * 37 + 4 * f) % 1800.0, i * 20.0, (i * 37 + 4 * f) % 1800.0 + 60,
                          i * 20.0 + 80)) for i in range(objects)] for f in range(450)]
    frame = 0
    for frame in range(20):
        engine.step(scenes[frame], frame / 30, (1080, 1920))
    per_frame = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(FRAMES):
            frame += 1
            engine.step(scenes[frame % 450], frame / 30, (1080, 1920))
        per_frame.append((time.perf_counter() - t0) / FRAMES * 1e6)
    return statistics.median(per_frame)


def child(tree: Path, batches: int) -> None:
    sys.path.insert(0, str(tree))
    print(json.dumps({n: measure(n, batches) for n in COUNTS}))


def run(tree: Path, batches: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", str(tree), "--batches",
                          str(batches)], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", help="a git revision whose engine to measure beside this one")
    p.add_argument("--pairs", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--batches", type=int, default=5, help="batches per measurement")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.batches)
        return 0
    with tempfile.TemporaryDirectory(prefix="events-cost-") as tmp:
        trees = {"this tree": ROOT}
        if args.against:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.against, "edged"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            trees[args.against] = Path(tmp)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.pairs):
            for name, tree in trees.items():
                runs[name].append(run(tree, args.batches))
    print(f"us per frame, median of {args.batches} x {FRAMES} frames; "
          f"{args.pairs} interleaved rounds (min-max)")
    for name, results in runs.items():
        cells = []
        for n in COUNTS:
            values = [r[str(n)] for r in results]
            cells.append(f"{n} objects {statistics.median(values):.0f} "
                         f"({min(values):.0f}-{max(values):.0f})")
        print(f"  {name:<12} " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
