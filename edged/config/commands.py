"""Config of remote commands (issue 20): MQTT topics that change what is safe to
change at runtime, persisted in an overrides file (edged.config.overrides).

Off by default. Whoever may publish on `<prefix>/<device>/cmd/...` controls the
device, so commands need a TLS connection with a user name (the broker's ACL
then says who may publish there: docs/fleet.md) unless `allow_insecure`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edged.config.overrides import DEFAULT_PATH
from edged.config.sections import FilePath, Section

Problems = list[tuple[tuple[str | int, ...], str]]


class CommandsConfig(Section):
    enabled: bool = Field(default=False, description=(
        "Take commands on <prefix>/<device>/cmd/<name> and <prefix>/<device>/<camera>/cmd/"
        "<name> (set, reload, config; docs/fleet.md). Each answers on .../cmd/<name>/result."))
    allow_insecure: bool = Field(default=False, description=(
        "Take commands without mqtt.tls and mqtt.username (a lab broker): anyone who can "
        "publish on cmd/ then controls this device."))
    overrides_file: FilePath = Field(default=DEFAULT_PATH, description=(
        "Where the settings changed by commands are kept, so a restart keeps them (the "
        "service's StateDirectory). Read at every start and reload while commands are on; "
        "delete a key there to drop it."))
    max_payload_bytes: int = Field(default=4096, ge=64, le=65536, description=(
        "Larger command payloads are refused unread."))


def command_cameras(config: Any) -> list[str]:
    """The cameras with command topics of their own: every [[cameras]] entry, switched
    off too (or one switched off could not be switched on again)."""
    return [camera.id for camera in config.cameras]


def commands_problems(commands: CommandsConfig, mqtt: Any) -> Problems:
    """Commands on without a connection that says who sends them."""
    if not commands.enabled or commands.allow_insecure or (mqtt.tls and mqtt.username):
        return []
    missing = " and ".join(k for k, v in (("mqtt.tls", mqtt.tls),
                                         ("mqtt.username", mqtt.username)) if not v)
    return [(("commands", "enabled"), f"needs {missing}: whoever may publish on cmd/ "
             "controls this device (or set commands.allow_insecure = true on a lab broker)")]
