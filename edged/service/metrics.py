"""The stats figures as a Prometheus textfile, for node_exporter's textfile collector.

edged opens no port: node_exporter (already on most monitored hosts) reads
`*.prom` files from its `--collector.textfile.directory` and serves them with
its own metrics. The file is replaced atomically (a temporary file in the same
directory, then rename), so the collector never reads half a file.

Same figures as the stats topic, in Prometheus units: seconds, `_total` for
counters. Every sample carries `device` and `delegate` labels. `edged_up` is 1
while the daemon runs and 0 in the file a clean stop leaves behind; a crash
leaves the last file, whose age node_exporter reports as
`node_textfile_mtime_seconds` (alert on that).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from edged import __version__

log = logging.getLogger("edged.metrics")


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: Literal["gauge", "counter"]
    help: str
    figure: str  # key in the stats figures
    divisor: float = 1.0  # 1000 for ms -> s
    labels: tuple[tuple[str, str], ...] = ()


# Figures that are numbers; several quantiles share one metric name.
METRICS: Final = (
    Metric("edged_fps", "gauge", "Results per second over the last 10 s.", "fps"),
    Metric("edged_invoke_seconds", "gauge", "Model invoke time over the last 512 frames.",
           "invoke_ms_p50", 1000.0, (("quantile", "0.5"),)),
    Metric("edged_invoke_seconds", "gauge", "", "invoke_ms_p95", 1000.0, (("quantile", "0.95"),)),
    Metric("edged_latency_seconds", "gauge",
           "Capture to result handed to MQTT, over the last 512 frames.",
           "latency_ms_p50", 1000.0, (("quantile", "0.5"),)),
    Metric("edged_latency_seconds", "gauge", "", "latency_ms_p95", 1000.0,
           (("quantile", "0.95"),)),
    Metric("edged_uptime_seconds", "gauge", "Seconds since the daemon started.", "uptime_s"),
    Metric("edged_results_queued", "gauge", "Results waiting for the broker now.",
           "results_queued"),
    Metric("edged_frames_total", "counter", "Frames inferred.", "frames"),
    Metric("edged_frames_dropped_total", "counter",
           "Frames replaced in the latest-frame slot before inference took them.",
           "frames_dropped"),
    Metric("edged_results_published_total", "counter",
           "Results handed to the broker (since the last MQTT reconfiguration).",
           "results_published"),
    Metric("edged_results_dropped_total", "counter",
           "Results dropped, oldest first, while the broker was away.", "results_dropped"),
    Metric("edged_events_published_total", "counter",
           "Event messages handed to the broker (output.publish events or both).",
           "events_published"),
    Metric("edged_events_dropped_total", "counter",
           "Event messages dropped, oldest first, while the broker was away.", "events_dropped"),
    Metric("edged_worker_restarts_total", "counter", "Inference worker restarts.",
           "worker_restarts"),
    Metric("edged_source_reopens_total", "counter", "Frame source reopen attempts.",
           "source_reopens"),
    Metric("edged_failbacks_total", "counter", "Returns to the configured accelerator after "
           "a CPU fallback.", "failbacks"),
    Metric("edged_soc_temperature_celsius", "gauge", "The SoC's temperature (thermal zone 0).",
           "soc_temp_c"),
    Metric("edged_edgetpu_temperature_celsius", "gauge", "The hottest PCIe Edge TPU's "
           "temperature.", "edgetpu_temp_c"),
)

# A config with [[cameras]]: each camera's own, with a `camera` label.
CAMERA_METRICS: Final = (
    Metric("edged_camera_fps", "gauge", "A camera's results per second over the last 10 s.",
           "fps"),
    Metric("edged_camera_latency_seconds", "gauge", "A camera's capture to result handed to "
           "MQTT, median of its last 512 frames.", "latency_ms_p50", 1000.0,
           (("quantile", "0.5"),)),
    Metric("edged_camera_frames_total", "counter", "A camera's frames inferred.", "frames"),
    Metric("edged_camera_frames_dropped_total", "counter", "A camera's frames replaced in its "
           "latest-frame slot before inference took them.", "frames_dropped"),
    Metric("edged_camera_source_reopens_total", "counter", "A camera's source reopen attempts.",
           "source_reopens"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(device_id: str, figures: Mapping[str, Any], *, up: bool = True,
           model: str = "") -> str:
    """The exposition text (format 0.0.4) for one set of figures."""
    common = (("device", device_id), ("delegate", str(figures.get("delegate", ""))))
    lines: list[str] = []
    announced: set[str] = set()

    def family(name: str, kind: str, text: str) -> None:
        if name not in announced:
            announced.add(name)
            lines.extend((f"# HELP {name} {text}", f"# TYPE {name} {kind}"))

    family("edged_up", "gauge", "1 while edged runs; 0 after a clean stop.")
    lines.append(f"edged_up{_labels(common)} {int(up)}")
    family("edged_info", "gauge", "Always 1; the labels say what runs.")
    info = (*common, ("model", model), ("version", __version__))
    lines.append(f"edged_info{_labels(info)} 1")
    for m in METRICS:
        value = figures.get(m.figure)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # a figure this build does not report (or null)
        family(m.name, m.kind, m.help)
        if m.divisor != 1.0:
            # Nanosecond resolution is plenty, and 2.623 ms reads 0.002623, not
            # 0.0026230000000000003.
            value = round(value / m.divisor, 9)
        lines.append(f"{m.name}{_labels(common + m.labels)} {_number(value)}")
    family("edged_broker_connected", "gauge", "1 while connected to the MQTT broker.")
    lines.append(f"edged_broker_connected{_labels(common)} "
                 f"{int(figures.get('broker') == 'connected')}")
    fallback = figures.get("fallback")
    if isinstance(fallback, str):
        family("edged_fallback", "gauge", "1 while the model runs on the CPU instead of the "
               "configured delegate (why: the stats topic's fallback).")
        lines.append(f"edged_fallback{_labels(common)} {int(bool(fallback))}")
    throttled = figures.get("throttled")
    if isinstance(throttled, list):
        family("edged_throttled", "gauge", "1 while the board reports under-voltage or "
               "throttling (get_throttled).")
        lines.append(f"edged_throttled{_labels(common)} {int(bool(throttled))}")
    cameras = figures.get("cameras")
    if isinstance(cameras, dict):
        _camera_lines(lines, common, cameras, family)
    for key, name, text in (
            ("worker_state", "edged_worker_state",
             "Inference worker state (1 for the current one)."),
            ("source", "edged_source_state", "Frame source state (1 for the current one)."),
            ("jpeg_decoding", "edged_jpeg_decoding", "Where the JPEG cameras' frames are "
             "decoded now: camera, pipeline or mixed (1 for the current one).")):
        state = figures.get(key)
        if isinstance(state, str):
            family(name, "gauge", text)
            lines.append(f"{name}{_labels((*common, ('state', state)))} 1")
    return "\n".join(lines) + "\n"


def _camera_lines(lines: list[str], common: tuple[tuple[str, str], ...],
                  cameras: Mapping[str, Any], family: Callable[[str, str, str], None]) -> None:
    """Each camera's samples, appended to `lines` (where `family` writes its HELP)."""
    for m in CAMERA_METRICS:  # a family's samples together, camera by camera
        for camera, figures in cameras.items():
            value = figures.get(m.figure) if isinstance(figures, dict) else None
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            family(m.name, m.kind, m.help)
            value = round(value / m.divisor, 9) if m.divisor != 1.0 else value
            lines.append(f"{m.name}{_labels((*common, ('camera', camera), *m.labels))} "
                         f"{_number(value)}")
    for key, name, text in (
            ("source", "edged_camera_source_state",
             "A camera's frame source state (1 for the current one)."),
            ("jpeg_decoding", "edged_camera_jpeg_decoding", "Where a JPEG camera's frames "
             "are decoded now: camera or pipeline (1 for the current one).")):
        for camera, figures in cameras.items():
            state = figures.get(key) if isinstance(figures, dict) else None
            if isinstance(state, str):
                family(name, "gauge", text)
                lines.append(f"{name}{_labels((*common, ('camera', camera), ('state', state)))} 1")


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename. The temporary name does not end
    in `.prom`, so the collector never picks it up. No fsync: after a power
    cut an old or missing metrics file is harmless, SD-card wear every
    interval is not."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # node_exporter usually runs as another user
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Textfile:
    """Writes the metrics file; a failure is logged once per distinct reason and
    never stops the daemon (metrics are not worth an outage)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_error = ""

    def write(self, device_id: str, figures: Mapping[str, Any], *, up: bool = True,
              model: str = "") -> bool:
        try:
            write_atomic(self.path, render(device_id, figures, up=up, model=model))
        except OSError as exc:
            reason = f"metrics.textfile: cannot write {self.path}: " \
                     f"{(exc.strerror or str(exc)).lower()}"
            if reason != self.last_error:
                log.warning("%s", reason)
            self.last_error = reason
            return False
        if self.last_error:
            log.info("metrics.textfile: writing %s again", self.path)
        self.last_error = ""
        return True
