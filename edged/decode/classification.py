"""Classification: scores (one per class) -> top-k labelled classes.

As in pycoral, getting the scores (`class_scores`: dequantize, flatten) is
separate from choosing classes from them (`top_classes`), so the second can be
tested and reused on any float vector.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edged.decode.labels import Labels
from edged.decode.results import (
    ClassFilter,
    Classification,
    DecodeError,
    real_values,
    score_threshold,
)
from edged.numerics.tensors import TensorInfo


def num_classes(info: TensorInfo) -> int:
    """Classes of a classification output: [C], [1, C] or [1, 1, 1, C]."""
    dims = [d for d in info.shape if d != 1]
    if len(dims) > 1 or info.size < 1:
        raise DecodeError(f"output {info.name!r}: shape {list(info.shape)} is not a class "
                          f"score vector like [1, C]")
    return info.size


def class_scores(values: ArrayLike, info: TensorInfo) -> NDArray[Any]:
    """One float score per class from an output (raw quantized values are dequantized)."""
    n = num_classes(info)
    scores = real_values(values, info).reshape(-1)
    if scores.size != n:
        raise DecodeError(f"output {info.name!r}: {scores.size} values for shape "
                          f"{list(info.shape)}")
    return scores


def top_classes(scores: ArrayLike, *, top_k: int = 5, min_score: float = 0.0,
                labels: Labels | None = None, classes: ClassFilter | None = None
                ) -> tuple[Classification, ...]:
    """The `top_k` best classes with score >= `min_score`, best first.

    Ties keep the lower class id first, so results are stable frame to frame.
    """
    if top_k < 1:
        raise DecodeError(f"top_k must be >= 1, got {top_k}")
    s = np.asarray(scores).reshape(-1)
    candidates = np.flatnonzero(s >= score_threshold(min_score, s.dtype))
    if candidates.size == 0:
        return ()
    # Stable sort on the (usually few) candidates only; -s keeps ids ascending on ties.
    order = candidates[np.argsort(-s[candidates].astype(np.float64), kind="stable")]
    out: list[Classification] = []
    for class_id in order:
        label = labels.get(int(class_id)) if labels is not None else None
        if classes is not None and not classes.is_open and not classes.allows(int(class_id),
                                                                               label):
            continue
        out.append(Classification(int(class_id), label, float(s[class_id])))
        if len(out) == top_k:
            break
    return tuple(out)


def decode_classification(values: ArrayLike, info: TensorInfo, *, top_k: int = 5,
                          min_score: float = 0.0, labels: Labels | None = None,
                          classes: ClassFilter | None = None) -> tuple[Classification, ...]:
    return top_classes(class_scores(values, info), top_k=top_k, min_score=min_score,
                       labels=labels, classes=classes)
