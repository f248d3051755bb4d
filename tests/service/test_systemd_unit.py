"""The systemd unit, sysusers and udev files, checked with systemd's own tools.

`systemd-analyze verify` exits 0 on unknown keys and typos, so the check is
"prints nothing". It runs against the real, unmodified unit file inside a
staged root (--root): the unit dependencies, /bin/kill and an executable at
/opt/edged/venv/bin/edged exist there, so nothing needs rewriting to pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "edged.service"
SYSUSERS = ROOT / "systemd" / "edged.sysusers"
UDEV_RULES = ROOT / "systemd" / "99-edged-coral.rules"
HOST_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 2.5


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing on the CI machine (apt-get install systemd)")
        pytest.skip(f"{name} not installed")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)


def _unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, repeated keys kept in order."""
    section, out = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _values(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in _unit_entries(UNIT.read_text()) if s == section and k == key]


def _stage_root(tmp_path: Path, unit_text: str) -> Path:
    root = tmp_path / "root"
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/kill", root / "bin/kill")
    edged = root / "opt/edged/venv/bin/edged"
    edged.parent.mkdir(parents=True)
    edged.write_text("#!/bin/sh\nexit 0\n")
    edged.chmod(0o755)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "edged.service").write_text(unit_text)
    return root


def test_verify_prints_nothing(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    if not HOST_UNITS.is_dir():
        pytest.skip(f"{HOST_UNITS} missing: no unit tree to verify against")
    root = _stage_root(tmp_path, UNIT.read_text())
    result = _run(analyze, "verify", f"--root={root}", "edged.service")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_in_the_staged_root_does_see_mistakes(tmp_path: Path) -> None:
    # Guards the check above: an empty output must mean "read and found clean".
    analyze = _tool("systemd-analyze")
    if not HOST_UNITS.is_dir():
        pytest.skip(f"{HOST_UNITS} missing: no unit tree to verify against")
    broken = UNIT.read_text().replace(
        "NoNewPrivileges=yes", "NoNewPrivileges=yes\nNoNewPrivilege=yes"
    )
    root = _stage_root(tmp_path, broken)
    result = _run(analyze, "verify", f"--root={root}", "edged.service")
    assert "Unknown key 'NoNewPrivilege'" in result.stdout + result.stderr


def test_security_exposure_is_ok() -> None:
    analyze = _tool("systemd-analyze")
    result = _run(analyze, "security", "--offline=true", "--no-pager", os.fspath(UNIT))
    output = result.stdout + result.stderr
    found = re.search(r"Overall exposure level for edged\.service: (\d+\.\d+) (\w+)", output)
    assert found, output
    score, label = float(found.group(1)), found.group(2)
    assert score <= MAX_EXPOSURE, output
    assert label == "OK", output


def test_unit_has_the_settings_the_daemon_relies_on() -> None:
    single = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "/opt/edged/venv/bin/edged run --config /etc/edged/edged.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "User": "edged",
        "ConfigurationDirectory": "edged",
        "StateDirectory": "edged",
        "DevicePolicy": "closed",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "CapabilityBoundingSet": "",
        "SystemCallArchitectures": "native",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    }
    for key, value in single.items():
        assert _values(key) == [value], key
    assert _values("WatchdogSec") and _values("MemoryMax")
    assert _values("StartLimitIntervalSec", "Unit") and _values("StartLimitBurst", "Unit")
    assert "@system-service" in _values("SystemCallFilter")
    # PrivateDevices hides the camera and the TPU; DynamicUser breaks group-granted devices.
    assert _values("PrivateDevices") == []
    assert _values("DynamicUser") == []
    allowed = {v.split()[0] for v in _values("DeviceAllow")}
    assert {"char-video4linux", "char-usb_device", "char-apex", "char-media", "char-dma_heap"} <= (
        allowed
    )


def _sysusers_lines() -> list[list[str]]:
    lines = []
    for raw in SYSUSERS.read_text().splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            lines.append(re.findall(r'"[^"]*"|\S+', raw))
    return lines


def test_every_supplementary_group_is_created_by_sysusers() -> None:
    # A group that does not exist stops the service with status=216/GROUP.
    (groups,) = _values("SupplementaryGroups")
    created = {fields[1] for fields in _sysusers_lines() if fields[0] in ("g", "u")}
    assert set(groups.split()) <= created
    assert "edged" in created and _values("Group") == ["edged"]


def test_sysusers_creates_user_and_keeps_existing_groups(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    etc = tmp_path / "etc"
    etc.mkdir()
    # Raspberry Pi OS ships video and plugdev with fixed numbers: they must stay.
    (etc / "group").write_text("root:x:0:\nvideo:x:44:pi\nplugdev:x:46:pi\n")
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nvideo:*::pi\nplugdev:*::pi\n")

    dry = _run(sysusers, f"--root={tmp_path}", "--dry-run", os.fspath(SYSUSERS))
    assert dry.returncode == 0, dry.stderr
    assert (etc / "group").read_text().count("\n") == 3  # dry run wrote nothing

    first = _run(sysusers, f"--root={tmp_path}", os.fspath(SYSUSERS))
    assert first.returncode == 0, first.stderr
    messages = (first.stdout + first.stderr).splitlines()
    assert all(m.startswith("Creating ") for m in messages), messages

    groups = {
        line.split(":")[0]: line.split(":") for line in (etc / "group").read_text().splitlines()
    }
    assert groups["video"][2] == "44" and groups["plugdev"][2] == "46"
    assert "apex" in groups
    for name in ("video", "plugdev", "apex"):
        assert "edged" in groups[name][3].split(","), name
    passwd = {
        line.split(":")[0]: line.split(":") for line in (etc / "passwd").read_text().splitlines()
    }
    edged = passwd["edged"]
    assert int(edged[2]) < 1000  # a system account
    assert edged[5] == "/var/lib/edged"
    assert edged[6].endswith("nologin")

    again = _run(sysusers, f"--root={tmp_path}", os.fspath(SYSUSERS))
    assert (again.returncode, again.stdout + again.stderr) == (0, "")


# ---- udev rules -------------------------------------------------------------
_TOKEN = re.compile(r'^([A-Z_]+)(\{[^}]+\})?(==|!=|\+=|-=|:=|=)"([^"]*)"$')
_MATCH_KEYS = {"SUBSYSTEM", "SUBSYSTEMS", "KERNEL", "ACTION", "ENV", "ATTR", "ATTRS", "DRIVERS"}
_ASSIGN_KEYS = {"MODE", "GROUP", "OWNER", "TAG", "SYMLINK", "ENV"}


def _udev_rules() -> list[dict[str, tuple[str, str]]]:
    """Each rule as {KEY or KEY{attr}: (operator, value)}; raises on a malformed token."""
    rules = []
    for number, raw in enumerate(UDEV_RULES.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        rule: dict[str, tuple[str, str]] = {}
        for token in (t.strip() for t in line.split(",")):
            found = _TOKEN.match(token)
            assert found, f"{UDEV_RULES.name}:{number}: malformed token {token!r}"
            key, attr, op, value = found.groups()
            if op in ("==", "!="):
                assert key in _MATCH_KEYS, f"{UDEV_RULES.name}:{number}: {key} cannot match"
            else:
                assert key in _ASSIGN_KEYS, f"{UDEV_RULES.name}:{number}: {key} cannot be set"
            rule[key + (attr or "")] = (op, value)
        assert any(op in ("==", "!=") for op, _ in rule.values()), f"line {number}: no match"
        assert any(op not in ("==", "!=") for op, _ in rule.values()), f"line {number}: no action"
        rules.append(rule)
    return rules


def test_udev_rules_parse_and_cover_both_usb_ids_and_pcie() -> None:
    rules = _udev_rules()
    usb_ids = {
        (r["ATTR{idVendor}"][1], r["ATTR{idProduct}"][1])
        for r in rules
        if r.get("SUBSYSTEM") == ("==", "usb")
    }
    # Before the firmware upload, and after the re-enumeration.
    assert usb_ids == {("1a6e", "089a"), ("18d1", "9302")}
    apex = [r for r in rules if r.get("SUBSYSTEM") == ("==", "apex")]
    assert len(apex) == 1 and apex[0]["GROUP"] == ("=", "apex")
    created = {fields[1] for fields in _sysusers_lines() if fields[0] == "g"}
    for rule in rules:
        assert rule["GROUP"][1] in created
        assert rule["MODE"] == ("=", "0660")  # group rw, nobody else


def test_udevadm_verify_when_available() -> None:
    udevadm = shutil.which("udevadm")
    if udevadm is None:
        pytest.skip("udevadm not installed (the parser test above still runs)")
    if "verify" not in _run(udevadm, "--help").stdout:
        pytest.skip("udevadm verify needs systemd 254+; the parser test above still runs")
    result = _run(udevadm, "verify", "--resolve-names=never", os.fspath(UDEV_RULES))
    assert result.returncode == 0, result.stdout + result.stderr


# ---- MemoryDenyWriteExecute ---------------------------------------------------
_MDWE_CHILD = textwrap.dedent(
    """
    import ctypes, errno, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print("unsupported", ctypes.get_errno()); sys.exit(3)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    PROT_RWX, MAP_PRIVATE_ANON = 0x1 | 0x2 | 0x4, 0x02 | 0x20
    if libc.mmap(None, 4096, PROT_RWX, MAP_PRIVATE_ANON, -1, 0) != ctypes.c_void_p(-1).value:
        print("W+X mapping was allowed: the restriction is not active"); sys.exit(4)

    import numpy as np, cv2
    from ai_edge_litert.interpreter import Interpreter
    for path in sys.argv[1:]:
        it = Interpreter(model_path=path, num_threads=2)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        it.invoke()
        it.get_tensor(it.get_output_details()[0]["index"])
    cv2.resize(np.zeros((480, 640, 3), np.uint8), (128, 128), interpolation=cv2.INTER_AREA)
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert callback(1) == 2
    print("ok")
    """
)


def test_runtime_works_without_wx_memory(test_models: Path) -> None:
    """The unit's MemoryDenyWriteExecute=yes, reproduced with the kernel's PR_SET_MDWE.

    PR_SET_MDWE (Linux 6.3+) refuses W+X mappings and making memory executable,
    the rule systemd enforces with seccomp. The child proves the rule is active
    (a W+X mmap fails) and then runs the real runtime with the XNNPACK delegate
    on real models, OpenCV and a ctypes callback (libffi closures).
    """
    pytest.importorskip("ai_edge_litert")
    models = [test_models / "digits_int8.tflite", test_models / "multi_output_int8.tflite"]
    models = [m for m in models if m.is_file()]
    if not models:
        pytest.skip(f"no test models in {test_models}")
    result = subprocess.run(
        [sys.executable, "-c", _MDWE_CHILD, *map(os.fspath, models)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode == 3:
        pytest.skip(f"kernel without PR_SET_MDWE (Linux < 6.3): {result.stdout.strip()}")
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
