"""Damaged model files: `edged inspect` and `edged run` never die by a signal or hang.

Each committed model gets 300 seeded mutations (truncation, bit flips, zeroed
blocks; `badinput_helpers.mutations`). Every one is loaded the worker's way
in a child process (so a runtime crash is an outcome, not the end of the
test) and run through `edged inspect` in-process (which loads the runtime in
a forked child); a sample goes through the real `edged run`. The full
campaign, with `edged run` on every mutant: scripts/fuzz_models.py, and the
`slow` test below.

The files that crashed the runtime before edged.inference.modelfile learned to refuse
them are kept as regression cases (`CRASHERS`), and one that still crashes it
after passing every check (`PAST_VALIDATION`) proves the isolation: only the
worker, or inspect's child, dies.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from badinput_helpers import (
    MODELS,
    Outcome,
    check_batch,
    edged_run,
    mutant,
    write_mutants,
)
from broker import Mosquitto

from edged.cli import main
from edged.inference.modelfile import ModelFileError, read_model_file

N_MUTANTS = 300
SEED = 0
RUN_SAMPLE = 3  # `edged run` per model in the default run; the slow test runs 20
MODEL_NAMES = sorted(p.name for p in MODELS.glob("*.tflite"))
ONE_LINE = re.compile(r"^\S.*\S$")

# (model, seed, mutant index, what the runtime did with it, what edged says now)
CRASHERS = [
    ("digits_uint8.tflite", 1, 1636, "SIGSEGV", "zero point -131200 is outside [-128, 127]"),
    ("ssd_postprocess.tflite", 1, 1856, "SIGABRT", "scale 0.0 is not finite and > 0"),
    ("detect_yolo_int8.tflite", 2, 814, "hang", "impossible shape [67108865, 3, 64]"),
    ("detect_yolo_int8.tflite", 2, 2878, "SIGSEGV", "holds constant data but is written to"),
    ("ssd_postprocess.tflite", 2, 1121, "SIGABRT", "zero points without scales"),
    ("ssd_postprocess.tflite", 1, 2891, "SIGABRT", "zero points without scales"),
    # Not a crash: the runtime's Python wrapper raised UnicodeDecodeError, a traceback.
    ("digits_int8.tflite", 1, 2194, "UnicodeDecodeError", "tensors[15].name: not UTF-8"),
]
# Passes every check in edged.inference.modelfile and still crashes the runtime: a
# corrupt TFLite_Detection_PostProcess option blob (a flexbuffer the runtime
# parses without bounds checks; edged does not parse custom options).
PAST_VALIDATION = [
    ("ssd_postprocess.tflite", 2, 532, "SIGSEGV"),
]


def _write(tmp_path: Path, model: str, seed: int, index: int) -> Path:
    m = mutant(MODELS / model, seed, index)
    path = tmp_path / f"{Path(model).stem}-s{seed}-{index}-{m.kind}.tflite"
    path.write_bytes(m.data)
    return path


@pytest.fixture(scope="module")
def mutants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("mutants")
    return {name: [p for p, _ in write_mutants(MODELS / name, root / name, N_MUTANTS, SEED)]
            for name in MODEL_NAMES}


@pytest.fixture(scope="module")
def loaded(mutants: dict[str, list[Path]]) -> dict[str, list[Outcome]]:
    """Each mutant loaded (and run once) the worker's way, in child processes."""
    return {name: check_batch(paths) for name, paths in mutants.items()}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_loading_a_damaged_model_never_crashes(name: str, loaded: dict[str, list[Outcome]]
                                               ) -> None:
    outcomes = loaded[name]
    assert len(outcomes) == N_MUTANTS
    bad = [o for o in outcomes if o.status not in ("ok", "error")]
    assert not bad, f"{len(bad)} of {N_MUTANTS} mutants crashed or hung the loader: {bad[:5]}"
    for o in outcomes:
        if o.status == "error":
            assert ONE_LINE.match(o.message) and "\n" not in o.message, o
            assert o.message.startswith(f"{o.path}: "), o
    # The mutations do reach the checks: most damage is refused, some is harmless.
    errors = sum(o.status == "error" for o in outcomes)
    assert 0 < errors < N_MUTANTS


def _inspect_all(paths: list[Path], outcomes: list[Outcome],
                 capsys: pytest.CaptureFixture[str]) -> None:
    codes = {0: 0, 1: 0}
    for path, outcome in zip(paths, outcomes, strict=True):
        code = main(["inspect", "--json", str(path)])
        out, err = capsys.readouterr()
        assert code in (0, 1), (path, code, err)
        codes[code] += 1
        if code == 1:
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"edged inspect: {path}: "), err
            assert not out
        else:
            assert out.startswith("{") and not err
        if outcome.status == "error" and ": inference failed: " not in outcome.message:
            # What the worker refuses on loading, inspect refuses too (inspect
            # does not run the model, the worker's warm-up inference does).
            assert code == 1, (path, outcome.message)
    assert codes[0] and codes[1]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_inspect_on_damaged_models_exits_0_or_1_with_one_line(
        name: str, mutants: dict[str, list[Path]], loaded: dict[str, list[Outcome]],
        capsys: pytest.CaptureFixture[str]) -> None:
    # Every other mutant (all three kinds) by default: each loadable one forks a runtime.
    _inspect_all(mutants[name][::2], loaded[name][::2], capsys)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_inspect_on_every_damaged_model(
        name: str, mutants: dict[str, list[Path]], loaded: dict[str, list[Outcome]],
        capsys: pytest.CaptureFixture[str]) -> None:
    _inspect_all(mutants[name], loaded[name], capsys)


@pytest.mark.parametrize(("model", "seed", "index", "runtime_did", "message"), CRASHERS)
def test_former_runtime_crashers_are_refused_in_one_line(
        tmp_path: Path, model: str, seed: int, index: int, runtime_did: str,
        message: str) -> None:
    path = _write(tmp_path, model, seed, index)
    with pytest.raises(ModelFileError) as info:
        read_model_file(path)
    text = str(info.value)
    assert text.startswith(f"{path}: not a valid TFLite model: ") and message in text
    assert "\n" not in text


@pytest.mark.parametrize(("model", "seed", "index", "runtime_did"), PAST_VALIDATION)
def test_runtime_crash_past_validation_kills_only_the_child(
        tmp_path: Path, mosquitto: Mosquitto, model: str, seed: int, index: int,
        runtime_did: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, model, seed, index)
    read_model_file(path)  # passes: if this starts failing, move the case to CRASHERS
    [outcome] = check_batch([path])
    assert (outcome.status, outcome.message) == ("signal", runtime_did)

    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"edged inspect: {path}: the runtime crashed ({runtime_did}) loading it: "
                   "the file is corrupt or uses something the runtime cannot handle")

    run = edged_run(path, mosquitto.port, tmp_path / "run")
    # A restart cannot mend the file: 78, which the unit does not restart.
    assert (run.status, run.code) == ("exit", 78), run
    assert run.errors[-1].endswith(
        f"{path}: worker killed by {runtime_did} while loading the model (3 times in a row): "
        "the file is corrupt or the runtime cannot handle it"), run.errors


def _run_sample(name: str, loaded: dict[str, list[Outcome]], mutants: dict[str, list[Path]],
                port: int, tmp_path: Path, count: int) -> None:
    # Half refused, half loadable: both ways out of `edged run` are exercised.
    by_status: dict[str, list[int]] = {"ok": [], "error": []}
    for i, o in enumerate(loaded[name]):
        by_status[o.status].append(i)
    rng = random.Random(f"{SEED}-{name}")
    picks = (rng.sample(by_status["error"], min(count - count // 2, len(by_status["error"])))
             + rng.sample(by_status["ok"], min(count // 2, len(by_status["ok"]))))
    for i in sorted(picks):
        path, expected = mutants[name][i], loaded[name][i]
        run = edged_run(path, port, tmp_path / f"{name}-{i}")
        if expected.status == "error":
            assert (run.status, run.code) == ("exit", 78), run
            assert run.errors and run.errors[-1].endswith(expected.message), run
        else:
            # Loads, so it runs: results flow and SIGTERM ends it cleanly.
            assert (run.status, run.code) == ("results", 0), run


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_edged_run_on_a_sample_of_damaged_models(
        name: str, loaded: dict[str, list[Outcome]], mutants: dict[str, list[Path]],
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    _run_sample(name, loaded, mutants, mosquitto.port, tmp_path, RUN_SAMPLE)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_edged_run_on_more_damaged_models(
        name: str, loaded: dict[str, list[Outcome]], mutants: dict[str, list[Path]],
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    _run_sample(name, loaded, mutants, mosquitto.port, tmp_path, 20)
