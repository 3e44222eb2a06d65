"""The ``ccbridge`` command line: one module per command or command group, the shared options and the error
handling in :mod:`collector.cli.common`. The commands only parse, call the package that does the work, and print.

Exit codes: 0 success, 1 an expected failure (one line on stderr), 2 a usage or configuration error (the
sub-command's usage, then the message), 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from collector.cli import analytics, approvals, audit, demo, dlq, report, run, status, validate_config, version
from collector.cli.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Failure,
    HelpFormatter,
    UsageError,
    parse_time,
)
from collector.compliance.records import CSV_COLUMNS
from collector.config import ConfigError

__all__ = ["CSV_COLUMNS", "EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "build_parser", "main", "parse_time"]

DEBUG_ENV = "CCBRIDGE_DEBUG"
COMMANDS = (run, validate_config, audit, approvals, dlq, analytics, report, status, demo, version)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ccbridge",
        description="Claude Code telemetry to audit records.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=version.version_text(), help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return p


def _quiet_stdout() -> None:
    """After a broken pipe (``ccbridge ... | head``): point stdout at /dev/null so the interpreter's final flush
    does not report the broken pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{exc.filename}: {what}"
    return what


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sub_parser: argparse.ArgumentParser = getattr(args, "_parser", parser)
    try:
        return int(args.func(args))
    except UsageError as exc:
        sub_parser.print_usage(sys.stderr)
        print(f"{sub_parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"{sub_parser.prog}: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Failure as exc:
        print(f"{sub_parser.prog}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"{sub_parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            _quiet_stdout()
            return EXIT_OK
        print(f"{sub_parser.prog}: {_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"{sub_parser.prog}: internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
