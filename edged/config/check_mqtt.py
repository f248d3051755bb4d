"""check-config's look at the MQTT side's files: the password source, and the TLS
files parsed and the client key matched to its certificate (what fails on
the device, after the schema said yes)."""

from __future__ import annotations

import ssl
from pathlib import Path

from edged.config import ConfigError, ConfigFile
from edged.config.findings import Report
from edged.config.text import os_error


def check_password(cf: ConfigFile, report: Report) -> None:
    mqtt = cf.config.mqtt
    try:
        mqtt.resolve_password()
    except ConfigError as exc:
        key, _, message = exc.problems[0].partition(": ")
        if key == "mqtt.password_env":
            # The service's environment (EnvironmentFile=, LoadCredential=) is not ours.
            report.warnings.append(cf.problem(key, message + " in this shell; make sure the "
                                              "service's environment sets it", warning=True))
        else:
            report.errors.append(cf.problem(key, message))


def _pem(path: Path, marker: str) -> str | None:
    """A one-line reason `path` is not a readable PEM file holding `marker`, or None."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except (OSError, ValueError) as exc:
        return f"cannot read {path}: {os_error(exc)}"
    if marker not in text:
        return f"{path}: no {marker.strip('-').strip()} block (not a PEM file?)"
    if "ENCRYPTED" in text and "PRIVATE KEY" in marker:
        return f"{path}: the key is encrypted; edged needs it unencrypted (and chmod 600)"
    return None


def check_tls(cf: ConfigFile, report: Report) -> None:
    mqtt = cf.config.mqtt
    if not mqtt.tls:
        return
    context = ssl.create_default_context()
    if mqtt.ca_file is not None:
        problem = _pem(Path(mqtt.ca_file), "-----BEGIN CERTIFICATE-----")
        if problem is None:
            try:
                context.load_verify_locations(cafile=str(mqtt.ca_file))
            except (ssl.SSLError, OSError, ValueError) as exc:
                problem = f"{mqtt.ca_file}: not a usable CA certificate ({_ssl_reason(exc)})"
        if problem:
            report.errors.append(cf.problem("mqtt.ca_file", problem))
    if mqtt.cert_file is None or mqtt.key_file is None:
        return
    cert_problem = _pem(Path(mqtt.cert_file), "-----BEGIN CERTIFICATE-----")
    key_problem = _pem(Path(mqtt.key_file), "PRIVATE KEY-----")
    if cert_problem:
        report.errors.append(cf.problem("mqtt.cert_file", cert_problem))
    if key_problem:
        report.errors.append(cf.problem("mqtt.key_file", key_problem))
    if cert_problem or key_problem:
        return
    try:
        # An empty password makes an encrypted key fail instead of prompting on the tty.
        context.load_cert_chain(str(mqtt.cert_file), str(mqtt.key_file), password=lambda: b"")
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = _ssl_reason(exc)
        if "KEY_VALUES_MISMATCH" in reason:
            reason = f"{mqtt.key_file} is not the key of {mqtt.cert_file}"
        report.errors.append(cf.problem("mqtt.key_file", reason))


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or exc)
    return os_error(exc)
