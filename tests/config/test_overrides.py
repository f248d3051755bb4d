"""The overrides file of remote commands (edged.config.overrides): only settable keys,
merged over the config as if written there, written so a crash leaves a whole file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edged.config import ConfigError, read_config
from edged.config.overrides import (
    OverrideError,
    merged,
    read_overrides,
    with_setting,
    write_overrides,
)


def test_a_setting_goes_to_its_section_or_its_camera_and_nothing_else_may() -> None:
    out = with_setting({}, None, "output.min_score", 0.4)
    out = with_setting(out, "porch", "max_fps", 2.0)
    out = with_setting(out, "porch", "output.classes_keep", ["person"])
    assert out == {"output": {"min_score": 0.4},
                   "cameras": {"porch": {"max_fps": 2.0, "output": {"classes_keep": ["person"]}}}}
    for camera, key in ((None, "mqtt.password"), (None, "enabled"), ("porch", "source.uri"),
                        ("porch", "inference.max_fps")):
        with pytest.raises(OverrideError, match="cannot be set at runtime"):
            with_setting({}, camera, key, 1)


def test_merged_over_the_document_each_said_and_a_camera_that_is_gone_refused() -> None:
    data = {"output": {"min_score": 0.2, "top_k": 5}, "cameras": [{"id": "porch"}]}
    overrides = {"output": {"min_score": 0.4}, "cameras": {"porch": {"enabled": False}}}
    out, said = merged(data, overrides)
    assert out["output"] == {"min_score": 0.4, "top_k": 5}
    assert out["cameras"] == [{"id": "porch", "enabled": False}]
    assert data["cameras"] == [{"id": "porch"}]  # not changed in place
    assert said == ["output.min_score = 0.4", "cameras.porch.enabled = false"]
    with pytest.raises(OverrideError, match=r"cameras\.yard: no camera has this id"):
        merged(data, {"cameras": {"yard": {"enabled": False}}})


def test_written_and_read_back_as_toml(tmp_path: Path) -> None:
    path = tmp_path / "overrides.toml"
    doc = {"output": {"classes_keep": ["a \"quoted\" label"], "top_k": 2},
           "cameras": {"porch": {"max_fps": 2.5, "output": {"min_score": 0.6}}}}
    write_overrides(path, doc)
    assert read_overrides(path) == doc
    assert read_overrides(tmp_path / "none.toml") == {}
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_config_with_commands_on_reads_its_overrides_and_one_off_does_not(
        tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.toml"
    write_overrides(overrides, {"output": {"min_score": 0.9}})
    path = tmp_path / "edged.toml"
    path.write_text(f'[commands]\nenabled = true\nallow_insecure = true\n'
                    f'overrides_file = "{overrides}"\n')
    cf = read_config(path)
    assert cf.config.output.min_score == 0.9
    assert cf.overrides == (f"output.min_score = 0.9 (from {overrides})",)
    path.write_text(path.read_text().replace("enabled = true", "enabled = false"))
    assert read_config(path).config.output.min_score == 0.25
    overrides.write_text("[output\n")
    path.write_text(path.read_text().replace("enabled = false", "enabled = true"))
    with pytest.raises(ConfigError, match=re.escape(f"{overrides}: cannot read")):
        read_config(path)


def test_zones_set_at_runtime_are_written_as_inline_tables_and_read_back(
        tmp_path: Path) -> None:
    zones = [{"name": "drive way", "points": [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0]]}]
    doc = with_setting({}, "porch", "events.zones", zones)
    path = tmp_path / "overrides.toml"
    write_overrides(path, doc)
    assert 'zones = [{name = "drive way", points = [[0.0, 0.5]' in path.read_text()
    assert read_overrides(path) == doc


def test_an_override_that_cannot_go_in_is_one_line_not_a_crash() -> None:
    for data, overrides, words in (
            ({"output": 3}, {"output": {"min_score": 0.4}}, "output: not a table"),
            ({}, {"output": 3}, "output cannot be set at runtime"),
            ({"cameras": "porch"}, {"cameras": {"porch": {"enabled": False}}},
             "cameras.porch: no camera has this id"),
            ({}, {"cameras": ["porch"]}, "cameras: must be a table")):
        with pytest.raises(OverrideError, match=words):
            merged(data, overrides)
