"""A result's PUBACK read by edged's few lines (`edged.mqtt.acks`), against a real
mosquitto, and paho's own path for everything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt._packet
import pytest
from broker import Mosquitto
from publisher_helpers import FAST

from edged.mqtt.publisher import Publisher, PublisherSettings


def _acked(port: int, protocol: str, n: int, *, quick: bool) -> tuple[int, int, int]:
    pub = Publisher(PublisherSettings(device_id="cam-1", port=port, protocol=protocol,
                                      **FAST))  # type: ignore[arg-type]
    client: Any = pub._client
    assert client.quick_acks, "the installed paho lacks what edged.mqtt.acks reads"
    client.quick_acks = quick
    pub.start()
    try:
        assert pub.wait_connected(5)
        for seq in range(n):
            pub.publish_result(b'{"seq": %d}' % seq)
        assert pub.wait_idle(10)
        c = pub.counters()
        return c.published, c.acked, c.inflight
    finally:
        pub.stop()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_every_result_is_acknowledged_without_paho_decoding_its_puback(
        tmp_path: Path, protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[int] = []
    paho_decode = paho.mqtt._packet.decode_puback

    def counting(*args: Any) -> Any:
        decoded.append(1)
        return paho_decode(*args)

    monkeypatch.setattr(paho.mqtt._packet, "decode_puback", counting)
    with Mosquitto(tmp_path / "b") as broker:
        assert _acked(broker.port, protocol, 90, quick=True) == (90, 90, 0)
        assert decoded == []  # (a refused result's longer PUBACK: test_publish's ACL test)
        assert _acked(broker.port, protocol, 90, quick=False) == (90, 90, 0)
        assert len(decoded) >= 90  # and the status messages'
