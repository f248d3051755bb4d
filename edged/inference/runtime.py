"""One interface over the three Python TFLite runtimes.

`ai_edge_litert` (the current package), `tflite_runtime` (the legacy one,
still what Coral's Debian packages and numpy<2 setups have) and
`tensorflow.lite` expose the same `Interpreter` and `load_delegate`; they
differ only in where they live and how they report their version.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

RuntimeName = Literal["ai_edge_litert", "tflite_runtime", "tensorflow"]
RuntimeChoice = Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"]

# Preference order for "auto": the maintained package first, TensorFlow last
# (hundreds of MB and seconds to import).
RUNTIME_ORDER: tuple[RuntimeName, ...] = get_args(RuntimeName)

_PIP_NAME: dict[RuntimeName, str] = {
    "ai_edge_litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
}


class RuntimeUnavailableError(RuntimeError):
    """The requested runtime cannot be imported; the message says what to install."""


@dataclass(frozen=True, slots=True)
class Runtime:
    """A TFLite runtime: its `Interpreter` class and `load_delegate` function."""

    name: RuntimeName
    version: str
    interpreter_class: Callable[..., Any]
    load_delegate: Callable[..., Any]

    def describe(self) -> str:
        return f"{self.name} {self.version}"


def _load(name: RuntimeName) -> Runtime:
    """Import one runtime; ImportError (or what a broken install raises) escapes."""
    if name == "tensorflow":
        tf: Any = importlib.import_module("tensorflow")
        return Runtime(name, str(tf.__version__), tf.lite.Interpreter,
                       tf.lite.experimental.load_delegate)
    package: Any = importlib.import_module(name)
    module: Any = importlib.import_module(f"{name}.interpreter")
    version = getattr(package, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(_PIP_NAME[name])
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    return Runtime(name, str(version), module.Interpreter, module.load_delegate)


def _why(name: RuntimeName, exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == name:
        return "not installed"
    # e.g. tflite_runtime built for numpy 1 under numpy 2 fails inside its import
    return f"import failed ({type(exc).__name__}: {' '.join(str(exc).split())})"


def select_runtime(name: RuntimeChoice = "auto") -> Runtime:
    """The named runtime, or with "auto" the first importable in `RUNTIME_ORDER`.

    Raises `RuntimeUnavailableError` with one line naming what to pip install.
    """
    if name != "auto" and name not in RUNTIME_ORDER:
        raise RuntimeUnavailableError(
            f"runtime {name!r} is not one of auto, {', '.join(RUNTIME_ORDER)}")
    candidates: tuple[RuntimeName, ...] = RUNTIME_ORDER if name == "auto" else (name,)
    reasons = []
    for candidate in candidates:
        try:
            return _load(candidate)
        except Exception as exc:  # any failure to import means "not usable"
            reasons.append(f"{candidate}: {_why(candidate, exc)}")
    if name == "auto":
        raise RuntimeUnavailableError(
            "no TFLite runtime found (" + "; ".join(reasons) + "): pip install ai-edge-litert "
            "(or tflite-runtime with numpy<2, or tensorflow)")
    raise RuntimeUnavailableError(f"runtime {reasons[0]}: pip install {_PIP_NAME[name]}"
                             + (" 'numpy<2'" if name == "tflite_runtime" else ""))
