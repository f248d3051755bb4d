"""One inference worker and the pipeline thread that feeds it its cameras' frames.

The worker process (`edged.inference.supervisor`, with the fail-back that
returns it to its accelerator after a CPU fallback) runs one model on one
accelerator; the pipeline thread takes the frames of the cameras assigned to
it (`edged.service.scheduler`), hands them to the worker and delivers the
results. The daemon has a group per model in use (`[[models]]`, each on its
accelerator; one for a file with only [model]).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from edged.config import Config
from edged.inference.failback import FailBack
from edged.inference.messages import ModelInfo
from edged.inference.supervisor import Supervisor
from edged.service import wiring
from edged.service.pipeline import CameraStages, Pipeline
from edged.service.scheduler import Lane
from edged.system.threads import NamedThread

log = logging.getLogger("edged")

STOP_GRACE_S = 2.0  # for the frame in flight when stopping or replacing the pipeline


class WorkerGroup:
    """`key`: the model's [[models]] id, "" for the [model] section."""

    def __init__(self, key: str = "") -> None:
        self.key = key
        self.cfg: Config | None = None  # what its worker was started with
        self.supervisor: Supervisor | None = None
        self.failback: FailBack | None = None  # watches for the accelerator after a fallback
        self.pipeline: Pipeline | None = None
        self.thread: threading.Thread | None = None
        self.frames_lost_before = 0  # by pipelines replaced on reload
        # Counts of the workers and fail-backs a reload replaced: they only grow.
        self.carried: Counter[str] = Counter()

    @property
    def info(self) -> ModelInfo | None:
        """What the current worker runs (it changes on a CPU fallback)."""
        return self.supervisor.info if self.supervisor else None

    @property
    def frames_lost(self) -> int:
        """Frames a dying worker took with it, for the life of the process."""
        return self.frames_lost_before + (self.pipeline.frames_lost if self.pipeline else 0)

    def start_worker(self, cfg: Config, tick_while_waiting: Callable[[], bool]) -> None:
        """A new worker for `cfg`'s model, waiting (ticking) until it has loaded."""
        if self.supervisor is not None:
            self.carried["worker_restarts"] += self.supervisor.restarts
        self.cfg = cfg
        self.supervisor = sup = wiring.build_supervisor(cfg)
        self.failback = wiring.build_failback(cfg, sup)
        info = sup.start_until_loaded(tick_while_waiting)
        log.info("model %s: runtime %s, delegate %s, input %s %s %s", sup.model_name,
                 info.runtime, info.delegate, list(info.inputs[0].shape),
                 info.inputs[0].dtype, wiring.describe_pixels(cfg, info))
        if info.delegate_note:
            log.warning("%s", info.delegate_note)

    def stop_worker(self) -> None:
        """The worker, and a fail-back's worker in the making, which never takes over."""
        if self.failback is not None:
            self.failback.close()
            self.carried.update(failbacks=self.failback.switches,
                                failback_tries=self.failback.tries)
            self.failback = None
        if self.supervisor is not None:
            self.supervisor.stop()

    def start_pipeline(self, lanes: Sequence[tuple[Lane, CameraStages]],
                       prepare: Callable[[Pipeline], None]) -> Pipeline:
        """A pipeline thread over `lanes`; `prepare` (the cameras' pacing) runs before
        it takes its first frame."""
        assert self.supervisor is not None
        self.pipeline = Pipeline(lanes, self.supervisor, failback=self.failback)
        prepare(self.pipeline)
        self.thread = NamedThread(target=self.pipeline.run, name="edged-pipeline", daemon=True)
        self.thread.start()
        return self.pipeline

    def stop_pipeline(self) -> None:
        if self.pipeline is not None and self.thread is not None:
            self.pipeline.stop()
            # It may be waiting for the frame in flight. A worker that does not answer
            # soon (frozen, or a slow first Edge TPU invoke) is not waited for up to the
            # invoke deadline: a stop or a reload ends it.
            self.thread.join(STOP_GRACE_S)
            if self.thread.is_alive() and self.supervisor is not None:
                log.info("the inference worker has not answered for %.0f s: stopping it "
                         "without its last frame", STOP_GRACE_S)
                self.supervisor.abandon()
                self.thread.join(STOP_GRACE_S)
        if self.pipeline is not None:
            # A counter only grows for the life of the process (issue 15): a worker
            # reload replaces the pipeline, not what it has counted.
            self.frames_lost_before += self.pipeline.frames_lost
        self.pipeline = self.thread = None


def models_in_use(config: Config) -> dict[str, Config]:
    """Each model its enabled cameras use ([[models]] id, "" for [model]) with the
    config its worker runs, its first camera's: the model's files, its accelerator
    and the shared [inference] and normalization are the same for all its cameras."""
    out: dict[str, Config] = {}
    for camera in config.camera_list():
        if camera.enabled:
            out.setdefault(camera.model, camera.config)
    return out


def model_names(groups: Mapping[str, WorkerGroup]) -> str:
    """The model files the workers run, for the discovery device and the metrics."""
    return ", ".join(g.supervisor.model_name for g in groups.values() if g.supervisor)
