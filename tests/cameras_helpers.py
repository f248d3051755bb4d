"""Running the real `edged run` on a config with [[cameras]] (tests/service/test_cameras.py
and the churn test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from broker import Mosquitto, Subscriber
from daemon_helpers import MODELS, DaemonProcess, base_config, toml_value
from reload_helpers import digit_folder, sighup, wait_until

MODEL = MODELS / "digits_int8.tflite"


def config_text(cfg: dict[str, dict[str, Any]], cameras: list[dict[str, Any]]) -> str:
    lines = []
    for name, keys in cfg.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    for camera in cameras:
        lines.append("[[cameras]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in camera.items()]
    return "\n".join(lines) + "\n"


class Cameras:
    """A daemon on a config with [[cameras]], and a subscriber to all it publishes."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, cameras: list[dict[str, Any]],
                 **sections: dict[str, Any]) -> None:
        self.cfg = base_config(broker.port, model=MODEL, frames=digit_folder(tmp_path, "all"),
                               output={"decoder": "classification", "top_k": 1,
                                       "min_score": 0.0, "include_raw": False,
                                       "stats_interval_s": 1.0}, **sections)
        self.path = tmp_path / "edged.toml"
        self.cameras = cameras
        self.path.write_text(config_text(self.cfg, cameras))
        self.sub = Subscriber(broker.port, ["edged/#", "homeassistant/#"]).start()
        self.daemon = DaemonProcess(self.path)

    def results(self, camera: str, after: float = 0.0) -> list[dict[str, Any]]:
        return [orjson.loads(m.payload) for m in self.sub.on(f"/test/{camera}/results")
                if m.received_at > after]

    def wait_results(self, camera: str, count: int, after: float = 0.0,
                     timeout: float = 30.0) -> None:
        wait_until(lambda: len(self.results(camera, after)) >= count, timeout,
                   f"{count} results of camera {camera}", self.daemon.log_text)

    def reload(self, cameras: list[dict[str, Any]], expect: str = "reload: applied") -> float:
        self.cameras = cameras
        self.path.write_text(config_text(self.cfg, cameras))
        return sighup(self.daemon, expect)


def folder(tmp_path: Path, name: str, digits: str) -> str:
    return str(digit_folder(tmp_path, name, digits))
