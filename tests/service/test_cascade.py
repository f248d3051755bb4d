"""A detector cascaded into a classifier (issue 17), through the real `edged run` and
mosquitto: the scene detector finds each digit drawn on black, the digits classifier
runs in the same worker on the crop of each detection chosen, and its answer rides on
that detection in the same result message, equal to the classifier's own answer on
that crop worked out without edged (tests/cascade_helpers.py)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import orjson
from broker import Mosquitto, Subscriber
from cameras_helpers import config_text
from cascade_helpers import (
    CLASSIFIER,
    CLASSIFIER_LABELS,
    crop_windows,
    off_reference,
    write_digit_frames,
)
from daemon_helpers import DaemonProcess, base_config
from fleet_helpers import check_device_discovery, render
from reload_helpers import sighup, wait_until
from scene_helpers import LABELS as SCENE_LABELS
from scene_helpers import MODEL as SCENE_MODEL

from edged.sources.synthetic import pattern

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = orjson.loads((ROOT / "edged/schemas/result-v1.schema.json").read_bytes())
# Each digit once, at its own place and size (x, y, side).
PLACEMENTS = [(n, (12 + 25 * n, 8 + 17 * n), 64 + 8 * (n % 4)) for n in range(10)]


def _config(tmp_path: Path, port: int, source: dict[str, Any] | None = None,
            cameras: list[dict[str, Any]] | None = None, **cascade: Any) -> Path:
    cfg = base_config(port, model=SCENE_MODEL, frames=tmp_path / "frames",
                      source={"fps": 20.0},
                      output={"decoder": "detection", "include_raw": False, "min_score": 0.05})
    cfg["model"]["labels"] = str(SCENE_LABELS)
    if source is not None:
        cfg["source"] = source
    cfg["cascade"] = {"model": "digits", "labels": ["person"], "top_k": 10, "min_score": 0.05,
                      "min_class_score": 0.0, "padding": 0.1, **cascade}
    text = config_text(cfg, cameras or []) + (f'[[models]]\nid = "digits"\npath = "{CLASSIFIER}"\n'
                                   f'labels = "{CLASSIFIER_LABELS}"\n')
    path = tmp_path / "edged.toml"
    path.write_text(text)
    return path


def _results(sub: Subscriber, after: float = 0.0) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in sub.on("/test/results") if m.received_at > after]


def _wait(sub: Subscriber, daemon: DaemonProcess, n: int, after: float = 0.0) -> None:
    wait_until(lambda: len(_results(sub, after)) >= n, 30, f"{n} results", daemon.log_text)


def _scores(classes: list[dict[str, Any]]) -> np.ndarray[Any, Any]:
    """A detection's published class scores as the classifier's ten."""
    got = np.zeros(10)
    for c in classes:
        got[c["label_id"]] = c["score"]
    return got


def _classified(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in result["decoded"]["detections"] if "classes" in d]


def test_each_detection_chosen_carries_the_classifiers_own_answer_on_its_crop(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    frames = write_digit_frames(tmp_path / "frames", PLACEMENTS)
    path = _config(tmp_path, mosquitto.port)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait(sub, daemon, 2 * len(frames))
        results = _results(sub)
    assert [r["seq"] for r in results] == list(range(len(results)))  # each frame, in order
    read = 0
    for result in results:
        jsonschema.validate(result, SCHEMA)
        assert {"crop", "classify"} <= set(result["timings_us"]), result["seq"]
        detections = result["decoded"]["detections"]
        person = [d for d in detections if d["label"] == "person"]
        assert len(person) == 1, detections  # one digit: found once per colour
        # Only the label asked for is classified; the others are published as they are.
        assert _classified(result) == person
        classes = person[0]["classes"]
        assert len(classes) == 10 and classes == sorted(classes, key=lambda c: -c["score"])
        assert {c["label"] for c in classes} == {str(n) for n in range(10)}
        frame_index = result["seq"] % len(frames)
        # Equal to the payload's rounding (6 decimals).
        off = off_reference(_scores(classes), frames[frame_index], person[0]["box"], 0.1)
        assert off <= 1e-6, (frame_index, classes)
        read += classes[0]["label"] == str(PLACEMENTS[frame_index][0])
    # The classifier reads most digits from the detector's crops (6 of the 10 here: the
    # box is the digit's lit extent, tighter than the 8x8 digits it learned from).
    assert read >= 0.5 * len(results), read


def test_frames_back_to_back_each_carry_the_answer_on_their_own_crops(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """A camera faster than the cascade (the synthetic one at up to 1000 frames/s, every
    colour channel a detection): a frame is always waiting, so each is published after
    the next frame's crops are queued into the other half of the crop buffers. Each
    answer is still the classifier's on that frame's own crops, and frames stay in
    order."""
    path = _config(tmp_path, mosquitto.port, SYNTHETIC, labels=[])
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait(sub, daemon, 200)
        results = _results(sub)
    _check_synthetic(results, (64, 64))


def test_two_cameras_cascading_on_one_worker_each_get_their_own_crops_answers(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Two such cameras, 64x64 and 96x96, before one detector: their frames' crops take
    turns in the halves of the one worker's crop buffers (whichever camera's frame came
    before), and each answer is the classifier's on that camera's own frame."""
    path = _config(tmp_path, mosquitto.port, SYNTHETIC, [
        {"id": "a"}, {"id": "b", "source": {"width": 96, "height": 96}}], labels=[])
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        wait_until(lambda: min(len(sub.on(f"/test/{c}/results")) for c in "ab") >= 100, 30,
                   "100 results each", daemon.log_text)
    for camera, size in (("a", (64, 64)), ("b", (96, 96))):
        _check_synthetic([orjson.loads(m.payload) for m in sub.on(f"/test/{camera}/results")],
                         size)


SYNTHETIC = {"kind": "synthetic", "width": 64, "height": 64, "fps": 1000.0}


def _check_synthetic(results: list[dict[str, Any]], size: tuple[int, int]) -> None:
    """In order, and every tenth frame's three answers the classifier's on its crops."""
    seqs = [r["seq"] for r in results]
    assert seqs == sorted(set(seqs)) and seqs[-1] - seqs[0] >= len(seqs) - 1
    for result in results[::10]:
        frame = pattern(result["seq"], *size)
        classified = _classified(result)
        assert len(classified) == 3, result["decoded"]
        for detection in classified:
            off = off_reference(_scores(detection["classes"]), frame, detection["box"], 0.1)
            assert off <= 1e-6, (result["seq"], detection)


def test_the_reference_takes_each_crop_a_box_rounded_in_the_payload_can_stand_for() -> None:
    """The 96x96 pattern's frame 37 (and every 72nd): its crop's left edge is 38.995 from
    the published box, a whole 39 from the one edged rounded it from."""
    windows = crop_windows([42.16, 39.15, 64.75, 63.25], 0.1, 96, 96)
    assert {w[0] for w in windows} == {38, 39} and {w[1:] for w in windows} == {(36, 68, 66)}


def test_at_most_max_crops_detections_each_frame_highest_scoring_first(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_digit_frames(tmp_path / "frames", PLACEMENTS[:3])
    path = _config(tmp_path, mosquitto.port, labels=[], max_crops=2, top_k=1)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait(sub, daemon, 10)
        for result in _results(sub):
            detections = result["decoded"]["detections"]
            assert len(detections) == 3 and len(_classified(result)) == 2
            assert all(len(d["classes"]) == 1 for d in _classified(result))


def test_the_worker_killed_mid_cascade_restarts_and_the_cascade_resumes(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_digit_frames(tmp_path / "frames", PLACEMENTS[:4])
    path = _config(tmp_path, mosquitto.port)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait(sub, daemon, 5)
        worker = daemon.worker_pid()
        killed = time.time()
        os.kill(worker, signal.SIGKILL)
        _wait(sub, daemon, 10, after=killed + 0.5)
        assert daemon.worker_pid() != worker
        assert all(_classified(r) for r in _results(sub, killed + 0.5))
        assert daemon.proc.poll() is None


def test_the_worker_killed_with_a_frame_held_loses_only_counted_frames(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    """SIGKILL to the worker while frames come back to back (one held for its crops'
    answer most of the time): the frames it took with it, the held one included, are
    counted in frames_lost, none is published twice, and after each restart every
    answer is still the classifier's on its own frame's crops."""
    path = _config(tmp_path, mosquitto.port, SYNTHETIC, labels=[])
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait(sub, daemon, 50)
        for _ in range(3):
            os.kill(daemon.worker_pid(), signal.SIGKILL)
            killed = time.time()
            _wait(sub, daemon, 50, after=killed + 0.5)
        assert daemon.stop() == 0
    log = daemon.log_text()
    assert "Traceback" not in log and log.count("worker killed by SIGKILL") == 3, log
    results = _results(sub)
    seqs = [r["seq"] for r in results]
    assert len(seqs) == len(set(seqs)), "a result published twice"
    _check_synthetic(results, (64, 64))
    stats = [orjson.loads(m.payload) for m in sub.on("/test/stats")]
    lost = stats[-1]["frames_lost"]
    missing = set(range(min(seqs), max(seqs) + 1)) - set(seqs)
    # A fault takes the frames in the worker's two slots and the one held: 1-3 each.
    assert 3 <= lost <= 9, stats[-1]
    # What is missing is counted: lost, or replaced in the camera's slot untaken (a
    # few of those come after the last result and are counted without being missing).
    counted = lost + stats[-1]["frames_dropped"]
    assert len(missing) <= counted <= len(missing) + 20, (len(missing), stats[-1])


def test_a_reload_of_cascade_keys_keeps_the_worker_and_removing_it_restarts_it(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_digit_frames(tmp_path / "frames", PLACEMENTS[:4])
    path = _config(tmp_path, mosquitto.port)
    with Subscriber(mosquitto.port, "edged/#") as sub, DaemonProcess(path) as daemon:
        _wait(sub, daemon, 5)
        worker = daemon.worker_pid()
        path.write_text(path.read_text().replace("top_k = 10", "top_k = 2"))
        after = sighup(daemon)
        _wait(sub, daemon, 5, after=after + 0.3)
        assert {len(d["classes"]) for r in _results(sub, after + 0.3)
                for d in _classified(r)} == {2}
        assert daemon.worker_pid() == worker  # crops and classes: the pipeline thread's
        path.write_text(path.read_text().replace('model = "digits"', 'model = ""'))
        after = sighup(daemon)
        _wait(sub, daemon, 5, after=after + 0.3)
        assert not any(_classified(r) for r in _results(sub, after + 0.3))
        assert daemon.worker_pid() != worker  # the classifier left the worker


def test_a_cascade_after_a_model_that_is_not_a_detector_is_refused_on_its_key(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_digit_frames(tmp_path / "frames", PLACEMENTS[:1])
    path = _config(tmp_path, mosquitto.port)
    text = path.read_text().replace(str(SCENE_MODEL), str(CLASSIFIER)).replace(
        'decoder = "detection"', 'decoder = "classification"')
    path.write_text(text.replace(f'labels = "{SCENE_LABELS}"', ""))
    with DaemonProcess(path) as daemon:
        assert daemon.proc.wait(30) == 78
    assert "cascade.model: 'digits' classifies detections, but the model decodes as " \
           "classification" in daemon.log_text()


def test_home_assistant_shows_what_the_classifier_made_of_the_best_detection(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    write_digit_frames(tmp_path / "frames", PLACEMENTS[3:4])
    path = _config(tmp_path, mosquitto.port, top_k=1)
    path.write_text(path.read_text() + "[homeassistant]\nenabled = true\n")
    with Subscriber(mosquitto.port, ["edged/#", "homeassistant/#"]) as sub, \
            DaemonProcess(path) as daemon:
        _wait(sub, daemon, 3)
        config = sub.wait_for(lambda m: m.topic.startswith("homeassistant/") and m.payload,
                              timeout=10)
        check_device_discovery(config.topic, orjson.loads(config.payload))
        sensor = orjson.loads(config.payload)["cmps"]["top_classified"]
        assert sensor["stat_t"] == "edged/test/results"
        message = sub.on("/test/results")[-1]
        (person,) = _classified(orjson.loads(message.payload))
        assert render(sensor["val_tpl"], message.payload) == person["classes"][0]["label"]
        attributes = orjson.loads(render(sensor["json_attr_tpl"], message.payload))
        assert attributes == {"score": person["classes"][0]["score"], "detection": "person",
                              "classified": 1}
