"""The daemon's figures: one dict for the stats topic, STATUS= and the textfile.

Pure reads of the running parts; nothing here changes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edged.mqtt.publisher import Publisher
from edged.service.cameras import CAPTURE_COUNTS, CameraPart, jpeg_decoding, source_state
from edged.service.group import WorkerGroup
from edged.service.stats import Stats
from edged.system.logsetup import redact_text


@dataclass(frozen=True)
class Parts:
    """What the figures are read from (any part may not exist yet)."""

    stats: Stats
    groups: Mapping[str, WorkerGroup]  # a worker and pipeline thread per model
    cameras: Sequence[CameraPart]
    publisher: Publisher | None
    reload_error: str
    failure: str = ""  # a thread of the daemon died: outranks every other error
    # Counts of the cameras a reload removed, added to the running ones': counters
    # only grow for the life of the process.
    carried: Counter[str] = field(default_factory=Counter)


def figures(p: Parts) -> dict[str, Any]:
    snap: dict[str, Any] = dict(p.stats.snapshot())
    pub = p.publisher
    counters = pub.counters() if pub else None
    snap.update(_workers(p.groups))
    snap.update({
        "results_queued": counters.queued if counters else 0,
        "results_dropped": counters.dropped if counters else 0,
        "results_published": counters.published if counters else 0,
        # Refused by the broker (MQTT 5 PUBACK: ACL, size) or too big to send at all.
        "results_rejected": counters.rejected if counters else 0,
        "results_too_large": counters.too_large if counters else 0,
        # output.publish events/both: event messages sent, and dropped in an outage.
        "events_published": counters.events_published if counters else 0,
        "events_dropped": counters.events_dropped if counters else 0,
        "mqtt_connects": counters.connects if counters else 0,
        "mqtt_connect_failures": counters.connect_failures if counters else 0,
        "broker": "connected" if counters and counters.connected else "disconnected",
        "source": source_state(p.cameras),
        "last_error": last_error(p),
        "config_reload": f"failed: {p.reload_error}" if p.reload_error else "ok",
    })
    # frames_dropped, source_reopens, frames_skipped (corrupt frames a source threw away).
    for key in CAPTURE_COUNTS:
        snap[key] = sum(part.counts()[key] for part in p.cameras)
    if (where := jpeg_decoding(p.cameras)) is not None:
        snap["jpeg_decoding"] = where
    if any(part.camera.index is not None for part in p.cameras):  # a file with [[cameras]]
        snap["cameras"] = {part.id: part.figures() for part in p.cameras}
    for key, value in p.carried.items():
        snap[key] += value
    # Retained and read by every subscriber: no secret, however a message came to hold one.
    for key in _TEXTS:
        snap[key] = redact_text(snap[key])
    return snap


_TEXTS = ("last_error", "worker_last_failure", "config_reload")
_SUMS = ("frames_lost", "failbacks", "failback_tries", "worker_restarts")


# A model with no worker (none started yet, or its start failed): the figures' meaning
# is told where they are filled in, in worker_figures.
_NO_WORKER: dict[str, Any] = {
    "model": "", "frames_lost": 0, "delegate": "none", "fallback": "", "failbacks": 0,
    "failback_tries": 0, "worker_state": "stopped", "worker_restarts": 0, "worker_pid": 0,
    "worker_last_failure": "",
}


def worker_figures(g: WorkerGroup) -> dict[str, Any]:
    """One worker's figures: where its model runs and how the worker fares."""
    sup, failback = g.supervisor, g.failback
    # Taken by a dying worker: in flight, never inferred, never published.
    figures = {**_NO_WORKER, "frames_lost": g.frames_lost}
    if failback is not None:
        # Returns to the configured accelerator after a fallback, and tries at it.
        figures.update(failbacks=failback.switches, failback_tries=failback.tries)
    if sup is not None:
        figures.update(
            model=sup.model_name, delegate=sup.info.delegate if sup.info else "none",
            # Why it is not the configured delegate (a CPU fallback, at start or later).
            fallback=sup.fallback_reason, worker_state=sup.state,
            worker_restarts=sup.restarts, worker_pid=sup.pid or 0,
            # Why the worker was last restarted; kept after it recovers (last_error is not).
            worker_last_failure=sup.last_failure)
    for key, value in g.carried.items():  # the workers a reload replaced
        figures[key] += value
    return figures


def _workers(groups: Mapping[str, WorkerGroup]) -> dict[str, Any]:
    """The device's worker figures: its one worker's, or with several models the sums
    over the workers, the first one not running or falling back (named), and under
    `models` each model's (the models on one Edge TPU: their shared worker's)."""
    workers = [(g, worker_figures(g)) for g in groups.values()]
    each = {model or "model": {**f, "model": g.supervisor.model_file(i)} if g.supervisor
            else f for g, f in workers for i, model in enumerate(g.members)}
    if len(each) <= 1:
        one = next(iter(each.values()), _NO_WORKER)
        return {k: v for k, v in one.items() if k != "model"}
    out: dict[str, Any] = {key: sum(f[key] for _, f in workers) for key in _SUMS}
    first = next(iter(each.values()))
    out["delegate"] = ", ".join(dict.fromkeys(f["delegate"] for f in each.values()))
    out["worker_pid"] = first["worker_pid"]
    states = {f["worker_state"] for f in each.values()}
    out["worker_state"] = first["worker_state"] if len(states) == 1 else next(
        f"{f['worker_state']} ({m})" for m, f in each.items() if f["worker_state"] != "running")
    for key in ("fallback", "worker_last_failure"):
        out[key] = next((f"{m}: {f[key]}" for m, f in each.items() if f[key]), "")
    out["models"] = each
    return out


def last_error(p: Parts) -> str:
    """The most relevant current problem: a dead thread, worker, source, broker, pipeline."""
    pub, groups = p.publisher, list(p.groups.values())
    sources = [f"{part.id}: {error}" if len(p.cameras) > 1 else error
               for part in p.cameras if (error := part.source_error())]
    workers = [g.supervisor.last_failure for g in groups
               if g.supervisor and g.supervisor.state != "running"]
    pipelines = [g.pipeline.last_error for g in groups if g.pipeline and g.pipeline.last_error]
    for err in (p.failure,
                workers[0] if workers else "",
                sources[0] if sources else "",
                pub.counters().last_error if pub else "",
                pipelines[0] if pipelines else ""):
        if err:
            return err
    return ""


def status_line(f: dict[str, Any], broker_why: str | None, failing: tuple[str, ...],
                reload_error: str) -> str:
    """The line `systemctl status` shows."""
    broker = f["broker"]
    if broker != "connected" and broker_why:
        broker += f" ({broker_why})"  # e.g. the TLS or authentication failure, as logged
    fallback = " (fallback)" if f.get("fallback") else ""  # why: the stats and the journal
    line = (f"{f['fps']:.1f} fps, invoke p50 {f['invoke_ms_p50']:.1f} ms, "
            f"delegate {f['delegate']}{fallback}, broker {broker}, source {f['source']}")
    if f["worker_state"] != "running":
        line += f", worker {f['worker_state']}"
    if failing:
        line += f"; unhealthy: {', '.join(failing)}"
    if reload_error:
        line += f"; reload failed: {reload_error}"
    return redact_text(line)
