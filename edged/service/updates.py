"""Model updates carried out (issue 20), on the daemon's housekeeping thread.

One update at a time: announced (its signature checked before a byte is
taken), received (chunks filed by the network thread, or a file on the
device), checked (the bundle's sha256; the file as check-config checks a
model; the new model loaded on the CPU in a worker of its own and run on the
golden frame, whose top result must be the one announced), swapped in (kept
in `updates.models_dir`, named in the overrides file, a reload loads it), and
on trial: the golden frame run again by the running worker on its
accelerator, and within `trial_s` a wrong golden answer there, a worker
restart or `no_results_s` without a result puts the previous model back. Each step is answered on
`<device>/cmd/model/result`; the state survives a restart (state.json).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edged.config import Config
from edged.config.overrides import read_overrides, write_overrides
from edged.config.updates import public_key_bytes
from edged.decode.dispatch import decode
from edged.decode.results import Classification, Detection
from edged.inference.messages import ModelLoadError, WorkerError
from edged.inference.modelfile import ModelFileError, check_runnable, read_model_file
from edged.inference.modelupdate import (
    Announcement,
    Receiver,
    UpdateError,
    split_bundle,
    verify_signature,
)
from edged.inference.supervisor import Supervisor
from edged.inference.worker import WorkerParams
from edged.mqtt.commands import Command, answer
from edged.service import applying, wiring

if TYPE_CHECKING:
    from edged.service.daemon import Daemon

log = logging.getLogger("edged.updates")


@dataclass
class _Receiving:
    a: Announcement
    receiver: Receiver
    deadline: float
    command: Command
    complete: bool = False


@dataclass
class _Trial:
    a: Announcement
    until: float
    restarts: int
    before: dict[str, Any]  # the overrides before the swap: a rollback writes them back
    command: Command
    # The golden frame run by the running worker, on its accelerator (Pipeline.probe).
    probed: tuple[tuple[Any, ...], Any, Any] | None = None


class Updater:
    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.receiving: _Receiving | None = None
        self.trial: _Trial | None = None
        self.current: dict[str, Any] = {}  # version, sha256, name, state: for the stats

    @property
    def dir(self) -> Path:
        return self.d.cfg.updates.models_dir

    # -- announced (housekeeping thread) ----------------------------------------------

    def announce(self, command: Command, doc: dict[str, Any]) -> dict[str, Any]:
        u = self.d.cfg.updates
        busy = self.receiving or self.trial
        if busy is not None:
            raise UpdateError(f"busy: update {busy.a.version} is under way")
        a = Announcement.parse(doc, u.max_model_bytes)
        key = public_key_bytes(u.public_key)
        assert key is not None  # the config refuses updates without one
        verify_signature(a, key)
        if self.current.get("sha256") == a.sha256:
            # Said before: a retained fleet announcement comes again at every reconnect.
            done = self.current.get("state")
            if done in ("trial", "accepted"):
                return {"state": "current", "version": a.version}
            if done in ("rejected", "rolled_back"):
                raise UpdateError(f"declined: this update was {done} here before")
        if a.path:
            self._finish(a, Path(a.path), command)
            return {"state": self.current.get("state", ""), "version": a.version}
        receiver = Receiver(a, self.dir / ".incoming")
        self.receiving = _Receiving(a, receiver, time.monotonic() + u.receive_timeout_s,
                                    command)
        log.info("update %s: receiving %d bytes in %d chunks", a.version, a.size, a.chunks)
        return {"state": "receiving", "version": a.version, "chunks": a.chunks}

    def on_chunk(self, payload: bytes, retained: bool) -> None:
        """Network thread: one chunk of the update being received."""
        r = self.receiving
        if r is None or retained or r.complete:
            return
        if r.receiver.add(payload):
            r.complete = True  # carried on by tick(), on the housekeeping thread

    # -- the rest of it (housekeeping thread, every tick) --------------------------------

    def tick(self) -> None:
        r = self.receiving
        if r is not None and r.complete:
            self.receiving = None
            r.receiver.close()
            self._finish(r.a, r.receiver.path, r.command)
        elif r is not None and time.monotonic() > r.deadline:
            self.receiving = None
            r.receiver.close()
            r.receiver.path.unlink(missing_ok=True)
            # Not "rejected": an update that did not all come may be sent again.
            self._say(r.command, False, f"incomplete: {r.receiver.missing()} of "
                      f"{r.a.chunks} chunks missing after {self.d.cfg.updates.receive_timeout_s:g}"
                      f" s ({r.receiver.rejected} refused)", r.a, "incomplete")
        if self.trial is not None:
            self._watch_trial(self.trial)

    def _finish(self, a: Announcement, bundle: Path, command: Command) -> None:
        try:
            model, golden = self._checked(a, bundle)
        except UpdateError as exc:
            self._say(command, False, str(exc), a, "rejected")
            return
        finally:
            if bundle.name == ".incoming":
                bundle.unlink(missing_ok=True)
        self._swap(a, model, golden, command)

    def _checked(self, a: Announcement, bundle: Path) -> tuple[Path, NDArray[np.uint8]]:
        """The staged model and its golden frame (RGB), checked as far as the CPU can:
        the file, and the golden frame's top result unless it needs an Edge TPU."""
        staged = self.dir / f"{a.version}-{a.sha256[:8]}-{a.name}"
        model, png = split_bundle(bundle, a, staged)
        frame = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            staged.unlink(missing_ok=True)
            raise UpdateError("golden frame: not an image")
        golden = np.ascontiguousarray(frame[:, :, ::-1], dtype=np.uint8)
        try:
            info = read_model_file(model)
            check_runnable(info, "edgetpu" if info.needs_edgetpu else "cpu")
        except ModelFileError as exc:
            staged.unlink(missing_ok=True)
            raise UpdateError(f"model: {exc}") from None
        if info.needs_edgetpu:
            log.info("update %s: an Edge TPU model: its golden frame runs on the device "
                     "once swapped in", a.version)
            return model, golden
        try:
            self._golden(a, model, golden)
        except UpdateError:
            staged.unlink(missing_ok=True)
            raise
        return model, golden

    def _golden(self, a: Announcement, model: Path, rgb: NDArray[np.uint8]) -> None:
        """The new model on the golden frame, in a CPU worker of its own, decoded as the
        running config decodes: its top result must be the one announced."""
        cfg = self.d.cfg.model_copy(update={"model": self.d.cfg.model.model_copy(
            update={"path": model, "edgetpu_path": None})})
        p = cfg.preprocess
        sup = Supervisor(WorkerParams(model_path=str(model), num_threads=1, mean=tuple(p.mean),
                                      std=tuple(p.std), layout=p.layout))
        try:
            info = sup.start()
            # Said of the update's file: "birds.tflite: output.decoder: ...".
            problems = wiring.model_fit_problems(a.name, cfg, info)
            if problems:
                raise UpdateError(problems[0])
            geometry = wiring.build_preprocess(cfg, info)(rgb, sup.pixels(0))
            sup.submit(0)
            sup.wait(0)
            self._verdict(a, cfg, (tuple(sup.raw_outputs(0)), info, geometry))
        except (ModelLoadError, WorkerError, ValueError) as exc:
            if isinstance(exc, UpdateError):
                raise
            raise UpdateError(f"model: {str(exc).splitlines()[0]}") from None
        finally:
            sup.stop()

    def _verdict(self, a: Announcement, cfg: Config, ran: tuple[tuple[Any, ...], Any, Any]
                 ) -> None:
        """The golden frame's raw outputs, decoded as `cfg` decodes: its top result must
        be the one announced (UpdateError if not)."""
        raw, info, geometry = ran
        d = wiring.build_decoding(cfg, info, None, announce=False)
        top = _top(decode(d.kind, raw, info.outputs, settings=d.settings,
                          input_wh=d.input_wh, geometry=geometry))
        if top is None:
            raise UpdateError(f"golden frame: no {d.kind} result to compare")
        if top.label_id != a.golden_label_id or abs(
                top.score - a.golden_score) > self.d.cfg.updates.golden_tolerance:
            raise UpdateError(f"golden frame: top result {top.label_id} at {top.score:.3f}, "
                              f"announced {a.golden_label_id} at {a.golden_score:.3f}")

    # -- swap, trial, rollback ---------------------------------------------------------

    def _swap(self, a: Announcement, model: Path, golden: NDArray[np.uint8],
              command: Command) -> None:
        path = self.d.cfg.commands.overrides_file
        before = read_overrides(path)
        after = {**before, "model": {**before.get("model", {}),
                                     ("edgetpu_path" if read_model_file(model).needs_edgetpu
                                      else "path"): str(model)}}
        write_overrides(path, after)
        applying.reload(self.d)
        if self.d.reload_error:
            self._rollback(a, before, command, f"the swap failed: {self.d.reload_error}")
            return
        restarts = sum(s.restarts for s in self.d.supervisors)
        trial = self.trial = _Trial(a, time.monotonic() + self.d.cfg.updates.trial_s, restarts,
                                    before, command)
        self.d.frames.beat()  # the trial's no-result clock starts at the swap
        self._say(command, True, "", a, "trial")
        group = self.d.groups.get("")
        if group is not None and group.pipeline is not None:
            # The golden frame again, now on the device's accelerator, between frames.
            group.pipeline.probe(golden, lambda *ran: setattr(trial, "probed", ran))

    def _watch_trial(self, t: _Trial) -> None:
        u = self.d.cfg.updates
        restarts = sum(s.restarts for s in self.d.supervisors)
        if t.probed is not None:
            ran, t.probed = t.probed, None
            try:
                self._verdict(t.a, self.d.cfg, ran)
            except UpdateError as exc:
                self._rollback(t.a, t.before, t.command, f"on the device: {exc}")
                return
            log.info("update %s: the golden frame gives the announced result on the device",
                     t.a.version)
        if restarts > t.restarts:
            self._rollback(t.a, t.before, t.command, f"the worker restarted {restarts - t.restarts}"
                           " time(s) on it")
        elif self.d.frames.age() > u.no_results_s:
            self._rollback(t.a, t.before, t.command,
                           f"no result for {self.d.frames.age():.0f} s")
        elif time.monotonic() > t.until:
            self.trial = None
            self._say(t.command, True, "", t.a, "accepted")
            self._prune()

    def _rollback(self, a: Announcement, before: dict[str, Any], command: Command,
                  why: str) -> None:
        self.trial = None
        write_overrides(self.d.cfg.commands.overrides_file, before)
        applying.reload(self.d)
        self._say(command, False, f"rolled back: {why}", a, "rolled_back")

    def _prune(self) -> None:
        """Keep the model running and the one before it; older updates go."""
        keep = {str(self.d.cfg.model.path), str(self.d.cfg.model.edgetpu_path)}
        files = sorted(self.dir.glob("*.tflite"), key=lambda f: f.stat().st_mtime)
        older = [f for f in files if str(f) not in keep]
        for old in older[:-1]:  # the newest other one is the model before
            old.unlink(missing_ok=True)

    def _say(self, command: Command, ok: bool, error: str, a: Announcement, state: str) -> None:
        self.current = {"version": a.version, "sha256": a.sha256, "name": a.name,
                        "state": state}
        if state == "trial" and self.trial is not None:  # a restart resumes it (load)
            self.current["announcement"] = a.to_json()
            self.current["before"] = self.trial.before
        (log.info if ok else log.warning)("update %s: %s%s", a.version, state,
                                          f": {error}" if error else "")
        self._save()
        if self.d.publisher is not None:
            self.d.publisher.publish_event(command.result_topic, answer(
                command, ok, error, state=state, version=a.version, sha256=a.sha256))

    def _save(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / ".state.json.tmp"
            tmp.write_text(json.dumps(self.current))
            os.replace(tmp, self.dir / "state.json")
        except OSError as exc:
            log.warning("update state not saved in %s: %s", self.dir, exc)

    def load(self, command_topic: str) -> None:
        """The last update's state, for the stats; one on trial when the daemon stopped
        is on trial again, from the start (the workers are running by then)."""
        try:
            self.current = json.loads((self.dir / "state.json").read_text())
        except (OSError, ValueError):
            self.current = {}
        if self.current.get("state") == "trial" and self.d.cfg.updates.enabled:
            try:
                a = Announcement.from_json(self.current["announcement"])
            except (KeyError, TypeError, ValueError):
                return
            log.info("update %s: on trial again after the restart", a.version)
            self.trial = _Trial(a, time.monotonic() + self.d.cfg.updates.trial_s,
                                sum(s.restarts for s in self.d.supervisors),
                                self.current.get("before") or {},
                                Command("model", None, b"", command_topic))


def _top(found: object) -> Classification | Detection | None:
    """The best scoring class or detection of a decoded result."""
    if not isinstance(found, tuple):
        return None
    ranked = [r for r in found if isinstance(r, (Classification, Detection))]
    return max(ranked, key=lambda r: r.score) if ranked else None
