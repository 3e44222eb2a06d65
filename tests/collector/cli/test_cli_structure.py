"""One CLI, one shape: a module per command in ``collector/cli/``, the shared options and exit codes defined once,
and no import from the domain packages back into the CLI."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

from collector import cli

ROOT = Path(__file__).resolve().parents[3]
CLI_DIR = ROOT / "collector" / "cli"


def test_every_command_lives_in_its_own_module():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    modules = {m.__name__.rsplit(".", 1)[-1] for m in cli.COMMANDS}
    for name in sub.choices:
        assert name.replace("-", "_") in modules, f"command {name} has no module collector/cli/{name}.py"
        assert (CLI_DIR / f"{name.replace('-', '_')}.py").is_file()
    assert not (ROOT / "collector" / "cli.py").exists()
    assert not (ROOT / "collector" / "compliance" / "cli.py").exists()
    assert not (ROOT / "collector" / "reports" / "cli.py").exists()


def test_exit_codes_are_defined_once():
    definitions = []
    for path in (ROOT / "collector").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.startswith("EXIT_"):
                        definitions.append(f"{path.relative_to(ROOT)}:{target.id}")
    assert sorted(definitions) == sorted(
        f"collector/exitcodes.py:{n}" for n in ("EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED")
    )


def test_the_shared_options_are_defined_in_common_only():
    for path in CLI_DIR.glob("*.py"):
        if path.name == "common.py":
            continue
        text = path.read_text(encoding="utf-8")
        for option in ('"--config"', '"--data-dir"', '"--since"', '"--until"', '"--user"', '"--format"'):
            assert f"add_argument({option}" not in text, f"{path.name} defines {option} itself"


def test_domain_packages_do_not_import_the_cli():
    code = (
        "import sys\n"
        "import collector.compliance.approvals, collector.compliance.records, collector.reports.run\n"
        "import collector.enrich.sync, collector.delivery.dlq, collector.telemetry.status\n"
        "print(sorted(m for m in sys.modules if m == 'collector.cli' or m.startswith('collector.cli.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
