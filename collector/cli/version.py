"""``ccbridge version`` (and ``ccbridge --version``): the installed version and the Python running it."""

from __future__ import annotations

import argparse
import platform
from typing import Any

from collector.cli.common import EXIT_OK, register_parser


def version_text() -> str:
    from collector import __version__

    return f"ccbridge {__version__} (Python {platform.python_version()})"


def register(sub: Any) -> None:
    register_parser(sub, "version", help="print the version of ccbridge and of Python").set_defaults(func=cmd_version)


def cmd_version(args: argparse.Namespace) -> int:
    print(version_text())
    return EXIT_OK
