"""Run the installed ``ccbridge`` console script as a process, and build small stores for it to read."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CCBRIDGE = Path(sys.executable).parent / "ccbridge"


@dataclass
class Result:
    code: int
    out: str
    err: str


def ccbridge(*args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None) -> Result:
    """``ccbridge ARGS`` as a separate process (the installed entry point), with a clean environment."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SPLUNK_", "DD_", "CCBRIDGE_"))}
    full_env.update(env or {})
    done = subprocess.run(
        [str(CCBRIDGE), *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd, check=False
    )
    return Result(done.returncode, done.stdout, done.stderr)
