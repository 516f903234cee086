"""What the three CLIs share: errors as one clear line, and tables or JSON for listings."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from pairing.durations import InvalidDuration, parse_duration
from pairing.errors import PairingError
from pairing.redaction import RedactingFormatter, RedactingJSONFormatter, protect

#: What ``--log-format`` accepts: lines for people, or one JSON object per line for shippers.
LOG_FORMATS = ("text", "json")


class FriendlyGroup(click.Group):
    """A click group that turns the package's own errors into one line and exit status 1."""

    error_types: tuple[type[Exception], ...] = (PairingError,)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except self.error_types as exc:
            failure = click.ClickException(str(exc))
            # An error may name its own status (server-ext: 3 server not running, 4 no data).
            failure.exit_code = getattr(exc, "exit_code", 1)  # type: ignore[misc]
            raise failure from None
        except OSError as exc:
            # A file or socket the command needed failed in a way no narrower handler
            # foresaw (a read-only disk, a full one): still one line, never a traceback.
            raise click.ClickException(_os_error_text(exc)) from None


def _os_error_text(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


#: Exit statuses the CLIs share, as ejabberdctl's: 1 is any other refusal or failure.
EXIT_USAGE = 2  # a usage error or bad input (click's own usage errors are 2 as well)
EXIT_UNREACHABLE = 3  # the server is not running or not reachable (errors.ServerUnreachable)


class BadInput(click.ClickException):
    """A bad argument in one line, with the exit status 2 click gives usage errors.

    click's own BadParameter prints the whole usage first; a refused JID or resource is
    clearer as the one line that says what is wrong with it.
    """

    exit_code = 2


# click 8.4 made ParamType generic; the lowest click allowed (8.3.1) is not subscriptable.
class Duration(click.ParamType):  # type: ignore[type-arg]
    """``--ttl 10m``: the one duration format of every CLI (:mod:`pairing.durations`)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.timedelta):
            return value
        try:
            return parse_duration(str(value))
        except InvalidDuration as exc:
            self.fail(str(exc), param, ctx)


class Since(click.ParamType):  # type: ignore[type-arg]
    """``--since 1h`` or ``7d`` (that long ago), or a date or time (``2025-01-31``,
    ``2025-01-31T08:00``; UTC unless it names an offset)."""

    name = "when"

    def __init__(self, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)):
        self.clock = clock

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.datetime):
            return value
        text = str(value).strip()
        try:
            return self.clock() - parse_duration(text)
        except InvalidDuration:
            pass
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is neither a time ago (90m, 1h, 7d) nor a date (2025-01-31, "
                "2025-01-31T08:00)",
                param,
                ctx,
            )
        return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def friendly_group(*error_types: type[Exception]) -> type[FriendlyGroup]:
    """A :class:`FriendlyGroup` subclass that also catches ``error_types``."""
    return type("Group", (FriendlyGroup,), {"error_types": (PairingError, *error_types)})


def configure_logging(
    verbose: int, *, log_format: str = "text", timestamps: bool = False, base: int = logging.WARNING
) -> None:
    """Quiet by default: slixmpp's own error lines would repeat what our message says.

    The one place the CLIs configure logging, so the one place secrets are taken out of it
    (:mod:`pairing.redaction`), at every level and in both formats. A long-running server
    passes ``timestamps`` (UTC, ISO 8601) and ``base=logging.INFO``; ``log_format="json"``
    writes one JSON object per line, always with its time.
    """
    level = max(logging.DEBUG, base - 10 * min(verbose, 2))
    handler = logging.StreamHandler()
    formatter: logging.Formatter
    if log_format == "json":
        formatter = RedactingJSONFormatter()
    elif timestamps:
        formatter = RedactingFormatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ"
        )
        formatter.converter = time.gmtime
    else:
        formatter = RedactingFormatter("%(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])
    if verbose == 0:
        logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    as_json: bool,
    empty: str = "(none)",
) -> None:
    """Print ``rows`` as a JSON array or as an aligned table of ``(key, heading)`` columns."""
    if as_json:
        click.echo(json.dumps(list(rows), indent=2, default=str))
        return
    if not rows:
        click.echo(empty)
        return
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    headings = [heading for _, heading in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headings)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)).rstrip())
    for row_cells in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row_cells, widths, strict=True)).rstrip())


def emit_record(record: Mapping[str, Any], *, as_json: bool) -> None:
    """Print one record as JSON or as ``key: value`` lines."""
    if as_json:
        click.echo(json.dumps(dict(record), indent=2, default=str))
        return
    width = max(len(k) for k in record)
    for key, value in record.items():
        click.echo(f"{key.ljust(width)}  {_cell(value)}")


def say(record: Mapping[str, Any], as_json: bool, text: str) -> None:
    """``record`` as JSON with --json, else the one line ``text``."""
    if as_json:
        emit_record(record, as_json=True)
    else:
        click.echo(text)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def read_secret(
    *,
    file: Path | None,
    env: str,
    prompt: str,
    confirm: bool = False,
    stdin_ok: Callable[[], bool] = lambda: can_prompt(),
) -> str:
    """A password from a file, then an environment variable, then a hidden prompt.

    Never from a command-line argument: those end up in shell history and ``ps``.
    """
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot read the password file {file}: {exc}") from None
        secret = text.rstrip("\r\n")
    elif os.environ.get(env):
        secret = os.environ[env]
    elif stdin_ok():
        secret = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    else:
        raise click.ClickException(
            f"no password given: use --password-file FILE or set {env} (no terminal to ask on)"
        )
    if not secret:
        raise click.ClickException("the password is empty")
    protect(secret)
    return secret


def can_prompt() -> bool:
    """Whether a prompt can be answered: stdin is a terminal and we are its foreground job.

    A job started with ``&`` keeps the terminal as stdin, but reading it stops the job
    (SIGTTIN; SIGTTOU already when a hidden prompt turns echo off; POSIX "Job Control"), so
    `pairing listen … &` would sit stopped at its password prompt.
    """
    try:
        fd = sys.stdin.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except (OSError, ValueError):  # no stdin, or a terminal that is not ours
        return False
