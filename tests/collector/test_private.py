"""Private by default: a fresh data directory is 0700 and every file in it 0600 under the usual umask (022), and a
configuration file holding literal secrets that others can read is warned about."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector import cli
from collector.config import exposed_secrets_warning, literal_secrets, load, load_text
from collector.private import private_dirs, use_private_umask
from collector.store.delivery_state import DeliveryState
from collector.store.sqlite import AuditStore


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
    return out


def test_fresh_store_is_private_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    row = ("id1", 1, "event", None, None, None, 1, b'{"id":"id1"}')
    with AuditStore(data) as store:
        store.append_sync(records=[row])
        state = DeliveryState.for_shard(data, 0)
        seen = modes(data)
        state.close()
    assert any(name.endswith("-wal") for name in seen), seen  # the sidecars existed while we looked
    assert any(name.endswith("-shm") for name in seen), seen
    for name, mode in seen.items():
        want = 0o700 if (data / name).is_dir() else 0o600
        assert mode == want, f"{name} is {oct(mode)}"


def test_an_old_readable_database_is_tightened(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "data"
    with AuditStore(data):
        pass
    db = next((data / "store").glob("shard-*.db"))
    os.chmod(db, 0o644)
    with AuditStore(data):
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        for side in ("-wal", "-shm"):
            assert stat.S_IMODE(Path(f"{db}{side}").stat().st_mode) == 0o600


def test_private_dirs_leaves_an_existing_directory_alone(tmp_path: Path, umask_022: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o750)
    private_dirs(shared / "a" / "b")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o750
    assert stat.S_IMODE((shared / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((shared / "a" / "b").stat().st_mode) == 0o700


def test_use_private_umask_only_tightens(umask_022: None) -> None:
    assert use_private_umask() == 0o022
    assert os.umask(0o022) == 0o077


LITERAL = """
exporters:
  splunk_hec/main:
    endpoint: https://splunk.example:8088
    token: 00000000-1111-2222-3333-444444444444
"""
FROM_ENV = """
exporters:
  splunk_hec/main:
    endpoint: https://splunk.example:8088
    token: ${env:HEC_TOKEN}
"""


def test_literal_secrets_are_told_from_env_ones() -> None:
    assert literal_secrets(load_text(LITERAL)) == ["exporters.splunk_hec/main.token"]
    assert literal_secrets(load_text(FROM_ENV, {"HEC_TOKEN": "t"})) == []


@pytest.mark.parametrize(
    ("text", "mode", "warned"),
    [(LITERAL, 0o644, True), (LITERAL, 0o600, False), (FROM_ENV, 0o644, False), (LITERAL, 0o640, True)],
)
def test_validate_config_warns_about_a_readable_file_with_literal_secrets(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    mode: int,
    warned: bool,
) -> None:
    monkeypatch.setenv("HEC_TOKEN", "secret-from-env")
    path = tmp_path / "ccbridge.yaml"
    path.write_text(text)
    os.chmod(path, mode)
    assert cli.main(["validate-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert ("readable by group or others" in err) is warned
    assert "00000000-1111" not in err and "secret-from-env" not in err
    assert (exposed_secrets_warning(path, load(path)) is not None) is warned


def test_run_warns_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ccbridge.yaml"
    path.write_text(LITERAL)
    os.chmod(path, 0o644)
    started: list[object] = []

    class FakeService:
        def __init__(self, cfg: object, **kw: object) -> None:
            started.append(cfg)

        async def run(self) -> None:
            return None

    monkeypatch.setattr("collector.service.Service", FakeService)
    monkeypatch.setattr("collector.cli.run.setup_logging", lambda *a: None)
    old = os.umask(0o022)
    try:
        with caplog.at_level(logging.WARNING):
            assert cli.main(["run", "--config", str(path), "--data-dir", str(tmp_path / "d")]) == 0
        assert os.umask(0o022) & 0o077 == 0o077
    finally:
        os.umask(old)
    assert started
    assert "readable by group or others" in caplog.text
