"""Configuration loading (``collector.config``) and ``ccbridge validate-config``.

The defaults are checked against the documented table in ``docs/configuration.md`` (so code and docs cannot drift),
and every refusal is checked for the dotted key path in its message.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector import cli
from collector import config as config_mod
from collector.config import (
    ByteSize,
    Config,
    ConfigError,
    Duration,
    Secret,
    load,
    load_text,
    parse_duration,
    parse_endpoint,
    parse_size,
)
from collector.runtime import available_cpus

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
ROW_RE = re.compile(r"^\|\s*`(?P<key>[a-z_.]+)`\s*\|\s*`(?P<default>[^`]*)`\s*\|")


def documented_defaults() -> dict[str, str]:
    rows = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        m = ROW_RE.match(line)
        if m:
            rows[m.group("key")] = m.group("default")
    return rows


def leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            out.update(leaves(value, key))
        else:
            out[key] = value
    return out


def documented_value(text: str, actual: Any) -> Any:
    """Parse a documented default the way the loader parses that key's type (``auto`` for a number: the CPUs the
    process may use)."""
    if text == "auto" and isinstance(actual, int) and not isinstance(actual, bool):
        return min(64, available_cpus())
    if text == '""':
        return Secret("") if isinstance(actual, Secret) else ""
    if isinstance(actual, list | tuple):
        return type(actual)(yaml.safe_load(text))
    if isinstance(actual, bool):
        return {"true": True, "false": False}[text]
    if isinstance(actual, Duration):
        return parse_duration(text)
    if isinstance(actual, ByteSize):
        return parse_size(text)
    if isinstance(actual, Secret):
        return Secret(text)
    if isinstance(actual, int):
        return int(text)
    if isinstance(actual, float):
        return float(text)
    return text


def load_yaml(text: str, **env: str) -> Config:
    return load_text(text, environ=env)


def refused(text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_text(text, environ=env)
    return str(exc.value)


# ---------------------------------------------------------------------------------------------------------------
# defaults


def test_embedded_defaults_are_the_documented_ones():
    cfg = load(None)
    assert cfg == Config()
    assert cfg.receivers.otlp.grpc.endpoint == "127.0.0.1:4317"
    assert cfg.receivers.otlp.http.endpoint == "127.0.0.1:4318"
    assert cfg.telemetry.endpoint == "127.0.0.1:9464"
    assert cfg.storage.directory == "./ccbridge-data"
    assert cfg.data_dir == Path("./ccbridge-data")
    assert cfg.receivers.otlp.grpc.enabled is True
    assert cfg.receivers.otlp.http.enabled is True
    assert cfg.receivers.otlp.grpc.tls.enabled is False
    assert cfg.storage.synchronous == "full"
    assert cfg.server.workers == min(64, available_cpus())


def test_workers_default_to_the_cpus_the_process_may_use(tmp_path, monkeypatch):
    root = tmp_path / "cgroup"
    root.mkdir()
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr("collector.runtime._cgroup_quota", lambda _root: None)
    assert available_cpus() == 8
    assert Config().server.workers == 8  # not 1
    monkeypatch.setattr("collector.runtime._cgroup_quota", lambda _root: 2.5)  # cpu.max "250000 100000"
    assert available_cpus() == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0})
    assert available_cpus() == 1


def test_cgroup_cpu_max_is_read(tmp_path, monkeypatch):
    from collector.runtime import _cgroup_quota

    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _cgroup_quota(str(tmp_path)) is None or _cgroup_quota(str(tmp_path)) > 0
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    quota = _cgroup_quota(str(tmp_path))
    assert quota is not None and quota <= 1.5


def test_every_documented_default_matches_the_code_and_every_key_is_documented():
    docs = documented_defaults()
    # map-valued sections (``exporters: {name: {...}}``) have no single default to put in a table row
    actual = {k: v for k, v in leaves(Config()).items() if not isinstance(v, dict)}
    assert docs, "no table rows found in docs/configuration.md"
    assert sorted(set(actual) - set(docs)) == [], "keys without documentation"
    assert sorted(set(docs) - set(actual)) == [], "documented keys that do not exist"
    mismatches = {
        key: (docs[key], actual[key]) for key in docs if documented_value(docs[key], actual[key]) != actual[key]
    }
    assert mismatches == {}


def test_empty_file_means_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load(p) == Config()
    p.write_text("# only a comment\n")
    assert load(p) == Config()


def test_documented_complete_example_loads():
    text = DOCS.read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert example is not None
    cfg = load_yaml(example.group(1), ANTHROPIC_ADMIN_API_KEY="sk-ant-admin01-test")
    assert cfg.server.workers == 2
    assert cfg.receivers.otlp.http.max_decompressed_size == 32 * 1024**2
    assert cfg.storage.retention == 90 * 86400


# ---------------------------------------------------------------------------------------------------------------
# environment substitution


def test_env_substitution():
    cfg = load_yaml(
        "storage:\n  directory: ${env:CCB_DIR}/sub\ntelemetry:\n  endpoint: ${env:CCB_HOST}:${env:CCB_PORT}\n",
        CCB_DIR="/var/lib/x",
        CCB_HOST="127.0.0.1",
        CCB_PORT="9999",
    )
    assert cfg.storage.directory == "/var/lib/x/sub"
    assert cfg.telemetry.endpoint == "127.0.0.1:9999"


def test_env_default_is_used_only_when_unset():
    text = "storage:\n  directory: ${env:CCB_DIR:-/default/dir}\n"
    assert load_yaml(text).storage.directory == "/default/dir"
    assert load_yaml(text, CCB_DIR="/set").storage.directory == "/set"
    assert load_yaml(text, CCB_DIR="").storage.directory == ""  # set but empty is still set
    assert load_yaml("storage:\n  directory: x${env:CCB_DIR:-}y\n").storage.directory == "xy"


def test_env_substitution_feeds_typed_sizes_and_durations():
    cfg = load_yaml(
        "receivers:\n  otlp:\n    http:\n      max_request_body_size: ${env:CCB_SIZE}\n"
        "server:\n  shutdown_timeout: ${env:CCB_GRACE:-2m}\n",
        CCB_SIZE="2MiB",
    )
    assert cfg.receivers.otlp.http.max_request_body_size == 2 * 1024**2
    assert cfg.server.shutdown_timeout == 120.0


def test_unset_env_var_error_names_the_key_path_and_the_variable():
    msg = refused("receivers:\n  otlp:\n    http:\n      endpoint: ${env:CCB_NOT_SET_ANYWHERE}\n")
    assert msg.startswith("receivers.otlp.http.endpoint:")
    assert "CCB_NOT_SET_ANYWHERE" in msg
    assert "not set" in msg


def test_env_uses_the_process_environment_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("CCB_TEST_DATA_DIR", str(tmp_path / "d"))
    p = tmp_path / "c.yaml"
    p.write_text("storage:\n  directory: ${env:CCB_TEST_DATA_DIR}\n")
    assert load(p).storage.directory == str(tmp_path / "d")


def test_secret_from_env_is_a_secret_and_never_shown():
    value = "sk-ant-admin01-very-secret-value"
    cfg = load_yaml("enrichment:\n  analytics_api:\n    admin_api_key: ${env:CCB_KEY}\n", CCB_KEY=value)
    key = cfg.enrichment.analytics_api.admin_api_key
    assert isinstance(key, Secret)
    assert key.get() == value
    assert value not in repr(cfg)
    assert value not in str(cfg)


# ---------------------------------------------------------------------------------------------------------------
# refusals


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("recievers: {}\n", "recievers", "unknown key 'recievers'"),
        ("receivers:\n  otlp:\n    htp: {}\n", "receivers.otlp.htp", "known keys here: grpc, http"),
        (
            "receivers:\n  otlp:\n    http:\n      tls:\n        certfile: x\n",
            "receivers.otlp.http.tls.certfile",
            "known keys here: cert_file, client_ca_file, key_file",
        ),
        ("storage:\n  dir: /x\n", "storage.dir", "unknown key 'dir'"),
    ],
)
def test_unknown_key_is_refused_naming_key_and_dotted_path(text, path, fragment):
    msg = refused(text)
    assert msg.startswith(f"{path}: ")
    assert fragment in msg


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("server:\n  workers: two\n", "server.workers", "expected an integer"),
        ("server:\n  workers: 1.5\n", "server.workers", "expected an integer"),
        ("server:\n  workers: true\n", "server.workers", "expected an integer"),
        ("receivers:\n  otlp:\n    grpc:\n      enabled: 1\n", "receivers.otlp.grpc.enabled", "true or false"),
        ("receivers:\n  otlp:\n    grpc:\n      enabled: 'no way'\n", "receivers.otlp.grpc.enabled", "true or false"),
        ("storage:\n  synchronous: fast\n", "storage.synchronous", "must be one of full, normal"),
        ("telemetry:\n  log_level: loud\n", "telemetry.log_level", "must be one of"),
        ("telemetry:\n  readiness_destinations: ignore\n", "telemetry.readiness_destinations", "must be one of"),
        ("storage:\n  directory: [a, b]\n", "storage.directory", "expected a string"),
        ("receivers: [1, 2]\n", "receivers", "expected a mapping"),
        ("storage: 5\n", "storage", "expected a mapping"),
        ("- a\n- b\n", "<root>", "expected a mapping"),
        ("server:\n  shutdown_timeout: soon\n", "server.shutdown_timeout", "invalid duration"),
        ("server:\n  shutdown_timeout: -5\n", "server.shutdown_timeout", "must not be negative"),
        ("server:\n  shutdown_timeout: true\n", "server.shutdown_timeout", "boolean"),
        (
            "receivers:\n  otlp:\n    http:\n      max_request_body_size: 12 parsecs\n",
            "receivers.otlp.http.max_request_body_size",
            "invalid size",
        ),
        (
            "receivers:\n  otlp:\n    http:\n      max_request_body_size: -1\n",
            "receivers.otlp.http.max_request_body_size",
            "must not be negative",
        ),
        (
            "enrichment:\n  analytics_api:\n    admin_api_key: 12345\n",
            "enrichment.analytics_api.admin_api_key",
            "string",
        ),
    ],
)
def test_wrong_types_are_refused_naming_the_key(text, path, fragment):
    msg = refused(text)
    assert msg.startswith(f"{path}: "), msg
    assert fragment in msg


@pytest.mark.parametrize(
    ("text", "path", "fragment"),
    [
        ("server:\n  workers: 0\n", "server.workers", "between 1 and 64"),
        ("server:\n  workers: 65\n", "server.workers", "between 1 and 64"),
        ("receivers:\n  max_attribute_depth: 0\n", "receivers.max_attribute_depth", "between 1 and 40"),
        (
            "receivers:\n  otlp:\n    grpc:\n      max_recv_msg_size: 100\n",
            "receivers.otlp.grpc.max_recv_msg_size",
            "at least 1KiB",
        ),
        (
            "receivers:\n  otlp:\n    http:\n      max_request_body_size: 1MiB\n      max_decompressed_size: 512KiB\n",
            "receivers.otlp.http.max_decompressed_size",
            ">= max_request_body_size",
        ),
        ("storage:\n  commit_interval: 2s\n", "storage.commit_interval", "<= 1s"),
        ("storage:\n  max_commit_records: 0\n", "storage.max_commit_records", ">= 1"),
    ],
)
def test_out_of_range_values_are_refused(text, path, fragment):
    msg = refused(text)
    assert msg.startswith(f"{path}")
    assert fragment in msg


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("localhost", "invalid endpoint"),
        ("127.0.0.1", "invalid endpoint"),
        ("127.0.0.1:http", "invalid endpoint"),
        ("127.0.0.1:70000", "out of range"),
        ("::1:4318", "invalid endpoint"),
        ("[::1]", "invalid endpoint"),
        ("", "invalid endpoint"),
    ],
)
def test_invalid_endpoint_is_refused(endpoint, fragment):
    msg = refused(f"receivers:\n  otlp:\n    http:\n      endpoint: '{endpoint}'\n")
    assert msg.startswith("receivers.otlp.http.endpoint: ")
    assert fragment in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4318", ("127.0.0.1", 4318)),
        ("[::1]:4317", ("::1", 4317)),
        ("localhost:0", ("localhost", 0)),
        (":4318", ("0.0.0.0", 4318)),
        (" 10.0.0.1:65535 ", ("10.0.0.1", 65535)),
    ],
)
def test_parse_endpoint(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("section", ["grpc", "http"])
def test_tls_cert_without_key_is_refused(section):
    msg = refused(f"receivers:\n  otlp:\n    {section}:\n      tls:\n        cert_file: /etc/x.crt\n")
    assert msg.startswith(f"receivers.otlp.{section}.tls")
    assert "cert_file and key_file" in msg
    msg = refused(f"receivers:\n  otlp:\n    {section}:\n      tls:\n        key_file: /etc/x.key\n")
    assert "cert_file and key_file" in msg
    msg = refused(f"receivers:\n  otlp:\n    {section}:\n      tls:\n        client_ca_file: /etc/ca.pem\n")
    assert msg.startswith(f"receivers.otlp.{section}.tls.client_ca_file")


def test_tls_cert_with_key_is_accepted():
    cfg = load_yaml("receivers:\n  otlp:\n    grpc:\n      tls: {cert_file: /a.crt, key_file: /a.key}\n")
    assert cfg.receivers.otlp.grpc.tls.enabled


def test_error_message_of_a_section_never_contains_a_secret():
    value = "sk-ant-admin01-do-not-print-me"
    msg = refused(
        "enrichment:\n  analytics_api:\n    enabled: true\n    admin_api_key: ${env:K}\n"
        "    base_url: http://example.com\n",
        K=value,
    )
    assert value not in msg


# ---------------------------------------------------------------------------------------------------------------
# durations and sizes


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("30", 30.0),
        ("5m", 300.0),
        ("1.5h", 5400.0),
        ("12h", 43200.0),
        ("90d", 7_776_000.0),
        ("2w", 1_209_600.0),
        (" 10 s ", 10.0),
    ],
)
def test_parse_duration(value, seconds):
    d = parse_duration(value, "k")
    assert isinstance(d, Duration)
    assert d == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5 minutes", "5y", "-5s", "1e3s", True, None, [1]])
def test_parse_duration_refuses(value):
    with pytest.raises(ConfigError, match=r"^some\.key: "):
        parse_duration(value, "some.key")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("512KiB", 512 * 1024),
        ("16MiB", 16 * 1024**2),
        ("1GiB", 1024**3),
        ("1GB", 1000**3),
        ("10 MB", 10 * 1000**2),
        ("1kb", 1000),
        ("64k", 64 * 1024),
        ("1.5MiB", 1_572_864),
        ("100B", 100),
    ],
)
def test_parse_size(value, size):
    b = parse_size(value, "k")
    assert isinstance(b, ByteSize)
    assert b == size


@pytest.mark.parametrize("value", ["", "12 parsecs", "1 TiB", "-1", "MiB", False, 1.5, None])
def test_parse_size_refuses(value):
    with pytest.raises(ConfigError, match=r"^some\.key: "):
        parse_size(value, "some.key")


def test_sizes_and_durations_in_yaml():
    cfg = load_yaml(
        "receivers:\n  otlp:\n    grpc:\n      max_recv_msg_size: 4MiB\n"
        "    http:\n      max_request_body_size: 1MB\n      max_decompressed_size: 8MiB\n"
        "storage:\n  retention: 30d\n  commit_interval: 5ms\n  retry_after: 2\n"
    )
    assert cfg.receivers.otlp.grpc.max_recv_msg_size == 4 * 1024**2
    assert cfg.receivers.otlp.http.max_request_body_size == 1_000_000
    assert cfg.receivers.otlp.http.max_decompressed_size == 8 * 1024**2
    assert cfg.storage.retention == 30 * 86400
    assert cfg.storage.commit_interval == pytest.approx(0.005)
    assert cfg.storage.retry_after == 2.0


# ---------------------------------------------------------------------------------------------------------------
# Secret


def test_secret_never_shows_its_value():
    value = "sk-ant-admin01-abcdef0123456789"
    secret = Secret(value)
    assert value not in repr(secret)
    assert value not in str(secret)
    assert value not in f"{secret}"
    assert value not in f"{secret!r}"
    assert value not in "%s %r" % (secret, secret)  # noqa: UP031
    assert value not in repr([secret, {"k": secret}])
    assert secret.get() == value
    assert bool(secret) is True
    assert bool(Secret("")) is False
    assert Secret(value) == secret
    assert Secret("other") != secret
    assert hash(Secret(value)) == hash(secret)


def test_secret_inside_a_frozen_dataclass_repr():
    @dataclasses.dataclass(frozen=True)
    class Section:
        token: Secret

    value = "hec-token-1234-5678"
    assert value not in repr(Section(Secret(value)))


# ---------------------------------------------------------------------------------------------------------------
# ccbridge validate-config


def test_validate_config_valid_file(tmp_path, capsys):
    p = tmp_path / "ok.yaml"
    p.write_text("server:\n  workers: 2\nstorage:\n  retention: 30d\n")
    assert cli.main(["validate-config", str(p)]) == 0
    out, err = capsys.readouterr()
    assert f"{p}: configuration is valid" in out
    assert err == ""


def test_validate_config_invalid_file(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("receivers:\n  otlp:\n    htp: {}\n")
    assert cli.main(["validate-config", str(p)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "invalid configuration" in err
    assert "receivers.otlp.htp: unknown key 'htp'; did you mean 'http'?" in err


def test_validate_config_reports_every_problem_at_once(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text(
        "receivers:\n  otlp:\n    grpc:\n      endpoint: nonsense\n"
        "    http:\n      tls:\n        cert_file: /nonexistent/cert.pem\n        key_file: /nonexistent/key.pem\n"
        "storage:\n  max_commit_records: 0\n  synchronus: full\n"
        "server:\n  workers: 0\n"
    )
    assert cli.main(["validate-config", str(p)]) == 1
    _, err = capsys.readouterr()
    assert "storage.synchronus: unknown key 'synchronus'; did you mean 'synchronous'?" in err
    assert "storage.max_commit_records" in err
    assert "server.workers" in err
    assert "receivers.otlp.grpc.endpoint" in err
    assert "Traceback" not in err


def test_validate_config_checks_referenced_files(tmp_path, capsys):
    p = tmp_path / "tls.yaml"
    p.write_text(
        "receivers:\n  otlp:\n    http:\n      tls:\n"
        "        cert_file: /nonexistent/c.pem\n        key_file: /nonexistent/k.pem\n"
    )
    assert cli.main(["validate-config", str(p)]) == 1
    _, err = capsys.readouterr()
    assert "receivers.otlp.http.tls.cert_file: file /nonexistent/c.pem does not exist" in err
    assert "receivers.otlp.http.tls.key_file: file /nonexistent/k.pem does not exist" in err
    # a config checked away from where it runs (a rendered Helm chart): the files exist in the pod's mounts only
    assert cli.main(["validate-config", "--no-file-checks", str(p)]) == 0


def test_validate_config_names_the_yaml_line(tmp_path, capsys):
    p = tmp_path / "syntax.yaml"
    p.write_text("storage:\n  directory: /tmp/x\n  retention: [1, 2\nserver: {}\n")
    assert cli.main(["validate-config", str(p)]) == 1
    _, err = capsys.readouterr()
    assert f"{p}: not valid YAML: line " in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2


def test_validate_config_missing_file(tmp_path, capsys):
    p = tmp_path / "missing.yaml"
    assert cli.main(["validate-config", str(p)]) == 1
    _, err = capsys.readouterr()
    assert str(p) in err
    assert "cannot read config file" in err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"receivers: [unclosed\n", "not valid YAML"),
        (b"key: value\n  bad indent: x\n", "not valid YAML"),
        (b"\xff\xfe\x00binary", "not UTF-8"),
        (b"just a string\n", "expected a mapping"),
    ],
)
def test_validate_config_not_yaml(tmp_path, capsys, content, fragment):
    p = tmp_path / "weird.yaml"
    p.write_bytes(content)
    assert cli.main(["validate-config", str(p)]) == 1
    _, err = capsys.readouterr()
    assert fragment in err
    assert "Traceback" not in err


def test_validate_config_unset_env_names_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CCB_SURELY_UNSET", raising=False)
    p = tmp_path / "env.yaml"
    p.write_text("storage:\n  directory: ${env:CCB_SURELY_UNSET}\n")
    assert cli.main(["validate-config", str(p)]) == 1
    _, err = capsys.readouterr()
    assert "storage.directory" in err
    assert "CCB_SURELY_UNSET" in err


def test_validate_config_never_prints_a_secret(tmp_path, capsys, monkeypatch):
    value = "sk-ant-admin01-never-print-this"
    monkeypatch.setenv("CCB_ADMIN_KEY", value)
    p = tmp_path / "secret.yaml"
    p.write_text("enrichment:\n  analytics_api:\n    admin_api_key: ${env:CCB_ADMIN_KEY}\n")
    assert cli.main(["validate-config", str(p)]) == 0
    p.write_text("enrichment:\n  analytics_api:\n    admin_api_key: ${env:CCB_ADMIN_KEY}\n    page_limit: 0\n")
    assert cli.main(["validate-config", str(p)]) == 1
    out, err = capsys.readouterr()
    assert value not in out + err


def test_validate_config_requires_a_file_argument(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["validate-config"])
    assert exc.value.code == 2


# ---------------------------------------------------------------------------------------------------------------
# storage.backend and storage.postgresql

PG_PASSWORD = "Xy9-not-for-logs"


def test_storage_backend_defaults_to_sqlite():
    cfg = config_mod.load_tree({})
    assert cfg.storage.backend == "sqlite"
    pg = cfg.storage.postgresql
    assert (pg.schema, pg.pool_size, pg.connect_timeout, pg.statement_timeout, pg.wait_at_start) == (
        "ccbridge", 10, 10.0, 30.0, 0.0,
    )  # fmt: skip
    assert not pg.dsn


def test_postgresql_settings_load_with_the_dsn_from_the_environment():
    tree = {
        "storage": {
            "backend": "postgresql",
            "postgresql": {
                "dsn": "${env:CCBRIDGE_POSTGRES_DSN}",
                "schema": "audit_trail",
                "pool_size": 4,
                "connect_timeout": "5s",
                "statement_timeout": "2m",
                "wait_at_start": "1m",
            },
        }
    }
    dsn = f"postgresql://app:{PG_PASSWORD}@db:5432/audit?sslmode=verify-full"
    cfg = config_mod.load_tree(tree, environ={"CCBRIDGE_POSTGRES_DSN": dsn})
    pg = cfg.storage.postgresql
    assert cfg.storage.backend == "postgresql" and pg.dsn.get() == dsn
    assert (pg.schema, pg.pool_size, pg.connect_timeout, pg.statement_timeout, pg.wait_at_start) == (
        "audit_trail", 4, 5.0, 120.0, 60.0,
    )  # fmt: skip
    assert PG_PASSWORD not in repr(cfg) and PG_PASSWORD not in str(pg)


@pytest.mark.parametrize(
    ("storage", "key", "problem"),
    [
        ({"backend": "postgres"}, "storage.backend", "must be one of sqlite, postgresql"),
        ({"backend": "postgresql"}, "storage.postgresql.dsn", "required with storage.backend: postgresql"),
        (
            {"postgresql": {"dsn": f"host=db password={PG_PASSWORD}"}},
            "storage.postgresql.dsn",
            "expected a PostgreSQL URI",
        ),
        ({"postgresql": {"dsn": f"postgresql://a:{PG_PASSWORD}@db:0/x"}}, "storage.postgresql.dsn", "invalid port"),
        ({"postgresql": {"schema": "Audit-Trail"}}, "storage.postgresql.schema", "not a usable schema name"),
        ({"postgresql": {"schema": "pg_audit"}}, "storage.postgresql.schema", "not a usable schema name"),
        ({"postgresql": {"pool_size": 0}}, "storage.postgresql.pool_size", "between 1 and 200"),
        ({"postgresql": {"connect_timeout": 0}}, "storage.postgresql.connect_timeout", "more than 0s"),
        ({"postgresql": {"statement_timeout": "0.5ms"}}, "storage.postgresql.statement_timeout", "at least 1ms"),
        ({"postgresql": {"wait_at_start": "2d"}}, "storage.postgresql.wait_at_start", "at most 24h"),
        ({"postgresql": {"host": "db"}}, "storage.postgresql.host", "unknown key"),
    ],
)
def test_postgresql_settings_are_validated_naming_the_key(storage, key, problem):
    with pytest.raises(config_mod.ConfigError) as exc:
        config_mod.load_tree({"storage": storage})
    msg = str(exc.value)
    assert msg.startswith(key) and problem in msg, msg
    assert PG_PASSWORD not in msg


def test_validate_config_never_prints_the_dsn_password(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump(
            {"storage": {"backend": "postgresql", "postgresql": {"dsn": f"postgresql://app:{PG_PASSWORD}@db/audit"}}}
        )
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"storage": {"postgresql": {"dsn": f"postgresql://app:{PG_PASSWORD}@db:x/a"}}}))
    assert cli.main(["validate-config", str(good)]) == 0
    assert cli.main(["validate-config", str(bad)]) != 0
    out = capsys.readouterr()
    assert "configuration is valid" in out.out and "invalid port" in out.err
    assert PG_PASSWORD not in out.out + out.err
