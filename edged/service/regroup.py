"""A reload's workers: which model's worker restarts, starts or stops (issue 17).

Each model in use has a worker of its own (`edged.service.group`). A reload
restarts a worker only when what it runs changed (its model files, its
accelerator, the shared [inference] keys or normalization, or the file
replaced on disk at the same path); starts one for a model that came into
use and stops the one of a model no camera uses any more. A worker cannot be
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
from edged.inference.supervisor import file_stamp
from edged.service import lifecycle
from edged.service.group import WorkerGroup
from edged.service.reload import plan_reload

if TYPE_CHECKING:
    from edged.service.daemon import Daemon

log = logging.getLogger("edged")


@dataclass
class WorkerChanges:
    """Model keys ([[models]] id, "" for [model]) whose worker restarts, starts, stops."""

    restart: list[str] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    previous: dict[str, Config] = field(default_factory=dict)  # the restarted ones' configs
    stopped: list[str] = field(default_factory=list)  # the restarts begun: to undo on failure

    @property
    def new_workers(self) -> set[str]:
        return {*self.restart, *self.start}


def replaced_on_disk(d: Daemon) -> set[str]:
    """The models whose running file was replaced at the same path."""
    return {key for key, g in d.groups.items() if g.supervisor is not None
            and file_stamp(g.supervisor.params.model_path) != g.supervisor.model_stamp}


def plan_workers(d: Daemon, wanted: dict[str, Config], on_disk: set[str]) -> WorkerChanges:
    changes = WorkerChanges()
    for key, cfg in wanted.items():
        group = d.groups.get(key)
        if group is None:
            changes.start.append(key)
        elif group.cfg is None or key in on_disk or plan_reload(_own(group.cfg), _own(cfg)).worker:
            changes.restart.append(key)
            if group.cfg is not None:
                changes.previous[key] = group.cfg
    changes.stop = [key for key in d.groups if key not in wanted]
    return changes


def _own(cfg: Config) -> Config:
    """`cfg` without the [[models]] entries but its cascade's classifier: a worker runs
    its own models only (a file without [[cameras]] is its one camera's config,
    entries and all)."""
    entry = classifier_of(cfg.cascade, cfg.models)
    return cfg.model_copy(update={"models": [entry] if entry else []}) if cfg.models else cfg


def start_workers(d: Daemon, wanted: dict[str, Config], changes: WorkerChanges) -> None:
    """The restarted and started workers, each loaded; undone on failure."""
    try:
        for key in changes.restart:
            group = d.groups[key]
            changes.stopped.append(key)
            group.stop_pipeline()
            group.stop_worker()
            _say(key, "restarting its worker")
            group.start_worker(wanted[key], d.keeper.tick_while_waiting)
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
            group.start_worker(changes.previous.get(key, d.cfg), d.keeper.tick_while_waiting)
        except ModelLoadError as exc:
            d.fatal_error = (f"reload: the previous model does not load any more either "
                             f"({_first_line(exc)}); exiting")
            log.error("%s", d.fatal_error)
            d.exit_code = lifecycle.exit_code(exc)
            d.stop_requested.set()
            raise
        d.start_pipeline(group)


def stop_workers(d: Daemon, changes: WorkerChanges) -> None:
    """The workers of the models no camera uses any more; their counts stay the device's."""
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
