"""The `edged` command: one sub-command per module that implements it."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from edged import __version__, nativeout

# sub-command -> module exposing `register(subparsers)`; each module's
# registered handler returns the process exit code. Imported lazily so that
# `edged inspect` does not pay for paho, and `edged listen` not for the runtime.
COMMANDS: dict[str, str] = {
    "run": "edged.daemon",
    "check-config": "edged.checkconfig",
    "inspect": "edged.inspect",
    "listen": "edged.listen",
    "bench": "edged.bench",
    "demo": "edged.demo",
}
# What each command does with native libraries' own stderr output (edged.nativeout):
# the daemon logs it, one-shot commands that load the runtime or OpenCV drop it.
# `demo` and `listen` load neither (demo's daemon is an `edged run` of its own).
NATIVE_OUTPUT: dict[str, Callable[[], bool]] = {
    "run": nativeout.route_native_output_to_log,
    "check-config": nativeout.silence_native_output,
    "inspect": nativeout.silence_native_output,
    "bench": nativeout.silence_native_output,
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description=__doc__)
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, module_name in COMMANDS.items():
        if wanted not in (None, name):
            sub.add_parser(name)  # listed in --help, loaded only when used
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
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
