"""What native libraries print on their own: kept out of the journal, or routed into the log.

The TFLite runtime ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
on every interpreter), libjpeg ("Premature end of JPEG file", once per pass
over a truncated file in a folder source), libpng ("libpng error: IDAT: CRC
error") and OpenCV ("[ WARN:0@80.913] global grfmt_png.cpp:855 ...") write
straight to file descriptor 2, beside edged's own one line about the same
event. Library log levels do not reach all of them: `cv2.utils.logging
.setLogLevel` leaves libjpeg's and libpng's `fprintf(stderr)` alone, and
ai-edge-litert 2.3's minimal logger ignores `TF_CPP_MIN_LOG_LEVEL` (both
measured). So the one mechanism is the descriptor itself: fd 2 is pointed
elsewhere, and Python's `sys.stderr` (edged's log handler, `faulthandler`,
tracebacks) keeps the original stream through a duplicate.

* `edged run`: fd 2 becomes a pipe that a thread reads; each burst is one
  `edged.native` log event at DEBUG (so `logging.level = "debug"` shows it),
  or at ERROR when it is what a crash leaves behind (an absl/glog fatal
  `F0000 ...` line, `Check failed`, `Fatal Python error`, a traceback). The
  inference worker inherits fd 2, so what it prints on its way down (libedgetpu
  aborting on a USB error) is read by the daemon, which outlives it.
* one-shot commands (`check-config`, `inspect`, `bench`): fd 2 goes to
  /dev/null; their own messages and errors are written by Python, to the
  original stream.

`EDGED_NATIVE_STDERR=show` leaves fd 2 alone, for debugging the runtime itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
from typing import Final

from edged.system.threads import NamedThread

__all__ = ["ENV", "native_level", "route_native_output_to_log", "silence_native_output"]

ENV: Final = "EDGED_NATIVE_STDERR"
log = logging.getLogger("edged.native")

# What a process prints as it dies; worth the journal even when nothing else is.
_CRASH = re.compile(r"^F\d{4} |Check failed|Fatal Python error|Traceback \(most recent|"
                    r"terminate called|^FATAL|Segmentation fault|^Aborted", re.MULTILINE)
_PIPE_BYTES = 1 << 18  # room for a burst while the reader is descheduled
_PARTIAL_MAX = 1 << 13  # a "line" this long without a newline is logged as it is


def native_level(text: str) -> int:
    """The log level of a burst of native output: ERROR for crash output, else DEBUG."""
    return logging.ERROR if _CRASH.search(text) else logging.DEBUG


def _shown() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("show", "1", "yes")


def _keep_python_stderr() -> None:
    """Point `sys.stderr` at a duplicate of fd 2, so fd 2 itself can be replaced."""
    old = sys.stderr
    saved = os.dup(2)  # not inheritable (PEP 446): children get only the new fd 2
    encoding = getattr(old, "encoding", None) or "utf-8"
    sys.stderr = open(saved, "w", buffering=1, encoding=encoding,  # noqa: SIM115
                      errors="backslashreplace", closefd=True)
    with contextlib.suppress(Exception):
        old.flush()


def silence_native_output() -> bool:
    """fd 2 to /dev/null, Python's stderr kept. False when EDGED_NATIVE_STDERR=show."""
    if _shown():
        return False
    _keep_python_stderr()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    return True


def route_native_output_to_log() -> bool:
    """fd 2 to a pipe read into the `edged.native` logger. False when EDGED_NATIVE_STDERR=show.

    Call before the log handler is set up (it must write to the kept stream,
    never to fd 2, or it would read its own lines back)."""
    if _shown():
        return False
    _keep_python_stderr()
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    os.dup2(write_fd, 2)  # inheritable: the worker writes here too
    os.close(write_fd)
    NamedThread(target=_read, args=(read_fd,), name="edged-native", daemon=True).start()
    return True


def _read(fd: int) -> None:
    partial = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except InterruptedError:
            continue
        except OSError:
            return
        if not chunk:
            return
        data = partial + chunk
        complete, newline, partial = data.rpartition(b"\n")
        if not newline:
            complete, partial = (data, b"") if len(data) > _PARTIAL_MAX else (b"", data)
        if complete:
            _emit(complete)


def _emit(raw: bytes) -> None:
    text = raw.decode("utf-8", "replace").strip("\r\n")
    if not text:
        return
    level = native_level(text)
    if log.isEnabledFor(level):
        log.log(level, "%s", text)
