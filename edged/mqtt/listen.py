"""`edged listen`: subscribe to results and print them, one line each.

    edged listen --host broker.lan --device cam-1
    edged listen --kind detection                     # only results a detector decoded
    edged listen --json | jq .outputs[0].data        # raw JSON, one document a line
    edged listen --protocol 5 --share workers        # one of N consumers sharing the load

Each line: the device's result rate, device, sequence number, capture-to-
publish latency, model@delegate, then the decoded answer (top classes,
objects, pose score, largest segments) or the largest raw output values.

JSON and binary results are both decoded. `--status` adds the status and
stats topics. Exit codes: 0 after `--count` results, `--timeout` or Ctrl-C;
1 when the broker cannot be reached or refuses us.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
from numpy.typing import NDArray
from paho.mqtt.enums import CallbackAPIVersion

from edged.mqtt.payload import JSON_OPTS, PayloadError, decode_result
from edged.mqtt.settings import describe_error, reason_text


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("listen", help="print results as they arrive",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="edged", help="topic prefix (default: edged)")
    p.add_argument("--device", default="+", help="device id (default: all devices)")
    p.add_argument("--kind", action="append", default=[],
                   choices=("none", "classification", "detection", "pose", "segmentation"),
                   help="only results of this decoder kind (repeatable; none = not decoded)")
    p.add_argument("--share", metavar="GROUP", help="subscribe as a member of this MQTT shared "
                   "subscription group ($share/GROUP/...): the broker splits results between "
                   "the group's members")
    p.add_argument("--outputs", action="store_true",
                   help="with decoded results, also show the raw output values")
    p.add_argument("--topic", action="append", default=[],
                   help="subscribe to this topic instead (repeatable; wildcards allowed)")
    p.add_argument("--status", action="store_true", help="also print status and stats")
    p.add_argument("--json", action="store_true", help="print each result as one JSON line")
    p.add_argument("--top", type=int, default=3, help="values shown per output (default 3)")
    p.add_argument("--count", type=int, default=0, help="exit after this many results")
    p.add_argument("--timeout", type=float, default=0.0, help="exit after this many seconds")
    p.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1")
    p.add_argument("--username")
    p.add_argument("--password-file", type=Path, help="file holding the password")
    p.add_argument("--tls-ca", type=Path, help="CA file: connect with TLS")
    p.add_argument("--tls-cert", type=Path)
    p.add_argument("--tls-key", type=Path)
    p.set_defaults(handler=run)


class _Listener:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.topics: list[str] = list(args.topic) or [f"{args.prefix}/{args.device}/results"]
        if args.share:
            self.topics = [f"$share/{args.share}/{t}" for t in self.topics]
        if args.status and not args.topic:
            self.topics += [f"{args.prefix}/{args.device}/status",
                            f"{args.prefix}/{args.device}/stats"]
        self.results = 0
        self.done = threading.Event()
        self.error: str | None = None
        self._last_seen: dict[str, tuple[float, float]] = {}  # device -> (time, fps)

    def on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self.error = f"broker refused the connection: {reason_text(rc)}"
            self.done.set()
            return
        client.subscribe([(t, 1) for t in self.topics])
        print(f"listening on {', '.join(self.topics)} at {self.args.host}:{self.args.port}",
              file=sys.stderr, flush=True)

    def on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._show(msg.topic, bytes(msg.payload))
        except BrokenPipeError:  # `edged listen | head`
            self.done.set()
        except Exception as exc:  # one bad message must not end a field session
            print(f"{msg.topic}: cannot show message: {exc}", file=sys.stderr, flush=True)

    def _show(self, topic: str, payload: bytes) -> None:
        if not topic.endswith("/results"):
            if self.args.json:
                sys.stdout.write(payload.decode(errors="replace") + "\n")
            else:
                sys.stdout.write(f"{topic} {payload.decode(errors='replace')}\n")
            sys.stdout.flush()
            return
        try:
            doc = decode_result(payload)
        except PayloadError as exc:
            print(f"{topic}: {exc}", file=sys.stderr, flush=True)
            return
        decoded = doc.get("decoded")
        kind = decoded.get("kind", "none") if isinstance(decoded, dict) else "none"
        if self.args.kind and kind not in self.args.kind:
            return
        if self.args.count and self.results >= self.args.count:
            # paho's thread can hand over a few more before the disconnect lands.
            return
        fps = self._fps(str(doc.get("device_id", topic)))
        if self.args.json:
            line = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        elif isinstance(decoded, dict):
            shown = {k: v for k, v in doc.items() if k != "decoded"}
            if not self.args.outputs:
                shown["outputs"] = []
            line = f"{fps}  {summarize(shown, self.args.top)}  {decoded_text(decoded)}"
        else:
            line = f"{fps}  {summarize(doc, self.args.top)}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        self.results += 1
        if self.args.count and self.results >= self.args.count:
            self.done.set()

    def _fps(self, device: str) -> str:
        now = time.monotonic()
        last = self._last_seen.get(device)
        fps = 0.0
        if last is not None and now > last[0]:
            inst = 1.0 / (now - last[0])
            fps = inst if last[1] == 0.0 else 0.8 * last[1] + 0.2 * inst
        self._last_seen[device] = (now, fps)
        return f"{fps:5.1f} fps"


def _name(item: dict[str, Any]) -> str:
    label = item.get("label")
    return str(label if label is not None else item.get("label_id", "?"))


def decoded_text(decoded: dict[str, Any], top: int = 3) -> str:
    """The decoded answer in a few words: `7 0.98, 1 0.01` / `3 objects: ...`."""
    kind = decoded.get("kind")
    if kind == "classification":
        items = decoded.get("classes") or []
        return ", ".join(f"{_name(c)} {c.get('score', 0):.2f}" for c in items[:top]) or "no class"
    if kind == "detection":
        dets = decoded.get("detections") or []
        counts: dict[str, int] = {}
        for d in dets:
            counts[_name(d)] = counts.get(_name(d), 0) + 1
        per = ", ".join(f"{n} x{c}" for n, c in sorted(counts.items(), key=lambda x: -x[1]))
        # A cascade's answers (docs/cascade.md): each classified detection's top class.
        named = [f"{_name(d)} {_name(d['classes'][0])} {d['classes'][0].get('score', 0):.2f}"
                 for d in dets if d.get("classes")][:top]
        return (f"{len(dets)} objects" + (f": {per}" if per else "")
                + (f"; classified: {', '.join(named)}" if named else ""))
    if kind == "pose":
        poses = decoded.get("poses") or []
        return f"pose {poses[0].get('score', 0):.2f}" if poses else "no pose"
    if kind == "segmentation":
        items = decoded.get("classes") or []
        return ", ".join(f"{_name(c)} {100 * c.get('fraction', 0):.0f}%" for c in items[:top])
    return str(kind)


def run(args: argparse.Namespace) -> int:
    listener = _Listener(args)
    v5 = args.protocol == "5"
    if args.share and any(c in args.share for c in "/+#"):
        print(f"edged listen: --share {args.share!r}: a group name has no '/', '+' or '#'",
              file=sys.stderr)
        return 2
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    client.suppress_exceptions = True
    client.on_connect = listener.on_connect
    client.on_message = listener.on_message
    password = None
    if args.password_file:
        try:
            password = args.password_file.read_text().strip()
        except OSError as exc:
            print(f"edged listen: --password-file {args.password_file}: "
                  f"{describe_error(exc)}", file=sys.stderr)
            return 1
    try:
        if args.username:
            client.username_pw_set(args.username, password)
        if args.tls_ca:
            client.tls_set(ca_certs=str(args.tls_ca),
                           certfile=str(args.tls_cert) if args.tls_cert else None,
                           keyfile=str(args.tls_key) if args.tls_key else None)
        client.connect(args.host, args.port, keepalive=30)
    except (OSError, ValueError) as exc:
        print(f"edged listen: cannot connect to {args.host}:{args.port}: "
              f"{describe_error(exc)}", file=sys.stderr)
        return 1
    client.loop_start()
    try:
        listener.done.wait(args.timeout or None)
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    if listener.error:
        print(f"edged listen: {args.host}:{args.port}: {listener.error}", file=sys.stderr)
        return 1
    return 0


def summarize(doc: Mapping[str, Any], top: int = 3) -> str:
    """One readable line for a decoded result (what `edged listen` prints)."""
    parts = [f"{doc.get('device_id', '?')} seq={doc.get('seq', '?')}"]
    cap, pub = doc.get("captured_at"), doc.get("published_at")
    if isinstance(cap, int | float) and isinstance(pub, int | float):
        parts.append(f"latency={(pub - cap) * 1000:.1f}ms")
    parts.append(f"{doc.get('model', '?')}@{doc.get('delegate', '?')}")
    decoded = doc.get("decoded")
    if decoded is not None:
        parts.append(f"decoded={_short(decoded)}")
    for out in doc.get("outputs", ()):
        parts.append(f"{out.get('name', '?')}{list(out.get('shape', ()))}: "
                     f"{_top_values(np.asarray(out.get('data')), top)}")
    return "  ".join(parts)


def _top_values(data: NDArray[Any], top: int) -> str:
    flat = data.ravel()
    if flat.size == 0:
        return "(empty)"
    if flat.size <= top:
        return " ".join(_fmt(v) for v in flat)
    finite = np.where(np.isnan(flat), -np.inf, flat) if flat.dtype.kind == "f" else flat
    idx = np.argpartition(finite, -top)[-top:]
    idx = idx[np.argsort(finite[idx])[::-1]]
    return "top " + " ".join(f"{int(i)}={_fmt(flat[i])}" for i in idx)


def _fmt(v: Any) -> str:
    return f"{float(v):.4g}" if isinstance(v, float | np.floating) else str(v)


def _short(value: Any, limit: int = 80) -> str:
    text = orjson.dumps(value, option=JSON_OPTS).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."
