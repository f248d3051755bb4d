"""A Publisher on a test broker, and result payloads whose seq can be read back."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from edged.mqtt.payload import (
    Result,
    decode_result,
    encode_result_binary,
    encode_result_json,
    outputs_from,
)
from edged.mqtt.publisher import Publisher, PublisherSettings
from edged.numerics.tensors import TensorInfo

FAST = {"keepalive_s": 5, "backoff_min_s": 0.1, "backoff_max_s": 0.4, "connect_timeout_s": 3.0}


def result_payload(seq: int, binary: bool = False) -> bytes:
    info = TensorInfo(0, "logits", (1, 10), np.int8, scales=(1 / 256,), zero_points=(-128,))
    data = (np.arange(10, dtype=np.float32) + seq).reshape(1, 10) / 16
    result = Result("cam-1", seq, time.time(), "digits_int8.tflite", "cpu",
                    outputs_from([info], [data]), {"invoke": 800})
    return encode_result_binary(result) if binary else encode_result_json(result)


def seq_of(payload: bytes) -> int:
    return int(decode_result(payload)["seq"])


def publisher(port: int, **kw: Any) -> Publisher:
    pub = Publisher(PublisherSettings(device_id=kw.pop("device_id", "cam-1"), port=port,
                                      **{**FAST, **kw}))
    pub.start()
    return pub
