#!/usr/bin/env python3
"""Damage every committed test model many ways and report how edged copes.

    /tmp/venv/bin/python scripts/fuzz_models.py                  # 300 per model, seed 0
    /tmp/venv/bin/python scripts/fuzz_models.py --count 3000 --seed 2 --run 0
    /tmp/venv/bin/python scripts/fuzz_models.py --models ssd_postprocess --run all

For each mutant (truncation, bit flips, zeroed blocks; tests/badinput_helpers.py):

* load: `read_model_file` + `Model.load` + one inference, in a child process,
  so a runtime crash (signal) or hang is counted, not fatal;
* inspect: `edged inspect --json` (in this process; it forks for the runtime);
* run: the real `edged run` against a real mosquitto, for `--run` mutants per
  model (`all`, or a number sampled half refused, half loadable).

Prints counts by outcome and message class, and the time per case. Exit
status 1 when anything died by a signal, hung, or broke the one-line contract.
Longer version of tests/inference/test_faults_models.py; figures go in RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from badinput_helpers import MODELS, check_batch, edged_run, write_mutants  # noqa: E402
from broker import Mosquitto  # noqa: E402

from edged.cli import main as edged_main  # noqa: E402

CLASSES = (
    ("not a valid TFLite model", "refused by edged.inference.modelfile (structure)"),
    ("not a TFLite model", "refused by edged.inference.modelfile (identifier)"),
    ("model file is empty", "refused: empty file"),
    ("the runtime cannot load it", "refused by the runtime while loading"),
    ("the runtime cannot prepare it", "refused by the runtime while allocating"),
    ("has no data after allocation", "refused by edged.inference.model (no tensor data)"),
    ("inference failed", "refused by the worker's warm-up inference"),
    ("the runtime crashed", "runtime crashed in inspect's child"),
)


def classify(message: str) -> str:
    for needle, name in CLASSES:
        if needle in message:
            return name
    return "other: " + message.split(": ", 1)[-1][:60]


def inspect_once(path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = edged_main(["inspect", "--json", str(path)])
    return code, err.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=300, help="mutants per model (300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", nargs="*",
                    default=[p.stem for p in sorted(MODELS.glob("*.tflite"))])
    ap.add_argument("--run", default="20", help="`edged run` cases per model: a number or all")
    ap.add_argument("--no-inspect", action="store_true")
    args = ap.parse_args()
    failures: list[str] = []
    totals: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="edged-fuzz-") as tmp, \
            Mosquitto(Path(tmp) / "mosquitto") as broker:
        for name in args.models:
            cases = write_mutants(MODELS / f"{name}.tflite", Path(tmp) / name, args.count,
                                  args.seed)
            paths = [p for p, _ in cases]
            t0 = time.monotonic()
            loaded = check_batch(paths)
            t_load = (time.monotonic() - t0) / len(paths)
            load_counts = collections.Counter(o.status for o in loaded)
            classes = collections.Counter(classify(o.message) for o in loaded
                                          if o.status == "error")
            for o in loaded:
                if o.status not in ("ok", "error"):
                    failures.append(f"load {o.status}: {o.path}: {o.message}")
                elif o.status == "error" and (not o.message.startswith(f"{o.path}: ")
                                              or "\n" in o.message):
                    failures.append(f"load message not one line naming the file: {o.message!r}")
            print(f"\n== {name}: {len(paths)} mutants, seed {args.seed} "
                  f"({collections.Counter(m.kind for _, m in cases)})")
            print(f"   load:    {dict(load_counts)}  ({t_load * 1000:.0f} ms/case)")
            for cls, n in classes.most_common():
                print(f"            {n:5d}  {cls}")
            totals.update({f"load {k}": v for k, v in load_counts.items()})

            if not args.no_inspect:
                t0 = time.monotonic()
                codes: collections.Counter[int] = collections.Counter()
                for p in paths:
                    code, err = inspect_once(p)
                    codes[code] += 1
                    lines = err.splitlines()
                    if code not in (0, 1) or (code == 1 and len(lines) != 1):
                        failures.append(f"inspect exit {code}: {p}: {err!r}")
                    if "runtime crashed" in err:
                        totals["inspect child crashed (contained)"] += 1
                t_inspect = (time.monotonic() - t0) / len(paths)
                print(f"   inspect: exit codes {dict(codes)}  ({t_inspect * 1000:.0f} ms/case)")
                totals.update({f"inspect exit {k}": v for k, v in codes.items()})

            picks = list(range(len(paths)))
            if args.run != "all":
                n = int(args.run)
                rng = random.Random(f"{args.seed}-{name}")
                refused = [i for i, o in enumerate(loaded) if o.status == "error"]
                ok = [i for i, o in enumerate(loaded) if o.status == "ok"]
                picks = sorted(rng.sample(refused, min(n - n // 2, len(refused)))
                               + rng.sample(ok, min(n // 2, len(ok))))
            if picks:
                t0 = time.monotonic()
                runs: collections.Counter[str] = collections.Counter()
                for i in picks:
                    r = edged_run(paths[i], broker.port, Path(tmp) / "runs" / f"{name}-{i}")
                    runs[f"{r.status} {r.code}"] += 1
                    expected = ("exit 78" if loaded[i].status == "error" else "results 0")
                    if f"{r.status} {r.code}" != expected:
                        failures.append(f"run {paths[i]}: {r.status} {r.code}, expected "
                                        f"{expected}: {r.errors[-1:]}")
                t_run = (time.monotonic() - t0) / len(picks)
                print(f"   run:     {dict(runs)} of {len(picks)}  ({t_run:.1f} s/case)")
                totals.update({f"run {k}": v for k, v in runs.items()})
    print("\n== totals:", dict(totals))
    for f in failures:
        print("FAIL", f)
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
