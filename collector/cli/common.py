"""What every command shares: exit codes, the option groups (--config, --data-dir, --since/--until, --format,
filters), the one time grammar, config loading for read-only commands, and the one-line error handling.

Commands raise :class:`UsageError` (exit 2, the sub-command's usage and the message) or :class:`Failure` (exit 1,
one line); :func:`collector.cli.main` turns those, configuration errors, broken pipes and expected OS errors into
one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from collector import config as config_mod
from collector import timeparse
from collector.config import Config
from collector.exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from collector.timeparse import TIME_FORMS

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "TIME_FORMS",
    "DeferredOutput",
    "Failure",
    "HelpFormatter",
    "TimeRange",
    "UsageError",
    "add_format_option",
    "add_store_options",
    "add_time_options",
    "add_tool_filters",
    "add_user_filter",
    "data_dir",
    "deferred_stdout",
    "load_config",
    "parse_time",
    "register_parser",
    "require_store",
    "time_range",
]


class UsageError(Exception):
    """Bad options: the sub-command's usage and this message on stderr, exit 2."""


class Failure(Exception):
    """An expected failure (missing store, unreachable peer): this one line on stderr, exit 1."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default (``(default: X)``), except for flags and options without one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text or action.nargs == 0:
            return text
        if not action.option_strings and action.nargs in ("?", "*") and action.default is None:
            return text
        return text + " (default: %(default)s)"


# ---------------------------------------------------------------------------------------------------------------
# time


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """:func:`collector.timeparse.parse_time` as an argparse ``type``."""
    try:
        return timeparse.parse_time(text, now=now)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass(frozen=True)
class TimeRange:
    """``--since`` (inclusive) and ``--until`` (exclusive), either open."""

    since: datetime | None
    until: datetime | None

    @property
    def since_ms(self) -> int | None:
        return None if self.since is None else int(self.since.timestamp() * 1000)

    @property
    def until_ms(self) -> int | None:
        return None if self.until is None else int(self.until.timestamp() * 1000)


class _TimeArg:
    """argparse ``type`` that keeps the text as given (for messages) beside the parsed time."""

    def __call__(self, text: str) -> tuple[str, datetime]:
        return text, parse_time(text)

    @property
    def __name__(self) -> str:  # argparse names the type in its "invalid value" message
        return "time"


def add_time_options(p: argparse.ArgumentParser, *, required: bool = False, what: str = "records") -> None:
    g = p.add_argument_group("period (--until is exclusive)")
    g.add_argument(
        "--since",
        type=_TimeArg(),
        required=required,
        metavar="TIME",
        help=f"only {what} at or after TIME: {TIME_FORMS}",
    )
    g.add_argument(
        "--until",
        type=_TimeArg(),
        required=required,
        metavar="TIME",
        help=f"only {what} before TIME (exclusive; same forms as --since)",
    )


def time_range(args: argparse.Namespace) -> TimeRange:
    """The period of ``args``; a reversed or empty range is a usage error naming both values."""
    since = getattr(args, "since", None)
    until = getattr(args, "until", None)
    s_dt = since[1] if since else None
    u_dt = until[1] if until else None
    if s_dt is not None and u_dt is not None and u_dt <= s_dt:
        raise UsageError(
            f"--since {since[0]} ({s_dt.isoformat()}) is not before --until {until[0]} ({u_dt.isoformat()}); "
            "--until is exclusive"
        )
    return TimeRange(s_dt, u_dt)


# ---------------------------------------------------------------------------------------------------------------
# config and data directory


def add_store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="bridge config file; read-only commands read only its storage and reports sections",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data directory of the bridge "
        f"(default: storage.directory of --config, else {config_mod.DEFAULT_DATA_DIR})",
    )


def load_config(args: argparse.Namespace, *, read_only: bool) -> Config:
    """The config of ``--config`` (embedded defaults without one) with ``--data-dir`` applied. ``read_only``
    reads only :data:`collector.config.READ_ONLY_SECTIONS`: no destination secret is resolved."""
    path = getattr(args, "config", None)
    sections = config_mod.READ_ONLY_SECTIONS if read_only else None
    cfg = config_mod.load(path, sections=sections)
    data_dir = getattr(args, "data_dir", None)
    return cfg.with_data_dir(data_dir) if data_dir else cfg


def data_dir(args: argparse.Namespace) -> Path:
    """The data directory of a read-only command (``--data-dir``, else the config's, else the default)."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    if getattr(args, "config", None):
        return load_config(args, read_only=True).data_dir
    return Path(config_mod.DEFAULT_DATA_DIR)


def require_store(directory: Path) -> Path:
    """``directory`` if it holds an audit store; :class:`Failure` ``no store under DIR`` otherwise (every read-only
    command says it the same way)."""
    from collector.store import has_store

    if not has_store(directory):
        raise Failure(f"no store under {directory} (start the bridge with this data directory, or pass --data-dir)")
    return directory


# ---------------------------------------------------------------------------------------------------------------
# output


def add_format_option(p: argparse.ArgumentParser, choices: tuple[str, ...], default: str) -> None:
    p.add_argument("--format", choices=choices, default=default, help="output format")


class DeferredOutput(io.TextIOBase):
    """Text output held back until ``threshold`` characters are buffered or the command succeeds, so a command that
    fails early (store missing, query error) leaves nothing, not a lone header, on stdout."""

    def __init__(self, target: IO[str], threshold: int = 64 * 1024) -> None:
        self._target = target
        self._parts: list[str] = []
        self._size = 0
        self._threshold = threshold
        self._passthrough = False

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:  # type: ignore[override]
        if self._passthrough:
            return self._target.write(s)
        self._parts.append(s)
        self._size += len(s)
        if self._size >= self._threshold:
            self._release()
        return len(s)

    def _release(self) -> None:
        self._passthrough = True
        if self._parts:
            self._target.write("".join(self._parts))
            self._parts.clear()

    def flush(self) -> None:
        """Called by the writers once everything is written: the output is complete and goes out."""
        self._release()
        self._target.flush()

    def discard(self) -> None:
        self._parts.clear()


@contextmanager
def deferred_stdout() -> Iterator[DeferredOutput]:
    """A :class:`DeferredOutput` on stdout, discarded when the body raises, written out when it returns."""
    out = DeferredOutput(sys.stdout)
    try:
        yield out
    except BaseException:
        out.discard()
        raise
    out.flush()


# ---------------------------------------------------------------------------------------------------------------
# filters


def add_user_filter(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", metavar="USER", help="only this user: email or user.id, case-insensitive")


def add_tool_filters(p: argparse.ArgumentParser) -> None:
    from collector.compliance.approvals import DECISIONS, MODES

    p.add_argument("--tool", metavar="NAME", help="only this tool, case-insensitive (e.g. Bash, Edit, mcp__github__x)")
    p.add_argument(
        "--decision",
        type=str.lower,
        choices=DECISIONS,
        help=f"only this tool decision ({', '.join(DECISIONS)})",
    )
    p.add_argument("--mode", type=str.lower, choices=MODES, help=f"only this approval mode ({', '.join(MODES)})")


def register_parser(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A sub-command parser with the shared help formatter."""
    kwargs.setdefault("formatter_class", HelpFormatter)
    if "help" in kwargs and "description" not in kwargs:
        kwargs["description"] = kwargs["help"][0].upper() + kwargs["help"][1:] + "."
    parser: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    parser.set_defaults(_parser=parser)
    return parser
