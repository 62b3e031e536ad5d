"""Logging for the long-running processes (``labvault serve``, ``labvault mllp``): one stream, an
access log, and internal errors with their traceback, through a filter that drops personal values
(G2: no NIR, name or result value in log payloads).

``PersonalDataFilter`` rewrites every record before it is written:

- an exception is replaced by its frames (file, line, function; no source text) and the *type names*
  of the exception and its causes: never its message or arguments (a ``KeyError`` raised by data
  code holds the key that was missing, a ``ValueError`` the value it refused), never locals;
- the arguments of records from other libraries' loggers are dropped when they are text (a web
  server may log a raw path with its query); Labvault's own loggers format only identifiers,
  counts, addresses and route templates.

Access logs (``labvault.access``) hold: for HTTP the method, the route *template* (never the raw
path or its query), the status, the duration and the actor's account id; for MLLP the peer
address, the account id, the ACK code and the duration. Nothing a sender wrote.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import TextIO

ACCESS = "labvault.access"
FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_REDACTED = "<redacted>"


def sanitized_traceback(exc: BaseException) -> str:
    """A traceback of ``exc`` and its causes: frames and type names, no message, no argument."""
    parts: list[str] = []
    seen: set[int] = set()
    chain: list[tuple[BaseException, str | None]] = []
    cur: BaseException | None = exc
    link: str | None = None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append((cur, link))
        if cur.__cause__ is not None:
            cur, link = cur.__cause__, "The above exception was the direct cause of the following exception:"
        elif cur.__context__ is not None and not cur.__suppress_context__:
            cur, link = cur.__context__, "During handling of the above exception, another exception occurred:"
        else:
            cur = None
    for i, (e, _) in enumerate(reversed(chain)):
        if i:
            parts.append("\n" + (chain[len(chain) - i][1] or "") + "\n\n")
        frames = traceback.extract_tb(e.__traceback__)
        if frames:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(f'  File "{f.filename}", line {f.lineno}, in {f.name}\n' for f in frames)
        kind = type(e)
        parts.append(f"{kind.__module__}.{kind.__qualname__}: [message removed]\n")
    return "".join(parts).rstrip("\n")


class PersonalDataFilter(logging.Filter):
    """Drops exception messages and arguments (keeping frames and type names), and the text
    arguments of records from other libraries. Installed on the handler, so it sees every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = sanitized_traceback(record.exc_info[1])
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = "[traceback text removed]"
        if not record.name.startswith("labvault") and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            try:
                record.msg = str(record.msg) % tuple(
                    a if isinstance(a, int | float | bool) or a is None else _REDACTED for a in args
                )
            except (TypeError, ValueError):
                record.msg = f"{record.msg} [arguments removed]"
            record.args = None
        return True


_handler: logging.Handler | None = None


def configure(stream: TextIO | None = None, *, level: int = logging.INFO) -> logging.Handler:
    """Send Labvault's logs (and those of the libraries it runs on) to ``stream`` (stderr by
    default) through ``PersonalDataFilter``. Idempotent: a second call replaces the handler."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(PersonalDataFilter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("labvault").setLevel(level)
    _handler = handler
    return handler


def access(kind: str, **fields: object) -> None:
    """One access-log line: ``kind`` then ``key=value`` pairs (values are identifiers, numbers,
    addresses or route templates; never personal values)."""
    logging.getLogger(f"{ACCESS}.{kind}").info(" ".join(f"{k}={_value(v)}" for k, v in fields.items()))


def _value(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    text = str(v)
    return text if text and not any(c.isspace() or c in '"=' for c in text) else '"' + text.replace('"', "'") + '"'
