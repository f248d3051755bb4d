"""[[cameras]]: each camera is the one-camera file it amounts to; mistakes on their lines.

The wording of refused camera keys is in tests/data/configs/cameras_*.toml (run
by test_config's fixture test); these are the resolved configs and check-config.
"""

from __future__ import annotations

import re
from pathlib import Path

from edged.config import Config, load_config, read_config
from edged.config.check import check_config
from edged.config.checkcommand import summary
from edged.config.doc import generate

FRAMES = Path(__file__).resolve().parents[2] / "edged" / "data" / "frames"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edged.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_file_without_cameras_is_one_camera_its_source() -> None:
    config = Config()
    (camera,) = config.camera_list()
    assert (camera.id, camera.enabled, camera.index, camera.key) == ("camera", True, None, "")
    assert camera.config is config


def test_each_camera_is_the_top_level_sections_with_its_keys_replaced(tmp_path: Path) -> None:
    (tmp_path / "porch").mkdir()
    config = load_config(_write(tmp_path, """
[source]
fps = 10
[output]
min_score = 0.4
top_k = 3
[inference]
max_fps = 8
[[cameras]]
id = "porch"
max_fps = 5
[cameras.source]
kind = "folder"
uri = "porch"
[cameras.output]
min_score = 0.6
[[cameras]]
id = "drive"
enabled = false
"""))
    porch, drive = config.camera_list()
    assert (porch.id, porch.max_fps, porch.key) == ("porch", 5.0, "cameras[0]")
    p = porch.config
    assert (p.source.kind, p.source.uri, p.source.fps, p.source.name) == (
        "folder", str(tmp_path / "porch"), 10.0, "porch")  # relative to the file, as [source]
    assert (p.output.min_score, p.output.top_k) == (0.6, 3)
    assert p.cameras == [] and p.mqtt == config.mqtt and p.model == config.model
    assert (drive.id, drive.enabled, drive.max_fps) == ("drive", False, 8.0)
    assert drive.config.source.name == "drive" and drive.config.output == config.output


def test_a_cameras_zones_are_its_own(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, """
[[events.zones]]
name = "lawn"
points = [[0, 0], [1, 0], [1, 1]]
[[cameras]]
id = "porch"
[[cameras.events.zones]]
name = "steps"
points = [[0, 0], [0.5, 0], [0.5, 0.5]]
[[cameras]]
id = "drive"
"""))
    porch, drive = config.camera_list()
    assert [z.name for z in porch.config.events.zones] == ["steps"]
    assert [z.name for z in drive.config.events.zones] == ["lawn"]


def test_a_nested_array_under_a_camera_is_placed_on_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, """[[cameras]]
id = "porch"
[[cameras.events.zones]]
name = "steps"
points = [[0, 0], [0.5, 0]]
""")
    (problem,) = check_config(path).errors
    assert re.match(rf"{re.escape(str(path))}:5: cameras\[0\]\.events\.zones\[0\]\.points: ",
                    problem), problem


def test_check_config_looks_at_each_cameras_source_on_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, """[source]
kind = "folder"
uri = "nothere"
[[cameras]]
id = "porch"
[cameras.source]
uri = "alsonot"
[[cameras]]
id = "drive"
[[cameras]]
id = "yard"
""")
    assert check_config(path).errors == (
        f"{path}:7: cameras[0].source.uri: {tmp_path / 'alsonot'}: not found",
        # drive and yard share [source]'s: said once, on its line
        f"{path}:3: source.uri: {tmp_path / 'nothere'}: not found")


def test_check_config_says_what_runs_for_each_camera(tmp_path: Path) -> None:
    path = _write(tmp_path, f"""[source]
kind = "folder"
uri = "{FRAMES}"
[[cameras]]
id = "porch"
[[cameras]]
id = "drive"
enabled = false
[cameras.source]
kind = "synthetic"
""")
    assert check_config(path).ok
    assert summary(read_config(path).config).startswith(
        "2 cameras (porch: folder, drive: synthetic (off)), model digits_int8.tflite on cpu")


def test_the_annotated_files_camera_example_loads_as_written(tmp_path: Path) -> None:
    text = generate()
    block = text[text.index("# [[cameras]]"):]
    example = "\n".join(line[2:].strip() for line in block.splitlines()
                        if line.startswith(("# [[", "#   ")))
    config = load_config(_write(tmp_path, example))
    (camera,) = config.camera_list()
    assert camera.id == "porch" and camera.config.source.kind == "stream"


def test_check_config_says_which_model_runs_where(tmp_path: Path) -> None:
    digits = FRAMES.parent / "digits_int8.tflite"
    path = _write(tmp_path, f"""[[models]]
id = "more"
path = "{digits}"
accelerator = "cpu"
[[models]]
id = "unused"
path = "{digits}"
[[cameras]]
id = "porch"
[[cameras]]
id = "drive"
model = "more"
""")
    assert check_config(path).ok
    assert summary(read_config(path).config).startswith(
        "2 cameras (porch: synthetic, drive: synthetic), model digits_int8.tflite on cpu, "
        "model more: digits_int8.tflite on cpu, mqtt://")


def test_a_cameras_model_is_its_entry_with_the_shared_inference_keys(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, """[inference]
num_threads = 1
fallback = "fail"
[[models]]
id = "birds"
path = "birds.tflite"
edgetpu_path = "birds_edgetpu.tflite"
labels = "birds.txt"
accelerator = "edgetpu:pci:1"
[[cameras]]
id = "feeder"
model = "birds"
[[cameras]]
id = "porch"
"""))
    feeder, porch = config.camera_list()
    assert feeder.model == "birds" and porch.model == ""
    m, inf = feeder.config.model, feeder.config.inference
    assert (m.path, m.edgetpu_path, m.labels) == (
        tmp_path / "birds.tflite", tmp_path / "birds_edgetpu.tflite", tmp_path / "birds.txt")
    assert (inf.delegate, inf.edgetpu_device, inf.num_threads, inf.fallback) == (
        "edgetpu", "pci:1", 1, "fail")
    assert porch.config.model == config.model and porch.config.inference == config.inference
