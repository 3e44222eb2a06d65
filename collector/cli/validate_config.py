"""``ccbridge validate-config FILE``: check a config file without starting; every problem at once."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from collector.cli.common import EXIT_FAILURE, EXIT_OK, register_parser


def register(sub: Any) -> None:
    vc = register_parser(sub, "validate-config", help="check a config file without starting")
    vc.add_argument("file", help="YAML config file")
    vc.add_argument(
        "--no-file-checks",
        action="store_true",
        help="do not check that referenced files (TLS certificates and keys, CA bundles, token files) exist here "
        "(for a config validated away from the machine or container that runs it)",
    )
    vc.set_defaults(func=cmd_validate_config)


def cmd_validate_config(args: argparse.Namespace) -> int:
    from collector.config import check_file, exposed_secrets_warning, load

    problems = check_file(args.file, check_files=not args.no_file_checks)
    if problems:
        for p in problems:
            print(f"{args.file}: {p}", file=sys.stderr)
        print(f"{args.file}: invalid configuration: {len(problems)} problem(s)", file=sys.stderr)
        return EXIT_FAILURE
    warning = exposed_secrets_warning(args.file, load(args.file))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: configuration is valid")
    return EXIT_OK
