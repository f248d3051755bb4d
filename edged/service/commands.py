"""Remote commands carried out (issue 20), on the daemon's housekeeping thread.

`set` checks the new value as if written in the config (the whole file is
validated with it), keeps it in the overrides file (edged.config.overrides),
then reloads: the reload plan restarts only what the key needs (a min_score
swaps the decoder between frames). A reload that fails puts the file back.
`reload` is SIGHUP's reload; `config` answers with the effective config,
secrets masked; `snapshot` publishes a camera's next frame as a JPEG; `model`
starts a model update (edged.service.updates). Every
command is logged with its outcome, and answered.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from edged.config import Config, read_toml
from edged.config.commands import command_cameras
from edged.config.overrides import (
    OverrideError,
    merged,
    read_overrides,
    with_setting,
    write_overrides,
)
from edged.config.text import os_error
from edged.config.wording import messages
from edged.inference.modelupdate import UpdateError
from edged.mqtt.commands import Command, CommandInbox, answer, command_topics
from edged.mqtt.eventpayload import snapshot_topic
from edged.service import applying
from edged.service.updates import Updater

if TYPE_CHECKING:
    from edged.mqtt.publisher import Publisher
    from edged.service.daemon import Daemon

log = logging.getLogger("edged.commands")
PER_TICK = 4  # commands carried out per housekeeping tick, so a storm cannot starve it


class CommandError(ValueError):
    """A command refused or failed; one line, its answer's error (and `fields`)."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.fields = fields


class CommandRunner:
    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.inbox: CommandInbox | None = None
        self.updater = Updater(d)

    def listen(self, publisher: Publisher, cfg: Config) -> None:
        """Subscribe a publisher (before its start) to the command topics, if commands
        are on; the commands waiting for the previous one are dropped with it."""
        self.inbox = None
        if not cfg.commands.enabled:
            return
        inbox = self.inbox = CommandInbox(cfg.commands.max_payload_bytes, publisher.publish_event)
        for topic, name, camera in command_topics(cfg.topic_base, command_cameras(cfg)):
            publisher.watch(topic, inbox.handler(topic, name, camera), retain=True)
        if cfg.updates.enabled:
            publisher.watch(f"{cfg.topic_base}/cmd/model/chunk", self.updater.on_chunk,
                            retain=True)
            # The fleet's announcement, retained for the devices that come later; each
            # answers on its own cmd/model/result, and takes it once (edged.service.updates).
            fleet = f"{cfg.mqtt.topic_prefix}/fleet/model"
            publisher.watch(fleet, inbox.handler(fleet, "model", None, retained_ok=True,
                                                 answer_on=f"{cfg.topic_base}/cmd/model"),
                            retain=True)

    def started(self) -> None:
        """Once the workers run: the last model update's state (one on trial resumes)."""
        self.updater.load(f"{self.d.cfg.topic_base}/cmd/model")

    def run_pending(self) -> None:
        try:
            self.updater.tick()
        except Exception:  # a disk full while writing, say: the daemon goes on
            log.exception("model update: failed (the update is dropped)")
            self.updater.receiving = None
        for _ in range(PER_TICK):
            command = self.inbox.take() if self.inbox is not None else None
            if command is None:
                return
            self._run(command)

    def _run(self, command: Command) -> None:
        where = f" ({command.camera})" if command.camera else ""
        try:
            fields = getattr(self, f"_{command.name}")(command)
        except CommandError as exc:
            log.warning("command %s%s refused: %s", command.name, where, exc)
            reply = answer(command, False, str(exc), **exc.fields)
        except Exception as exc:  # a bug or the disk: answered, and the daemon goes on
            log.exception("command %s%s failed", command.name, where)
            reply = answer(command, False, f"failed: {type(exc).__name__}: {exc}".splitlines()[0])
        else:
            log.info("command %s%s: done %s", command.name, where,
                     orjson.dumps({k: v for k, v in fields.items() if k != "config"}).decode())
            reply = answer(command, True, **fields)
        if self.d.publisher is not None:
            self.d.publisher.publish_event(command.result_topic, reply)

    def _set(self, command: Command) -> dict[str, Any]:
        request = _json(command.payload)
        key, value = request.get("key"), request.get("value")
        if not isinstance(key, str) or "value" not in request:
            raise CommandError('payload: needs {"key": "output.min_score", "value": 0.4}')
        path = self.d.cfg.commands.overrides_file
        try:
            before = read_overrides(path)
            after = with_setting(before, command.camera, key, value)
        except OverrideError as exc:
            raise CommandError(str(exc)) from None
        where = f"cameras.{command.camera}." if command.camera else ""
        self._check(after, where + key)
        try:
            write_overrides(path, after)
        except OSError as exc:
            raise CommandError(f"{path}: cannot write: {os_error(exc)}") from None
        applying.reload(self.d)
        if self.d.reload_error:
            write_overrides(path, before)  # what runs is the previous config: keep them one
            raise CommandError(f"reload: {self.d.reload_error}")
        return {"key": key, "value": value}

    def _check(self, overrides: dict[str, Any], key: str) -> None:
        """The config file with these overrides must load, as a start would."""
        _text, data = read_toml(self.d.path)
        try:
            document, _ = merged(data, overrides)
            Config.model_validate(document, context={"base_dir": self.d.path.absolute().parent})
        except OverrideError as exc:
            raise CommandError(str(exc)) from None
        except ValidationError as exc:
            found = messages(exc)
            raise CommandError("; ".join(
                f"{'.'.join(str(p) for p in loc)}: {message}" for loc, message in found[:3])
                or key) from None

    def _reload(self, command: Command) -> dict[str, Any]:
        applying.reload(self.d)
        if self.d.reload_error:
            raise CommandError(f"reload: {self.d.reload_error}")
        return {}

    def _snapshot(self, command: Command) -> dict[str, Any]:
        """The next frame of the camera (every running one, sent to the device) as a JPEG
        on its snapshot topic, retained, as an event's."""
        parts = [p for p in self.d.cameras if command.camera in (None, p.id)]
        if not parts or self.d.publisher is None:
            raise CommandError(f"camera {command.camera!r} is not running")
        topics = []
        for part in parts:
            topics.append(snapshot_topic(self.d.cfg.topic_base, part.cfg.source.name))
            part.event_stages.ask_snapshot(topics[-1], self.d.publisher.publish_control)
        return {"topics": topics}

    def _model(self, command: Command) -> dict[str, Any]:
        if not self.d.cfg.updates.enabled:
            raise CommandError("model updates are off (updates.enabled)")
        doc = _json(command.payload)
        try:
            return self.updater.announce(command, doc)
        except UpdateError as exc:
            # The version too: a backend following a rollout matches answers by it.
            raise CommandError(str(exc), version=str(doc.get("version", "")), state=(
                "declined" if str(exc).startswith("declined") else "rejected")) from None

    def _config(self, command: Command) -> dict[str, Any]:
        # SecretStr dumps masked; paths and the rest as the file would write them.
        return {"config": self.d.cfg.model_dump(mode="json")}


def _json(payload: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"payload: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CommandError("payload: must be a JSON object")
    return doc


def settings_of(cfg: Config) -> dict[str, Any]:
    """The values in effect of what the Home Assistant controls set, for the stats."""
    return {"min_score": cfg.output.min_score, "max_fps": cfg.inference.max_fps,
            "publish": cfg.output.publish,
            "cameras": {c.id: {"enabled": c.enabled, "max_fps": c.max_fps}
                        for c in cfg.cameras}}
