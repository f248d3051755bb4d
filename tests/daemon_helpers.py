"""Running the real `edged run` as a child process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
FRAMES = ROOT / "tests" / "data" / "frames"
MODELS = ROOT / "tests" / "data" / "models"


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def base_config(port: int, *, model: Path, frames: Path, device: str = "test",
                **overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    cfg: dict[str, dict[str, Any]] = {
        "device": {"id": device},
        "source": {"kind": "folder", "uri": str(frames), "loop": True, "fps": 30.0},
        "model": {"path": str(model)},
        "inference": {"num_threads": 1, "restart_backoff_s": 0.1, "restart_backoff_max_s": 0.5,
                      "invoke_timeout_s": 2.0},
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1,
                 "reconnect_max_s": 0.5, "keepalive_s": 5},
        "output": {"stats_interval_s": 1.0},
    }
    for name, keys in overrides.items():
        cfg.setdefault(name, {}).update(keys)
    return cfg


class DaemonProcess:
    """`python -m edged run --config FILE`, its stderr kept in a file."""

    def __init__(self, config: Path, env: Mapping[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.log_path = config.with_suffix(".log")
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edged", "run", "--config", str(config), *args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pid(self, timeout: float = 10.0) -> int:
        """The inference worker: the daemon's child running edged.inference.worker."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                    if b"edged.inference.worker" in cmdline:
                        return int(child)
            time.sleep(0.05)
        raise AssertionError(f"no worker process under {self.pid}:\n{self.log_text()}")

    def send(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"edged run did not stop within {timeout} s after "
                                 f"{signal.Signals(sig).name}:\n{self.log_text()}") from None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()
        return code

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc.poll() is None:
            self.stop(signal.SIGKILL)
        self._log.close()


def results(messages: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in messages if m.topic.endswith("/results")]
