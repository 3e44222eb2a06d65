"""A bridge configured for PostgreSQL refuses to start in this version, in one line, and opens nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from collector.config import load_tree
from collector.service import Service
from collector.store.postgres import BackendUnavailable, require_backend_available
from tests.conftest import PROJECT_ROOT, free_port

PASSWORD = "Pw-never-shown-42"


def _tree(data_dir: Path, workers: int = 1) -> dict:
    return {
        "receivers": {
            "otlp": {
                "grpc": {"endpoint": f"127.0.0.1:{free_port()}"},
                "http": {"endpoint": f"127.0.0.1:{free_port()}"},
            }
        },
        "telemetry": {"endpoint": f"127.0.0.1:{free_port()}"},
        "server": {"workers": workers},
        "storage": {
            "backend": "postgresql",
            "directory": str(data_dir),
            "postgresql": {"dsn": f"postgresql://app:{PASSWORD}@127.0.0.1:1/audit"},
        },
    }


def test_sqlite_is_runnable_and_postgresql_is_refused_naming_the_key(tmp_path: Path) -> None:
    require_backend_available(load_tree({}).storage)
    with pytest.raises(BackendUnavailable) as exc:
        require_backend_available(load_tree(_tree(tmp_path)).storage)
    msg = str(exc.value)
    assert msg.startswith("storage.backend: ") and "PostgreSQL storage backend is not available in this version" in msg
    assert "\n" not in msg and PASSWORD not in msg


def test_service_refuses_before_opening_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with pytest.raises(BackendUnavailable):
        Service(load_tree(_tree(data_dir)))
    assert not data_dir.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_run_exits_with_one_line_and_no_traceback(tmp_path: Path, workers: int) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump(_tree(tmp_path / "data", workers)))
    config.chmod(0o600)  # a literal DSN password in a readable file gets its own warning line
    proc = subprocess.run(
        [sys.executable, "-m", "collector.cli", "run", "--config", str(config)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "PostgreSQL storage backend is not available in this version" in lines[0]
    assert "Traceback" not in lines[0] and PASSWORD not in lines[0]
    assert not (tmp_path / "data" / "store").exists()
