"""The config file: one-line messages for broken files, defaults, the generated doc, secrets."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from config_helpers import CONFIGS, expected_problems, toml_document
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from edged.config import (
    SECTIONS,
    Config,
    ConfigError,
    MqttConfig,
    config_warnings,
    default_device_id,
    load_config,
)
from edged.config import doc as configdoc
from edged.config.text import key_lines, line_of

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "config" / "edged.toml"
BROKEN = sorted(CONFIGS.glob("*.toml"))
LINE_RE = re.compile(r"^[^\n:]+(:\d+)?: \S")


def write(tmp_path: Path, text: str, name: str = "edged.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return list(info.value.problems)


# --- broken files: the exact line each one gives -------------------------------------------

def test_there_is_a_broken_file_per_mistake() -> None:
    assert len(BROKEN) >= 30


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_config_gives_its_one_line_messages(path: Path) -> None:
    shown = os.path.relpath(path)
    assert problems(Path(shown)) == expected_problems(path, shown)


def test_unreadable_and_missing_files_say_why(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.toml") == [
        f"{tmp_path / 'nope.toml'}: cannot read: [Errno 2] No such file or directory"]
    assert problems(tmp_path) == [f"{tmp_path}: cannot read: [Errno 21] Is a directory"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    path.chmod(0)
    assert problems(path) == [f"{path}: cannot read: [Errno 13] Permission denied"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "edged.toml"
    path.write_bytes(b"[mqtt]\nhost = \"\xff\"\n")
    assert problems(path) == [f"{path}: cannot read: not UTF-8 text (byte 0xff at offset 15)"]


def test_syntax_error_at_end_of_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\nhost = \"broker")
    assert problems(path) == [f"{path}:2: TOML syntax error: unterminated string (at end of file)"]


# --- defaults and values -------------------------------------------------------------------

def test_empty_file_is_the_default_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config == Config()
    assert config.source.kind == "synthetic"
    assert config.mqtt.host == "localhost" and config.mqtt.port == 1883
    assert Path(config.model.path).parts[-2:] == ("data", "digits_int8.tflite")
    assert config.client_id == f"edged-{config.device.id}"
    assert config.topic_base == f"edged/{config.device.id}"


def test_every_field_has_a_description_and_a_default() -> None:
    for section, model in SECTIONS.items():
        for name, info in model.model_fields.items():
            assert info.description, f"{section}.{name}"
            assert not info.is_required(), f"{section}.{name}"


def test_sections_are_frozen_and_forbid_extras() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.mqtt.port = 1  # type: ignore[misc]
    for model in SECTIONS.values():
        assert model.model_config.get("extra") == "forbid"
        assert model.model_config.get("frozen") is True


def test_friendly_spellings_are_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
[mqtt]
protocol = 5
message_expiry_s = 60
[logging]
level = "INFO"
[inference]
delegate = "external"
external_library = "/usr/lib/libdelegate.so"
external_options = { threads = 4, fast = true, mode = "x" }
"""))
    assert config.mqtt.protocol == "5"
    assert config.logging.level == "info"
    assert config.inference.external_options == {"threads": "4", "fast": "true", "mode": "x"}


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    config = load_config(write(tmp_path / "etc", """
[model]
path = "models/m.tflite"
labels = "/abs/labels.txt"
[source]
kind = "video"
uri = "clips/a.mp4"
"""))
    assert config.model.path == tmp_path / "etc" / "models" / "m.tflite"
    assert config.model.labels == Path("/abs/labels.txt")
    assert config.source.uri == str(tmp_path / "etc" / "clips" / "a.mp4")


def test_default_device_id_is_safe_for_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "my cam/#1+x")
    assert default_device_id() == "my-cam-1-x"
    monkeypatch.setattr(socket, "gethostname", lambda: "///")
    assert default_device_id() == "edged"


# --- the key locator -----------------------------------------------------------------------

def test_locator_handles_dotted_quoted_inline_and_multiline() -> None:
    text = '''title = """
port = 1
"""
[mqtt]
"host" = "x"  # comment
tls.x = 1
[ output ]
opts = { a = 1, b.c = 2 }
'''
    lines = key_lines(text)
    assert ("port",) not in lines
    assert lines[("mqtt", "host")] == 5
    assert lines[("mqtt", "tls", "x")] == 6
    assert lines[("output",)] == 7
    assert lines[("output", "opts", "b", "c")] == 8
    assert line_of(lines, ("mqtt", "port")) == 4  # not written: its table's header
    assert line_of(lines, ("output", "opts", 3)) == 8
    assert line_of(lines, ("logging", "level")) is None


# --- the generated, annotated config -------------------------------------------------------

def test_committed_config_is_the_generated_one() -> None:
    assert DOC.read_text(encoding="utf-8") == configdoc.generate(), (
        "config/edged.toml is stale: run python -m edged.config.doc > config/edged.toml")


def test_committed_config_loads_to_the_defaults() -> None:
    assert load_config(DOC) == Config()


def test_every_key_is_documented_with_a_valid_example() -> None:
    text = DOC.read_text(encoding="utf-8")
    tables: list[tuple[str, type[BaseModel]]] = list(SECTIONS.items())
    for section, model in tables:
        body = text.split(f"\n[{section}]\n", 1)[1].split("\n[", 1)[0]
        for name, info in model.model_fields.items():
            inner, many = configdoc._nested(info)
            if inner is not None and not many:  # a sub-table: [events.snapshot]
                tables.append((f"{section}.{name}", inner))
                continue
            if inner is not None:  # an array of tables: its example must load
                block = body.split(f"# [[{section}.{name}]]\n", 1)[1].split("\n\n", 1)[0]
                example = tomllib.loads("\n".join(
                    line[4:] for line in block.splitlines() if line.startswith("#   ")))
                inner.model_validate(example)
                continue
            match = re.search(rf"^# {name} = (.*)$", body, re.MULTILINE)
            assert match, f"{section}.{name} is not in config/edged.toml"
            value = tomllib.loads(f"v = {match.group(1)}")["v"]
            adapter = TypeAdapter(info.rebuild_annotation(),
                                  config=ConfigDict(strict=True, allow_inf_nan=False))
            adapter.validate_python(value)


def test_configdoc_runs_as_a_module() -> None:
    out = subprocess.run([sys.executable, "-m", "edged.config.doc"], capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout == configdoc.generate()


# --- secrets -------------------------------------------------------------------------------

def test_password_from_file_env_and_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert MqttConfig(username="u", password_file=secret).resolve_password() == "s3cret"
    monkeypatch.setenv("EDGED_TEST_PW", "from-env")
    assert MqttConfig(username="u", password_env="EDGED_TEST_PW").resolve_password() == \
        "from-env"
    assert MqttConfig(username="u", password="inline").resolve_password() == "inline"
    assert MqttConfig().resolve_password() is None


def test_password_problems_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as info:
        MqttConfig(username="u", password_file=missing).resolve_password()
    assert info.value.problems == (
        f"mqtt.password_file: cannot read {missing}: [Errno 2] No such file or directory",)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError) as emptied:
        MqttConfig(username="u", password_file=empty).resolve_password()
    assert emptied.value.problems == (f"mqtt.password_file: {empty} is empty",)
    monkeypatch.delenv("EDGED_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError) as unset:
        MqttConfig(username="u", password_env="EDGED_TEST_UNSET").resolve_password()
    assert unset.value.problems == (
        "mqtt.password_env: environment variable EDGED_TEST_UNSET is not set or empty",)


def test_inline_secret_never_shows(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[mqtt]\nusername = "u"\npassword = "hunter2"\n'))
    for text in (repr(config), str(config), config.model_dump_json(), repr(config.mqtt)):
        assert "hunter2" not in text
    assert config.mqtt.resolve_password() == "hunter2"


def test_secret_holding_files_readable_by_others_are_warned(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("x")
    pw.chmod(0o644)
    path = write(tmp_path, f'[mqtt]\nusername = "u"\npassword_file = "{pw}"\n')
    path.chmod(0o600)
    assert config_warnings(path, load_config(path)) == [
        f"{pw}: warning: holds the MQTT password and is readable by others (mode 0644); "
        f"run: chmod 600 {pw}"]
    pw.chmod(0o600)
    assert config_warnings(path, load_config(path)) == []


def test_inline_password_in_a_readable_config_is_warned(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nhost = "broker.lan"\nusername = "u"\npassword = "x"\n')
    path.chmod(0o640)
    assert config_warnings(path, load_config(path)) == [
        f"{path}:4: warning: mqtt.password: inline password; move it to a file "
        "(password_file) or the environment (password_env)",
        f"{path}: warning: holds mqtt.password and is readable by others (mode 0640); "
        f"run: chmod 600 {path}",
        f"{path}:1: warning: mqtt.tls: the password goes to broker.lan in plain text; "
        "set tls = true",
    ]


# --- nothing ever raises anything but ConfigError ------------------------------------------

def _load_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edged.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path)
        except ConfigError as exc:
            assert exc.problems
            for line in exc.problems:
                assert "\n" not in line and LINE_RE.match(line), line
                assert line.startswith(str(path)), line


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_garbage_text_gives_only_config_errors(text: str) -> None:
    _load_text(text)


scalars = st.one_of(
    st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["", "cpu", "edgetpu", "json", "5", "3.1.1", "usb:0", "a/b", "+", "#"]),
    st.datetimes(), st.dates(),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
field_names = st.sampled_from(sorted({n for m in SECTIONS.values() for n in m.model_fields}))
section_names = st.sampled_from([*SECTIONS, "camera", "x"])
tables = st.dictionaries(st.one_of(field_names, st.text(max_size=8)), values, max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(section_names, st.text(max_size=6)),
                       st.one_of(tables, values), max_size=5))
def test_garbage_values_give_only_config_errors(document: dict[str, object]) -> None:
    _load_text(toml_document(document))
