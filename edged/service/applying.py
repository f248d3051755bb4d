"""SIGHUP: check the file, then apply what changed to the running daemon.

Every changed part is built first and swapped in between two frames; a part
that fails to build leaves the running ones untouched (`edged.service.reload`
plans what a change restarts; this module carries it out on a `Daemon`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edged.config import Config, ConfigError, read_config
from edged.inference.messages import ModelLoadError
from edged.inference.supervisor import file_stamp
from edged.mqtt.publisher import Publisher
from edged.service import lifecycle, wiring
from edged.service.pipeline import Deliver, Preprocess
from edged.service.reload import (
    ReloadPlan,
    plan_reload,
    preflight,
    vanished_warnings,
    with_model_file_changed,
)

if TYPE_CHECKING:
    from edged.service.daemon import Daemon

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


def _apply(d: Daemon, new: Config, plan: ReloadPlan) -> None:
    """Build every changed part first, then swap them in: a failure to build
    leaves the running parts untouched (the worker, which cannot be built
    beside the running one on an Edge TPU, is restored instead)."""
    assert d.publisher is not None and d.info is not None
    old_size = wiring.input_size(d.cfg, d.info)
    publisher = wiring.build_publisher(new) if plan.publisher else None
    events_kept = d.event_stages.current  # the running one, if the new one is not applied
    try:
        if plan.worker:
            _replace_worker(d, new)
        try:
            stages = _build_stages(d, new, plan, publisher or d.publisher)
            # The Pi camera's ISP scales to the model input: a new input size reopens it.
            new_size = wiring.input_size(new, d.info)
            resize = new.source.kind == "picamera2" and new_size != old_size
            capture = wiring.build_capture(
                new, new_size,
                first_seq=d.capture.source.frames if d.capture else 0,
            ) if plan.source or resize else None
        except BaseException:
            d.event_stages.current = events_kept
            if plan.worker:
                _restore_worker(d)
            raise
    except BaseException:
        if publisher is not None:
            publisher.stop()  # never started: this only closes its sockets
        raise
    d.cfg = new
    if d.pipeline is not None:  # kept running: new stages take over between frames
        if stages[0] is not None:
            d.pipeline.set_preprocess(stages[0])
        if stages[1] is not None:
            d.pipeline.set_deliver(stages[1])
    if publisher is not None:
        assert d.publisher is not None
        d.publisher.stop()
        publisher.take_over(d.publisher)  # queued results and counters carry over
        d._start_publisher(publisher)
    if capture is not None:
        old, d.capture = d.capture, capture
        if d.pipeline is not None:
            d.pipeline.set_feed(capture.buffer)  # waits on the new, empty buffer meanwhile
        if old is not None:
            old.stop()
            d._carried.update(frames_dropped=old.buffer.dropped,
                                 source_reopens=old.source.reopen_count,
                                 frames_skipped=old.source.status().skipped)
        capture.start()
    if d.pipeline is None:
        d._start_pipeline(stages)
    d._pace()  # a new source or a new max_fps
    d._apply_logging(new)
    d._announce()


def _build_stages(d: Daemon, new: Config, plan: ReloadPlan, publisher: Publisher
                  ) -> tuple[Preprocess | None, Deliver | None]:
    assert d.supervisor is not None and d.info is not None
    problems = wiring.model_fit_problems(d.path, new, d.info) if plan.deliver else []
    if problems:
        raise ConfigError(problems)
    return (wiring.build_preprocess(new, d.info) if plan.preprocess else None,
            wiring.build_deliver(new, d.supervisor, publisher, d._on_published, d.event_stages,
                                 fresh_events=plan.events) if plan.deliver else None)


def _replace_worker(d: Daemon, new: Config) -> None:
    assert d.supervisor is not None
    d._stop_pipeline()
    d._stop_worker()
    try:
        d._start_worker(new)
    except ModelLoadError:
        _restore_worker(d)
        raise


def _restore_worker(d: Daemon) -> None:
    """After a failed reload: the running config's worker and pipeline again."""
    d._stop_worker()
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

