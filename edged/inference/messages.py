"""What the supervisor learns from its worker: the model it loaded (`ModelInfo`,
from the worker's "ready"), each frame done (`Done`), and the two ways it fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edged.numerics.tensors import TensorInfo


class ModelLoadError(RuntimeError):
    """The worker could not load the model: a problem with the file or the setup.

    `heals`: what is missing may come by itself (a Coral not plugged in yet):
    worth waiting for, unlike a refused file, which a restart cannot mend.
    """

    def __init__(self, message: str, *, heals: bool = False) -> None:
        super().__init__(message)
        self.heals = heals


class WorkerError(RuntimeError):
    """The worker died, hung or broke the protocol; it has been killed."""


@dataclass(frozen=True)
class ModelInfo:
    """What the running worker loaded, as it reported it."""

    pid: int
    runtime: str
    delegate: str
    delegate_note: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    pixel_path: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # The SSD post-process op's output tensors in op order (decode.detection.SSD_ROLES).
    ssd_outputs: tuple[int, ...] = ()
    model_path: str = ""  # the file loaded: the CPU build after a fallback at load
    normalization_source: str = ""  # config, model metadata or derived (edged.numerics.quantize)
    cascade: ModelInfo | None = None  # the classifier the worker runs on crops (issue 17)
    # The further models the worker holds beside this one (several on one Edge TPU).
    others: tuple[ModelInfo, ...] = ()

    def model(self, index: int) -> ModelInfo:
        """The worker's model `index` (0: this one, the first)."""
        return self.others[index - 1] if index else self

    @classmethod
    def from_ready(cls, m: dict[str, Any]) -> ModelInfo:
        return cls(int(m["pid"]), str(m["runtime"]), str(m["delegate"]),
                   str(m.get("delegate_note", "")),
                   tuple(TensorInfo.from_dict(t) for t in m["inputs"]),
                   tuple(TensorInfo.from_dict(t) for t in m["outputs"]),
                   str(m["pixel_path"]), tuple(m["mean"]), tuple(m["std"]),
                   tuple(int(i) for i in m.get("ssd_outputs") or ()),
                   str(m.get("model_path", "")), str(m.get("normalization_source", "")),
                   cls.from_ready(m["cascade"]) if m.get("cascade") else None,
                   tuple(cls.from_ready(o) for o in m.get("others") or ()))


@dataclass(frozen=True)
class Done:
    slot: int
    quantize_us: int
    invoke_us: int
