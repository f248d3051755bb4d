"""`edged run`: the long-running process, its threads, signals and reloads.

Threads: capture (source -> one-slot buffer), pipeline (preprocess -> worker
process -> dequantize -> decode -> encode), MQTT network (paho), and this main
thread doing housekeeping every half second: signals, the systemd watchdog,
STATUS= and the stats topic.

READY=1 is sent when the first result has been handed to the MQTT client
(queued if the broker is away): at that point a frame has gone through every
stage on this configuration.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from edged import wiring
from edged.config import Config, ConfigError, config_warnings, load_config
from edged.logsetup import register_secret, setup_logging
from edged.notify import HealthCheck, Notifier, ProgressMonitor, WatchdogGate
from edged.pipeline import Pipeline
from edged.publish import Publisher
from edged.sources.capture import CaptureThread
from edged.stats import Stats
from edged.supervisor import ModelInfo, ModelLoadError, Supervisor, WorkerError, wait_backoff

log = logging.getLogger("edged")

DEFAULT_CONFIG = "/etc/edged/edged.toml"
EX_CONFIG = 78  # sysexits: the unit's RestartPreventExitStatus stops a restart loop on it
TICK_S = 0.5


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", "-c", default=os.environ.get("EDGED_CONFIG", DEFAULT_CONFIG),
                   help=f"config file (default: $EDGED_CONFIG or {DEFAULT_CONFIG})")
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
    return Daemon(Path(args.config), cfg).run()


class Daemon:
    def __init__(self, path: Path, cfg: Config) -> None:
        self.path = path
        self.cfg = cfg
        # The worker must not inherit NOTIFY_SOCKET: only the main process speaks for the unit.
        self.notifier = Notifier.from_env(unset_environment=True)
        self.stats = Stats()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.ready_sent = False
        self.reload_error = ""
        self.capture: CaptureThread | None = None
        self.supervisor: Supervisor | None = None
        self.publisher: Publisher | None = None
        self.pipeline: Pipeline | None = None
        self.pipeline_thread: threading.Thread | None = None
        self._first_result = threading.Event()
        self._frames = ProgressMonitor(window=10.0)

    # -- start and stop ---------------------------------------------------------------

    def run(self) -> int:
        self._apply_logging(self.cfg)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        try:
            self.publisher = wiring.build_publisher(self.cfg)
            self.publisher.start()
            self._start_worker()
            self._start_capture()
            self._start_pipeline()
        except (ModelLoadError, ValueError, OSError) as exc:
            log.error("%s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._shutdown()
            return 1
        log.info("edged running: %s", self._status_line())
        try:
            self._housekeeping()
        finally:
            self.notifier.stopping("stopping")
            self._shutdown()
        return 0

    def _start_worker(self) -> None:
        self.supervisor = sup = wiring.build_supervisor(self.cfg)
        attempt = sup.start
        while True:
            try:
                info = attempt()
                break
            except WorkerError:
                # Died while loading (libedgetpu can abort): back off and retry,
                # towards the CPU when the fallback policy allows it.
                if self.stop_requested.is_set():
                    raise ModelLoadError("stopped while the worker was starting") from None
                wait_backoff(sup.next_backoff_s(), self.stop_requested.is_set)
                attempt = sup.restart
        log.info("model %s: runtime %s, delegate %s, input %s %s (pixels: %s path)",
                 Path(sup.params.model_path).name, info.runtime, info.delegate,
                 list(info.inputs[0].shape), info.inputs[0].dtype, info.pixel_path)
        if info.delegate_note:
            log.warning("%s", info.delegate_note)

    @property
    def info(self) -> ModelInfo | None:
        """What the current worker runs (it changes on a CPU fallback)."""
        return self.supervisor.info if self.supervisor else None

    def _start_capture(self) -> None:
        assert self.info is not None
        self.capture = wiring.build_capture(self.cfg, wiring.input_size(self.info)).start()

    def _start_pipeline(self) -> None:
        assert self.capture and self.supervisor and self.info and self.publisher
        self.pipeline = Pipeline(
            self.capture.buffer, wiring.build_preprocess(self.cfg, self.info), self.supervisor,
            wiring.build_deliver(self.cfg, self.supervisor, self.publisher, self._on_published),
            self.stats, max_fps=self.cfg.inference.max_fps)
        self.pipeline_thread = threading.Thread(target=self.pipeline.run, name="edged-pipeline",
                                                daemon=True)
        self.pipeline_thread.start()

    def _stop_pipeline(self) -> None:
        if self.pipeline is not None and self.pipeline_thread is not None:
            self.pipeline.stop()
            self.pipeline_thread.join(5.0)
        self.pipeline = self.pipeline_thread = None

    def _shutdown(self) -> None:
        # Order: stop taking frames, finish the frame in flight, then say offline.
        if self.capture is not None:
            self.capture.stop(timeout=0.5)
        self._stop_pipeline()
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.publisher is not None:
            # Final figures, so the stats topic's retained message tells how the run ended.
            self.publisher.publish_stats(self.figures())
            self.publisher.stop()

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_requested.set()

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload_requested.set()

    def _on_published(self) -> None:
        self._frames.beat()
        self._first_result.set()

    # -- housekeeping -----------------------------------------------------------------

    def _housekeeping(self) -> None:
        assert self.publisher is not None
        gate = WatchdogGate(self.notifier, [
            HealthCheck("no frames inferred recently", self._frames),
            HealthCheck("pipeline thread stalled", self._pipeline_alive),
            HealthCheck("MQTT network thread dead", self.publisher.network_alive),
        ])
        next_stats = 0.0
        next_status = 0.0
        while not self.stop_requested.wait(TICK_S):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self._reload()
            if not self.ready_sent and self._first_result.is_set():
                self.ready_sent = True
                self.notifier.ready(self._status_line())
                log.info("ready: first result published")
            gate.tick()
            now = time.monotonic()
            if now >= next_status:
                self.notifier.status(self._status_line(gate.failing))
                next_status = now + 5.0
            if now >= next_stats:
                self.publisher.publish_stats(self.figures())
                next_stats = now + self.cfg.output.stats_interval_s

    def _pipeline_alive(self) -> bool:
        p, t = self.pipeline, self.pipeline_thread
        return p is not None and t is not None and t.is_alive() and (
            time.monotonic() - p.heartbeat < max(30.0, self.cfg.inference.invoke_timeout_s * 3))

    def figures(self) -> dict[str, Any]:
        snap: dict[str, Any] = dict(self.stats.snapshot())
        sup, cap, pub = self.supervisor, self.capture, self.publisher
        counters = pub.counters() if pub else None
        src = cap.source.status() if cap else None
        snap.update({
            "frames_dropped": cap.buffer.dropped if cap else 0,
            "results_queued": counters.queued if counters else 0,
            "results_dropped": counters.dropped if counters else 0,
            "results_published": counters.published if counters else 0,
            "delegate": self.info.delegate if self.info else "none",
            "worker_state": sup.state if sup else "stopped",
            "worker_restarts": sup.restarts if sup else 0,
            "worker_pid": (sup.pid or 0) if sup else 0,
            "broker": "connected" if counters and counters.connected else "disconnected",
            "source": src.state if src else "stopped",
            "source_reopens": src.reopen_count if src else 0,
            "last_error": self._last_error(),
            "config_reload": f"failed: {self.reload_error}" if self.reload_error else "ok",
        })
        return snap

    def _last_error(self) -> str:
        sup, cap, pub, pipe = self.supervisor, self.capture, self.publisher, self.pipeline
        for err in (sup.last_failure if sup and sup.state != "running" else "",
                    cap.source.last_error if cap else "",
                    pub.counters().last_error if pub else "",
                    pipe.last_error if pipe else ""):
            if err:
                return err
        return ""

    def _status_line(self, failing: tuple[str, ...] = ()) -> str:
        f = self.figures()
        line = (f"{f['fps']:.1f} fps, invoke p50 {f['invoke_ms_p50']:.1f} ms, "
                f"delegate {f['delegate']}, broker {f['broker']}, source {f['source']}")
        if f["worker_state"] != "running":
            line += f", worker {f['worker_state']}"
        if failing:
            line += f"; unhealthy: {', '.join(failing)}"
        if self.reload_error:
            line += f"; reload failed: {self.reload_error}"
        return line

    # -- reload -----------------------------------------------------------------------

    def _apply_logging(self, cfg: Config) -> None:
        setup_logging(cfg.logging.level)
        for warning in config_warnings(self.path, cfg):
            log.warning("%s", warning)
        secret = cfg.mqtt.resolve_password()
        if secret:
            register_secret(secret)

    def _reload(self) -> None:
        self.notifier.reloading("reloading configuration")
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            for line in exc.problems:
                log.error("reload: %s", line)
            self.reload_error = f"{len(exc.problems)} problem(s), kept the running config: " \
                                f"{exc.problems[0]}"
            self.notifier.ready(self._status_line())
            self._publish_stats_now()
            return
        old, self.cfg = self.cfg, new
        changed = {name for name in type(new).model_fields
                   if getattr(old, name) != getattr(new, name)}
        log.info("reload: changed sections: %s", ", ".join(sorted(changed)) or "none")
        self.reload_error = ""
        try:
            self._apply(changed)
        except (ModelLoadError, ValueError, OSError) as exc:
            # Half-applied is worse than old: go back to what ran.
            log.error("reload: %s; going back to the previous config", exc)
            self.cfg = old
            self.reload_error = str(exc).splitlines()[0]
            self._apply(changed)
        self.notifier.ready(self._status_line())
        self._publish_stats_now()

    def _apply(self, changed: set[str]) -> None:
        if "logging" in changed:
            self._apply_logging(self.cfg)
        restart_worker = bool(changed & {"model", "inference"}) or (
            "preprocess" in changed and self._normalization_changed())
        restart_capture = "source" in changed
        if not changed:
            return
        self._stop_pipeline()
        if changed & {"mqtt", "device"}:
            assert self.publisher is not None
            self.publisher.stop()
            self.publisher = wiring.build_publisher(self.cfg)
            self.publisher.start()
        if restart_worker:
            assert self.supervisor is not None
            self.supervisor.stop()
            self._start_worker()
        if restart_capture:
            assert self.capture is not None
            self.capture.stop()
            self._start_capture()
        self._start_pipeline()

    def _normalization_changed(self) -> bool:
        assert self.supervisor is not None
        params = wiring.worker_params(self.cfg)
        return (params.mean, params.std) != (self.supervisor.params.mean,
                                             self.supervisor.params.std)

    def _publish_stats_now(self) -> None:
        if self.publisher is not None:
            self.publisher.publish_stats(self.figures())
