"""Decoders end to end: `edged run` -> real mosquitto -> a real `mosquitto_sub`.

Every received message is validated against result-v1.schema.json, and the
decoded answer is checked against what is known independently: the digit in
the frame, the geometry of the coloured cells of shapes_64.png, the model's
own raw outputs in the same message, or the real interpreter run here.
"""

from __future__ import annotations

import base64
import csv
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from broker import Mosquitto
from decode_daemon_helpers import (
    MODELS,
    decoding_daemon,
    digit_folder,
    digit_of,
    frame_folder,
    read_rgb,
    shapes_vga,
    shapes_vga_boxes,
    validate_result,
    write_labels,
    yolo_box_atol,
)

from edged.config.check import check_config
from edged.numerics.quantize import PixelQuantizer
from edged.numerics.tensors import TensorInfo
from edged.preprocess import Preprocessor

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
COLOURS = ["red", "green", "blue"]


def wait_until(condition: Callable[[], bool], why: Callable[[], str], timeout: float = 30.0
               ) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, why()
        time.sleep(0.05)


def _decoded(doc: dict[str, Any]) -> dict[str, Any]:
    validate_result(doc)
    decoded: dict[str, Any] = doc["decoded"]
    return decoded


# --- committed models ---------------------------------------------------------------------

def test_classification_with_an_id_label_file(tmp_path: Path, mosquitto: Mosquitto) -> None:
    folder = digit_folder(tmp_path)
    frames = sorted(folder.iterdir())
    # `id label` lines, written out of order: ids, not line numbers, name the classes.
    labels = write_labels(tmp_path / "digits.txt",
                          [f"{i} {DIGIT_NAMES[i]}" for i in reversed(range(10))])
    with decoding_daemon(tmp_path, mosquitto, model=MODELS / "digits_int8.tflite", frames=folder,
                         labels=labels, output={"decoder": "classification", "top_k": 3,
                                                "min_score": 0.0}) as (daemon, sub):
        docs = sub.wait_for(12, why=daemon.log_text)
    for doc in docs:
        classes = _decoded(doc)["classes"]
        assert _decoded(doc)["kind"] == "classification" and len(classes) == 3
        digit = digit_of(doc, frames)
        assert (classes[0]["label_id"], classes[0]["label"]) == (digit, DIGIT_NAMES[digit])
        # Beside the raw outputs: the scores are the model's dequantized softmax.
        raw = np.asarray(doc["outputs"][0]["data"]).reshape(-1)
        for c in classes:
            assert c["score"] == pytest.approx(raw[c["label_id"]], abs=1e-6)
            assert c["label"] == DIGIT_NAMES[c["label_id"]]
        assert [c["score"] for c in classes] == sorted((c["score"] for c in classes),
                                                      reverse=True)


def _check_shapes_detections(doc: dict[str, Any], atol: float) -> None:
    decoded = _decoded(doc)
    assert decoded["kind"] == "detection"
    assert doc["outputs"] == []  # include_raw = false: the answer alone
    got = sorted((d["label_id"], d["label"], d["box"]) for d in decoded["detections"])
    want = shapes_vga_boxes()
    assert [(g[0], g[1]) for g in got] == [(c, COLOURS[c]) for c, _ in want]
    for (_, _, box), (_, want_box) in zip(got, want, strict=True):
        assert box == pytest.approx(want_box, abs=atol)
    for d in decoded["detections"]:
        assert d["score"] >= 0.5


@pytest.mark.parametrize(("model", "decoder"), [("detect_yolo_int8.tflite", "detection"),
                                                ("ssd_postprocess.tflite", "auto")])
def test_detection_boxes_in_frame_pixels_through_a_letterbox(
        tmp_path: Path, mosquitto: Mosquitto, model: str, decoder: str) -> None:
    """A 640x480 frame letterboxed into the 64x64 input; boxes come back in frame pixels.

    The SSD model's outputs are named output_0..3 and classes/scores share a shape:
    `auto` works only because the daemon reads the op's output list from the file.
    """
    folder = frame_folder(tmp_path, {"shapes_vga.png": shapes_vga()})
    labels = write_labels(tmp_path / "colours.txt", COLOURS)
    with decoding_daemon(tmp_path, mosquitto, model=MODELS / model, frames=folder,
                         preprocess={"resize": "letterbox"},
                         labels=labels, output={"decoder": decoder, "include_raw": False,
                                                "min_score": 0.5}) as (daemon, sub):
        docs = sub.wait_for(3, why=daemon.log_text)
        log = daemon.log_text()
    # The YOLO boxes are int8 values: within the head's own error bound; the SSD's are exact.
    atol = yolo_box_atol() if model.startswith("detect_yolo") else 0.01
    for doc in docs:
        _check_shapes_detections(doc, atol)
    if decoder == "auto":
        assert ("decoder auto: detection (SSD post-process head (boxes 'output_0', classes "
                "'output_1', scores 'output_2', count 'output_3'))") in log
        assert "SSD roles from the model file's TFLite_Detection_PostProcess op" in log


def test_ssd_outputs_named_in_the_config(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The config's names win over the file's op; here they agree, so the boxes are right."""
    folder = frame_folder(tmp_path, {"shapes_vga.png": shapes_vga()})
    names = {"boxes": "output_0", "classes": "output_1", "scores": "output_2",
             "count": "output_3"}
    model = MODELS / "ssd_postprocess.tflite"
    with decoding_daemon(tmp_path, mosquitto, model=model, frames=folder,
                         preprocess={"resize": "letterbox"},
                         output={"decoder": "detection", "include_raw": False,
                                 "ssd_outputs": names}) as (daemon, sub):
        doc = sub.wait_for(1, why=daemon.log_text)[0]
        log = daemon.log_text()
    assert "SSD roles from output.ssd_outputs" in log
    got = sorted((d["label_id"], d["box"]) for d in _decoded(doc)["detections"])
    assert [g[0] for g in got] == [0, 1, 2] and all(d["label"] is None
                                                     for d in doc["decoded"]["detections"])
    for (_, box), (_, want) in zip(got, shapes_vga_boxes(), strict=True):
        assert box == pytest.approx(want, abs=0.01)


def test_sighup_threshold_change_redecodes_without_reloading_the_model(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    folder = digit_folder(tmp_path)
    model = MODELS / "digits_int8.tflite"
    output = {"decoder": "classification", "top_k": 10, "min_score": 0.0,
              "stats_interval_s": 1.0}
    with decoding_daemon(tmp_path, mosquitto, model=model, frames=folder,
                         output=output) as (daemon, sub):
        before = sub.wait_for(3, why=daemon.log_text)
        assert all(len(d["decoded"]["classes"]) == 10 for d in before)
        worker = daemon.worker_pid()
        text = daemon.config.read_text().replace("min_score = 0.0", "min_score = 0.5")
        daemon.config.write_text(text)
        daemon.send(signal.SIGHUP)
        n = len(sub.docs)
        after = sub.wait_for(5, lambda d: d["seq"] > before[-1]["seq"]
                             and len(d["decoded"]["classes"]) < 10, why=daemon.log_text)
        assert daemon.worker_pid() == worker, "an output change must not restart the worker"
        # Once the new threshold is in, every later result uses it.
        first_new = next(i for i, d in enumerate(sub.docs) if i >= n
                         and len(d["decoded"]["classes"]) < 10)
        for doc in sub.docs[first_new:]:
            classes = _decoded(doc)["classes"]
            assert len(classes) <= 1 and all(c["score"] >= 0.5 for c in classes)
        assert any(len(d["decoded"]["classes"]) == 1 for d in after)
        # A restarted worker (new model info) gets the decoder rebuilt with the new settings.
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: "inference worker" in daemon.log_text(), daemon.log_text)
        last = sub.docs[-1]["seq"]
        restarted = sub.wait_for(3, lambda d: d["seq"] > last, why=daemon.log_text)
        assert daemon.worker_pid() != worker
        assert all(len(d["decoded"]["classes"]) <= 1 for d in restarted)
        log = daemon.log_text()
    reload_lines = [line for line in log.splitlines() if "reload:" in line]
    assert any("reload: changed: output" in line for line in reload_lines), reload_lines
    assert any("reload: applied" in line for line in reload_lines), reload_lines
    assert log.count("model digits_int8.tflite: runtime") == 1


# --- check-config -------------------------------------------------------------------------

def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "check.toml"
    path.write_text(text)
    return path


def test_check_config_says_what_auto_inferred_and_why_a_decoder_does_not_fit(
        tmp_path: Path) -> None:
    ssd = MODELS / "ssd_postprocess.tflite"
    report = check_config(_write(tmp_path, f'[model]\npath = "{ssd}"\n[output]\n'
                                           'decoder = "auto"\n'))
    assert report.errors == ()
    assert report.notes == (
        "decoder auto: detection (SSD post-process head (boxes 'output_0', classes 'output_1', "
        "scores 'output_2', count 'output_3'))",
        "detection: SSD roles from the model file's TFLite_Detection_PostProcess op")
    digits = MODELS / "digits_int8.tflite"
    path = _write(tmp_path, f'[model]\npath = "{digits}"\n[output]\ndecoder = "segmentation"\n')
    assert check_config(path).errors == (
        f"{path}:4: output.decoder: decoder segmentation: output 'output_0': shape [1, 10] "
        "(int8) is not a segmentation map: want an integer ArgMax [1, H, W] or scores "
        "[1, H, W, C]",)
    path = _write(tmp_path, f'[model]\npath = "{ssd}"\n[output]\ndecoder = "detection"\n'
                            'ssd_outputs = {boxes = "output_0", classes = "output_1", '
                            'scores = "output_2", count = "num_detections"}\n')
    assert check_config(path).errors == (
        f"{path}:5: output.ssd_outputs: decoder detection: SSD output names: count tensor "
        "'num_detections' is not an output of the model (output_0, output_1, output_2, "
        "output_3)",)


def test_check_config_ssd_outputs_must_name_four_roles(tmp_path: Path) -> None:
    digits = MODELS / "digits_int8.tflite"
    path = _write(tmp_path, f'[model]\npath = "{digits}"\n[output]\n'
                            'ssd_outputs = {boxes = "a", class = "b", scores = "a"}\n')
    assert check_config(path).errors == (
        f"{path}:4: output.ssd_outputs: unknown role 'class' (the roles are boxes, classes, "
        "scores, count)",
        f"{path}:4: output.ssd_outputs: no tensor for classes, count (name all four: boxes, "
        "classes, scores, count)",
        f"{path}:4: output.ssd_outputs: boxes and scores name the same tensor 'a'")


# --- the shared pre-trained models --------------------------------------------------------

def test_mobilenet_photos_with_imagenet_labels(tmp_path: Path, mosquitto: Mosquitto,
                                               shared_models: Path) -> None:
    folder = frame_folder(tmp_path, {"1_cat.bmp": shared_models / "cat.bmp",
                                     "2_grace_hopper.bmp": shared_models / "grace_hopper.bmp"})
    model = shared_models / "mobilenet_v2_1.0_224_quant.tflite"
    with decoding_daemon(tmp_path, mosquitto, model=model, frames=folder,
                         labels=shared_models / "imagenet_labels.txt",
                         output={"decoder": "auto", "top_k": 3}) as (daemon, sub):
        docs = sub.wait_for(4, why=daemon.log_text)
    want = [(286, "Egyptian cat"), (653, "military uniform")]
    for doc in docs:
        top = _decoded(doc)["classes"][0]
        assert (top["label_id"], top["label"]) == want[doc["seq"] % 2]
        raw = np.asarray(doc["outputs"][0]["data"]).reshape(-1)
        assert top["label_id"] == int(np.argmax(raw))
        assert top["score"] == pytest.approx(raw.max(), abs=1e-6)


def test_movenet_keypoints_are_the_models_output_in_frame_pixels(
        tmp_path: Path, mosquitto: Mosquitto, shared_models: Path) -> None:
    folder = frame_folder(tmp_path, {"squat.bmp": shared_models / "squat.bmp"})
    height, width = read_rgb(shared_models / "squat.bmp").shape[:2]
    model = shared_models / "movenet_single_pose_lightning_ptq.tflite"
    with decoding_daemon(tmp_path, mosquitto, model=model, frames=folder,
                         output={"decoder": "pose"}) as (daemon, sub):
        doc = sub.wait_for(1, why=daemon.log_text)[0]
    pose = _decoded(doc)["poses"]
    assert len(pose) == 1
    raw = np.asarray(doc["outputs"][0]["data"], dtype=np.float64).reshape(17, 3)
    keypoints = pose[0]["keypoints"]
    assert [k["name"] for k in keypoints][:3] == ["nose", "left_eye", "right_eye"]
    # Stretch resize: normalised model coordinates times the frame size.
    for k, (y, x, score) in zip(keypoints, raw, strict=True):
        assert k["x"] == pytest.approx(x * width, abs=0.006)
        assert k["y"] == pytest.approx(y * height, abs=0.006)
        assert k["score"] == pytest.approx(score, abs=1e-6)
    assert pose[0]["score"] == pytest.approx(raw[:, 2].mean(), abs=1e-6)
    # Against the published reference (its own preprocessing): the confident joints agree.
    with (shared_models / "movenet_single_pose_lightning_ptq_reference.csv").open() as f:
        reference = list(csv.DictReader(f))
    for row in reference:
        k = keypoints[int(row["keypoint_id"])]
        if float(row["keypoint_score"]) > 0.3:
            assert k["x"] / width == pytest.approx(float(row["keypoint_x"]), abs=0.05)
            assert k["y"] / height == pytest.approx(float(row["keypoint_y"]), abs=0.05)


def _deeplab_map(model: Path, photo: Path) -> np.ndarray:
    """The ArgMax map for `photo`: edged's resize and quantization, the real interpreter."""
    it = Interpreter(model_path=str(model), num_threads=1)
    it.allocate_tensors()
    inp = TensorInfo.from_detail(it.get_input_details()[0])
    pixels = Preprocessor((513, 513), 3)(read_rgb(photo))
    it.set_tensor(inp.index, PixelQuantizer(inp)(pixels).reshape(inp.shape))
    it.invoke()
    out = it.get_output_details()[0]
    return np.array(it.get_tensor(out["index"])).reshape(513, 513)


def test_deeplab_argmax_map_summarised_without_raw_outputs(
        tmp_path: Path, mosquitto: Mosquitto, shared_models: Path) -> None:
    model = shared_models / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    labels = shared_models / "pascal_voc_segmentation_labels.txt"
    base = f'[model]\npath = "{model}"\nlabels = "{labels}"\n[output]\ndecoder = "auto"\n'
    # With the raw 513x513 map on, JSON cannot carry it: check-config says so.
    path = _write(tmp_path, base)
    assert check_config(path).errors == (
        f"{path}:4: output.max_values: the model's outputs have 263169 values (largest: "
        "'ArgMax' [1, 513, 513] int64), more than max_values = 65536 allows in one JSON "
        'message: set output.encoding = "binary", or the decoder with output.include_raw = '
        "false, or raise max_values",)
    report = check_config(_write(tmp_path, base + "include_raw = false\n"))
    assert report.errors == ()
    assert report.notes == ("decoder auto: segmentation (one output 'ArgMax' [1, 513, 513] "
                            "int64: ArgMax class map)",)

    photo = shared_models / "cat.bmp"
    folder = frame_folder(tmp_path, {"cat.bmp": photo})
    with decoding_daemon(tmp_path, mosquitto, model=model, frames=folder,
                         output={"decoder": "auto", "include_raw": False,
                                 "segmentation_mask": 64},
                         labels=labels, inference={"invoke_timeout_s": 30.0}) as (daemon, sub):
        doc = sub.wait_for(1, timeout=90, why=daemon.log_text)[0]
    decoded = _decoded(doc)
    assert doc["outputs"] == []
    ids = _deeplab_map(model, photo)
    counts = np.bincount(ids.reshape(-1))
    names = labels.read_text().splitlines()
    want = sorted(((int(i), names[i], counts[i] / ids.size) for i in np.flatnonzero(counts)),
                  key=lambda t: (-t[2], t[0]))
    got = [(c["label_id"], c["label"], c["fraction"]) for c in decoded["classes"]]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    assert [g[2] for g in got] == pytest.approx([w[2] for w in want], abs=1e-6)
    assert "cat" in [g[1] for g in got[:2]]
    mask = decoded["mask"]
    assert (mask["width"], mask["height"]) == (64, 64)
    small = np.frombuffer(base64.b64decode(mask["data"]), np.uint8).reshape(64, 64)
    centres = ((np.arange(64) + 0.5) * 513 / 64).astype(int)
    assert np.array_equal(small, ids[centres[:, None], centres[None, :]])
