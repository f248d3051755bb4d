"""SIGHUP: check the file, then apply what changed to the running daemon.

Every changed part is built first and swapped in between two frames; a part
that fails to build leaves the running ones untouched (`edged.service.reload`
plans what a change restarts; this module carries it out on a `Daemon`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edged.config import Camera, Config, ConfigError, read_config
from edged.inference.messages import ModelLoadError
from edged.mqtt.publisher import Publisher
from edged.service import lifecycle, regroup, wiring
from edged.service.cameras import CameraPart, part_for
from edged.service.delivery import Deliver
from edged.service.group import workers_in_use
from edged.service.pipeline import CameraStages, Preprocess
from edged.service.reload import (
    ReloadPlan,
    plan_camera,
    plan_reload,
    preflight,
    vanished_warnings,
    with_model_file_changed,
)

if TYPE_CHECKING:
    from edged.service.daemon import Daemon
    from edged.sources.capture import CaptureThread

log = logging.getLogger("edged")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def reload(d: Daemon) -> None:
    """SIGHUP: check the file; apply what changed, or keep running on the old config."""
    # Before READY=1 systemd is still waiting for the start: no reload to announce.
    if d.keeper.ready_sent:
        d.notifier.reloading(f"reloading {d.path}")
    try:
        cf = read_config(d.path)
        plan = plan_reload(d.cfg, cf.config)
        on_disk = regroup.replaced_on_disk(d)  # a file it runs, replaced at the same path
        if on_disk:
            plan = with_model_file_changed(plan)
        problems = preflight(cf, plan)
        if problems:
            raise ConfigError(problems)
        for warning in vanished_warnings(d.cfg, cf):
            log.warning("reload: %s", warning)
        log.info("reload: changed: %s; restarting: %s",
                 ", ".join(plan.changed) or "nothing", plan.restarts())
        _apply(d, cf.config, plan, on_disk)
    except ConfigError as exc:
        _reload_failed(d, lifecycle.located(d.path, exc.problems))
    except (ModelLoadError, ValueError, OSError) as exc:
        _reload_failed(d, (_first_line(exc),))
    else:
        d.reload_error = ""
        log.info("reload: applied")
    if d.keeper.ready_sent:
        d.notifier.ready(d._status_line())
    d._report()


def _reload_failed(d: Daemon, problems: Sequence[str]) -> None:
    for line in problems:
        log.error("reload: %s", line)
    d.reload_error = f"{len(problems)} problem(s), kept the running config: {problems[0]}"
    log.error("reload failed: still running with the previous config")


@dataclass(eq=False)
class _CameraChange:
    """What a reload builds for one camera before anything running is touched."""

    part: CameraPart  # the running one, or a new one for a camera added
    camera: Camera  # as the new file has it
    pre: Preprocess | None = None
    deliver: Deliver | None = None
    capture: CaptureThread | None = None
    reopen: bool = False  # a new source (built once every stage is)
    note: str = ""  # for the log, once applied: "added", "restarting source"
    size: tuple[int, int] = (0, 0)  # the model input its frames are made for


def _apply(d: Daemon, new: Config, plan: ReloadPlan, on_disk: set[str]) -> None:
    """Build every changed part first, then swap them in: a failure to build
    leaves the running parts untouched (a worker, which cannot be built beside
    the running one on an Edge TPU, is restored instead). A camera is restarted
    only for what changed for it, a model's worker only for what changed for
    that model; the others keep running."""
    assert d.publisher is not None
    publisher = wiring.build_publisher(new) if plan.publisher else None
    events_kept = [(part, part.event_stages.current) for part in d.cameras]
    wanted = workers_in_use(new)
    workers = regroup.plan_workers(d, wanted, on_disk)
    try:
        regroup.start_workers(d, wanted, workers)
        try:
            changes = _build_cameras(d, new, publisher or d.publisher, workers.new_models,
                                     wanted)
        except BaseException:
            for part, stage in events_kept:  # the running ones, as the new ones are not used
                part.event_stages.current = stage
            regroup.restore_workers(d, workers)
            raise
    except BaseException:
        if publisher is not None:
            publisher.stop()  # never started: this only closes its sockets
        raise
    d.cfg = new
    if publisher is not None:
        assert d.publisher is not None
        d.publisher.stop()
        publisher.take_over(d.publisher)  # queued results and counters carry over
        d._start_publisher(publisher)
    regroup.stop_workers(d, workers)
    _swap_cameras(d, changes)
    d._pace()  # a new source or a new max_fps
    d._apply_logging(new)
    d._announce()


def _build_cameras(d: Daemon, new: Config, publisher: Publisher, new_models: set[str],
                   workers: Collection[str]) -> list[_CameraChange]:
    """Each enabled camera of `new` with the stages and source its changes need
    (`new_models`: the models whose worker was restarted or started; `workers`: the
    groups the new config keeps, beside those it is about to stop)."""
    running = {part.id: part for part in d.cameras}
    changes = []
    for camera in (c for c in new.camera_list() if c.enabled):
        part = running.get(camera.id)
        added = part is None
        if part is None:
            part = part_for(camera, d.stats, d.snapshots)
        cam = None if added else plan_camera(part.camera, camera, camera.model in new_models)
        cfg, group = camera.config, d.group_of(camera.model, workers)
        info, supervisor = group.model_info(camera.model), group.supervisor
        assert info is not None and supervisor is not None
        problems = wiring.model_fit_problems(d.path, cfg, info, camera.key) \
            if cam is None or cam.deliver else []
        if problems:
            raise ConfigError(problems)
        change = _CameraChange(part, camera)
        if camera.index is not None and (cam is None or cam.restarts() != "nothing"):
            change.note = "added" if cam is None else f"restarting {cam.restarts()}"
        if cam is None or cam.preprocess:
            change.pre = wiring.build_preprocess(cfg, info)
        if cam is None or cam.deliver:
            change.deliver = wiring.build_deliver(
                cfg, supervisor, publisher, d._on_published, part.event_stages,
                fresh_events=cam is None or cam.events, camera=camera.topic_id,
                model=group.members.index(camera.model))
        # The Pi camera's ISP scales to the model input: a new input size reopens it.
        change.size = wiring.input_size(cfg, info)
        # A JPEG source decodes for the model's input (and snapshots, a cascade) too.
        change.reopen = cam is None or cam.source or (
            cfg.source.kind == "picamera2" and change.size != part.input_size) or (
            wiring.jpeg_min_size(cfg, change.size)
            != wiring.jpeg_min_size(part.camera.config, part.input_size))
        changes.append(change)
    # Sources last: every stage has been built, nothing after this can fail half-way.
    for change in (c for c in changes if c.reopen):
        part = change.part
        change.capture = wiring.build_capture(
            change.camera.config, change.size,
            first_seq=part.capture.source.frames if part.capture else 0)
    return changes


def _swap_cameras(d: Daemon, changes: list[_CameraChange]) -> None:
    """The new stages and sources in; cameras removed stopped, added started. A
    model's pipeline keeps running unless the set of its cameras changed."""
    kept = {change.part for change in changes}
    for part in d.cameras:
        if part not in kept:  # removed or switched off: its counts stay the device's
            log.info("reload: camera %s: stopped (removed or switched off)", part.id)
            part.stop()
            d._carried.update(part.counts())
    running: dict[str, CameraStages] = {}
    for group in d.groups.values():
        mine = [change.camera.id for change in changes if change.camera.model in group.cfgs]
        if group.pipeline is not None:
            running.update((lane.name, stages) for lane, stages in group.pipeline.stages.items())
            if [lane.name for lane in group.pipeline.lanes] != mine:
                group.stop_pipeline()  # the cameras kept resume at once in the new one
    for change in changes:
        change.part.camera = change.camera
    for group in d.groups.values():
        if group.pipeline is None:
            continue
        # Kept running: new stages take over between frames.
        for lane, change in enumerate(c for c in changes if c.camera.model in group.cfgs):
            if change.pre is not None:
                group.pipeline.set_preprocess(change.pre, lane)
            if change.deliver is not None:
                group.pipeline.set_deliver(change.deliver, lane)
            if change.capture is not None:
                # It waits on the new, empty buffer meanwhile.
                group.pipeline.set_feed(change.capture.buffer, lane)
    d.cameras = [change.part for change in changes]
    for change in changes:
        if change.note:
            log.info("reload: camera %s: %s", change.camera.id, change.note)
        if change.capture is not None:
            change.part.set_capture(change.capture, change.size)
            change.capture.start()
    for group in d.groups.values():
        if group.pipeline is None:
            d.start_pipeline(group, {c.camera.id: _stages(d, c, running.get(c.camera.id))
                                     for c in changes if c.camera.model in group.cfgs})


def _stages(d: Daemon, change: _CameraChange, running: CameraStages | None) -> CameraStages:
    """A camera's stages in a new pipeline: its running ones with what was rebuilt."""
    if running is None:
        return d.camera_stages(change.part, pre=change.pre, deliver=change.deliver)
    if change.pre is not None:
        running.preprocess = change.pre
    if change.deliver is not None:
        running.deliver = change.deliver
    return running
