"""Typed configuration tree, loaded from YAML and validated before anything starts.

Every section is a frozen dataclass whose defaults are the embedded defaults, so ``Config()`` is a complete,
runnable configuration. :func:`load` reads YAML, substitutes ``${env:VAR}`` (and ``${env:VAR:-default}``) in
string values, and maps the tree onto the dataclasses. Unknown keys, wrong types and out-of-range values are
refused with a :class:`ConfigError` that names the dotted path of the offending key.

Secret values (tokens, API keys) are held in :class:`Secret`, whose ``repr``/``str`` never show the value.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from collector.configtypes import (
    ByteSize,
    ConfigError,
    Duration,
    FromEnv,
    Secret,
    TLSServerConfig,
    check_pg_dsn,
    parse_duration,
    parse_endpoint,
    parse_size,
)
from collector.console.settings import ConsoleConfig
from collector.delivery.registry import registry as destination_types
from collector.delivery.registry import type_of
from collector.enrich.analytics_config import AnalyticsApiConfig
from collector.enrich.enrichment_config import UsageEnrichmentConfig
from collector.private import exposed
from collector.processing.redact import RedactionConfig
from collector.receivers.auth import ReceiverAuthConfig
from collector.reports.config import ReportsConfig
from collector.runtime import available_cpus

__all__ = [
    "ByteSize",
    "Config",
    "ConfigError",
    "Duration",
    "Secret",
    "load",
    "load_text",
    "parse_duration",
    "parse_endpoint",
    "parse_size",
]

T = TypeVar("T")
_ENV_RE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

DEFAULT_GRPC_ENDPOINT = "127.0.0.1:4317"
DEFAULT_HTTP_ENDPOINT = "127.0.0.1:4318"
DEFAULT_TELEMETRY_ENDPOINT = "127.0.0.1:9464"
DEFAULT_DATA_DIR = "./ccbridge-data"
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_INFLIGHT_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_ATTRIBUTE_VALUE_BYTES = 1024 * 1024
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024
DEFAULT_RETENTION_SECONDS = 90 * 86400.0
MAX_ATTRIBUTE_DEPTH = 40


# ---------------------------------------------------------------------------------------------------------------
# The tree. Field docstrings live in docs/configuration.md, which documents every key.


@dataclass(frozen=True)
class GrpcReceiverConfig:
    enabled: bool = True
    endpoint: str = DEFAULT_GRPC_ENDPOINT
    max_recv_msg_size: ByteSize = ByteSize(DEFAULT_MAX_REQUEST_BYTES)
    tls: TLSServerConfig = field(default_factory=TLSServerConfig)
    handshake_timeout: Duration = Duration(10.0)
    call_timeout: Duration = Duration(30.0)
    max_connection_idle: Duration = Duration(300.0)
    max_connection_age: Duration = Duration(1800.0)
    max_connection_age_grace: Duration = Duration(30.0)

    def validate(self, path: str) -> None:
        parse_endpoint(self.endpoint, f"{path}.endpoint")
        if self.max_recv_msg_size < 1024:
            raise ConfigError(f"{path}.max_recv_msg_size: must be at least 1KiB")
        for key in ("handshake_timeout", "call_timeout", "max_connection_idle", "max_connection_age"):
            if not 0.1 <= getattr(self, key) <= 86400:
                raise ConfigError(f"{path}.{key}: must be between 100ms and 24h")
        if not 0 <= self.max_connection_age_grace <= 3600:
            raise ConfigError(f"{path}.max_connection_age_grace: must be between 0 and 1h")


@dataclass(frozen=True)
class HttpReceiverConfig:
    enabled: bool = True
    endpoint: str = DEFAULT_HTTP_ENDPOINT
    max_request_body_size: ByteSize = ByteSize(DEFAULT_MAX_REQUEST_BYTES)
    max_decompressed_size: ByteSize = ByteSize(DEFAULT_MAX_DECOMPRESSED_BYTES)
    tls: TLSServerConfig = field(default_factory=TLSServerConfig)
    header_timeout: Duration = Duration(10.0)
    idle_timeout: Duration = Duration(30.0)
    body_timeout: Duration = Duration(30.0)
    min_body_rate: ByteSize = ByteSize(4096)

    def validate(self, path: str) -> None:
        parse_endpoint(self.endpoint, f"{path}.endpoint")
        if self.max_request_body_size < 1024:
            raise ConfigError(f"{path}.max_request_body_size: must be at least 1KiB")
        if self.max_decompressed_size < self.max_request_body_size:
            raise ConfigError(f"{path}.max_decompressed_size: must be >= max_request_body_size")
        for key in ("header_timeout", "idle_timeout", "body_timeout"):
            if not 0.1 <= getattr(self, key) <= 3600:
                raise ConfigError(f"{path}.{key}: must be between 100ms and 1h")


@dataclass(frozen=True)
class OtlpReceiverConfig:
    grpc: GrpcReceiverConfig = field(default_factory=GrpcReceiverConfig)
    http: HttpReceiverConfig = field(default_factory=HttpReceiverConfig)


@dataclass(frozen=True)
class ReceiversConfig:
    otlp: OtlpReceiverConfig = field(default_factory=OtlpReceiverConfig)
    max_attribute_depth: int = 32
    auth: ReceiverAuthConfig = field(default_factory=ReceiverAuthConfig)
    max_inflight_bytes: ByteSize = ByteSize(DEFAULT_MAX_INFLIGHT_BYTES)
    max_inflight_share: float = 0.25
    max_attribute_value_size: ByteSize = ByteSize(DEFAULT_MAX_ATTRIBUTE_VALUE_BYTES)
    max_record_size: ByteSize = ByteSize(DEFAULT_MAX_RECORD_BYTES)

    def validate(self, path: str) -> None:
        if 0 < self.max_inflight_bytes < 1024 * 1024:
            raise ConfigError(f"{path}.max_inflight_bytes: must be at least 1MiB, or 0 for no bound")
        if not 0.01 <= self.max_inflight_share <= 1.0:
            raise ConfigError(f"{path}.max_inflight_share: must be between 0.01 and 1.0")
        if self.max_attribute_value_size < 1024:
            raise ConfigError(f"{path}.max_attribute_value_size: must be at least 1KiB")
        if self.max_record_size < max(4096, self.max_attribute_value_size):
            raise ConfigError(f"{path}.max_record_size: must be at least 4KiB and >= max_attribute_value_size")
        if not 1 <= self.max_attribute_depth <= MAX_ATTRIBUTE_DEPTH:
            raise ConfigError(
                f"{path}.max_attribute_depth: must be between 1 and {MAX_ATTRIBUTE_DEPTH} "
                "(protobuf decoding itself stops near 48 levels)"
            )


_PG_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class PostgresStorageConfig:
    dsn: Secret = field(default_factory=lambda: Secret(""))
    schema: str = "ccbridge"
    pool_size: int = 10
    connect_timeout: Duration = Duration(10.0)
    statement_timeout: Duration = Duration(30.0)
    wait_at_start: Duration = Duration(0.0)

    def validate(self, path: str) -> None:
        if self.dsn:
            check_pg_dsn(self.dsn.get(), f"{path}.dsn")
        if not _PG_SCHEMA_RE.fullmatch(self.schema) or self.schema.startswith("pg_"):
            raise ConfigError(
                f"{path}.schema: {self.schema!r} is not a usable schema name (lower-case letters, digits and _, "
                "at most 63 characters, not starting with a digit or pg_)"
            )
        if not 1 <= self.pool_size <= 200:
            raise ConfigError(f"{path}.pool_size: must be between 1 and 200")
        if not 0 < self.connect_timeout <= 300:
            raise ConfigError(f"{path}.connect_timeout: must be more than 0s and at most 5m")
        if 0 < self.statement_timeout < 0.001:
            raise ConfigError(f"{path}.statement_timeout: must be at least 1ms, or 0 for no limit")
        if self.wait_at_start > 86400:
            raise ConfigError(f"{path}.wait_at_start: must be at most 24h")


@dataclass(frozen=True)
class StorageConfig:
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    directory: str = DEFAULT_DATA_DIR
    synchronous: Literal["full", "normal"] = "full"
    commit_interval: Duration = Duration(0.0)
    max_commit_records: int = 20000
    retention: Duration = Duration(DEFAULT_RETENTION_SECONDS)
    retry_after: Duration = Duration(5.0)
    writer: Literal["inline", "thread"] = "inline"
    chain_head_interval: Duration = Duration(300.0)
    postgresql: PostgresStorageConfig = field(default_factory=PostgresStorageConfig)

    def validate(self, path: str) -> None:
        if self.backend == "postgresql" and not self.postgresql.dsn:
            raise ConfigError(
                f"{path}.postgresql.dsn: required with {path}.backend: postgresql "
                "(e.g. ${env:CCBRIDGE_POSTGRES_DSN} holding postgresql://user:password@host:5432/db?sslmode=verify-full)"
            )
        if self.max_commit_records < 1:
            raise ConfigError(f"{path}.max_commit_records: must be >= 1")
        if self.commit_interval > 1.0:
            raise ConfigError(f"{path}.commit_interval: must be <= 1s (it delays every acknowledgement)")


@dataclass(frozen=True)
class TelemetryConfig:
    endpoint: str = DEFAULT_TELEMETRY_ENDPOINT
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "text"
    tls: TLSServerConfig = field(default_factory=TLSServerConfig)
    readiness_destinations: Literal["report", "fail"] = "report"

    def validate(self, path: str) -> None:
        parse_endpoint(self.endpoint, f"{path}.endpoint")


@dataclass(frozen=True)
class ServerConfig:
    workers: int = field(default_factory=lambda: min(64, available_cpus()))
    """Default: the CPUs this process may use (affinity and cgroup quota), see :func:`available_cpus`."""
    shutdown_timeout: Duration = Duration(15.0)

    def validate(self, path: str) -> None:
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"{path}.workers: must be between 1 and 64")


@dataclass(frozen=True)
class DeliveryConfig:
    """Cluster-wide delivery (PostgreSQL backend): how long a replica's claim on a destination's share of work lasts
    without renewal before another replica takes it over."""

    lease_ttl: Duration = Duration(30.0)

    def validate(self, path: str) -> None:
        if not 1 <= self.lease_ttl <= 3600:
            raise ConfigError(f"{path}.lease_ttl: must be between 1s and 1h")


@dataclass(frozen=True)
class EnrichmentConfig:
    analytics_api: AnalyticsApiConfig = field(default_factory=AnalyticsApiConfig)
    usage: UsageEnrichmentConfig = field(default_factory=UsageEnrichmentConfig)


@dataclass(frozen=True)
class Config:
    receivers: ReceiversConfig = field(default_factory=ReceiversConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    enrichment: EnrichmentConfig = field(default_factory=EnrichmentConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    exporters: dict[str, Any] = field(default_factory=dict)
    redaction: RedactionConfig = field(default_factory=RedactionConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)

    def with_data_dir(self, directory: str) -> Config:
        return dataclasses.replace(self, storage=dataclasses.replace(self.storage, directory=directory))

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.directory)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def substitute_env(value: str, path: str, environ: typing.Mapping[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _ENV_RE.sub(repl, value)


def _expand(node: object, path: str, environ: typing.Mapping[str, str]) -> object:
    if isinstance(node, str):
        expanded = substitute_env(node, path, environ)
        return FromEnv(expanded) if _ENV_RE.search(node) else expanded
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), environ) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", environ) for i, v in enumerate(node)]
    return node


def _type_name(tp: object) -> str:
    return getattr(tp, "__name__", str(tp))


def convert(tp: Any, value: object, path: str) -> Any:  # noqa: C901 - flat per-type dispatch of config value conversion
    """Convert a YAML value to the annotated type ``tp``, naming ``path`` on failure."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path}: must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list")
        (item_tp, *_rest) = get_args(tp) or (Any,)
        items = [convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping")
        key_tp, val_tp = get_args(tp) or (str, Any)
        return {convert(key_tp, k, f"{path}"): convert(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if tp is Duration:
        return parse_duration(value, path)
    if tp is ByteSize:
        return parse_size(value, path)
    if tp is Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string")
        return Secret(str(value), literal=not isinstance(value, FromEnv))
    if tp is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported type {_type_name(tp)}")


def build(cls: type[T], data: object, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and validating each section."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise ConfigError(unknown_key_message(path, key, names))
    kwargs = {k: convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    obj = cls(**kwargs)
    return obj


def unknown_key_message(path: str, key: object, names: typing.Collection[str]) -> str:
    """``path.key: unknown key 'key'; did you mean 'x'? (known keys here: ...)``."""
    import difflib

    where = f"{path}.{key}" if path else str(key)
    close = difflib.get_close_matches(str(key), sorted(names), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where}: unknown key {key!r}{hint} (known keys here: {', '.join(sorted(names))})"


def validate_tree(obj: object, path: str = "") -> None:
    """Run every ``validate`` method in the tree (including defaults that were not in the file)."""
    if not dataclasses.is_dataclass(obj):
        return
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(path or "<root>")
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name)
        sub = f"{path}.{f.name}" if path else f.name
        if isinstance(child, dict):
            for k, v in child.items():
                validate_tree(v, f"{sub}.{k}")
        else:
            validate_tree(child, sub)


def build_exporter_configs(raw: dict[str, Any], path: str = "exporters") -> dict[str, Any]:
    """Typed config per destination key, validated; unknown types and keys are refused naming the path."""
    known = destination_types()
    out: dict[str, Any] = {}
    for key, section in raw.items():
        kind = type_of(str(key))
        if kind not in known:
            raise ConfigError(f"{path}.{key}: unknown exporter type {kind!r} (known: {', '.join(sorted(known))})")
        cfg = build(known[kind].config_class, section, f"{path}.{key}")
        validate_tree(cfg, f"{path}.{key}")
        out[str(key)] = cfg
    for kind, cls in known.items():
        same = sorted(k for k in out if type_of(k) == kind)
        if getattr(cls, "singleton", False) and len(same) > 1:
            raise ConfigError(f"{path}: at most one {kind} destination per bridge (found {', '.join(same)})")
    return out


READ_ONLY_SECTIONS = ("storage", "reports")
"""What the read-only commands (exports, verify, dead-letter listing, reports, status) read of a config file."""


def _only_sections(tree: object, sections: typing.Collection[str]) -> object:
    """``tree`` reduced to ``sections``; the other top-level keys are checked by name only (their values, and
    the ``${env:...}`` references in them, are not read)."""
    if not isinstance(tree, dict):
        return tree
    names = {f.name for f in dataclasses.fields(Config)}
    for key in tree:
        if key not in names:
            raise ConfigError(unknown_key_message("", key, names))
    return {k: v for k, v in tree.items() if k in sections}


def load_tree(
    tree: object,
    environ: typing.Mapping[str, str] | None = None,
    *,
    sections: typing.Collection[str] | None = None,
) -> Config:
    """Build and validate a :class:`Config` from a parsed tree (``${env:...}`` expanded), as every loader does.

    With ``sections`` only those top-level sections are read; the others keep their defaults (so a read-only
    command needs none of the destinations' secrets)."""
    if sections is not None:
        tree = _only_sections(tree, sections)
    expanded = _expand(tree if tree is not None else {}, "", os.environ if environ is None else environ)
    cfg = build(Config, expanded)
    cfg = dataclasses.replace(cfg, exporters=build_exporter_configs(cfg.exporters or {}))
    validate_tree(cfg)
    return cfg


def destination_names(path: str | Path) -> list[str]:
    """The keys of the ``exporters`` section of config file ``path``, without reading (or resolving the secrets
    of) their settings."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    section = raw.get("exporters") if isinstance(raw, dict) else None
    return sorted(str(k) for k in section) if isinstance(section, dict) else []


def load_text(
    text: str,
    environ: typing.Mapping[str, str] | None = None,
    source: str = "<config>",
    *,
    sections: typing.Collection[str] | None = None,
) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None
    return load_tree(raw, environ, sections=sections)


def literal_secrets(node: object, path: str = "") -> list[str]:
    """Key paths of the non-empty secrets written literally in the configuration (not from ``${env:...}``)."""
    if isinstance(node, Secret):
        return [path] if node.literal and node else []
    found: list[str] = []
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            found += literal_secrets(getattr(node, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(node, dict):
        for k, v in node.items():
            found += literal_secrets(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            found += literal_secrets(v, f"{path}[{i}]")
    return found


def exposed_secrets_warning(path: str | Path | None, cfg: Config) -> str | None:
    """A warning when the configuration file ``path`` holds literal secrets and is readable by group or others."""
    if path is None:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    keys = literal_secrets(cfg)
    if not keys or not exposed(mode):
        return None
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return (
        f"config file {path} holds literal secrets ({shown}) and is readable by group or others; "
        "chmod 600 it or take the secrets from the environment with ${env:NAME}"
    )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line, with its line and column (1-based) when PyYAML knows them."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else str(problem)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {text}"
    return " ".join(str(exc).split())


def load(
    path: str | Path | None,
    environ: typing.Mapping[str, str] | None = None,
    *,
    sections: typing.Collection[str] | None = None,
) -> Config:
    """Load ``path`` (or the embedded defaults when ``None``); ``sections`` as in :func:`load_tree`."""
    if path is None:
        cfg = Config()
        validate_tree(cfg)
        return cfg
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: config file is not UTF-8 text") from None
    return load_text(text, environ, source=str(p), sections=sections)


# ---------------------------------------------------------------------------------------------------------------
# validate-config: every problem at once


FILE_KEYS = ("cert_file", "key_file", "client_ca_file", "ca_file", "tokens_file")


def _unknown_keys(cls: Any, data: object, path: str, problems: list[str]) -> object:
    """``data`` without the keys ``cls`` does not know (each one reported), recursively through nested sections."""
    if not (dataclasses.is_dataclass(cls) and isinstance(data, dict)):
        return data
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kept: dict[Any, Any] = {}
    for key, value in data.items():
        if key not in names:
            problems.append(unknown_key_message(path, key, names))
            continue
        sub = f"{path}.{key}" if path else str(key)
        kept[key] = _unknown_keys(hints[key], value, sub, problems)
    return kept


def file_problems(cfg: Config) -> list[str]:
    """Referenced files of ``cfg`` that are missing or unreadable, each naming its key."""
    problems: list[str] = []
    _file_problems(cfg, "", problems)
    return problems


def _file_problems(obj: object, path: str, problems: list[str]) -> None:
    """Referenced files (TLS certificates and keys, CA bundles, token files) that are missing or unreadable."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        sub = f"{path}.{f.name}" if path else f.name
        if f.name in FILE_KEYS and isinstance(value, str) and value:
            file = Path(value)
            if not file.is_file():
                problems.append(f"{sub}: file {value} does not exist")
            elif not os.access(file, os.R_OK):
                problems.append(f"{sub}: file {value} is not readable")
        elif isinstance(value, dict):
            for k, v in value.items():
                _file_problems(v, f"{sub}.{k}", problems)
        else:
            _file_problems(value, sub, problems)


def check_file(
    path: str | Path, environ: typing.Mapping[str, str] | None = None, *, check_files: bool = True
) -> list[str]:
    """Every problem of config file ``path`` (each naming its key, or the YAML line), or ``[]`` when it is valid.

    Unknown keys are all reported (with a "did you mean"); each top-level section, and each destination, is then
    checked on its own so one bad value does not hide the next; referenced files must exist and be readable.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        return [f"cannot read config file: {exc.strerror}"]
    except UnicodeDecodeError:
        return ["config file is not UTF-8 text"]
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"not valid YAML: {_yaml_problem(exc)}"]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return [f"<root>: expected a mapping, got {type(raw).__name__}"]
    problems: list[str] = []
    tree = _unknown_keys(Config, raw, "", problems)
    assert isinstance(tree, dict)
    for section, value in tree.items():
        if section == "exporters" and isinstance(value, dict):
            for key, sub in value.items():
                try:
                    load_tree({"exporters": {key: sub}}, environ)
                except ConfigError as exc:
                    problems.append(str(exc))
            continue
        try:
            load_tree({section: value}, environ)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        return problems
    try:
        cfg = load_tree(tree, environ)
    except ConfigError as exc:
        return [str(exc)]
    if check_files:
        _file_problems(cfg, "", problems)
    return problems
