"""SIGHUP: check the file, then apply what changed to the running daemon.

Every changed part is built first and swapped in between two frames; a part
that fails to build leaves the running ones untouched (`edged.service.reload`
plans what a change restarts; this module carries it out on a `Daemon`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edged.config import Camera, Config, ConfigError, read_config
from edged.inference.messages import ModelLoadError
from edged.inference.supervisor import file_stamp
from edged.mqtt.publisher import Publisher
from edged.service import lifecycle, wiring
from edged.service.cameras import CameraPart, part_for, topic_camera
from edged.service.pipeline import CameraStages, Deliver, Preprocess
from edged.service.reload import (
    ReloadPlan,
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
        sup = d.supervisor  # the file it runs, replaced on disk at the same path
        if sup is not None and file_stamp(sup.params.model_path) != sup.model_stamp:
            plan = with_model_file_changed(plan)
        problems = preflight(cf, plan)
        if problems:
            raise ConfigError(problems)
        for warning in vanished_warnings(d.cfg, cf):
            log.warning("reload: %s", warning)
        log.info("reload: changed: %s; restarting: %s",
                 ", ".join(plan.changed) or "nothing", plan.restarts())
        _apply(d, cf.config, plan)
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


def _apply(d: Daemon, new: Config, plan: ReloadPlan) -> None:
    """Build every changed part first, then swap them in: a failure to build
    leaves the running parts untouched (the worker, which cannot be built
    beside the running one on an Edge TPU, is restored instead). A camera is
    restarted only for what changed for it; the others keep running."""
    assert d.publisher is not None and d.info is not None
    publisher = wiring.build_publisher(new) if plan.publisher else None
    events_kept = [(part, part.event_stages.current) for part in d.cameras]
    try:
        if plan.worker:
            _replace_worker(d, new)
        try:
            changes = _build_cameras(d, new, plan, publisher or d.publisher)
        except BaseException:
            for part, stage in events_kept:  # the running ones, as the new ones are not used
                part.event_stages.current = stage
            if plan.worker:
                _restore_worker(d)
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
    _swap_cameras(d, changes)
    d._pace()  # a new source or a new max_fps
    d._apply_logging(new)
    d._announce()


def _build_cameras(d: Daemon, new: Config, plan: ReloadPlan, publisher: Publisher
                   ) -> list[_CameraChange]:
    """Each enabled camera of `new` with the stages and source its changes need."""
    assert d.supervisor is not None and d.info is not None
    running = {part.id: part for part in d.cameras}
    changes = []
    for camera in (c for c in new.camera_list() if c.enabled):
        part = running.get(camera.id)
        added = part is None
        if part is None:
            part = part_for(camera, d.stats, d.snapshots)
        cam = plan_reload(part.cfg, camera.config) if not added else None
        if cam is not None and plan.worker:
            cam = with_model_file_changed(cam)
        if cam is not None and topic_camera(part.camera) != topic_camera(camera):
            # The one camera of [source] became cameras[n] of the same name: its topic.
            cam = replace(cam, deliver=True)
        cfg = camera.config
        problems = wiring.model_fit_problems(d.path, cfg, d.info, camera.key) \
            if cam is None or cam.deliver else []
        if problems:
            raise ConfigError(problems)
        change = _CameraChange(part, camera)
        if camera.index is not None and (cam is None or cam.restarts() != "nothing"):
            change.note = "added" if cam is None else f"restarting {cam.restarts()}"
        if cam is None or cam.preprocess:
            change.pre = wiring.build_preprocess(cfg, d.info)
        if cam is None or cam.deliver:
            change.deliver = wiring.build_deliver(
                cfg, d.supervisor, publisher, d._on_published, part.event_stages,
                fresh_events=cam is None or cam.events, camera=topic_camera(camera))
        # The Pi camera's ISP scales to the model input: a new input size reopens it.
        change.reopen = cam is None or cam.source or (
            cfg.source.kind == "picamera2"
            and wiring.input_size(cfg, d.info) != wiring.input_size(part.cfg, d.info))
        changes.append(change)
    # Sources last: every stage has been built, nothing after this can fail half-way.
    for change in (c for c in changes if c.reopen):
        part = change.part
        change.capture = wiring.build_capture(
            change.camera.config, wiring.input_size(change.camera.config, d.info),
            first_seq=part.capture.source.frames if part.capture else 0)
    return changes


def _swap_cameras(d: Daemon, changes: list[_CameraChange]) -> None:
    """The new stages and sources in; cameras removed stopped, added started. The
    pipeline keeps running unless the set of cameras changed."""
    kept = {change.part for change in changes}
    for part in d.cameras:
        if part not in kept:  # removed or switched off: its counts stay the device's
            log.info("reload: camera %s: stopped (removed or switched off)", part.id)
            part.stop()
            d._carried.update(part.counts())
    running = dict(d.pipeline.stages) if d.pipeline is not None else {}
    same_lanes = d.pipeline is not None and [lane.name for lane in d.pipeline.lanes] == [
        change.camera.id for change in changes]
    if d.pipeline is not None and not same_lanes:
        d.group.stop_pipeline()  # the cameras kept resume at once in the new one
    for change in changes:
        change.part.camera = change.camera
    if d.pipeline is not None:  # kept running: new stages take over between frames
        for lane, change in enumerate(changes):
            if change.pre is not None:
                d.pipeline.set_preprocess(change.pre, lane)
            if change.deliver is not None:
                d.pipeline.set_deliver(change.deliver, lane)
            if change.capture is not None:
                # It waits on the new, empty buffer meanwhile.
                d.pipeline.set_feed(change.capture.buffer, lane)
    d.cameras = [change.part for change in changes]
    for change in changes:
        if change.note:
            log.info("reload: camera %s: %s", change.camera.id, change.note)
    for change in changes:
        if change.capture is not None:
            change.part.set_capture(change.capture)
            change.capture.start()
    if d.pipeline is None:
        by_id = {lane.name: stages for lane, stages in running.items()}
        d._start_pipeline({change.camera.id: _stages(d, change, by_id.get(change.camera.id))
                           for change in changes})


def _stages(d: Daemon, change: _CameraChange, running: CameraStages | None) -> CameraStages:
    """A camera's stages in a new pipeline: its running ones with what was rebuilt."""
    if running is None:
        return d.camera_stages(change.part, pre=change.pre, deliver=change.deliver)
    if change.pre is not None:
        running.preprocess = change.pre
    if change.deliver is not None:
        running.deliver = change.deliver
    return running


def _replace_worker(d: Daemon, new: Config) -> None:
    assert d.supervisor is not None
    d.group.stop_pipeline()
    d.group.stop_worker()
    try:
        d._start_worker(new)
    except ModelLoadError:
        _restore_worker(d)
        raise


def _restore_worker(d: Daemon) -> None:
    """After a failed reload: the running config's worker and pipeline again."""
    d.group.stop_worker()
    try:
        d._start_worker(d.cfg)
    except ModelLoadError as exc:
        d.fatal_error = (f"reload: the previous model does not load any more either "
                            f"({_first_line(exc)}); exiting")
        log.error("%s", d.fatal_error)
        d.exit_code = lifecycle.exit_code(exc)
        d.stop_requested.set()
        raise
    d._start_pipeline()

