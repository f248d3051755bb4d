"""Runtime selection: the real import machinery, no fakes."""

from __future__ import annotations

import importlib.util

import pytest

from edged.inference.runtime import RUNTIME_ORDER, RuntimeUnavailableError, select_runtime


def test_auto_picks_first_importable_and_reports_name_and_version() -> None:
    runtime = select_runtime("auto")
    first = next(n for n in RUNTIME_ORDER if importlib.util.find_spec(n) is not None)
    assert runtime.name == first
    assert runtime.version and runtime.version != "unknown"
    assert runtime.describe() == f"{runtime.name} {runtime.version}"
    assert callable(runtime.interpreter_class) and callable(runtime.load_delegate)


def test_named_ai_edge_litert_is_the_real_package() -> None:
    import ai_edge_litert
    import ai_edge_litert.interpreter as litert

    runtime = select_runtime("ai_edge_litert")
    assert runtime.version == ai_edge_litert.__version__
    assert runtime.interpreter_class is litert.Interpreter
    assert runtime.load_delegate is litert.load_delegate


@pytest.mark.parametrize(("name", "pip_name"), [("tflite_runtime", "tflite-runtime"),
                                                 ("tensorflow", "tensorflow")])
def test_missing_runtime_says_what_to_pip_install(name: str, pip_name: str) -> None:
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed in this venv")
    with pytest.raises(RuntimeUnavailableError) as info:
        select_runtime(name)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"runtime {name}: not installed: pip install {pip_name}")


def test_unknown_runtime_name_is_one_line() -> None:
    with pytest.raises(RuntimeUnavailableError, match=r"^runtime 'tflite' is not one of auto, "):
        select_runtime("tflite")  # type: ignore[arg-type]
