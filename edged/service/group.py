"""One inference worker and the pipeline thread that feeds it its cameras' frames.

The worker process (`edged.inference.supervisor`, with the fail-back that
returns it to its accelerator after a CPU fallback) runs its models on one
accelerator; the pipeline thread takes the frames of the cameras assigned to
it (`edged.service.scheduler`), hands them to the worker and delivers the
results. The daemon has a group per model in use (`[[models]]`, each on its
accelerator; one for a file with only [model]), except that the models on one
Edge TPU share a group: libedgetpu gives a device to one process, so one
worker holds them all and one round robin serves all their cameras.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from edged.config import Config, ConfigError
from edged.config.models import accelerator_of, worker_keys
from edged.inference.failback import FailBack, FailbackPolicy
from edged.inference.messages import ModelInfo
from edged.inference.supervisor import Supervisor
from edged.inference.worker import OtherModel, WorkerParams
from edged.service import wiring
from edged.service.cascade import cascade_params
from edged.service.pipeline import CameraStages, Pipeline
from edged.service.scheduler import Lane
from edged.system.secrecy import scrubbed_environ
from edged.system.threads import NamedThread

log = logging.getLogger("edged")

STOP_GRACE_S = 2.0  # for the frame in flight when stopping or replacing the pipeline


class WorkerGroup:
    """`key`: its first model's [[models]] id, "" for the [model] section."""

    def __init__(self, key: str = "") -> None:
        self.key = key
        # Its models (by key, in the worker's order) with the configs its worker was
        # started with.
        self.cfgs: dict[str, Config] = {}
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

    @property
    def members(self) -> list[str]:
        """Its models' keys, in the worker's order (ModelInfo.model's index)."""
        return list(self.cfgs)

    def model_info(self, model: str) -> ModelInfo | None:
        """What the current worker runs for `model`, one of its members."""
        info = self.info
        return info.model(self.members.index(model)) if info is not None else None

    def start_worker(self, cfgs: Mapping[str, Config],
                     tick_while_waiting: Callable[[], bool]) -> None:
        """A new worker for the models `cfgs` (by key, each with its first camera's
        config), waiting (ticking) until it has loaded them."""
        if self.supervisor is not None:
            self.carried["worker_restarts"] += self.supervisor.restarts
        self.cfgs = dict(cfgs)
        first, *others = self.cfgs.values()
        self.supervisor = sup = build_supervisor(first, others)
        self.failback = build_failback(first, sup)
        info = sup.start_until_loaded(tick_while_waiting)
        for index, cfg in enumerate(self.cfgs.values()):
            model = info.model(index)
            log.info("model %s: runtime %s, delegate %s, input %s %s %s",
                     sup.model_file(index), info.runtime, info.delegate,
                     list(model.inputs[0].shape), model.inputs[0].dtype,
                     wiring.describe_pixels(cfg, model))
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


def workers_in_use(config: Config) -> dict[str, dict[str, Config]]:
    """Each worker the config wants (by its key) with its models (`models_in_use`,
    in the worker's order): the models on one Edge TPU share one."""
    used = models_in_use(config)
    order = {model: i for i, model in enumerate(["", *(m.id for m in config.models)])}
    where = {model: accelerator_of(used[model].inference.delegate,
                                   used[model].inference.edgetpu_device)
             for model in sorted(used, key=order.__getitem__)}
    workers: dict[str, dict[str, Config]] = {}
    for model, worker in worker_keys(where).items():
        workers.setdefault(worker, {})[model] = used[model]
    return workers


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


def worker_params(cfg: Config, others: Sequence[Config] = ()) -> WorkerParams:
    """`cfg`'s model, and `others`' models beside it on the same accelerator (several
    on one Edge TPU); the worker's settings are the first's, its classifier the
    first one any of them cascades into (config.cascade_problems: they agree)."""
    inf, model = cfg.inference, cfg.model
    first = other_model(cfg)
    return WorkerParams(
        model_path=first.model_path, runtime=inf.runtime, delegate=inf.delegate,
        num_threads=inf.num_threads, edgetpu_device=inf.edgetpu_device,
        edgetpu_library=inf.edgetpu_library, external_library=inf.external_library,
        external_options=dict(inf.external_options), fallback=inf.fallback,
        overlap=inf.overlap, mean=first.mean, std=first.std, layout=first.layout,
        cpu_model_path=str(model.path),
        others=tuple(other_model(o) for o in others),
        **next((p for p in map(cascade_params, (cfg, *others)) if p), {}),
    )


def other_model(cfg: Config) -> OtherModel:
    """`cfg`'s model files for its accelerator, and its normalization."""
    inf, model = cfg.inference, cfg.model
    path = model.edgetpu_path if inf.delegate == "edgetpu" and model.edgetpu_path else model.path
    return OtherModel(str(path), str(model.path), tuple(cfg.preprocess.mean),
                      tuple(cfg.preprocess.std), cfg.preprocess.layout)


def build_supervisor(cfg: Config, others: Sequence[Config] = ()) -> Supervisor:
    inf = cfg.inference
    return Supervisor(
        worker_params(cfg, others), invoke_timeout_s=inf.invoke_timeout_s,
        restart_backoff_s=inf.restart_backoff_s, restart_backoff_max_s=inf.restart_backoff_max_s,
        cpu_fallback_after=inf.cpu_fallback_after, cpu_model_path=str(cfg.model.path),
        env=worker_environ(cfg),
    )


def build_failback(cfg: Config, supervisor: Supervisor) -> FailBack | None:
    """Back to the accelerator after a CPU fallback; None when nothing can fall back."""
    inf = cfg.inference
    if inf.delegate == "cpu" or inf.fallback != "cpu" or not inf.failback:
        return None
    return FailBack(supervisor, FailbackPolicy(interval_s=inf.failback_interval_s))


def worker_environ(cfg: Config) -> dict[str, str]:
    """The daemon's environment without the MQTT password: the worker needs none."""
    password = None
    with contextlib.suppress(ConfigError):  # reported where the publisher is built
        password = cfg.mqtt.resolve_password()
    return scrubbed_environ(os.environ, names=[cfg.mqtt.password_env],
                            values=[password] if password else [])
