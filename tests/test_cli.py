"""`edged --help` and each command's help, as a user reads them (issue 14, item 9)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edged.cli import ABOUT, COMMANDS


def edged(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_top_level_help_says_what_edged_is_and_what_each_command_is_for() -> None:
    text = edged("--help")
    assert ("edged runs a quantized TFLite model on camera frames, on the CPU or a Coral Edge "
            "TPU,") in " ".join(text.split())
    listed = " ".join(text.split())
    for name in COMMANDS:
        assert f"{name} {ABOUT[name][0]}" in listed, name
    assert "edged check-config" in text and "edged run" in text  # typical use, by example
    assert "module" not in text.lower()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_describes_itself_to_users(name: str) -> None:
    text = " ".join(edged(name, "--help").split())
    description = " ".join(ABOUT[name][1].split())
    assert description[:60] in text, text
    # No developer notes: a module's docstring headline, or its name for itself.
    assert f"`edged {name}" not in text and "module" not in text.lower(), text
