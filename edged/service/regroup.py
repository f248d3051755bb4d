"""A reload's workers: which worker restarts, starts or stops (issue 17).

Each model in use has a worker of its own, or shares one with the other
models on its Edge TPU (`edged.service.group`). A reload restarts a worker
only when what it runs changed (which models it holds, their files, their
accelerator, the shared [inference] keys or normalization, or a file
replaced on disk at the same path); starts one for a model that came into
use and stops the one no camera uses any more. A worker cannot be
built beside the running one on an Edge TPU, so a failure is undone by
starting the previous configuration's worker again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edged.config import Config
from edged.config.cascade import classifier_of
from edged.inference.messages import ModelLoadError
from edged.service import lifecycle
from edged.service.group import WorkerGroup
from edged.service.reload import plan_reload

if TYPE_CHECKING:
    from edged.service.daemon import Daemon

log = logging.getLogger("edged")


@dataclass
class WorkerChanges:
    """Worker keys (their first model's: [[models]] id, "" for [model]) whose worker
    restarts, starts, stops."""

    restart: list[str] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    # The restarted and stopped ones' models and configs, as they ran.
    previous: dict[str, dict[str, Config]] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)  # the workers stopped: to undo on failure
    new_models: set[str] = field(default_factory=set)  # those held by the new workers


def replaced_on_disk(d: Daemon) -> set[str]:
    """The workers a running file of which was replaced at the same path."""
    return {key for key, g in d.groups.items() if g.supervisor is not None
            and g.supervisor.replaced_on_disk()}


def plan_workers(d: Daemon, wanted: dict[str, dict[str, Config]], on_disk: set[str]
                 ) -> WorkerChanges:
    """`wanted`: each worker's models with their configs (`group.workers_in_use`)."""
    changes = WorkerChanges()
    for key, cfgs in wanted.items():
        group = d.groups.get(key)
        if group is None:
            changes.start.append(key)
        elif group.members != list(cfgs) or key in on_disk or any(
                plan_reload(_own(group.cfgs[model]), _own(cfg)).worker
                for model, cfg in cfgs.items()):
            changes.restart.append(key)
            changes.previous[key] = group.cfgs
        else:
            continue
        changes.new_models.update(cfgs)
    changes.stop = [key for key in d.groups if key not in wanted]
    changes.previous.update((key, d.groups[key].cfgs) for key in changes.stop)
    return changes


def _own(cfg: Config) -> Config:
    """`cfg` without the [[models]] entries but its cascade's classifier: a worker runs
    its own models only (a file without [[cameras]] is its one camera's config,
    entries and all)."""
    entry = classifier_of(cfg.cascade, cfg.models)
    return cfg.model_copy(update={"models": [entry] if entry else []}) if cfg.models else cfg


def start_workers(d: Daemon, wanted: dict[str, dict[str, Config]], changes: WorkerChanges
                  ) -> None:
    """The restarted and started workers, each loaded; undone on failure. Every
    worker restarted or no longer wanted is stopped before any starts: a model
    moving to another Edge TPU would otherwise find it still held by the worker
    that had it (libedgetpu gives a device to one process)."""
    try:
        for key in (*changes.restart, *changes.stop):
            group = d.groups[key]
            changes.stopped.append(key)
            group.stop_pipeline()
            group.stop_worker()
        for key in changes.restart:
            _say(key, "restarting its worker")
            d.groups[key].start_worker(wanted[key], d.keeper.tick_while_waiting)
        for key in changes.start:
            d.groups[key] = WorkerGroup(key)
            _say(key, "starting a worker")
            d.groups[key].start_worker(wanted[key], d.keeper.tick_while_waiting)
    except ModelLoadError:
        restore_workers(d, changes)
        raise


def restore_workers(d: Daemon, changes: WorkerChanges) -> None:
    """After a failed reload: the running config's workers and pipelines again."""
    for key in changes.start:
        group = d.groups.pop(key, None)
        if group is not None:
            group.stop_worker()
    for key in changes.stopped:  # the others never stopped
        group = d.groups[key]
        group.stop_pipeline()
        group.stop_worker()
        try:
            group.start_worker(changes.previous[key], d.keeper.tick_while_waiting)
        except ModelLoadError as exc:
            d.fatal_error = (f"reload: the previous model does not load any more either "
                             f"({_first_line(exc)}); exiting")
            log.error("%s", d.fatal_error)
            d.exit_code = lifecycle.exit_code(exc)
            d.stop_requested.set()
            raise
        d.start_pipeline(group)


def stop_workers(d: Daemon, changes: WorkerChanges) -> None:
    """The groups of the models no camera uses any more (their workers stopped by
    `start_workers` already), once the reload holds; their counts stay the device's."""
    for key in changes.stop:
        group = d.groups.pop(key)
        _say(key, "stopping its worker (no camera uses it)")
        group.stop_pipeline()
        group.stop_worker()
        d._carried.update({**group.carried, "frames_lost": group.frames_lost})


def _say(key: str, what: str) -> None:
    log.info("reload: model %s: %s", key or "[model]", what)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
