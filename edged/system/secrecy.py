"""Where secrets are, and how they are kept out of messages, payloads and child processes.

The secrets edged handles: the MQTT password (inline `mqtt.password`, the
contents of `mqtt.password_file`, the variable `mqtt.password_env` names) and
credentials written into URLs (`source.uri = "rtsp://user:pass@cam/..."`, or a
URL given by mistake where a host name belongs). A line about them can reach
the journal, the retained stats topic (`last_error`, `config_reload`) and
`systemctl status`, so each class has one defence here:

* the value of a secret key is never quoted in a config message, whatever
  its type (`is_secret_key`, `what_it_is`): a list or a table holding the
  password is as secret as the string;
* credentials in URLs are cut from any text (`redact_credentials`), which the
  config messages, every log line and the published error strings go through;
* the inference worker, which needs no credentials, is started with an
  environment that has none (`scrubbed_environ`).

The secret values themselves, once read, are also registered with
`edged.system.logsetup.register_secret`, which removes them from every log line and
every published error string (`edged.system.logsetup.redact_text`).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["SECRET_KEYS", "is_secret_key", "redact_credentials", "scrubbed_environ",
           "what_it_is"]

# Config keys whose value is a secret (as pydantic locates them: section, key).
SECRET_KEYS: Final = frozenset({("mqtt", "password")})

# scheme://userinfo@ : the userinfo is cut to "user:***" (or "***" when it is one token,
# which is then itself the credential: "https://<token>@host").
# Greedy up to the authority's last "@": a password may hold an unescaped "@".
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^\s/?#\"']*)@")
# Variables the worker never needs and that commonly hold credentials.
_SECRET_NAME = re.compile(r"(?i)PASSW|SECRET|TOKEN|CREDENTIAL|API_?KEY|PRIVATE_?KEY")


def is_secret_key(loc: tuple[str | int, ...]) -> bool:
    """True for a secret key's location, or anywhere inside its value (a list, a table)."""
    return tuple(loc[:2]) in SECRET_KEYS


def what_it_is(value: Any) -> str:
    """What a value is, never what it says: for messages about a secret key."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date or time"
    return "a value"


def _cut(match: re.Match[str]) -> str:
    user, sep, _password = match.group(2).partition(":")
    return f"{match.group(1)}{user}:***@" if sep and user else f"{match.group(1)}***@"


def redact_credentials(text: str) -> str:
    """`rtsp://user:secret@cam/x` -> `rtsp://user:***@cam/x`, anywhere in `text`."""
    if "://" not in text or "@" not in text:
        return text
    return _USERINFO.sub(_cut, text)


def scrubbed_environ(environ: Mapping[str, str], *, names: Iterable[str] = (),
                     values: Iterable[str] = ()) -> dict[str, str]:
    """`environ` without the variables named in `names`, those holding one of
    `values`, and those whose names say they hold a credential (…PASSWORD…,
    …TOKEN…, CREDENTIALS_DIRECTORY, …)."""
    drop = {n for n in names if n}
    secrets = {v for v in values if v}
    return {k: v for k, v in environ.items()
            if k not in drop and v not in secrets and not _SECRET_NAME.search(k)}
