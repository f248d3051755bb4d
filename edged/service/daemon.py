"""`edged run`: the long-running process, its threads, signals and reloads.

Threads: capture, one per camera (source -> one-slot buffer); pipeline, one
per model in use, with its worker process (`edged.service.group`: its
cameras' frames in turn -> preprocess -> worker -> dequantize -> decode ->
encode); MQTT network (paho); and this main thread doing housekeeping every
half second: signals, the systemd watchdog, STATUS= and the stats topic.

READY=1 is sent when the first result has been handed to the MQTT client
(queued if the broker is away): at that point a frame has gone through every
stage on this configuration. When something that heals by itself keeps that
from happening (no Coral yet, camera absent), READY=1 is sent once the daemon
waits for it, with STATUS= saying what it waits for: edged is up, and a restart
would not help (`edged.service.lifecycle` has the whole contract).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import signal
import threading
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from edged.config import (
    DEFAULT_PATH,
    Config,
    ConfigError,
    config_warnings,
    default_path,
    load_config,
)
from edged.inference.messages import ModelInfo, ModelLoadError
from edged.inference.supervisor import Supervisor
from edged.mqtt.discovery import Discovery, discovery_config
from edged.mqtt.publisher import Publisher
from edged.service import applying, lifecycle, report, wiring
from edged.service.boardhealth import BoardHealth
from edged.service.cameras import CameraPart, pace, parts_for
from edged.service.commands import CommandRunner, settings_of
from edged.service.delivery import Deliver
from edged.service.eventstage import SnapshotEncoder
from edged.service.group import WorkerGroup, model_names, workers_in_use
from edged.service.housekeeping import TICK_S, Housekeeping
from edged.service.lifecycle import EX_CONFIG
from edged.service.metrics import Textfile
from edged.service.notify import Notifier, ProgressMonitor
from edged.service.pipeline import CameraStages, Preprocess
from edged.service.scheduler import Lane
from edged.service.stats import Stats
from edged.service.threaddeaths import ThreadDeaths
from edged.sources.capture import CaptureThread
from edged.system.logsetup import register_secret, setup_logging

log = logging.getLogger("edged")



def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", "-c", default=default_path(),
                   help=f"config file (default: $EDGED_CONFIG or {DEFAULT_PATH})")
    p.add_argument("--exit-on-end", action="store_true",
                   help="exit (status 0) once a video or folder with loop = false has ended "
                        "and its last result has reached the broker; without it edged idles")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    # A watchdog SIGABRT then leaves every thread's stack in the journal.
    faulthandler.enable()
    setup_logging("info")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            log.error("%s", line)
        return EX_CONFIG
    return Daemon(Path(args.config), cfg, exit_on_end=args.exit_on_end).run()


class Daemon:
    def __init__(self, path: Path, cfg: Config, *, exit_on_end: bool = False) -> None:
        self.path = path
        self.cfg = cfg
        self.exit_on_end = exit_on_end
        self._stop_reason = "stopped"  # what the offline status says after a clean stop
        # The worker must not inherit NOTIFY_SOCKET: only the main process speaks for the unit.
        self.notifier = Notifier.from_env(unset_environment=True)
        self.stats = Stats()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.reload_error = ""
        self.fatal_error = ""  # why the daemon stopped for good, left on the broker
        self.exit_code = 0
        self.snapshots = SnapshotEncoder()  # events' JPEGs, off the pipeline thread
        self.cameras = parts_for(cfg, self.stats, self.snapshots)
        # A worker and its pipeline thread per model in use, or per Edge TPU for the
        # models on one, by its first model's [[models]] id ("": [model]).
        self.groups: dict[str, WorkerGroup] = {}
        self.publisher: Publisher | None = None
        self.first_result = threading.Event()
        self.frames = ProgressMonitor(window=10.0)
        self._carried: Counter[str] = Counter()  # counts of cameras removed (report.Parts)
        self.discovery: Discovery | None = None
        self._textfile: Textfile | None = None
        self.board = BoardHealth()  # temperatures and throttling, for the stats
        self.deaths = ThreadDeaths()  # before the housekeeping, which checks it
        self.keeper = Housekeeping(self)
        self.commands = CommandRunner(self)  # remote commands, if on (issue 20)

    # -- start and stop ---------------------------------------------------------------

    def run(self) -> int:
        self._apply_logging(self.cfg)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        self.deaths.install()
        try:
            self._start_publisher()
            for key, cfgs in workers_in_use(self.cfg).items():
                self.groups[key] = WorkerGroup(key)
                self.groups[key].start_worker(cfgs, self.keeper.tick_while_waiting)
            problems = [p for part in self.cameras for p in wiring.model_fit_problems(
                self.path, part.cfg, self.info_of(part), part.camera.key)]
            if problems:
                return self._fatal(problems, EX_CONFIG)
            self._announce()
            self._start_capture()
            for group in self.groups.values():
                self.start_pipeline(group)
            self.commands.started()
        except ConfigError as exc:  # e.g. password_env names an unset variable
            return self._fatal(lifecycle.located(self.path, exc.problems), EX_CONFIG)
        except (ModelLoadError, ValueError, OSError) as exc:
            if self.stop_requested.is_set():  # a stop while starting is not an error
                log.info("stopped while starting")
                self._shutdown()
                return 0
            return self._fatal([_first_line(exc)], lifecycle.exit_code(exc))
        log.info("edged running: %s", self._status_line())
        try:
            self._housekeeping()
        finally:
            self.notifier.stopping("stopping")
            self._shutdown(reason="failed" if self.fatal_error else self._stop_reason)
        return self.exit_code

    def group_of(self, model: str, among: Collection[str] | None = None) -> WorkerGroup:
        """The group whose worker holds `model` (a [[models]] id, "" for [model]);
        `among`: the keys of the groups to look in (a reload's, beside those it stops)."""
        return next(g for key, g in self.groups.items()
                    if model in g.cfgs and (among is None or key in among))

    def info_of(self, part: CameraPart) -> ModelInfo:
        """What the worker of the camera's model runs (it changes on a CPU fallback)."""
        info = self.group_of(part.camera.model).model_info(part.camera.model)
        assert info is not None
        return info

    @property
    def supervisors(self) -> list[Supervisor]:
        return [g.supervisor for g in self.groups.values() if g.supervisor is not None]

    @property
    def captures(self) -> list[CaptureThread]:
        return [part.capture for part in self.cameras if part.capture is not None]

    def _start_capture(self) -> None:
        for part in self.cameras:
            size = wiring.input_size(part.cfg, self.info_of(part))
            part.set_capture(wiring.build_capture(part.cfg, size).start(), size)

    def start_pipeline(self, group: WorkerGroup,
                       stages: Mapping[str, CameraStages] | None = None) -> None:
        """The group's pipeline thread, a lane per camera of its models; `stages`: those
        a reload built already, by camera."""
        built = stages or {}
        lanes = []
        parts = [part for part in self.cameras if part.camera.model in group.cfgs]
        for part in parts:
            assert part.capture is not None
            lane = built.get(part.id) or self.camera_stages(part)
            lane.model = group.members.index(part.camera.model)  # the members may change
            lanes.append((Lane(part.id, part.capture.buffer), lane))
        group.start_pipeline(lanes, lambda pipeline: pace(parts, pipeline))

    def camera_stages(self, part: CameraPart, *, pre: Preprocess | None = None,
                      deliver: Deliver | None = None) -> CameraStages:
        """A camera's work on the pipeline thread, built for the running worker unless
        given."""
        group = self.group_of(part.camera.model)
        model = group.members.index(part.camera.model)
        assert group.supervisor and self.publisher
        cfg = part.cfg
        return CameraStages(
            pre or wiring.build_preprocess(cfg, self.info_of(part)),
            deliver or wiring.build_deliver(cfg, group.supervisor, self.publisher,
                                            self._on_published, part.event_stages,
                                            camera=part.topic_camera, model=model),
            # The camera's config when the worker restarts (a reload may have changed it).
            part.stats, rebuild=lambda info: wiring.build_preprocess(part.cfg, info),
            model=model)

    def _pace(self) -> None:
        for group in self.groups.values():
            if group.pipeline is not None:
                pace([p for p in self.cameras if p.camera.model in group.cfgs], group.pipeline)

    def _fatal(self, problems: Sequence[str], code: int) -> int:
        """Stop for good: every problem logged, the first one left where subscribers
        look (the retained offline status and the last stats)."""
        for line in problems:
            log.error("%s", line)
        self.fatal_error = problems[0]
        self._shutdown(reason="failed")
        return code

    def _shutdown(self, reason: str = "stopped") -> None:
        # Order: stop taking frames, finish the frame in flight, then say offline.
        for part in self.cameras:
            part.stop(timeout=0.5)
        for group in self.groups.values():
            group.stop_pipeline()
            group.stop_worker()
        self.snapshots.stop()  # the pending ones still go out before offline
        if self.publisher is not None:
            # Final figures, so the stats topic's retained message tells how the run ended.
            self._report(up=False)
            self.publisher.stop(reason=reason, error=self.fatal_error)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_requested.set()
        for group in self.groups.values():
            if group.pipeline is None and group.supervisor is not None:
                # Still starting: this thread waits for the worker to load (up to 60 s).
                group.supervisor.abandon()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload_requested.set()

    def _on_published(self) -> None:
        self.frames.beat()
        if not self.first_result.is_set():  # set() takes a lock and notifies, every time
            self.first_result.set()

    # -- housekeeping -----------------------------------------------------------------

    def _housekeeping(self) -> None:
        while not self.stop_requested.wait(TICK_S):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload()
            self.commands.run_pending()
            self.keeper.tick()
            if self.exit_on_end and lifecycle.batch_done(
                    self.captures, [g.pipeline for g in self.groups.values()], self.publisher):
                log.info("source ended: every result delivered; exiting (--exit-on-end)")
                self._stop_reason = "source ended"
                self.stop_requested.set()

    def figures(self) -> dict[str, Any]:
        figures = report.figures(report.Parts(
            self.stats, self.groups, self.cameras, self.publisher, self.reload_error,
            self.deaths.summary(), self._carried))
        figures.update(self.board.figures())
        if self.cfg.output.publish != "results":
            figures["snapshots"] = self.snapshots.encoded
        if self.fatal_error:
            figures["last_error"] = self.fatal_error
        if self.cfg.commands.enabled:
            figures["settings"] = settings_of(self.cfg)
        if self.commands.updater.current:  # the last model update: which runs, how it went
            figures["model_update"] = {k: v for k, v in self.commands.updater.current.items()
                                       if k in ("version", "sha256", "name", "state")}
        return figures

    def _status_line(self, failing: tuple[str, ...] = ()) -> str:
        why = self.publisher.counters().last_error if self.publisher else None
        failing = (*self.deaths.reasons, *(f for f in failing if f != "a thread died"))
        return report.status_line(self.figures(), why, failing, self.reload_error)

    # -- reload -----------------------------------------------------------------------

    def _apply_logging(self, cfg: Config) -> None:
        setup_logging(cfg.logging.level)
        for warning in config_warnings(self.path, cfg):
            log.warning("%s", warning)
        # An unreadable password source is reported where the publisher is built.
        with contextlib.suppress(ConfigError):
            secret = cfg.mqtt.resolve_password()
            if secret:
                register_secret(secret)

    def _reload(self) -> None:
        applying.reload(self)

    # -- integrations: Home Assistant discovery, Prometheus textfile -------------------

    def _start_publisher(self, publisher: Publisher | None = None) -> None:
        self.publisher = publisher or wiring.build_publisher(self.cfg)
        # Before start: it subscribes on every connect.
        self.discovery = Discovery(self.publisher, wiring.discovery_settings(
            self.cfg, self.board.available()))
        self.commands.listen(self.publisher, self.cfg)
        self.publisher.start()
        self._announce()

    def _announce(self) -> None:
        infos = {model: info for g in self.groups.values() for model in g.members
                 if (info := g.model_info(model)) is not None}
        if self.discovery is None or not infos or len(infos) < sum(
                len(g.cfgs) for g in self.groups.values()):
            return
        self.discovery.announce(discovery_config(
            wiring.discovery_settings(self.cfg, self.board.available(), infos),
            model=model_names(self.groups), decoder="none"))

    def _report(self, up: bool = True) -> None:
        """One set of figures to the stats topic and the metrics textfile."""
        figures = self.figures()
        if self.publisher is not None:
            self.publisher.publish_stats(figures)
        path = self.cfg.metrics.textfile
        if path is not None:
            if self._textfile is None or self._textfile.path != path:
                self._textfile = Textfile(path)
            self._textfile.write(self.cfg.device.id, figures, up=up,
                                 model=model_names(self.groups))


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
