"""Seeded damage to model files, and a crash-proof way to try each damaged file.

`mutations(data, seed, n)` gives `n` reproducible mutants of a model's bytes:
truncations, bit flips and zeroed blocks, the damage a flaky SD card or an
interrupted copy leaves. `check_batch(paths)` loads each file in a child
process (`python -m badinput_helpers`) the way the worker does
(`read_model_file`, then `Model.load`), so a runtime that dies by a signal on
one file is seen as that file's outcome instead of taking the test with it.

Also used by scripts/fuzz_models.py, which runs every case through the real
`edged inspect` and `edged run` too.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ROOT / "tests" / "data" / "models"
KINDS = ("truncate", "bitflip", "zero")


@dataclass(frozen=True)
class Mutant:
    """One damaged copy of a model: what was done, and the resulting bytes."""

    index: int
    kind: str
    detail: str
    data: bytes


def _mutate(data: bytes, kind: str, rng: random.Random) -> tuple[str, bytes]:
    size = len(data)
    if kind == "truncate":
        # Bias towards the head, where the root table and vtables live, but
        # cover the whole file: a copy interrupted anywhere is plausible.
        cut = rng.randrange(0, size) if rng.random() < 0.5 else rng.randrange(0, min(size, 512))
        return f"truncated to {cut} of {size} bytes", data[:cut]
    buf = bytearray(data)
    if kind == "bitflip":
        flips = rng.choice((1, 1, 2, 4, 16))
        where = sorted(rng.randrange(size) for _ in range(flips))
        for pos in where:
            buf[pos] ^= 1 << rng.randrange(8)
        return f"{flips} bit(s) flipped at {where[:4]}", bytes(buf)
    length = rng.choice((4, 16, 64, 512, 4096))
    start = rng.randrange(size)
    buf[start:start + length] = bytes(len(buf[start:start + length]))
    return f"{length} bytes zeroed at {start}", bytes(buf)


def mutations(data: bytes, seed: int, n: int) -> Iterator[Mutant]:
    """`n` mutants of `data`, the same ones for the same seed, kinds in rotation."""
    rng = random.Random(seed)
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        detail, mutated = _mutate(data, kind, rng)
        yield Mutant(i, kind, detail, mutated)


def write_mutants(model: Path, directory: Path, n: int, seed: int = 0) -> list[tuple[Path, Mutant]]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for m in mutations(model.read_bytes(), seed, n):
        p = directory / f"{model.stem}-{m.index:03d}-{m.kind}.tflite"
        p.write_bytes(m.data)
        out.append((p, m))
    return out


def mutant(model: Path, seed: int, index: int) -> Mutant:
    """Mutant number `index` of `mutations(model bytes, seed, ...)`."""
    for m in mutations(model.read_bytes(), seed, index + 1):
        if m.index == index:
            return m
    raise IndexError(index)


@dataclass(frozen=True)
class Outcome:
    """How loading one file ended: `ok`, `error` (with its message) or `signal`."""

    path: str
    status: str
    message: str


def check_batch(paths: Sequence[Path], timeout_s: float = 60.0) -> list[Outcome]:
    """Load each file in a child; a child that dies or hangs marks the file it was on."""
    outcomes: list[Outcome] = []
    todo = [str(p) for p in paths]
    while todo:
        try:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__)), *todo], capture_output=True, text=True,
                timeout=timeout_s, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                check=False)
            stdout, code, stderr = proc.stdout, proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            code, stderr = None, ""
        done = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        outcomes += [Outcome(d["path"], d["status"], d["message"]) for d in done]
        todo = todo[len(done):]
        if not todo:
            break
        # The child died or hung on todo[0]: record how, then carry on after it.
        if code is None:
            outcomes.append(Outcome(todo[0], "hang", f"no answer within {timeout_s:g} s"))
        elif code < 0:
            outcomes.append(Outcome(todo[0], "signal", signal.Signals(-code).name))
        else:
            outcomes.append(Outcome(todo[0], "crash", f"exit {code}: "
                                    f"{(stderr.strip().splitlines() or [''])[-1]}"))
        todo = todo[1:]
    return outcomes


def _child(paths: Sequence[str]) -> int:
    import numpy as np

    from edged.inference.model import Model, ModelError
    from edged.inference.modelfile import ModelFileError
    from edged.inference.runtime import select_runtime
    from edged.inference.slots import pixel_shape
    from edged.numerics.quantize import PixelQuantizer

    # A crash here is a finding, not something to write a core file for.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    runtime = select_runtime("auto")
    for p in paths:
        try:
            model = Model.load(p, runtime)
            # One inference as the worker does it: damaged weights or shapes
            # that load fine may still break the kernels.
            quantizer = PixelQuantizer(model.inputs[0])
            model.run(np.zeros(pixel_shape(model.inputs[0]), np.uint8), quantizer)
            status, message = "ok", ""
        except (ModelFileError, ModelError, ValueError) as exc:
            status, message = "error", str(exc)
        print(json.dumps({"path": p, "status": status, "message": message}), flush=True)
    return 0


@dataclass(frozen=True)
class RunOutcome:
    """How `edged run` on one model ended: `exit` (with code), `results` or `no-results`."""

    model: Path
    status: str
    code: int | None
    errors: tuple[str, ...]  # the ERROR lines of its log
    seconds: float


def edged_run(model: Path, port: int, workdir: Path, timeout_s: float = 40.0) -> RunOutcome:
    """The real `edged run` on `model`: it exits, publishes a result, or neither in time.

    A result or the timeout ends it with SIGTERM, whose exit code must be 0.
    """
    from broker import Subscriber
    from daemon_helpers import FRAMES, DaemonProcess, base_config, write_config

    workdir.mkdir(parents=True, exist_ok=True)
    device = f"fuzz-{workdir.name}"
    cfg = base_config(port, model=model, frames=FRAMES, device=device)
    config = write_config(workdir / "edged.toml", cfg)
    start = time.monotonic()
    with Subscriber(port, f"edged/{device}/results") as sub, DaemonProcess(config) as daemon:
        status = "no-results"
        while time.monotonic() - start < timeout_s:
            if daemon.proc.poll() is not None:
                status = "exit"
                break
            if sub.messages:
                status = "results"
                break
            time.sleep(0.1)
        code = daemon.proc.returncode if status == "exit" else daemon.stop()
        errors = tuple(line for line in daemon.log_text().splitlines() if " ERROR " in line)
    return RunOutcome(model, status, code, errors, time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))


# --------------------------------------------------------------- configs


def damaged_configs(base: dict[str, dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid config with 1-4 realistic kinds of damage: wrong types, huge
    numbers, unicode, unknown keys and sections, missing sections."""
    from edged.config import SECTIONS

    keys = sorted({(s, k) for s, model in SECTIONS.items() for k in model.model_fields}
                  | {(s, k) for s, table in base.items() for k in table})
    bad_values = st.one_of(
        st.text(max_size=12),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from([2**63, -1, 0, 10**30, 1e308, math.inf, -math.inf, math.nan, -0.0,
                         "", "ünïcödé ✓", "\u202e", "\t", "usb:0", "a/#/b"]),
        st.booleans(),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
        st.datetimes(min_value=dt.datetime(1, 1, 1)),
    )
    op = st.one_of(
        st.tuples(st.just("set"), st.sampled_from(keys), bad_values),
        st.tuples(st.just("drop"), st.sampled_from(sorted(base)), st.none()),
        st.tuples(st.just("unknown"),
                  st.tuples(st.sampled_from([*SECTIONS, "caméra", "x"]), st.text(min_size=1,
                                                                                  max_size=8)),
                  bad_values),
    )

    def apply(ops: list[tuple[str, Any, Any]]) -> dict[str, Any]:
        doc: dict[str, Any] = {name: dict(table) for name, table in base.items()}
        for kind, where, value in ops:
            if kind == "drop":
                doc.pop(where, None)
            else:
                section, key = where
                table = doc.setdefault(section, {})
                if isinstance(table, dict):
                    table[key] = value
        return doc

    return st.lists(op, min_size=1, max_size=4).map(apply)
