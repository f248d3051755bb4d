"""What of the config fits the loaded model's outputs: check-config says it before a
start, and the daemon refuses a start or a reload on the same message."""

from __future__ import annotations

from edged.config.cascade import CascadeConfig
from edged.config.publish import OutputConfig
from edged.numerics.tensors import TensorInfo


def publish_problem(out: OutputConfig, kind: str, reason: str = "") -> str | None:
    """Why output.publish cannot run on outputs that decode as `kind`, or None. The
    daemon refuses to start (and a reload) on the same message."""
    if out.publish == "results" or kind == "detection":
        return None
    return (f'"{out.publish}" needs detections; this model\'s outputs decode as {kind}'
            + (f" ({reason})" if reason else ""))


def too_large_for_json(outputs: tuple[TensorInfo, ...], out: OutputConfig) -> str | None:
    """Why these outputs cannot go in one JSON message as configured, or None.

    The daemon refuses to start on the same message: check-config only says it earlier.
    """
    if out.encoding != "json" or not out.include_raw:
        return None
    total = sum(o.size for o in outputs)
    if total <= out.max_values:
        return None
    biggest = max(outputs, key=lambda o: o.size)
    decoder = _suggest_decoder(outputs) if out.decoder == "none" else "the decoder"
    return (f"the model's outputs have {total} values (largest: {biggest.name!r} "
            f"{list(biggest.shape)} {biggest.dtype}), more than max_values = {out.max_values} "
            f'allows in one JSON message: set output.encoding = "binary", or {decoder} with '
            f"output.include_raw = false, or raise max_values")


def cascade_problem(cascade: CascadeConfig, kind: str) -> str | None:
    """Why a cascade cannot follow outputs that decode as `kind`, or None."""
    if not cascade.model or kind == "detection":
        return None
    return (f"{cascade.model!r} classifies detections, but the model decodes as {kind} "
            "(output.decoder): a cascade follows a detector")


def _suggest_decoder(outputs: tuple[TensorInfo, ...]) -> str:
    from edged.decode.dispatch import infer_kind
    from edged.decode.results import DecodeError

    try:
        kind, _ = infer_kind(outputs)
    except DecodeError:
        return "a decoder"
    return f'output.decoder = "{kind}"'
