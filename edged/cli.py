"""The `edged` command: one sub-command per module that implements it.

What `edged --help` and `edged COMMAND --help` say is written here, for the
people who run edged (ABOUT); each module adds its own options.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from edged import __version__
from edged.system import nativeout

# sub-command -> module exposing `register(subparsers)`; each module's
# registered handler returns the process exit code. Imported lazily so that
# `edged inspect` does not pay for paho, and `edged listen` not for the runtime.
COMMANDS: dict[str, str] = {
    "run": "edged.service.daemon",
    "check-config": "edged.config.checkcommand",
    "inspect": "edged.inference.inspect",
    "listen": "edged.mqtt.listen",
    "bench": "edged.bench.command",
    "demo": "edged.demo",
    "doctor": "edged.doctor.command",
    "sign-model": "edged.inference.signmodel",
}
# What each command does with native libraries' own stderr output (edged.system.nativeout):
# the daemon logs it, one-shot commands that load the runtime or OpenCV drop it.
# `demo` and `listen` load neither (demo's daemon is an `edged run` of its own).
NATIVE_OUTPUT: dict[str, Callable[[], bool]] = {
    "run": nativeout.route_native_output_to_log,
    "check-config": nativeout.silence_native_output,
    "inspect": nativeout.silence_native_output,
    "bench": nativeout.silence_native_output,
    "doctor": nativeout.silence_native_output,
}

DESCRIPTION = """\
edged runs a quantized TFLite model on camera frames, on the CPU or a Coral
Edge TPU, and publishes every result over MQTT as floats. It is meant to run
as a systemd service (the unit runs `edged run`)."""

EPILOG = """\
typical use:
  edged check-config                 check /etc/edged/edged.toml and every file it names
  edged run                          run the daemon, as the service does
  edged listen --host broker.local   watch the results arrive, one line each
  edged inspect model.tflite         see what edged does with a model
  edged demo                         try it on the bundled model and frames
  edged doctor                       what keeps it from the Coral, camera or broker, with fixes

`edged COMMAND --help` shows a command's options. Every config key, with its
default and meaning, is in config/edged.toml (installed as /etc/edged/edged.toml)."""

# command -> (one line for the list in `edged --help`, the description of `edged COMMAND --help`)
ABOUT: dict[str, tuple[str, str]] = {
    "run": (
        "run the daemon (what the systemd service runs)",
        "Run edged: read frames from the configured source, run the model on each (CPU or "
        "Edge TPU) and publish the results over MQTT, until SIGTERM or Ctrl-C. SIGHUP "
        "(systemctl reload edged) re-reads the config and applies what changed.\n\n"
        "Exit status: 0 after a stop (or, with --exit-on-end, once a video or folder with "
        "loop = false is done); 78 for a problem a restart cannot fix, such as a broken "
        "config or a refused model (the journal and the retained MQTT status say which); "
        "1 for anything else. What can heal by itself (no Coral yet, broker away, camera "
        "absent) is waited out."),
    "check-config": (
        "check a config file and every file it names",
        "Check a config file and everything it names: the model and labels files, the "
        "Edge TPU model, the source folder or video, the password source, the TLS files, "
        "the delegate library, and whether the model's outputs fit the output settings. "
        "Problems go to stderr, one line each (file:line: key: message); the verdict goes "
        "to stdout: OK and what edged would run.\n\n"
        "Exit status: 0 when edged run would start with the file (warnings do not count), "
        "1 otherwise. Safe beside a running edged: it never opens the Edge TPU."),
    "inspect": (
        "show a model's inputs and outputs, and the arithmetic edged applies to them",
        "Show a .tflite model as edged sees it: each input and output with its shape, type "
        "and quantization, how camera pixels are quantized into the input, and how every "
        "output is dequantized ((q - zero_point) * scale, per tensor or per channel). "
        "--json prints the same as one object for scripts.\n\n"
        "Exit status: 0 when listed, 1 with one line on stderr when the model cannot be "
        "used."),
    "listen": (
        "print the results a device publishes, one line each",
        "Subscribe to a broker and print every result edged publishes: one line each, or "
        "the JSON document with --json."),
    "bench": (
        "measure how fast edged runs a model on this machine",
        "Measure how fast edged runs a model on this machine: the model's own limit, a "
        "naive loop and edged itself, side by side, and how long each stage takes."),
    "demo": (
        "try edged on the bundled model and frames",
        "Try edged without a camera or a broker of your own: runs the daemon on the bundled "
        "digits model and frames against a private broker, prints the results as they "
        "arrive, and stops."),
    "sign-model": (
        "make a signed model update for devices that take updates",
        "Make a model update (docs/fleet.md): the bundle of a model and its golden frame, "
        "and its announcement, signed with an Ed25519 key (--keygen makes a pair).\n\n"
        "Exit status: 0 when written, 1 with one line on stderr when it cannot be, 2 for "
        "missing options."),
    "doctor": (
        "check the Edge TPU, power, camera, broker and config, each with its fix",
        "Check what edged needs on this device, one line each (ok, info, warn, FAIL) with "
        "the fix for each problem: the config; libedgetpu, its package and the TFLite "
        "runtime it must match; the Edge TPU (USB IDs before and after its firmware loads, "
        "/dev/apex_N), permission to open it, its USB link speed and temperature; the "
        "Raspberry Pi's under-voltage and throttling; the camera device; the broker, with "
        "the configured TLS and credentials.\n\n"
        "Exit status: 1 when something keeps edged from running as configured, 0 "
        "otherwise (warnings do not count). Safe beside a running edged."),
}


class _UsersWords:
    """What each module's `register` adds to, with the words users read put in:
    ABOUT's help and description; a module's own longer text (examples, exit
    codes) stays, after them."""

    def __init__(self, sub: Any) -> None:
        self._sub = sub

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        help_line, description = ABOUT[name]
        kwargs.pop("help", None)
        own = kwargs.pop("description", None) or ""
        details = own.split("\n\n", 1)[1].strip("\n").rstrip() if "\n\n" in own else ""
        epilog = _fill("\n\n".join(part for part in (details, kwargs.pop("epilog", None))
                                   if part))
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        parser: argparse.ArgumentParser = self._sub.add_parser(
            name, help=help_line, description=_fill(description), epilog=epilog or None,
            **kwargs)
        return parser


def _fill(text: str) -> str:
    """Paragraphs wrapped to 79 columns (RawDescriptionHelpFormatter keeps them);
    indented ones (examples) as they are."""
    import textwrap

    return "\n\n".join(p if p.startswith(" ") else textwrap.fill(" ".join(p.split()), 79)
                       for p in text.split("\n\n"))


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    words = _UsersWords(sub)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, module_name in COMMANDS.items():
        if wanted not in (None, name):
            words.add_parser(name)  # listed in --help, loaded only when used
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(words)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    handler = getattr(args, "handler", None)
    if argv is None and args.command in NATIVE_OUTPUT:
        # Only as the process's own command: a test calling main() keeps its stderr.
        NATIVE_OUTPUT[args.command]()
    if handler is None:
        print(f"edged: {args.command}: not available in this build", file=sys.stderr)
        return 2
    code: int = handler(args)
    return code
