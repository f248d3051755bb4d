"""How a run ends, and what it waits for: the contract systemd's restart loop relies on.

* A problem a restart cannot mend (a config, model, labels or delegate setup
  that is wrong) ends `edged run` with status 78, which the unit's
  `RestartPreventExitStatus=78` does not restart; the one line saying why is
  logged and left on the broker (retained offline status, last stats).
* A problem that can heal by itself (no Coral yet, broker away, camera absent,
  a worker that dies) is waited out inside the daemon: it is "up" for systemd
  (READY=1, the watchdog fed) while it retries, and STATUS= says what it waits for.
* Anything else unexpected (out of memory, no processes left) exits 1, and
  `Restart=on-failure` tries again later.

docs/field-guide.md has the table users read; tests/test_exit_contract.py runs
each case through the real `edged run`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from edged.config.text import ConfigError
from edged.inference.messages import ModelLoadError
from edged.inference.supervisor import Supervisor
from edged.mqtt.publisher import Publisher
from edged.service.pipeline import Pipeline
from edged.sources.capture import CaptureThread

EX_CONFIG = 78  # sysexits: the unit's RestartPreventExitStatus stops a restart loop on it
EX_SOFTWARE = 1  # the rest: Restart=on-failure tries again
FRAMES_WINDOW_S = 10.0  # the watchdog's "no frames inferred recently" window


def exit_code(exc: BaseException) -> int:
    """The exit status for a problem that stopped the daemon from starting.

    edged's one-line errors about what the config names are ValueErrors (a
    refused model, labels, a decoder that does not fit, MQTT/TLS settings) or
    ConfigErrors; a model that cannot load is a ModelLoadError. None of them
    heals by restarting. An OSError here is the system (memory, processes,
    file descriptors), which a later start may find mended.
    """
    if isinstance(exc, ConfigError | ModelLoadError | ValueError):
        return EX_CONFIG
    return EX_SOFTWARE


def located(path: object, problems: Sequence[str]) -> list[str]:
    """Each problem as `file: ...`: most are already (`file:line: key: message`); one
    raised where the file is not known (a password_env naming an unset variable) gets it."""
    where = f"{path}:"
    return [p if p.startswith(where) else f"{where} {p}" for p in problems]


def waiting_for(supervisors: Sequence[Supervisor], captures: Sequence[CaptureThread]) -> str:
    """What the daemon waits for on purpose ("" when nothing): a wait that ends by
    itself, so the watchdog stays fed and READY=1 need not wait for a result. With
    several cameras, only when every one waits: one camera that runs is progress."""
    # Short phrases: what is missing is in STATUS= and the stats (last_error) already.
    if any(supervisor.state == "waiting" for supervisor in supervisors):
        return "the model to load"
    if any(supervisor.state == "restarting" for supervisor in supervisors):
        return "the inference worker to restart"
    waits = [_source_wait(capture) for capture in captures]
    return waits[0] if waits and all(waits) else ""


def _source_wait(capture: CaptureThread) -> str:
    source = capture.source
    if source.state == "ended":
        return "nothing: the source ended"
    status = source.status()
    # Retried on schedule (a stuck open or read shows as no attempts at all).
    recent = status.last_attempt_mono is not None and (
        time.monotonic() - status.last_attempt_mono < source.max_backoff + FRAMES_WINDOW_S)
    if status.state == "reopening" and recent:
        return "the source to open"
    if status.state == "running" and source.reopen_count and recent:
        # Its first frame after a reopen is in, its first result may not be yet: the
        # frames window (10 s) has nothing recent to count for a moment.
        return "the source's first results after a reopen"
    return ""


def status_words(supervisors: Sequence[Supervisor], captures: Sequence[CaptureThread]
                 ) -> tuple[str, dict[str, Any]]:
    """The online status's reason and fields: the delegate in use and why it fell back
    (with several models: each delegate, and the first model's fallback)."""
    fields: dict[str, Any] = {}
    loaded = [s for s in supervisors if s.info is not None]
    if loaded:
        fields = {"delegate": ", ".join(dict.fromkeys(s.info.delegate for s in loaded
                                                      if s.info is not None)),
                  "fallback": next((s.fallback_reason for s in loaded if s.fallback_reason),
                                   "")}
    return ("source ended" if _all_ended(captures) else "connected"), fields


def _all_ended(captures: Sequence[CaptureThread]) -> bool:
    return bool(captures) and all(c.source.state == "ended" for c in captures)


class StatusSayer:
    """Sends the retained status's words when they change (or the publisher does)."""

    def __init__(self) -> None:
        self._publisher: Publisher | None = None
        self._said: tuple[Any, ...] = ()

    def __call__(self, publisher: Publisher | None, supervisors: Sequence[Supervisor],
                 captures: Sequence[CaptureThread], update: Mapping[str, Any] | None = None
                 ) -> None:
        """`update`: the last model update (edged.service.updates), whose version and
        sha256 the retained status carries once one has been accepted or is on trial."""
        if publisher is None:
            return
        reason, fields = status_words(supervisors, captures)
        if update and update.get("state") in ("trial", "accepted"):
            fields.update(model_version=update["version"], model_sha256=update["sha256"])
        said = (reason, tuple(sorted(fields.items())))
        # A reload's new publisher starts with none of these words: tell it too.
        if publisher is not self._publisher or said != self._said:
            self._publisher, self._said = publisher, said
            publisher.set_status(reason, fields)


def batch_done(captures: Sequence[CaptureThread], pipelines: Sequence[Pipeline | None],
               publisher: Publisher | None) -> bool:
    """Every finite source ended and every result they led to has reached the broker."""
    return (_all_ended(captures)
            and all(p is not None and p.drained for p in pipelines)
            and publisher is not None and publisher.wait_idle(0.0))
