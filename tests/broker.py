"""A real mosquitto for tests, plus a subscriber that records what arrives.

Usage::

    from broker import Mosquitto, Subscriber, make_tls_files

    with Mosquitto(tmp_path) as broker:                 # 127.0.0.1, a free port
        with Subscriber(broker.port, "edged/#") as sub:
            ...                                          # run something that publishes
            msg = sub.wait_for(lambda m: m.topic.endswith("/status"), timeout=5)
        broker.stop()                                    # SIGTERM (or stop(signal.SIGKILL))
        broker.start()                                   # same port, same config
        broker.restart(down_for=2.0)

Options (keyword arguments of `Mosquitto`): `allow_anonymous`, `passwords`
({user: password}, hashed with `mosquitto_passwd -b`), `acl` (the text of an
ACL file), `tls` (a `TlsFiles` from `make_tls_files`; the listener then speaks
TLS only), `require_certificate` (mutual TLS), `message_size_limit`,
`persistence` (off by default; on, the broker keeps sessions across a SIGTERM
restart, which a subscriber with `clean_session=False` needs in order not to
miss messages published before it reconnects), `extra` (more config lines).

The broker runs as root here (`user root`), listens on 127.0.0.1 only and logs
to `<workdir>/mosquitto.log` (`broker.log_text()`); `start()` returns only once
the port accepts connections and raises with the log's tail if it does not.

Pytest fixtures (`mosquitto`, `mosquitto_factory`, `tls_files`): add
`pytest_plugins = ["broker"]` to tests/conftest.py to share them, or wrap the
context manager in a local fixture.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edged.system.childproc import stop_process

MOSQUITTO = os.environ.get("EDGED_TEST_MOSQUITTO", "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = os.environ.get("EDGED_TEST_MOSQUITTO_PASSWD", "mosquitto_passwd")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and the certificates it signed (PEM files)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA: (cert, key). Call twice for a 'wrong CA'."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", f"/CN=edged test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return cert, key


def make_cert(directory: Path, name: str, ca: tuple[Path, Path], *,
              server: bool) -> tuple[Path, Path]:
    """A leaf certificate signed by `ca`: (cert, key). Server certificates
    name 127.0.0.1 and localhost, which is what the client verifies."""
    cert, key, csr, ext = (directory / f"{name}.crt", directory / f"{name}.key",
                           directory / f"{name}.csr", directory / f"{name}.ext")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}", cwd=directory)
    usage = "serverAuth" if server else "clientAuth"
    lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={usage}"]
    if server:
        lines.append("subjectAltName=IP:127.0.0.1,DNS:localhost")
    ext.write_text("\n".join(lines) + "\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
             cwd=directory)
    return cert, key


def make_tls_files(directory: Path) -> TlsFiles:
    """CA, server certificate for 127.0.0.1/localhost, client certificate."""
    ca = make_ca(directory)
    server = make_cert(directory, "server", ca, server=True)
    client = make_cert(directory, "edged-test-client", ca, server=False)
    return TlsFiles(ca[0], ca[1], server[0], server[1], client[0], client[1])


# ---------------------------------------------------------------- broker


class Mosquitto:
    """One mosquitto process on a fixed loopback port, restartable."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        allow_anonymous: bool = True,
        passwords: dict[str, str] | None = None,
        acl: str | None = None,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        message_size_limit: int | None = None,
        persistence: bool = False,
        extra: str = "",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            "user root",
            f"listener {self.port} {HOST}",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
        ]
        if persistence:
            lines += [f"persistence_location {self.workdir}/", "autosave_interval 1"]
        if passwords:
            pw = self.workdir / "passwords"
            pw.touch(mode=0o600)
            for user, password in passwords.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(pw), user, password], check=True,
                               capture_output=True)
            lines.append(f"password_file {pw}")
        if acl is not None:
            acl_file = self.workdir / "acl"
            acl_file.write_text(acl)
            acl_file.chmod(0o600)
            lines.append(f"acl_file {acl_file}")
        if tls is not None:
            lines += [f"cafile {tls.ca_cert}", f"certfile {tls.server_cert}",
                      f"keyfile {tls.server_key}",
                      f"require_certificate {'true' if require_certificate else 'false'}"]
        if message_size_limit is not None:
            lines.append(f"message_size_limit {message_size_limit}")
        if extra:
            lines.append(extra)
        self.conf_path.write_text("\n".join(lines) + "\n")

    # -- lifecycle

    def start(self, timeout: float = 10.0) -> Mosquitto:
        if self.running:
            return self
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf_path)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode} on port "
                                   f"{self.port}:\n{self.log_tail()}")
            if _port_accepts(self.port):
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept on port {self.port} within {timeout}s:\n"
                           f"{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        """Signal the broker and wait for it to exit (SIGKILL after `timeout`)."""
        if self.proc is None:
            return
        stop_process(self.proc, timeout, sig)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self, down_for: float = 0.0, sig: int = signal.SIGTERM) -> None:
        """Stop, stay down for `down_for` seconds, start on the same port."""
        self.stop(sig)
        if down_for:
            time.sleep(down_for)
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- inspection

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, text: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return True
            time.sleep(0.05)
        return False


# ------------------------------------------------------------ subscriber


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    received_at: float  # time.time()
    properties: dict[str, Any]


class Subscriber:
    """A paho client in its own thread that records every message it gets.

    Re-subscribes on every reconnect. `clean_session=False` with a fixed
    `client_id` keeps a session on the broker (MQTT 3.1.1) so QoS 1 messages
    published while it is away are kept for it.
    """

    def __init__(
        self,
        port: int,
        topics: str | list[str] = "#",
        *,
        qos: int = 1,
        client_id: str = "",
        clean_session: bool = True,
        protocol: int = mqtt.MQTTv311,
        tls: TlsFiles | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.qos = qos
        self._messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol}
        if protocol != mqtt.MQTTv5:
            kwargs["clean_session"] = clean_session
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.2)  # type: ignore[arg-type]
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca_cert), certfile=str(tls.client_cert),
                                keyfile=str(tls.client_key))
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe([(t, self.qos) for t in self.topics])

    def _on_subscribe(self, *_args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, Any] = {}
        if msg.properties is not None:
            props = {k: v for k, v in msg.properties.json().items()}
        rec = Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos, time.time(),
                       props)
        with self._cond:
            self._messages.append(rec)
            self._cond.notify_all()

    def start(self, timeout: float = 5.0) -> Subscriber:
        self.client.connect(HOST, self.port, keepalive=5)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError(f"subscriber: no SUBACK from 127.0.0.1:{self.port} in {timeout}s")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[Received]:
        with self._cond:
            return list(self._messages)

    def on(self, suffix: str) -> list[Received]:
        """Messages whose topic ends with `suffix` (e.g. "/results")."""
        return [m for m in self.messages if m.topic.endswith(suffix)]

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 5.0) -> Received:
        """The first recorded message (past or future) matching `predicate`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self._messages:
                    if predicate(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = sorted({m.topic for m in self._messages})
                    raise TimeoutError(f"no matching message within {timeout}s "
                                       f"({len(self._messages)} received on {topics})")
                self._cond.wait(left)

    def wait_count(self, predicate: Callable[[Received], bool], count: int,
                   timeout: float = 5.0) -> list[Received]:
        """Wait until at least `count` recorded messages match; returns them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self._messages if predicate(m)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} matching messages within "
                                       f"{timeout}s")
                self._cond.wait(left)


def retained(port: int, topic: str, timeout: float = 2.0, **kwargs: Any) -> Received | None:
    """The retained message on `topic` right now, or None (a fresh subscription)."""
    with Subscriber(port, topic, **kwargs) as sub, contextlib.suppress(TimeoutError):
        return sub.wait_for(lambda m: m.retain, timeout)
    return None


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A default broker (anonymous, plain) for one test."""
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """`mosquitto_factory(**options)` starts brokers; all are killed after the test."""
    brokers: list[Mosquitto] = []

    def make(**options: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto{len(brokers)}", **options)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))
