"""[cascade]: check-config looks at the classifier as a classifier and at the detector
it follows; a reload restarts the worker only for what the worker holds."""

from __future__ import annotations

from pathlib import Path

from config_helpers import config_problems

from edged.config import load_config
from edged.config.check import check_config
from edged.service.reload import plan_reload

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "tests/data/scene/detect_centroid_int8.tflite"
DIGITS = ROOT / "tests/data/models/digits_int8.tflite"
SSD = ROOT / "tests/data/models/ssd_postprocess.tflite"


def _write(tmp_path: Path, detector: Path, classifier: Path, decoder: str = "detection",
           cascade: str = "") -> Path:
    path = tmp_path / "edged.toml"
    path.write_text(f"""[model]
path = "{detector}"
[output]
decoder = "{decoder}"
include_raw = false
[[models]]
id = "digits"
path = "{classifier}"
[cascade]
model = "digits"
labels = ["person"]
{cascade}""")
    return path


def test_check_config_says_what_the_cascade_classifies(tmp_path: Path) -> None:
    result = check_config(_write(tmp_path, SCENE, DIGITS))
    assert result.ok, result.errors
    assert "cascade: digits on crops of person" in result.notes


def test_a_classifier_without_class_outputs_is_refused_on_its_entrys_path(
        tmp_path: Path) -> None:
    path = _write(tmp_path, SCENE, SSD)
    (problem,) = check_config(path).errors
    assert problem.startswith(f"{path}:8: models[0].path: a cascade's classifier: decoder "
                              "classification: wants one output, the model has 4")


def test_a_cascade_after_a_classifier_is_refused_on_cascade_model(tmp_path: Path) -> None:
    path = _write(tmp_path, DIGITS, DIGITS, decoder="classification")
    assert check_config(path).errors == (
        f"{path}:10: cascade.model: 'digits' classifies detections, but the model decodes "
        "as classification (output.decoder): a cascade follows a detector",)


def test_only_the_classifier_and_its_crop_buffers_restart_the_worker(tmp_path: Path) -> None:
    base = load_config(_write(tmp_path, SCENE, DIGITS))
    for keys, worker in (("top_k = 3\nmin_score = 0.2\npadding = 0.3\n", False),
                         ("max_crops = 5\n", True)):
        new = load_config(_write(tmp_path, SCENE, DIGITS, cascade=keys))
        plan = plan_reload(base, new)
        assert plan.deliver and plan.worker is worker, keys
    path = _write(tmp_path, SCENE, DIGITS)
    path.write_text(path.read_text().replace('model = "digits"', 'model = ""'))
    assert plan_reload(base, load_config(path)).worker  # the classifier leaves the worker


def test_check_config_says_the_cascade_and_what_is_taken_from_afar(tmp_path: Path) -> None:
    from edged.config import read_config
    from edged.config.checkcommand import summary

    path = _write(tmp_path, SCENE, DIGITS)
    assert "model detect_centroid_int8.tflite on cpu, cascade into digits, mqtt://" in \
        summary(read_config(path).config)
    path.write_text(path.read_text() + "[commands]\nenabled = true\nallow_insecure = true\n"
                    f'overrides_file = "{tmp_path / "o.toml"}"\n')
    assert summary(read_config(path).config).endswith("(taking commands)")


def test_detectors_sharing_an_edgetpu_with_two_classifiers_are_refused(tmp_path: Path) -> None:
    """The models on one Edge TPU share a worker, which runs one classifier; a camera
    whose model cascades into nothing beside them is fine."""
    path = tmp_path / "edged.toml"

    def write(second: str) -> None:
        path.write_text(f"""[model]
path = "{SCENE}"
[inference]
delegate = "edgetpu"
edgetpu_device = "usb:0"
[output]
decoder = "detection"
[[models]]
id = "scene2"
path = "{SCENE}"
[[models]]
id = "digits"
path = "{DIGITS}"
[[models]]
id = "digits2"
path = "{DIGITS}"
[[cameras]]
id = "a"
[cameras.cascade]
model = "digits"
[[cameras]]
id = "b"
model = "scene2"
[cameras.cascade]
model = "{second}"
""")

    write("digits2")
    errors = config_problems(path)
    assert errors == [f'{path}:25: cameras[1].cascade.model: "digits2", but cameras[0] has '
                      '"digits", and their models share an Edge TPU: its worker runs one '
                      'classifier']
    for fine in ("digits", ""):
        write(fine)
        assert config_problems(path) == []
