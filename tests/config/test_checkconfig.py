"""`edged check-config`: what it finds by looking at the files a config points to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from faults_helpers import build_stub_delegate

from edged.config.check import check_config

PYTHON = Path("/tmp/venv/bin/python")
ROOT = Path(__file__).resolve().parents[2]


def python() -> str:
    return str(PYTHON) if PYTHON.exists() else sys.executable


@pytest.fixture
def digits(test_models: Path) -> Path:
    path = test_models / "digits_int8.tflite"
    if not path.is_file():
        pytest.skip("tests/data/models/digits_int8.tflite not generated yet")
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edged.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def run_cli(path: Path | None, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    args = [str(path)] if path is not None else []
    return subprocess.run([python(), "-m", "edged", "check-config", *args],
                          check=False, cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr, where problems go, without the runtime's own native chatter."""
    return [line for line in result.stderr.splitlines()
            if not line.startswith("INFO: Created TensorFlow Lite XNNPACK delegate")]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a client certificate signed by it, an unrelated key and an encrypted key."""
    d = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=edged test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out",
            "client.csr", "-subj", "/CN=edged")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "client.crt", "-days", "2")
    openssl("genrsa", "-out", "other.key", "2048")
    openssl("rsa", "-in", "client.key", "-aes256", "-passout", "pass:x", "-out",
            "encrypted.key")
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return d


# --- the command, as a user runs it --------------------------------------------------------

def test_good_config_exits_0(tmp_path: Path, digits: Path) -> None:
    path = write(tmp_path, f'[model]\npath = "{digits}"\n[output]\ndecoder = "auto"\n')
    result = run_cli(path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith(f"{path}: OK (source synthetic, model digits_int8.tflite on cpu,")
    assert f"{path}: note: decoder auto: classification" in result.stdout


def test_broken_config_exits_1_with_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "[mqtt]\nport = 70000\nprot = 1\n")
    result = run_cli(path)
    assert result.returncode == 1
    assert problems(result) == [
        f"{path}:2: mqtt.port: must be <= 65535 (got 70000)",
        f'{path}:3: mqtt.prot: unknown key (did you mean "port"?)',
        f"{path}: 2 problems",
    ]
    assert not result.stdout  # problems go to stderr, as edged inspect's do


def test_schema_errors_do_not_hide_the_file_checks_of_valid_sections(tmp_path: Path) -> None:
    """A bad value in one section; a missing model and a missing folder in two good ones."""
    path = write(tmp_path, f'[source]\nkind = "folder"\nuri = "{tmp_path}/nope"\n\n'
                           f'[model]\npath = "{tmp_path}/missing.tflite"\n\n'
                           "[output]\nmin_score = 2\n")
    result = run_cli(path)
    assert result.returncode == 1
    assert problems(result) == [
        f"{path}:9: output.min_score: must be <= 1 (got 2)",
        f"{path}:3: source.uri: {tmp_path}/nope: not found",
        f"{path}:6: model.path: {tmp_path}/missing.tflite: model file not found",
        f"{path}: 3 problems",
    ]


def test_file_checks_that_need_a_broken_section_are_left_out(tmp_path: Path,
                                                            digits: Path) -> None:
    """[output] is broken: the model's outputs are not checked against its defaults
    (max_values = 5 would fail them), and nothing is said about it twice."""
    path = write(tmp_path, f'[model]\npath = "{digits}"\nlabels = "{tmp_path}/labels.txt"\n'
                           "[output]\nmax_values = 5\ntop_k = 0\n")
    result = check_config(path)
    assert result.errors == (
        f"{path}:6: output.top_k: must be >= 1 (got 0)",
        f"{path}:3: model.labels: labels file '{tmp_path}/labels.txt': not found",
    )


def test_missing_config_exits_1(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "none.toml")
    assert result.returncode == 1
    assert problems(result) == [
        f"{tmp_path / 'none.toml'}: cannot read: [Errno 2] No such file or directory",
        f"{tmp_path / 'none.toml'}: 1 problem"]


def test_without_an_argument_it_checks_the_file_edged_run_would_read(
        tmp_path: Path, digits: Path) -> None:
    path = write(tmp_path, f'[model]\npath = "{digits}"\n')
    result = run_cli(None, env={"EDGED_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"{path}: OK (source synthetic, ")
    default = run_cli(None, env={"EDGED_CONFIG": ""})
    if not Path("/etc/edged/edged.toml").exists():
        assert problems(default)[0] == \
            "/etc/edged/edged.toml: cannot read: [Errno 2] No such file or directory"


def test_good_config_with_warnings_keeps_stdout_for_the_verdict(tmp_path: Path,
                                                                 digits: Path) -> None:
    path = write(tmp_path, f'[model]\npath = "{digits}"\n[mqtt]\npassword = "x"\n'
                           'username = "u"\n')
    result = run_cli(path)
    assert result.returncode == 0
    assert problems(result) == [
        f"{path}:4: warning: mqtt.password: inline password; move it to a file "
        "(password_file) or the environment (password_env)"]
    assert result.stdout.splitlines()[-1].startswith(f"{path}: OK (")


def test_segmentation_map_too_large_for_json(tmp_path: Path, shared_models: Path) -> None:
    model = shared_models / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    path = write(tmp_path, f'[model]\npath = "{model}"\n\n[output]\nencoding = "json"\n')
    result = run_cli(path)
    assert result.returncode == 1
    assert problems(result)[0] == (
        f"{path}:4: output.max_values: the model's outputs have 263169 values (largest: "
        "'ArgMax' [1, 513, 513] int64), more than max_values = 65536 allows in one JSON "
        'message: set output.encoding = "binary", or output.decoder = "segmentation" with '
        "output.include_raw = false, or raise max_values")


@pytest.mark.parametrize("output", [
    'encoding = "binary"',
    'decoder = "segmentation"\ninclude_raw = false',
    "max_values = 300000",
])
def test_segmentation_map_fixes_pass(tmp_path: Path, shared_models: Path, output: str) -> None:
    model = shared_models / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    report = check_config(write(tmp_path, f'[model]\npath = "{model}"\n[output]\n{output}\n'))
    assert report.errors == ()


# --- what only looking finds ---------------------------------------------------------------

def test_missing_model_labels_and_password_files(tmp_path: Path) -> None:
    path = write(tmp_path, """[model]
path = "missing.tflite"
labels = "missing.txt"
[mqtt]
username = "edged"
password_file = "missing-password"
""")
    report = check_config(path)
    assert list(report.errors) == [
        f"{path}:2: model.path: {tmp_path / 'missing.tflite'}: model file not found",
        f"{path}:3: model.labels: labels file '{tmp_path / 'missing.txt'}': not found",
        f"{path}:6: mqtt.password_file: cannot read {tmp_path / 'missing-password'}: "
        "[Errno 2] No such file or directory",
    ]


def test_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "model.tflite").write_bytes(b"\x00" * 64)
    path = write(tmp_path, '[model]\npath = "model.tflite"\n')
    [error] = check_config(path).errors
    assert error.startswith(f"{path}:2: model.path: {tmp_path / 'model.tflite'}: ")


def test_edgetpu_model_on_cpu(tmp_path: Path, shared_models: Path) -> None:
    model = shared_models / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    path = write(tmp_path, f'[model]\npath = "{model}"\n')
    assert list(check_config(path).errors) == [
        f"{path}:2: model.path: {model}: compiled for the Edge TPU (edgetpu-custom-op): "
        "set delegate = edgetpu, or use the CPU model"]


def test_edgetpu_only_model_cannot_fall_back(tmp_path: Path, shared_models: Path) -> None:
    model = shared_models / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
    path = write(tmp_path, f'[model]\npath = "{model}"\n[inference]\ndelegate = "edgetpu"\n'
                           'edgetpu_library = "/nonexistent/libedgetpu.so.1"\n')
    report = check_config(path)
    # edged run exits 78 with this file (tests/service/test_exit_contract.py): not an OK here.
    assert report.errors == (
        f"{path}:5: inference.edgetpu_library: cannot load /nonexistent/libedgetpu.so.1: "
        "cannot open shared object file: No such file or directory (apt install "
        f"libedgetpu1-std), and {model.name} (model.path) runs only on the Edge TPU: edged "
        "would exit (status 78); give model.path the model's CPU build",)
    assert report.warnings[0].startswith(f"{path}:2: warning: model.path: {model} runs only "
                                         'on the Edge TPU, so fallback = "cpu" has nothing')


def test_summary_names_the_model_that_would_run_edgetpu_stand_in(
        tmp_path: Path, shared_models: Path) -> None:
    stub = build_stub_delegate(tmp_path, "libstub.so")
    tpu, cpu = ("mobilenet_v1_0.25_128_quant_edgetpu.tflite",
                "mobilenet_v1_0.25_128_quant.tflite")
    text = (f'[model]\npath = "{shared_models / cpu}"\n'
            f'edgetpu_path = "{shared_models / tpu}"\n'
            f'[inference]\ndelegate = "edgetpu"\nedgetpu_library = "{stub}"\n'
            '[output]\nmax_values = 2000\n')
    result = run_cli(write(tmp_path, text))
    assert result.returncode == 0, result.stderr
    assert f"model {tpu} on edgetpu (first found; CPU fallback: {cpu})," in result.stdout
    result = run_cli(write(tmp_path, text.replace(str(stub), "/nonexistent/libedgetpu.so.1")))
    assert result.returncode == 0, result.stderr
    assert f"model {cpu} on cpu (the Edge TPU delegate cannot load: fallback)," \
        in result.stdout


def test_missing_delegate_library_fails_only_with_fallback_fail(tmp_path: Path, digits: Path
                                                                ) -> None:
    base = f'[model]\npath = "{digits}"\n[inference]\ndelegate = "edgetpu"\n' \
           'edgetpu_library = "/nonexistent/libedgetpu.so.1"\n'
    soft = check_config(write(tmp_path, base))
    assert soft.errors == ()
    assert list(soft.warnings) == [
        f"{tmp_path / 'edged.toml'}:5: warning: inference.edgetpu_library: cannot load "
        "/nonexistent/libedgetpu.so.1: cannot open shared object file: No such file or "
        'directory (apt install libedgetpu1-std); edged would run on the CPU (fallback = "cpu")']
    hard = check_config(write(tmp_path, base + 'fallback = "fail"\n'))
    assert len(hard.errors) == 1
    assert hard.errors[0].startswith(f"{tmp_path / 'edged.toml'}:5: inference.edgetpu_library: "
                                     "cannot load /nonexistent/libedgetpu.so.1")


def test_wrong_decoder_and_normalization_for_the_model(tmp_path: Path, digits: Path) -> None:
    path = write(tmp_path, f'[model]\npath = "{digits}"\n[output]\ndecoder = "pose"\n'
                           "[preprocess]\nmean = [1.0, 2.0]\nstd = [1.0, 2.0]\n")
    report = check_config(path)
    assert [e.split(": ", 2)[:2] for e in report.errors] == [
        [f"{path}:4", "output.decoder"], [f"{path}:6", "preprocess.mean"],
        [f"{path}:7", "preprocess.std"]]
    assert report.errors[1].endswith(": 2 values, but the model input 'image' [1, 32, 32, 3] "
                                     "has 3 channels: give 1 or 3")


def test_world_readable_password_file_warns_but_passes(tmp_path: Path, digits: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    path = write(tmp_path, f'[model]\npath = "{digits}"\n[mqtt]\nusername = "u"\n'
                           'password_file = "pw"\n')
    result = run_cli(path)
    assert result.returncode == 0
    assert problems(result)[0] == (
        f"{secret}: warning: holds the MQTT password and is readable by others (mode 0644); "
        f"run: chmod 600 {secret}")
    assert "s3cret" not in result.stdout + result.stderr


def test_unset_password_env_is_a_warning(tmp_path: Path, digits: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGED_TEST_NOPE", raising=False)
    path = write(tmp_path, f'[model]\npath = "{digits}"\n[mqtt]\nusername = "u"\n'
                           'password_env = "EDGED_TEST_NOPE"\n')
    report = check_config(path)
    assert report.errors == ()
    assert list(report.warnings) == [
        f"{path}:5: warning: mqtt.password_env: environment variable EDGED_TEST_NOPE is not "
        "set or empty in this shell; make sure the service's environment sets it"]


# --- TLS files, checked with the ssl module itself -----------------------------------------

def tls_config(tmp_path: Path, digits: Path, ca: Path, cert: Path, key: Path) -> Path:
    return write(tmp_path, f'[model]\npath = "{digits}"\n[mqtt]\ntls = true\nport = 8883\n'
                           f'ca_file = "{ca}"\ncert_file = "{cert}"\nkey_file = "{key}"\n')


def test_good_mutual_tls_passes(tmp_path: Path, digits: Path, certs: Path) -> None:
    report = check_config(tls_config(tmp_path, digits, certs / "ca.crt", certs / "client.crt",
                                     certs / "client.key"))
    assert report.errors == () and report.warnings == ()


def test_key_of_another_certificate(tmp_path: Path, digits: Path, certs: Path) -> None:
    path = tls_config(tmp_path, digits, certs / "ca.crt", certs / "client.crt",
                      certs / "other.key")
    assert list(check_config(path).errors) == [
        f"{path}:8: mqtt.key_file: {certs / 'other.key'} is not the key of "
        f"{certs / 'client.crt'}"]


def test_encrypted_key_and_a_ca_that_is_not_pem(tmp_path: Path, digits: Path,
                                                certs: Path) -> None:
    path = tls_config(tmp_path, digits, certs / "client.key", certs / "client.crt",
                      certs / "encrypted.key")
    assert list(check_config(path).errors) == [
        f"{path}:6: mqtt.ca_file: {certs / 'client.key'}: no BEGIN CERTIFICATE block "
        "(not a PEM file?)",
        f"{path}:8: mqtt.key_file: {certs / 'encrypted.key'}: the key is encrypted; edged "
        "needs it unencrypted (and chmod 600)",
    ]


def test_readable_private_key_is_warned(tmp_path: Path, digits: Path, certs: Path) -> None:
    key = tmp_path / "client.key"
    key.write_bytes((certs / "client.key").read_bytes())
    key.chmod(0o644)
    report = check_config(tls_config(tmp_path, digits, certs / "ca.crt", certs / "client.crt",
                                     key))
    assert report.errors == ()
    assert list(report.warnings) == [
        f"{key}: warning: holds the TLS private key and is readable by others (mode 0644); "
        f"run: chmod 600 {key}"]


def test_the_shipped_default_config_passes() -> None:
    if not (ROOT / "edged" / "data" / "digits_int8.tflite").is_file():
        pytest.skip("packaged model edged/data/digits_int8.tflite not present yet")
    result = run_cli(ROOT / "config" / "edged.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "model digits_int8.tflite on cpu, mqtt://localhost:1883/edged/" in result.stdout
