"""The `cascade` row of `edged bench`: a detector cascaded into a classifier.

The committed scene detector (tests/data/scene) finds one object per colour
channel; on the synthetic source's gradient every channel is lit, so each
frame has exactly three detections, and the classifier (the model measured)
runs on the three crops in the detector's worker. The limit of a frame is
then one detector invoke and three classifier invokes, each at its own limit
row's speed (one thread, interleaved with the daemon's runs): the row's ratio
is the daemon's results/s over 1 / (1/detector + 3/classifier).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged.bench.daemon import MAX_SOURCE_FPS, BenchDaemon, DaemonSpec
from edged.bench.procs import RowProcess, aggregate
from edged.bench.rows import RowSpec

if TYPE_CHECKING:
    from edged.bench.command import Settings

# Committed with the tests (as the bench's default model is), small and exact.
DETECTOR = Path(__file__).resolve().parents[2] / "tests/data/scene/detect_centroid_int8.tflite"

CROPS = 3
OFFER = 1.25  # times the combined limit's frames/s
DETECTOR_SIZE = (64, 64)
NOTE = ("cascade: the scene detector's 3 detections a frame classified by the model, in one "
        "worker, 1 thread; ratio = results/s / (1 / (1/detector limit + 3/classifier limit))")


def cascade_section(s: Settings, classifier: Path, classifier_size: tuple[int, int],
                    broker: Any, notes: list[str]) -> list[dict[str, Any]]:
    detector = DETECTOR
    limits = {"detector": RowProcess(RowSpec("limit", str(detector), 1, DETECTOR_SIZE,
                                             s.runtime, s.delegate)),
              "classifier": RowProcess(RowSpec("limit", str(classifier), 1, classifier_size,
                                               s.runtime, s.delegate))}
    runs: dict[str, list[dict[str, Any]]] = {"detector": [], "classifier": [], "cascade": []}
    daemon = None
    try:
        fps = {}
        for name, row in limits.items():
            row.run(max(20, s.frames // 4))  # warm-up
            fps[name] = row.run(s.frames)["fps"]
        offered = min(MAX_SOURCE_FPS, OFFER / (1 / fps["detector"] + CROPS / fps["classifier"]))
        daemon = BenchDaemon(DaemonSpec(str(detector), 1, DETECTOR_SIZE, offered, s.runtime,
                                        s.delegate, cascade=str(classifier), crops=CROPS,
                                        client_id="edged-bench-cascade"),
                             broker[0], broker[1], f"{classifier.stem}-cascade")
        daemon.warm_up(s.frames)  # paused after
        for _ in range(s.runs):
            for name, row in limits.items():
                runs[name].append(row.run(s.frames))
            runs["cascade"].append(daemon.run(s.frames)[0])
    finally:
        for row in limits.values():
            row.close()
        if daemon is not None:
            daemon.stop()
    det, cls = aggregate(runs["detector"]), aggregate(runs["classifier"])
    limit = 1 / (1 / det["fps"] + CROPS / cls["fps"])
    label = f"detector 64x64 + {CROPS} crops, 1 thread"
    rows = [{"model": detector.name, "source": label, "row": "limit",
             "title": "limit, detector", **det},
            {"model": classifier.name, "source": label, "row": "limit",
             "title": "limit, classifier", **cls},
            {"model": classifier.name, "source": label, "row": "cascade",
             "title": f"cascade ({CROPS} crops/frame)", **aggregate(runs["cascade"]),
             "cascade_limit_fps": limit, "crops": CROPS,
             "classifier_limit_us": cls["stages_us"].get("invoke")}]
    rows[0]["ratio"] = rows[1]["ratio"] = 1.0
    rows[2]["ratio"] = rows[2]["fps"] / limit
    notes.append(NOTE)
    return rows
