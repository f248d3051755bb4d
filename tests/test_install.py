"""scripts/install.sh, run for real into temporary DESTDIR-style roots.

The venv/pip step is skipped with --no-venv (a pip install per test would take
minutes); the script still prints the commands it would run, checked below.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install.sh"

# destination (relative to the root) -> (source in the checkout, mode)
LAYOUT = {
    "etc/systemd/system/edged.service": (ROOT / "systemd/edged.service", 0o644),
    "etc/sysusers.d/edged.conf": (ROOT / "systemd/edged.sysusers", 0o644),
    "etc/udev/rules.d/99-edged-coral.rules": (ROOT / "systemd/99-edged-coral.rules", 0o644),
    "etc/edged/edged.toml": (ROOT / "config/edged.toml", 0o640),
}


def _install(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", os.fspath(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file and directory under root with its mode, mtime (ns) and content."""
    snap = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if path.is_file() else b""
        snap[os.fspath(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, content)
    return snap


def _actions(output: str) -> dict[str, str]:
    """path -> first word of its line ("install", "unchanged", "would install", ...)."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "would":
            found[parts[2]] = f"would {parts[1]}"
        elif len(parts) >= 2 and parts[1].startswith("/"):
            found[parts[1]] = parts[0]
    return found


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = _install("--dry-run", "--prefix", os.fspath(root))
    actions = _actions(result.stdout)
    for rel in LAYOUT:
        assert actions[f"{root}/{rel}"] == "would install", result.stdout
    assert actions[f"{root}/etc/edged"] == "would mkdir"
    # The venv step is part of the plan even though nothing runs.
    assert (
        f"would run      python3 -m venv --system-site-packages {root}/opt/edged/venv"
        in result.stdout
    )
    assert f"-m pip install --upgrade --upgrade-strategy only-if-needed {ROOT}" in result.stdout
    assert "dry run: 5 to change, 0 unchanged; nothing was written" in result.stdout
    assert "sudo systemctl enable --now edged" in result.stdout
    assert list(root.iterdir()) == []


def test_dry_run_on_the_real_system_names_the_system_commands() -> None:
    # No prefix: plans against / but, being a dry run, touches nothing there.
    before = {p: p.exists() for p in (Path(f"/{rel}") for rel in LAYOUT)}
    result = _install("--dry-run", "--no-venv")
    for command in (
        "systemd-sysusers /etc/sysusers.d/edged.conf",
        "udevadm control --reload",
        "udevadm trigger --subsystem-match=usb --subsystem-match=apex",
        "systemctl daemon-reload",
    ):
        assert f"would run      {command}" in result.stdout
    assert {p: p.exists() for p in before} == before


def test_run_with_prefix_lays_the_files_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = _install("--prefix", os.fspath(root), "--no-venv")
    for rel, (source, mode) in LAYOUT.items():
        installed = root / rel
        assert installed.read_bytes() == source.read_bytes(), rel
        assert installed.stat().st_mode & 0o7777 == mode, rel
    assert (root / "etc/edged").stat().st_mode & 0o7777 == 0o750
    assert "done: 5 changed, 0 unchanged" in result.stdout
    assert "skipped        venv (--no-venv): python3 -m venv --system-site-packages" in (
        result.stdout
    )
    # A staging root gets no system commands run against the build host.
    assert "skipped        udevadm control --reload; udevadm trigger; systemctl daemon-reload" in (
        result.stdout
    )


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _install("--prefix", os.fspath(root), "--no-venv")
    before = _snapshot(root)
    result = _install("--prefix", os.fspath(root), "--no-venv")
    assert _snapshot(root) == before  # same content, modes and mtimes
    assert "done: 0 changed, 3 unchanged" in result.stdout
    actions = _actions(result.stdout)
    assert actions[f"{root}/etc/edged/edged.toml"] == "keep"
    assert {actions[f"{root}/{rel}"] for rel in LAYOUT if not rel.endswith(".toml")} == {
        "unchanged"
    }
    dry = _install("--dry-run", "--prefix", os.fspath(root), "--no-venv")
    assert "dry run: 0 to change, 3 unchanged; nothing was written" in dry.stdout


def test_existing_config_is_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = root / "etc/edged/edged.toml"
    config.parent.mkdir(parents=True)
    mine = '[mqtt]\nhost = "broker.lan"\n'
    config.write_text(mine)
    config.chmod(0o600)
    result = _install("--prefix", os.fspath(root), "--no-venv")
    assert config.read_text() == mine
    assert config.stat().st_mode & 0o7777 == 0o600
    assert f"keep           {config} (yours, not overwritten)" in result.stdout
    # The current example lands beside it, for `diff` after an upgrade.
    example = root / "etc/edged/edged.toml.example"
    assert example.read_bytes() == (ROOT / "config/edged.toml").read_bytes()
    again = _install("--prefix", os.fspath(root), "--no-venv")
    assert config.read_text() == mine
    assert "done: 0 changed, 4 unchanged" in again.stdout


def test_a_changed_unit_is_updated_back(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _install("--prefix", os.fspath(root), "--no-venv")
    unit = root / "etc/systemd/system/edged.service"
    unit.write_text(unit.read_text() + "\n# edited in place\n")
    result = _install("--prefix", os.fspath(root), "--no-venv")
    assert f"update         {unit}" in result.stdout
    assert unit.read_bytes() == (ROOT / "systemd/edged.service").read_bytes()
    assert "done: 1 changed, 2 unchanged" in result.stdout


def test_bad_arguments_are_one_clear_line(tmp_path: Path) -> None:
    unknown = _install("--frobnicate", check=False)
    assert unknown.returncode != 0
    assert unknown.stderr.splitlines()[-1] == "install.sh: unknown option: --frobnicate"
    wheel = _install("--prefix", os.fspath(tmp_path), "--wheel", "/nonexistent.whl", check=False)
    assert wheel.returncode != 0
    assert wheel.stderr.strip() == "install.sh: /nonexistent.whl: no such wheel"
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_write_the_system_when_not_root() -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to drop to another user")
    # A copy in a world-readable directory: the checkout may sit under /root.
    shared = Path(tempfile.mkdtemp(prefix="edged-install-"))
    try:
        shared.chmod(0o755)
        script = shared / "install.sh"
        shutil.copy2(SCRIPT, script)
        script.chmod(0o755)
        result = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd="/",
        )
    finally:
        shutil.rmtree(shared)
    assert result.returncode != 0
    assert result.stderr.startswith("install.sh: run as root (sudo ")
    assert result.stdout == ""


def test_shellcheck_is_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run(
        [shellcheck, os.fspath(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
