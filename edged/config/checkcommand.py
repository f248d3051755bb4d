"""`edged check-config [FILE]`: the command around `edged.config.check`'s checks.

Where its lines go, the same way as `edged inspect`'s: every problem (errors,
warnings, and the count) on stderr, the verdict on stdout (notes, and `OK`
with what edged would run). The exit status says which: 0 when `edged run`
would start with this file, 1 otherwise. Without FILE it checks the file
`edged run` would read: $EDGED_CONFIG, else /etc/edged/edged.toml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edged.config import DEFAULT_PATH, Config, ConfigError, default_path, read_config
from edged.config.check import check_config
from edged.config.models import accelerator_of


def summary(config: Config, *, delegate_loads: bool = True) -> str:
    """What the daemon would run with this config, in one line: the model file
    on the delegate that would run it (and the CPU build it falls back to)."""
    model, inference = config.model, config.inference
    cpu_name = Path(model.path).name
    if inference.delegate == "cpu":
        runs = f"{cpu_name} on cpu"
    elif not delegate_loads and inference.fallback == "cpu":
        which = "the Edge TPU delegate" if inference.delegate == "edgetpu" else "the delegate"
        runs = f"{cpu_name} on cpu ({which} cannot load: fallback)"
    else:
        tpu = inference.delegate == "edgetpu"
        name = Path(model.edgetpu_path).name if tpu and model.edgetpu_path else cpu_name
        where = f"edgetpu ({inference.edgetpu_device or 'first found'}" if tpu else \
            f"external ({inference.external_library}"
        fallback = f"; CPU fallback: {cpu_name}" if inference.fallback == "cpu" else ""
        runs = f"{name} on {where}{fallback})"
    scheme = "mqtts" if config.mqtt.tls else "mqtt"
    sources = f"source {config.source.kind}" if not config.cameras else (
        f"{len(config.cameras)} cameras (" + ", ".join(
            f"{c.id}: {c.config.source.kind}" + ("" if c.enabled else " (off)")
            for c in config.camera_list()) + ")")
    used = {c.model for c in config.camera_list() if c.enabled}
    shared = accelerator_of(inference.delegate, inference.edgetpu_device)
    extra = "".join(f", model {m.id}: {Path(m.path).name} on {m.accelerator or shared}"
                    for m in config.models if m.id in used)
    cascade = f", cascade into {config.cascade.model}" if config.cascade.model else ""
    remote = ", ".join(name for name, on in (("commands", config.commands.enabled),
                                             ("model updates", config.updates.enabled)) if on)
    return (f"{sources}, model {runs}{extra}{cascade}, "
            f"{scheme}://{config.mqtt.host}:{config.mqtt.port}/{config.topic_base}"
            + (f" (taking {remote})" if remote else ""))


def main(args: argparse.Namespace) -> int:
    path = Path(args.file or default_path())
    report = check_config(path)
    for line in (*report.errors, *report.warnings):
        print(line, file=sys.stderr)
    if report.errors:
        count = len(report.errors)
        print(f"{path}: {count} problem{'s' if count > 1 else ''}", file=sys.stderr)
        return 1
    try:
        config = read_config(path).config
    except ConfigError:  # pragma: no cover - changed under our feet
        return 1
    for note in report.notes:
        print(f"{path}: note: {note}")
    print(f"{path}: OK ({summary(config, delegate_loads=report.delegate_loads)})")
    return 0


def add_config_file_argument(parser: argparse.ArgumentParser) -> None:
    """FILE, optional, read as `edged run` reads it (check-config, doctor)."""
    parser.add_argument("file", nargs="?", default=None,
                        help=f"the TOML config file (default: $EDGED_CONFIG or {DEFAULT_PATH}, "
                             "as edged run)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check-config", help="check a config file and every file it names",
        description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_config_file_argument(parser)
    parser.set_defaults(handler=main)
