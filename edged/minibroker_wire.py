"""MQTT 3.1.1 wire format for the embedded demo broker (`edged.minibroker`):
packet framing, field reading and topic matching. Pure functions, no I/O."""

from __future__ import annotations

MAX_PACKET = 1 << 20
(CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ,
 PINGRESP, DISCONNECT) = (1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14)


class ProtocolError(ValueError):
    """A client broke the protocol: that client is closed, its will published."""


def encode_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def decode_length(buf: bytearray, max_packet: int, start: int = 0) -> tuple[int, int] | None:
    """(remaining length, fixed header size) of the packet at `buf[start]`, None
    while incomplete. The limit is checked before the body is buffered."""
    value = 0
    for i in range(1, 5):
        if start + i >= len(buf):
            return None
        value |= (buf[start + i] & 0x7F) << (7 * (i - 1))
        if not buf[start + i] & 0x80:
            if 1 + i + value > max_packet:
                raise ProtocolError(f"packet of {1 + i + value} bytes exceeds the "
                                    f"{max_packet}-byte limit")
            return value, i + 1
    raise ProtocolError("remaining length longer than 4 bytes")


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_length(len(body)) + body


def mqtt_str(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def valid_topic(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic


def valid_filter(filt: str) -> bool:
    levels = filt.split("/")
    return bool(filt) and all(
        ("#" not in lv or (lv == "#" and i == len(levels) - 1)) and ("+" not in lv or lv == "+")
        for i, lv in enumerate(levels))


def topic_matches(filt: str, topic: str) -> bool:
    """MQTT matching; `$SYS`-style topics are not matched by a leading wildcard."""
    if topic.startswith("$") and filt[:1] in ("+", "#"):
        return False
    f, t = filt.split("/"), topic.split("/")
    for i, lv in enumerate(f):
        if lv == "#":
            return True  # also matches the parent level: "a/#" matches "a"
        if i >= len(t) or (lv != "+" and lv != t[i]):
            return False
    return len(f) == len(t)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def blob(self) -> bytes:
        return self.take(self.u16())

    def text(self) -> str:
        try:
            text = self.blob().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("string is not valid UTF-8") from exc
        if "\0" in text:
            raise ProtocolError("string contains U+0000")
        return text

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def left(self) -> int:
        return len(self.data) - self.pos
