"""The PUBACK of a delivered result, read without paho's general decoder.

Every result at QoS 1 comes back as a PUBACK. paho decodes each one into a new
`ReasonCode` and a new `Properties` (a dict of every MQTT 5 property name), logs
it at DEBUG, and only then finds the message: at 100 results/s that was the
largest part of the network thread's CPU per result (`edged bench`, issue 21).
A PUBACK without properties is the packet id and, in MQTT 5, a reason code (0,
"Success", may be left out; 16, "No matching subscribers"; a refusal's code), so a
ReasonCode made once per code and one shared empty property set describe all of
them. A PUBACK with properties (an MQTT 5 reason string) and PUBCOMP go to paho.

This reads paho's private state (`_in_packet`, `_out_messages`, `_do_on_publish`),
unchanged across paho 2.x; `quick_acks_supported` says whether the installed paho
still has it, and without it every ack takes paho's own path.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

_NO_PROPERTIES: Final = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
_REASONS: dict[int, ReasonCode | None] = {}  # by code, made once each


def _reason(code: int) -> ReasonCode | None:
    """The shared ReasonCode of a PUBACK's code; None for a code PUBACK cannot have."""
    if code not in _REASONS:
        try:
            _REASONS[code] = ReasonCode(PacketTypes.PUBACK, identifier=code)
        except (KeyError, ValueError, TypeError):
            _REASONS[code] = None
    return _REASONS[code]


def quick_acks_supported(client: mqtt.Client) -> bool:
    """The paho internals the quick path reads are there (paho 2.x)."""
    return (isinstance(getattr(client, "_in_packet", None), dict)
            and isinstance(getattr(client, "_out_messages", None), dict)
            and hasattr(client, "_out_message_mutex")
            and callable(getattr(client, "_do_on_publish", None)))


class QuickAcks(mqtt.Client):
    """paho's client with the common PUBACK handled in a few lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.quick_acks = quick_acks_supported(self)  # False: paho's own path for all

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet: Any = self._in_packet["packet"] if self.quick_acks else b""
        n = len(packet)
        # MQTT 3.1.1: the packet id alone. MQTT 5: then a reason code and a property
        # length, either left out when 0; with properties, paho reads them.
        if cmd != "PUBACK" or not (n == 2 or (
                self._protocol == mqtt.MQTTv5 and (n == 3 or (n == 4 and not packet[3])))):
            return super()._handle_pubackcomp(cmd)
        reason = _reason(packet[2] if n > 2 else 0)
        if reason is None:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
