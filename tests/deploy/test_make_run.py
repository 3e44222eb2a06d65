"""``make run`` on a fresh copy of the repository: runtime dependencies only, no packaging warnings before the
bridge's first log line, ``ARGS`` passed through to ``ccbridge run``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def _copy_tracked(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


@pytest.mark.slow
def test_make_run_installs_only_runtime_deps_and_passes_args(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = tmp_path / "clone"
    _copy_tracked(repo)
    data_dir = tmp_path / "data"
    http_port, grpc_port, tel_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "bridge.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "receivers": {
                    "otlp": {
                        "http": {"endpoint": f"127.0.0.1:{http_port}"},
                        "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                    }
                },
                "telemetry": {"endpoint": f"127.0.0.1:{tel_port}"},
                "storage": {"directory": str(data_dir)},
                "server": {"workers": 1},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["PYTHON"] = sys.executable
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PYTHON={env['PYTHON']}", f"ARGS=--config {cfg}"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            raw = proc.stdout.readline()
            if not raw:
                break
            lines.append(raw.decode(errors="replace").rstrip("\n"))
            if "receiver listening" in lines[-1]:
                break
        output = "\n".join(lines)
        assert any("receiver listening" in line for line in lines), output
        first_log = next(i for i, line in enumerate(lines) if " ccbridge[" in line or "ccbridge." in line)
        before = "\n".join(lines[:first_log])
        assert "warning" not in before.lower(), before
        assert "deprecat" not in before.lower(), before
        assert f"config {cfg}" in output  # ARGS reached `ccbridge run`: the start line names the file
        assert str(data_dir) in output
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    venv_bin = repo / ".venv" / "bin"
    assert (venv_bin / "ccbridge").exists()
    for test_only in ("pytest", "hadolint", "ruff", "py-spy"):
        assert not (venv_bin / test_only).exists(), f"{test_only} installed by make run"
    check = subprocess.run(
        [str(venv_bin / "python"), "-c", "import importlib.util as u; print(u.find_spec('pytest') is None)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip() == "True"
