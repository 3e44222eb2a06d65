"""Secret redaction: every string of every audit record passes through :class:`Redactor` before it is stored or
exported, so that no credential reaches a SIEM.

A secret becomes ``[REDACTED:<kind>]``, where ``kind`` is a stable detector name (see :data:`BUILTIN_KINDS`). In
assignment forms (``password=hunter2``, ``"token": "..."``, ``export SECRET_KEY=...``, ``--password xyz``,
``Authorization: Bearer ...``, ``scheme://user:pass@host``) only the value is replaced; the key, the user name and
the host stay readable for the audit trail.

Detectors come in three families, applied in a fixed order so that the most specific kind wins:

1. structured secrets that must be removed before anything inside them is looked at: private-key PEM blocks
   (complete or truncated), GCP service-account key JSON, JWTs;
2. tokens recognisable by their format (``AKIA...``, ``ghp_...``, ``sk-ant-...``, ``xoxb-...``, ...) and
   credentials in URLs;
3. secrets recognised by their context: header schemes (``Bearer``, ``Basic``, ``Splunk``), CLI options
   (``mysql -p...``, ``curl -u user:pass``, ``docker login -p``) and assignments whose key names a password, token,
   secret or key, where the value is checked (placeholders such as ``<REDACTED>``, ``${PASSWORD}``,
   ``$DB_PASSWORD``, ``********``, code such as ``self.password`` or ``get_token()`` and, for non-password keys,
   low-entropy values are left alone).

Dict values are also judged by their key: ``{"password": "hunter2"}`` is redacted although ``hunter2`` alone is not
a secret. Keys themselves are never changed.

Cost: a clean string costs one search of a precompiled anchor regex (literal fragments such as ``pass``, ``ken``,
``key``, ``AKIA``, ``://``, ``BEGIN``, one of which every detector's match contains); only when an anchor is found
are the detectors that own it run. Keyword anchors exist in lower, Upper and UPPER case, so a keyword written in
odd mixed case (``pAsSwOrD``) is not seen. A string in which something was replaced is scanned again until nothing
changes, so that redacting an output again is a no-op.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from collector.configtypes import ConfigError

__all__ = [
    "BUILTIN_KINDS",
    "BUILTIN_RULES",
    "CustomRuleConfig",
    "RedactionConfig",
    "RedactionRule",
    "Redactor",
    "is_placeholder",
    "marker",
    "shannon_entropy",
]

_KIND_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_MARKER_RE = re.compile(r"\[REDACTED:[A-Za-z0-9_.\-]+\]")
_MARKERS_ONLY_RE = re.compile(r"(?:\[REDACTED:[A-Za-z0-9_.\-]+\])+")


def marker(kind: str) -> str:
    """The text that replaces a secret of ``kind``."""
    return f"[REDACTED:{kind}]"


def shannon_entropy(text: str) -> float:
    """Shannon entropy of ``text`` in bits per character (0.0 for the empty string)."""
    n = len(text)
    if n == 0:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


# ---------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class CustomRuleConfig:
    """A site-specific detector: matches of ``pattern`` (group ``replace_group``) become ``[REDACTED:<name>]``."""

    name: str = ""
    pattern: str = ""
    replace_group: int = 0

    def validate(self, path: str) -> None:
        if not self.name:
            raise ConfigError(f"{path}.name: must not be empty")
        if not _KIND_RE.fullmatch(self.name):
            raise ConfigError(f"{path}.name: {self.name!r} may only contain letters, digits, '_', '.' and '-'")
        if not self.pattern:
            raise ConfigError(f"{path}.pattern: must not be empty")
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"{path}.pattern: invalid regular expression: {exc}") from None
        if compiled.search("") is not None:
            raise ConfigError(f"{path}.pattern: must not match the empty string")
        if not 0 <= self.replace_group <= compiled.groups:
            raise ConfigError(
                f"{path}.replace_group: {self.replace_group} out of range (the pattern has {compiled.groups} groups)"
            )


@dataclass(frozen=True)
class RedactionConfig:
    """``redaction:`` section. ``enabled: false`` turns every detector off, built-in and custom."""

    enabled: bool = True
    custom_rules: list[CustomRuleConfig] = field(default_factory=list)

    def validate(self, path: str) -> None:
        for i, rule in enumerate(self.custom_rules):
            rule.validate(f"{path}.custom_rules[{i}]")


# ---------------------------------------------------------------------------------------------------------------
# Rules


Refined = tuple[int, int] | tuple[int, int, str] | None
"""What a rule's ``refine`` returns: the span to replace, optionally with the kind to report, or ``None``."""


@dataclass(frozen=True, slots=True)
class RedactionRule:
    """One detector.

    Each match of ``pattern`` that passes the checks has its ``group`` (0 = whole match) replaced by
    ``[REDACTED:<kind>]``. ``validator`` receives the text that would be replaced and may veto it;
    ``min_entropy`` vetoes texts whose Shannon entropy (bits/char) is lower. ``refine``, used by the context-aware
    built-ins, receives the match and returns the span to replace (optionally with a kind that overrides
    ``kind``), or ``None`` to leave the match alone; it takes the place of ``group``. ``anchors`` are literal
    fragments (two characters or more) of which every match contains at least one: the rule then runs only on
    strings that contain one of them. A rule without anchors runs on every string.
    """

    kind: str
    pattern: re.Pattern[str]
    group: int | str = 0
    validator: Callable[[str], bool] | None = None
    min_entropy: float = 0.0
    anchors: tuple[str, ...] = ()
    refine: Callable[[re.Match[str]], Refined] | None = None
    kinds: tuple[str, ...] = ()
    """Other kinds ``refine`` may report, besides ``kind``."""

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """``(start, end, kind)`` of each part of ``text`` this rule replaces, in order and without overlap.

        A match that is vetoed does not hide the matches that start inside it: the search resumes one character
        after its start. Parts of existing ``[REDACTED:...]`` markers are never replaced.
        """
        out: list[tuple[int, int, str]] = []
        search = self.pattern.search
        protected: list[tuple[int, int]] | None = None
        last = pos = 0
        end = len(text)
        while pos <= end:
            m = search(text, pos)
            if m is None:
                break
            target = self.target(m)
            if target is not None and target[0] >= last:
                a, b = target[0], target[1]
                if protected is None:
                    protected = [x.span() for x in _MARKER_RE.finditer(text)] if "[REDACTED:" in text else []
                if not any(a < pe and ps < b for ps, pe in protected):
                    out.append(target)
                    last = b
                    pos = max(m.end(), m.start() + 1)
                    continue
            pos = m.start() + 1
        return out

    def target(self, m: re.Match[str]) -> tuple[int, int, str] | None:
        """The span of match ``m`` to replace and the kind to report, or ``None`` when the checks veto it."""
        kind = self.kind
        if self.refine is not None:
            refined = self.refine(m)
            if refined is None:
                return None
            a, b = refined[0], refined[1]
            if len(refined) == 3:
                kind = refined[2]  # type: ignore[misc]
        else:
            a, b = m.span(self.group)
        if a < 0 or b <= a:
            return None
        value = m.string[a:b]
        if _MARKERS_ONLY_RE.fullmatch(value):
            return None
        if self.validator is not None and not self.validator(value):
            return None
        if self.min_entropy and shannon_entropy(value) < self.min_entropy:
            return None
        return a, b, kind


# -- value judgement --------------------------------------------------------------------------------------------

_PLACEHOLDER_RE = re.compile(
    r"""\s*(?:
        [*xX\u2022.#_?~:\-]+                              # ********  xxxx  ....  ----  :****
      | <[^<>]*>                                          # <REDACTED> <your-token>
      | \$\{.*  | \$\(.*                                  # ${PASSWORD} ${{ secrets.X }} $(pass show db)
      | \$(?:[A-Z_][A-Z0-9_]*|[a-z_][a-z0-9_]*|\d)        # $DB_PASSWORD $password $1
      | \$env:[A-Za-z_][A-Za-z0-9_]*                      # $env:API_KEY
      | %[A-Za-z_][A-Za-z0-9_]*%                          # %PASSWORD%
      | \{\{.*\}\}                                        # {{ .Values.password }}
      | (?:%[-+ #0-9.]*[sdrifx]|\{[A-Za-z0-9_.\[\]!:]*\}|[:@/_\-. ])+  # '%s:%s'  '{user}:{password}'
      | \[REDACTED[^\]]*\]
      | \([a-z ]*\)                                      # (optional)
      | (?i:redacted|masked|hidden|removed|omitted|null|none|nil|true|false|undefined|empty|n/?a|tbd|todo
           |placeholder|await|async|yield|lambda|function|return|typeof|self|this
           |string|str|bytes|int|bool|boolean|float|number|object|any|dict|list|required|optional
           |secret|secretstr|password|pass|passwd|token|apikey|api_key|key|value
           |your[\w\-]*|enter[\w\-]*|insert[\w\-]*|replace[\w\-]*|my[_\-]?(?:password|secret|token|api[_\-]?key))
    )\s*""",
    re.VERBOSE,
)


def is_placeholder(value: str) -> bool:
    """True for values that stand for a secret without being one (``<REDACTED>``, ``${X}``, ``$X``, ``****``, ...)."""
    return not value.strip() or _PLACEHOLDER_RE.fullmatch(value) is not None


_DOTTED_RE = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+")
_CALL_RE = re.compile(r"[A-Za-z_$][\w$.]*[(\[].*", re.DOTALL)
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PASCAL_RE = re.compile(r"(?:[A-Z][a-z]+)+")
_ANNOTATION_AFTER_RE = re.compile(r"[ \t]*[|)=\]]")
_SNAKE_WORDS_RE = re.compile(r"[a-z]+(?:_[a-z]+)+")
_WORDS_JOINED_RE = re.compile(r"[a-z]+(?:[_.\-][a-z]+)+")
_SECRET_WORD_RE = re.compile(r"(?i)pass|pwd|secret|token|key|auth|cred")
_CONSTANT_NAME_RE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_PATH_RE = re.compile(r"(?:~|\.{1,2})?/[\w.\-]+/|[A-Za-z]:\\|~/|\./|\.\./")
_STANDALONE_RE = re.compile(r"""[ \t]*(?:$|[\r\n,;})\]#"'`]|\\[nrt"'])""")


def _looks_secret(value: str) -> bool:
    """A word is password-like when it has a digit, a symbol or an inner capital (``hunter2``, ``S3cret!``)."""
    return any(c.isdigit() for c in value) or not value.isalnum() or any(c.isupper() for c in value[1:])


def _looks_like_code(value: str) -> bool:
    """Unquoted values that are program text, not literals.

    ``self.password``, ``get_token()``, ``db_password``, ``index_info``, ``hashedPassword``, ``(a, b)``.
    """
    if value[:1] in "([{" or _DOTTED_RE.fullmatch(value) or _CALL_RE.fullmatch(value):
        return True
    if _IDENT_RE.fullmatch(value) is None or any(c.isdigit() for c in value):
        return False
    return _SECRET_WORD_RE.search(value) is not None or _SNAKE_WORDS_RE.fullmatch(value) is not None


def _strip_unbalanced(value: str, a: int, b: int) -> int:
    """End index of ``value`` (at ``a``..``b``) without trailing closers that have no opener inside it.

    A ``:`` after such closers goes too (``def f(password=None):``).
    """
    pairs = {")": "(", "]": "[", "}": "{", ">": "<"}
    end = b
    if end - a >= 2 and value[end - a - 1] == ":" and value[end - a - 2] in pairs:
        end -= 1
    stripped = end
    while end > a and value[end - a - 1] in pairs:
        closer = value[end - a - 1]
        if value[: end - a - 1].count(pairs[closer]) >= value[: end - a].count(closer):
            break
        end -= 1
    return end if end < stripped else b


@dataclass(frozen=True, slots=True)
class _Profile:
    """How strict an assignment's value check is."""

    min_len: int
    min_entropy: float = 0.0
    prose: bool = False
    skip_paths: bool = False
    skip_numbers: bool = False
    value_re: re.Pattern[str] | None = None
    bare_space: bool = False
    skip_words: bool = False


_PASSWORD = _Profile(min_len=4, prose=True)
_GENERIC = _Profile(min_len=8, min_entropy=2.9, skip_paths=True, skip_numbers=True, skip_words=True)
_NAMED = _Profile(min_len=8, skip_paths=True)


def _value_ok(value: str, profile: _Profile) -> bool:
    """Checks shared by assignment values and by dict values whose key names a secret."""
    if len(value) < profile.min_len or is_placeholder(value):
        return False
    if value.startswith("-----BEGIN") or _CONSTANT_NAME_RE.fullmatch(value):
        return False
    if profile.value_re is not None and not profile.value_re.fullmatch(value):
        return False
    if profile.skip_numbers and value.replace(".", "").replace("-", "").isdigit():
        return False
    if profile.skip_paths and _PATH_RE.match(value):
        return False
    if profile.skip_words and (_WORDS_JOINED_RE.fullmatch(value) or (value.isalpha() and not _looks_secret(value))):
        return False
    return not (profile.min_entropy and shannon_entropy(value) < profile.min_entropy)


# -- assignments ------------------------------------------------------------------------------------------------
#
# One regex finds every ``<key name><separator><value>`` whose key name ends in a secret word. It starts at the
# end of the name (one narrow character class, so the regex engine skips most positions in C). The whole key name
# is then read backwards from the match and looked up in _ASSIGNMENT_KINDS, whose first entry that accepts both the
# name and the value gives the kind.

_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
_NAME_LOOKBACK = 128

_KEY_FAMILY = (
    r"(?:api|access|secret|private|app|application|account|master|signing|encryption|auth|client|service"
    r"|subscription|license|admin|shared|storage|consumer|session|hmac|webhook|deploy|integration|ingest"
    r"|ingestion|write|read)[_.\-]?key"
)
_NAME_PASSWORD = r"(?i)(?:pass(?:word|wd|phrase|code)|(?:^|[^a-z0-9])pass|[_.\-]pwd)(?:[_\-]?confirm(?:ation)?|\d)?\Z"
_NAME_GENERIC = rf"(?i)(?:token|secret|{_KEY_FAMILY}|(?:^|[^a-z0-9])auth)\Z"
_NAME_AWS_SECRET = (
    r"(?i)(?:^|[^a-z0-9])(?:(?:aws[_.\-]?)?secret[_.\-]?access[_.\-]?key|aws[_.\-]?secret(?:[_.\-]?key)?)\Z"
)
_NAME_AZURE_STORAGE = r"(?i)(?:^|[^a-z0-9])(?:account|sharedaccess)key\Z"
_NAME_AZURE_CLIENT = r"(?i)(?:^|[^a-z0-9])(?:azure|arm|az)[_.\-]?client[_.\-]?secret\Z"
_NAME_DD_API = r"(?i)(?:^|[^a-z0-9])(?:dd|datadog)[_.\-]?api[_.\-]?key\Z"
_NAME_DD_APP = r"(?i)(?:^|[^a-z0-9])(?:dd|datadog)[_.\-]?app(?:lication)?[_.\-]?key\Z"


@dataclass(frozen=True, slots=True)
class _NamedKind:
    kind: str
    name_re: re.Pattern[str]
    profile: _Profile


_ASSIGNMENT_KINDS: tuple[_NamedKind, ...] = (
    _NamedKind(
        "aws_secret_access_key",
        re.compile(_NAME_AWS_SECRET),
        _Profile(min_len=40, value_re=re.compile(r"[A-Za-z0-9/+]{40}"), bare_space=True),
    ),
    _NamedKind(
        "azure_storage_key",
        re.compile(_NAME_AZURE_STORAGE),
        _Profile(min_len=16, value_re=re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")),
    ),
    _NamedKind("azure_client_secret", re.compile(_NAME_AZURE_CLIENT), _NAMED),
    _NamedKind("datadog_api_key", re.compile(_NAME_DD_API), _NAMED),
    _NamedKind("datadog_app_key", re.compile(_NAME_DD_APP), _NAMED),
    _NamedKind("password", re.compile(_NAME_PASSWORD), _PASSWORD),
    _NamedKind("generic_secret", re.compile(_NAME_GENERIC), _GENERIC),
)

_ANY_NAME_RE = re.compile(
    "|".join(f"(?:{pattern.removeprefix('(?i)')})" for pattern in (_NAME_PASSWORD, _NAME_GENERIC)), re.IGNORECASE
)
_ASSIGNMENT_RE = re.compile(
    r"""(?P<core>[PpKkCcHh](?:
            (?<=[Pp])(?:ass(?i:word|wd|phrase|code)?|wd)(?:[_\-]?(?i:confirm(?:ation)?)|\d)?
          | (?<=P)(?:ASS(?i:word|wd|phrase|code)?|WD)(?:[_\-]?(?i:confirm(?:ation)?)|\d)?
          | (?<=[Tt][Oo]k)en | (?<=[Tt][Oo]K)(?:en|EN)
          | (?<=k)ey | (?<=K)(?:ey|EY)
          | (?<=[Ss]ec)ret | (?<=SEC)RET
          | (?<=[Aa]uth) | (?<=AUTH)
        ))(?![A-Za-z0-9_.\-])
    (?:\\?["'])?
    (?P<sep>[ \t]*(?:=>|:=|=(?!=)|:(?!:))[ \t]*|[ \t]+(?:is|was)[ \t]+|[ \t]+)(?![=:>])
    (?:
        \\"(?P<v1>[^"\\\r\n]{0,8192})\\"
      | "(?P<v2>(?:[^"\\\r\n]|\\[^\r\n]){0,8192})"
      | '(?P<v3>[^'\r\n]{0,8192})'
      | `(?P<v5>[^`\r\n]{0,8192})`
      | (?![A-Za-z_$][\w$]*(?:\.[A-Za-z_$]|[(\[]))(?P<v4>[^\s"'`,;&|\\]{1,4096})
    )""",
    re.VERBOSE,
)
_BARE_VALUE_CAP = 4096
_BARE_VALUE_REST_RE = re.compile(r"[^\s\"'`,;&|\\]*")
_ASSIGNMENT_ANCHORS = (
    "pass",
    "Pass",
    "PASS",
    "pwd",
    "Pwd",
    "PWD",
    "ken",
    "Ken",
    "KEN",
    "sec",
    "Sec",
    "SEC",
    "key",
    "Key",
    "KEY",
    "uth",
    "UTH",
)


def _assignment_refine(m: re.Match[str]) -> Refined:
    text = m.string
    start = m.start()
    head = text[max(0, start - _NAME_LOOKBACK) : start]
    name = head[len(head.rstrip(_NAME_CHARS)) :] + m.group("core")
    if _ANY_NAME_RE.search(name) is None:
        return None
    group = m.lastgroup or "v4"
    a, b = m.span(group)
    if group == "v4" and b - a >= _BARE_VALUE_CAP:
        b = _BARE_VALUE_REST_RE.match(text, b).end()  # type: ignore[union-attr]
    sep = m.group("sep").strip()
    prose = sep in ("is", "was")
    flag = name.startswith("-") and not text.startswith("-", a)
    if group == "v4":
        if sep in (":", "") or prose:
            while b > a and text[b - 1] in ".!?:,":
                b -= 1
        b = _strip_unbalanced(text[a:b], a, b)
        value = text[a:b]
        if _looks_like_code(value):
            return None
        if (prose or (not sep and value.isalpha())) and not _looks_secret(value):
            return None
        if sep == ":":
            if not (_looks_secret(value) or _STANDALONE_RE.match(text, b)):
                return None
            if _PASCAL_RE.fullmatch(value) and _ANNOTATION_AFTER_RE.match(text, b):
                return None
    value = text[a:b]
    if is_placeholder(value):
        return None
    for entry in _ASSIGNMENT_KINDS:
        profile = entry.profile
        if (not sep and not (flag or profile.bare_space)) or (prose and not profile.prose):
            continue
        if entry.name_re.search(name) is not None and _value_ok(value, profile):
            return a, b, entry.kind
    return None


# -- token rules ------------------------------------------------------------------------------------------------


def _token_rule(
    kind: str,
    pattern: str,
    anchors: Iterable[str],
    validator: Callable[[str], bool] | None = None,
    group: int | str = 0,
) -> RedactionRule:
    return RedactionRule(kind, re.compile(pattern), group=group, validator=validator, anchors=tuple(anchors))


def _has_digit_and_letter(value: str) -> bool:
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _first_group_refine(*groups: str) -> Callable[[re.Match[str]], Refined]:
    """Replace the first participating group of ``groups``, unless it is a placeholder."""

    def refine(m: re.Match[str]) -> Refined:
        for g in groups:
            a, b = m.span(g)
            if a >= 0:
                return None if is_placeholder(m.string[a:b]) else (a, b)
        return None

    return refine


def _azure_secret_refine(m: re.Match[str]) -> Refined:
    return m.start() - 4, m.end()


# -- URL credentials --------------------------------------------------------------------------------------------

_URL_CRED_RE = re.compile(r"""://(?P<user>[^\s:/?#@\[\]'"\\<>]*):(?P<v>[^\s/?#'"\\<>]+)@(?=[A-Za-z0-9\[_%])""")
_SCHEME_BEFORE_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]{0,30})\Z")
_DB_SCHEMES = frozenset(
    {
        "postgres",
        "postgresql",
        "pg",
        "mysql",
        "mariadb",
        "mongodb",
        "redis",
        "rediss",
        "valkey",
        "amqp",
        "amqps",
        "mssql",
        "sqlserver",
        "oracle",
        "cockroachdb",
        "cockroach",
        "clickhouse",
        "couchdb",
        "couchbase",
        "neo4j",
        "bolt",
        "snowflake",
        "db2",
        "cassandra",
        "memcached",
        "nats",
        "ldap",
        "ldaps",
        "timescaledb",
        "influxdb",
        "sqlalchemy",
        "jdbc",
        "odbc",
    }
)


def _url_refine(m: re.Match[str]) -> Refined:
    s = _SCHEME_BEFORE_RE.search(m.string, max(0, m.start() - 31), m.start())
    if s is None:
        return None
    a, b = m.span("v")
    if is_placeholder(m.string[a:b]):
        return None
    scheme = s.group(1).lower().split("+", 1)[0]
    return a, b, "database_connection_string" if scheme in _DB_SCHEMES else "password_in_url"


# -- authorization headers --------------------------------------------------------------------------------------

_SCHEME_SEP = r"(?:[ \t]+|%20)"
_WORDS_RE = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")
_USER_PASS_RE = re.compile(r"[\x21-\x7e]+:[\x20-\x7e]*")
_AUTH_SCHEMES_RE = re.compile(
    r"(?i:token|bot|negotiate|ntlm|apikey|api-key|key|ssws|dsn|oauth|sharedkey|sharedaccesssignature|hmac"
    r"|aws4-hmac-sha256|gitlab|otp|pat|secret)"
)
_AUTH_ANCHORS = ("uth", "UTH")


_AUTHORIZATION_TAIL = (
    r"""(?<![A-Za-z0-9].............)\\?["']?[ \t]*[:=][ \t]*\\?["']?"""
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9_\-]*)(?:[ \t]+|%20)(?=[^\s\"'\\,;]))?"
    r"(?P<v>[^\s\"'\\,;]+)"
)
_AUTH_KINDS = {"bearer": "bearer_token", "basic": "basic_auth", "splunk": "splunk_hec_token"}
_UUID_RE = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def _authorization_refine(m: re.Match[str]) -> Refined:
    """``Authorization: <scheme> <credentials>``: the credentials go, the scheme names the kind."""
    a, b = m.span("v")
    b = _strip_unbalanced(m.string[a:b], a, b)
    value = m.string[a:b]
    scheme = m.group("scheme")
    if is_placeholder(value) or _looks_like_code(value):
        return None
    if scheme is None:
        if value.isalpha() and len(value) < 16:
            return None
        return a, b
    kind = _AUTH_KINDS.get(scheme.lower())
    if kind == "splunk_hec_token" and not _UUID_RE.fullmatch(value):
        kind = None
    if kind is not None:
        return a, b, kind
    if not _AUTH_SCHEMES_RE.fullmatch(scheme):
        if _looks_secret(scheme) and not _looks_secret(value):
            return m.span("scheme")
        a = m.start("scheme")
    return a, b


def _bearer_refine(m: re.Match[str]) -> Refined:
    """A ``Bearer`` token outside an ``Authorization`` header must look like a token, not like a word."""
    a, b = m.span("v")
    value = m.string[a:b]
    if is_placeholder(value) or len(value) < 16 or not _looks_secret(value) or _WORDS_RE.fullmatch(value):
        return None
    return a, b


def _basic_refine(m: re.Match[str]) -> Refined:
    """``Basic`` credentials outside an ``Authorization`` header must decode to ``user:password``."""
    a, b = m.span("v")
    value = m.string[a:b]
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (a, b) if _USER_PASS_RE.fullmatch(decoded) else None


# -- CLI passwords ----------------------------------------------------------------------------------------------

_CLI_VALUE = r"""(?:'(?P<q1>[^'\r\n]*)'|"(?P<q2>[^"\\\r\n]*)"|\\"(?P<q3>[^"\\\r\n]*)\\"|(?P<q4>[^\s"'`|;&\\]+))"""
_CLI_REFINE = _first_group_refine("q1", "q2", "q3", "q4")
_CMD_ARGS = r"[^\n|;&]{0,300}?"
_LOGIN_TOOL_RE = re.compile(
    r"(?:^|[^A-Za-z0-9_\-])(?:docker|podman|helm|oras|skopeo|buildah|nerdctl|crane|az|cf|oc)[ \t]+(?:registry[ \t]+)?\Z"
)


def _login_refine(m: re.Match[str]) -> Refined:
    if _LOGIN_TOOL_RE.search(m.string, max(0, m.start() - 40), m.start()) is None:
        return None
    return _CLI_REFINE(m)


# -- private keys -----------------------------------------------------------------------------------------------

_PEM_BODY = r"""(?:(?:[A-Z][A-Za-z0-9]*-)*[A-Z][A-Za-z0-9]*:[^\r\n\\]*+|[A-Za-z0-9+/=]++|\s++|\\++[nrt])++"""
_PEM_RE = (
    r"(?P<begin>-----BEGIN[ A-Z0-9]{0,40}?PRIVATE KEY(?: BLOCK)?-----)(?P<body>" + _PEM_BODY + r")"
    r"(?P<end>-----END[ A-Z0-9]{0,40}?PRIVATE KEY(?: BLOCK)?-----)?"
)
_PEM_MATERIAL_RE = re.compile(r"[A-Za-z0-9+/]{16,}")


def _pem_body_ok(body: str) -> bool:
    return _PEM_MATERIAL_RE.search(body) is not None


def _pem_refine(m: re.Match[str]) -> Refined:
    a, b = m.span("body")
    return (a, b) if _pem_body_ok(m.string[a:b]) else None


_GCP_KEY_RE = (
    r"""private_key(?:\\?["'][ \t]*:[ \t]*\\?["'](?P<pem>-----BEGIN PRIVATE KEY-----(?:[A-Za-z0-9+/=]++|\s++"""
    r"""|\\++[nrt])*+(?:-----END PRIVATE KEY-----(?:\\++n)?)?)|_id\\?["'][ \t]*:[ \t]*\\?["'](?P<id>[0-9a-f]{40})"""
    r"""(?![0-9a-f]))"""
)


def _gcp_refine(m: re.Match[str]) -> Refined:
    if m.group("pem") is not None:
        a, b = m.span("pem")
        return (a, b) if _pem_body_ok(m.string[a:b]) else None
    return m.span("id")


_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"

# -- the built-in rule list -------------------------------------------------------------------------------------

_E = "(?![A-Za-z0-9])"
_E_ = r"(?![A-Za-z0-9_\-])"


def _builtin_rules() -> tuple[RedactionRule, ...]:
    return (
        # 1. structured secrets, removed before anything inside them is looked at
        RedactionRule("gcp_service_account_key", re.compile(_GCP_KEY_RE), anchors=("key",), refine=_gcp_refine),
        RedactionRule("private_key", re.compile(_PEM_RE), anchors=("BEGIN",), refine=_pem_refine),
        _token_rule(
            "jwt",
            r"eyJ(?<![A-Za-z0-9_\-]...)[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}(?:\.[A-Za-z0-9_\-]*){1,3}" + _E_,
            ("yJ",),
        ),
        # 2. token formats
        _token_rule(
            "aws_access_key_id",
            r"A(?:KIA|SIA|BIA|CCA)(?<![A-Za-z0-9]....)[A-Z0-9]{16}" + _E,
            ("AKIA", "ASIA", "ABIA", "ACCA"),
        ),
        _token_rule("gcp_api_key", r"AIza(?<![A-Za-z0-9]....)[A-Za-z0-9_\-]{35}" + _E_, ("AIza",)),
        _token_rule(
            "google_oauth_client_secret",
            r"GOCSPX-(?<![A-Za-z0-9].......)[A-Za-z0-9_\-]{24,40}" + _E_,
            ("GOCSPX-",),
        ),
        _token_rule("google_oauth_token", r"ya29\.(?<![A-Za-z0-9].....)[A-Za-z0-9_\-]{20,}" + _E_, ("ya29.",)),
        _token_rule(
            "github_token",
            r"g(?<![A-Za-z0-9]g)(?:h[pousr]_[A-Za-z0-9]{36,251}" + _E + r"|ithub_pat_[A-Za-z0-9_]{22,250}" + _E + ")",
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        ),
        _token_rule(
            "gitlab_token",
            r"(?:g(?<![A-Za-z0-9]g)l(?:pat|dt|rt|rtr|ptt|soat|cbt|ffct|imt|agent|oas|ft|wt)-|GR1348941)"
            r"[A-Za-z0-9_\-]{20,}(?:\.[A-Za-z0-9_\-]+){0,3}" + _E_,
            (
                "glpat-",
                "gldt-",
                "glrt-",
                "glrtr-",
                "glptt-",
                "glsoat-",
                "glcbt-",
                "glffct-",
                "glimt-",
                "glagent-",
                "gloas-",
                "glft-",
                "glwt-",
                "GR1348941",
            ),
        ),
        RedactionRule(
            "slack_webhook_url",
            re.compile(r"://hooks\.slack\.com/(?:services|workflows|triggers)/(?P<v>[A-Za-z0-9_\-/]{16,})"),
            group="v",
            anchors=("://",),
        ),
        _token_rule(
            "slack_token",
            r"x(?<![A-Za-z0-9]x)(?:ox[abposre]-[A-Za-z0-9\-]{10,}|app-\d-[A-Za-z0-9\-]{10,})" + _E_,
            ("xox", "xapp-"),
        ),
        _token_rule(
            "anthropic_admin_key", r"sk-(?<![A-Za-z0-9]sk-)ant-admin\d{0,3}-[A-Za-z0-9_\-]{20,}" + _E_, ("sk-",)
        ),
        _token_rule(
            "anthropic_api_key", r"sk-(?<![A-Za-z0-9]sk-)ant-[a-z]{2,8}\d{0,3}-[A-Za-z0-9_\-]{20,}" + _E_, ("sk-",)
        ),
        _token_rule(
            "openai_api_key",
            r"sk-(?<![A-Za-z0-9]sk-)(?!ant-)(?:(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{20,}"
            r"|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{32,})" + _E_,
            ("sk-",),
            validator=_has_digit_and_letter,
        ),
        _token_rule("stripe_key", r"[sr]k_(?<![A-Za-z0-9]...)(?:live|test)_[A-Za-z0-9]{16,}" + _E, ("k_",)),
        _token_rule("stripe_key", r"whsec_(?<![A-Za-z0-9]......)[A-Za-z0-9+/=]{24,}" + _E, ("sec",)),
        _token_rule("npm_token", r"npm_(?<![A-Za-z0-9]....)[A-Za-z0-9]{36}" + _E, ("pm_",)),
        _token_rule("pypi_token", r"pypi-(?<![A-Za-z0-9].....)AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{40,}" + _E_, ("pypi-",)),
        _token_rule("twilio_api_key", r"SK(?<![A-Za-z0-9]..)[0-9a-f]{32}" + _E, ("SK",)),
        _token_rule(
            "sendgrid_api_key",
            r"SG\.(?<![A-Za-z0-9]...)[A-Za-z0-9_\-]{16,32}\.[A-Za-z0-9_\-]{16,64}" + _E_,
            ("SG.",),
        ),
        _token_rule("vault_token", r"hv[sbr]\.(?<![A-Za-z0-9]....)[A-Za-z0-9_\-]{24,}" + _E_, ("vs.", "vb.", "vr.")),
        RedactionRule(
            "azure_client_secret",
            re.compile(
                r"Q~(?<=[A-Za-z0-9_~.\-]{3}\dQ~)(?<![A-Za-z0-9_~.\-][A-Za-z0-9_~.\-]{3}\dQ~)"
                r"[A-Za-z0-9_~.\-]{31,34}(?![A-Za-z0-9_~.\-])"
            ),
            anchors=("Q~",),
            refine=_azure_secret_refine,
        ),
        # URL credentials (after the token formats, so a GitHub token used as URL password keeps its kind)
        RedactionRule(
            "password_in_url",
            _URL_CRED_RE,
            anchors=("://",),
            refine=_url_refine,
            kinds=("database_connection_string",),
        ),
        RedactionRule(
            "url_signature",
            re.compile(r"[?&](?:sig|(?:[A-Za-z]+-)*(?:[Ss]ignature|SIGNATURE))=(?P<v>[^&\s\"'#\\<>]{16,})"),
            group="v",
            anchors=("sig=", "Signature=", "signature=", "SIGNATURE="),
        ),
        # 3. context: header schemes, CLI options, assignments
        RedactionRule(
            "npm_token",
            re.compile(r":_authToken[ \t]*=[ \t]*(?P<v>[^\s\"'\\]+)"),
            anchors=_AUTH_ANCHORS,
            refine=_first_group_refine("v"),
        ),
        RedactionRule(
            "authorization_header",
            re.compile(rf"uthorization(?<=[Aa]uthorization){_AUTHORIZATION_TAIL}"),
            anchors=("uth",),
            refine=_authorization_refine,
            kinds=tuple(_AUTH_KINDS.values()),
        ),
        RedactionRule(
            "authorization_header",
            re.compile(rf"UTHORIZATION(?<=AUTHORIZATION){_AUTHORIZATION_TAIL}"),
            anchors=("UTH",),
            refine=_authorization_refine,
            kinds=tuple(_AUTH_KINDS.values()),
        ),
        _token_rule(
            "splunk_hec_token",
            rf"(?:Splunk|SPLUNK)(?<![A-Za-z0-9]......){_SCHEME_SEP}(?P<v>{_UUID})" + _E,
            ("Splunk", "SPLUNK"),
            group="v",
        ),
        RedactionRule(
            "bearer_token",
            re.compile(rf"(?:Bearer|BEARER)(?<![A-Za-z0-9]......){_SCHEME_SEP}(?P<v>[A-Za-z0-9\-._~+/]+=*)"),
            anchors=("Bearer", "BEARER"),
            refine=_bearer_refine,
        ),
        RedactionRule(
            "basic_auth",
            re.compile(
                rf"(?:Basic|BASIC)(?<![A-Za-z0-9].....){_SCHEME_SEP}(?P<v>[A-Za-z0-9+/]{{4,}}={{0,2}})"
                r"(?![A-Za-z0-9+/=])"
            ),
            anchors=("Basic", "BASIC"),
            refine=_basic_refine,
        ),
        RedactionRule(
            "basic_auth",
            re.compile(
                rf"c(?<![A-Za-z0-9_\-]c)url(?![A-Za-z0-9_\-]){_CMD_ARGS}[ \t](?:-u|--user)(?:[ \t]*|=)"
                r"""(?:\\?["'])?[^\s:'"\\]*:(?P<v>[^\s'"\\]+)"""
            ),
            anchors=("url",),
            refine=_first_group_refine("v"),
        ),
        RedactionRule(
            "password",
            re.compile(
                r"m(?<![A-Za-z0-9_\-]m)ysql(?:dump|admin|import|sh)?(?![A-Za-z0-9_\-])"
                rf"{_CMD_ARGS}[ \t]-p{_CLI_VALUE}"
            ),
            anchors=("ysql",),
            refine=_CLI_REFINE,
        ),
        RedactionRule(
            "password",
            re.compile(rf"s(?<![A-Za-z0-9_\-]s)shpass[ \t]+-p[ \t]*{_CLI_VALUE}"),
            anchors=("pass",),
            refine=_CLI_REFINE,
        ),
        RedactionRule(
            "password",
            re.compile(rf"login[ \t](?:{_CMD_ARGS}[ \t])?(?:-p|--password)(?:[ \t]+|=){_CLI_VALUE}"),
            anchors=("gin ", "gin\t"),
            refine=_login_refine,
        ),
        RedactionRule(
            "generic_secret",
            _ASSIGNMENT_RE,
            anchors=_ASSIGNMENT_ANCHORS,
            refine=_assignment_refine,
            kinds=tuple(k.kind for k in _ASSIGNMENT_KINDS),
        ),
    )


BUILTIN_RULES: tuple[RedactionRule, ...] = _builtin_rules()
BUILTIN_KINDS: tuple[str, ...] = tuple(dict.fromkeys(k for r in BUILTIN_RULES for k in (r.kind, *r.kinds)))
"""Every kind the built-in detectors report, in rule order."""


# -- the anchor gate --------------------------------------------------------------------------------------------


class _Gate:
    """Finds which rules can match a string, with one precompiled regex of all anchors.

    The regex is an alternation of the anchors grouped by first character, so the engine stops only at
    characters that start an anchor. ``findall`` does not report an anchor that starts inside another found
    anchor, so each anchor's mask also enables the rules of every anchor that can overlap its end.
    """

    __slots__ = ("masks", "pattern")

    def __init__(self, rules: Sequence[RedactionRule]) -> None:
        own: dict[str, int] = {}
        for i, rule in enumerate(rules):
            for anchor in rule.anchors:
                if len(anchor) < 2:
                    raise ValueError(f"anchor {anchor!r} of rule {rule.kind} must be at least two characters")
                own[anchor] = own.get(anchor, 0) | (1 << i)
        anchors = sorted(own)
        for x in anchors:
            for y in anchors:
                if x != y and y.startswith(x):
                    raise ValueError(f"anchor {x!r} is a prefix of anchor {y!r}")
        self.masks = dict(own)
        for x in anchors:
            for y in anchors:
                if x != y and (y in x[1:] or any(x.endswith(y[:k]) for k in range(1, len(y)))):
                    self.masks[x] |= own[y]
        by_first: dict[str, list[str]] = {}
        for anchor in anchors:
            by_first.setdefault(anchor[0], []).append(re.escape(anchor[1:]))
        branches = [f"{re.escape(first)}(?:{'|'.join(rests)})" for first, rests in by_first.items()]
        self.pattern: re.Pattern[str] | None = re.compile("|".join(branches)) if branches else None

    def mask(self, text: str) -> int:
        """Bit mask (by rule index) of the rules whose anchors occur in ``text``."""
        if self.pattern is None or self.pattern.search(text) is None:
            return 0
        masks = self.masks
        mask = 0
        for anchor in set(self.pattern.findall(text)):
            mask |= masks[anchor]
        return mask


@functools.cache
def _builtin_gate() -> _Gate:
    return _Gate(BUILTIN_RULES)


# -- dict values judged by their key ----------------------------------------------------------------------------

_AUTH_VALUE_RE = re.compile(
    r"(?P<scheme>(?i:bearer|basic|splunk|token|bot|apikey|ssws|negotiate|ntlm))[ \t]+(?P<v>\S.*)", re.DOTALL
)
_KEY_NAME_KINDS: tuple[_NamedKind, ...] = (
    _NamedKind(
        "gcp_service_account_key",
        re.compile(r"(?i)(?:^|[^a-z0-9])private_key_id\Z"),
        _Profile(min_len=40, value_re=re.compile(r"[0-9a-f]{40}")),
    ),
    *(_NamedKind(k.kind, k.name_re, dataclasses.replace(k.profile, prose=False)) for k in _ASSIGNMENT_KINDS),
)
_AUTHORIZATION_KEY_RE = re.compile(r"(?i)(?:^|[^a-z0-9])authorization\Z")
_KEY_CACHE_LIMIT = 4096
_MIN_SECRET_LEN = 8
_CLEAN_CACHE_MAX_LEN = 64
_CLEAN_CACHE_SIZE = 50_000
_MAX_PASSES = 4


# ---------------------------------------------------------------------------------------------------------------
# The redactor


def _rename_keys(value: dict[Any, Any], renamed: dict[Any, str]) -> dict[Any, Any]:
    """``value`` with the keys in ``renamed`` replaced, in the same order; a redacted key that meets another key
    gets a ``#2``, ``#3``... suffix so that no value is lost."""
    out: dict[Any, Any] = {}
    for k, v in value.items():
        nk = renamed.get(k, k)
        if nk in out:
            n = 2
            while f"{nk}#{n}" in out or f"{nk}#{n}" in value:
                n += 1
            nk = f"{nk}#{n}"
        out[nk] = v
    return out


class Redactor:
    """Applies the configured custom rules, then the built-in detectors.

    ``counts`` accumulates the number of redactions per kind over the redactor's lifetime; ``on_match`` (if
    given) is called with the kind of each redaction, e.g. to increment ``ccbridge_redactions_total{kind=...}``.
    Custom rules run first, so their kind wins for text that a built-in would also match. ``extra_rules`` are
    appended to the custom rules (for programmatic use).
    """

    def __init__(
        self,
        config: RedactionConfig | None = None,
        *,
        on_match: Callable[[str], None] | None = None,
        extra_rules: Sequence[RedactionRule] = (),
    ) -> None:
        config = config if config is not None else RedactionConfig()
        config.validate("redaction")
        self.enabled = config.enabled
        self.on_match = on_match
        self.counts: dict[str, int] = {}
        custom = [RedactionRule(c.name, re.compile(c.pattern), group=c.replace_group) for c in config.custom_rules]
        custom.extend(extra_rules)
        self._always = tuple(r for r in custom if not r.anchors)
        self._rules = (*(r for r in custom if r.anchors), *BUILTIN_RULES)
        self._gate = _builtin_gate() if len(self._rules) == len(BUILTIN_RULES) else _Gate(self._rules)
        pattern = self._gate.pattern
        self._quick = pattern.search if pattern is not None and not self._always else None
        self._key_cache: dict[str, _NamedKind | str | None] = {}
        self._clean: set[str] = set()  # recent values the gate found no anchor in (ids, e-mails, models repeat)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind this redactor can report (to pre-create metric series)."""
        return tuple(dict.fromkeys(k for r in (*self._always, *self._rules) for k in (r.kind, *r.kinds)))

    def _hit(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.on_match is not None:
            self.on_match(kind)

    def _apply(self, rule: RedactionRule, text: str) -> str:
        spans = rule.spans(text)
        if not spans:
            return text
        pieces: list[str] = []
        last = 0
        for a, b, kind in spans:
            pieces.append(text[last:a])
            pieces.append(marker(kind))
            last = b
            self._hit(kind)
        pieces.append(text[last:])
        return "".join(pieces)

    def redact_str(self, text: str) -> str:
        """``text`` with every detected secret replaced; the same object when nothing was found.

        A redaction can change the context of its neighbours (the text after a value now ends differently), so
        when something was replaced the detectors run again on the result, until nothing changes: redacting the
        output again is a no-op.
        """
        if not self.enabled:
            return text
        if self._quick is not None and (len(text) < _MIN_SECRET_LEN or self._quick(text) is None):
            return text
        out = self._pass(text)
        for _ in range(_MAX_PASSES - 1):
            if out is text:
                break
            text, out = out, self._pass(out)
        return out

    def _pass(self, text: str) -> str:
        out = text
        for rule in self._always:
            out = self._apply(rule, out)
        if len(out) < _MIN_SECRET_LEN:
            return out
        mask = self._gate.mask(out)
        rules = self._rules
        i = 0
        while mask:
            if mask & 1:
                out = self._apply(rules[i], out)
            mask >>= 1
            i += 1
        return out

    def _key_kind(self, key: str) -> _NamedKind | str | None:
        try:
            return self._key_cache[key]
        except KeyError:
            pass
        found: _NamedKind | str | None = None
        if _AUTHORIZATION_KEY_RE.search(key):
            found = "authorization_header"
        else:
            for entry in _KEY_NAME_KINDS:
                if entry.name_re.search(key):
                    found = entry
                    break
        if len(self._key_cache) < _KEY_CACHE_LIMIT:
            self._key_cache[key] = found
        return found

    def _redact_by_key(self, key: str, value: str) -> str:
        """A dict value redacted as a whole because its key names a secret (applied after the detectors, to what
        they left, so that redacting the output again is a no-op)."""
        found = self._key_kind(key)
        if found is None:
            return value
        if isinstance(found, str):
            m = _AUTH_VALUE_RE.fullmatch(value.strip())
            if m is not None:
                if is_placeholder(m.group("v")):
                    return value
                kind = _AUTH_KINDS.get(m.group("scheme").lower(), found)
                self._hit(kind)
                return f"{m.group('scheme')} {marker(kind)}"
            if len(value) < 4 or is_placeholder(value):
                return value
            self._hit(found)
            return marker(found)
        for entry in _KEY_NAME_KINDS[_KEY_NAME_KINDS.index(found) :]:
            if entry.name_re.search(key) and _value_ok(value, entry.profile):
                self._hit(entry.kind)
                return marker(entry.kind)
        return value

    def redact(self, value: Any) -> Any:
        """Redact every string in ``value`` (str, dict, list, tuple, nested); other values pass unchanged.

        Dict keys are redacted like values (a secret in a key becomes its marker, keeping the key's value); a
        string value whose key names a secret (``password``, ``api_key``,
        ``Authorization``, ...) is redacted as a whole when it passes the same value checks as an assignment.
        Containers are copied only where something changed (as plain dict, list or tuple); unchanged parts are
        returned as the same objects.
        """
        if not self.enabled:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        t = type(value)
        if t is str:
            return self.redact_str(value)
        if t is dict:
            return self._walk_dict(value)
        if t is list or t is tuple:
            return self._walk_seq(value)
        if isinstance(value, str):
            return self.redact_str(value)
        if isinstance(value, dict):
            return self._walk_dict(value)
        if isinstance(value, list | tuple):
            return self._walk_seq(value)
        return value

    def _walk_dict(self, value: dict[Any, Any]) -> dict[Any, Any]:
        out: dict[Any, Any] | None = None
        renamed: list[tuple[Any, str]] | None = None
        key_cache = self._key_cache
        redact_str = self.redact_str
        quick = self._quick
        clean = self._clean
        for k, v in value.items():
            # keys are attacker-chosen text too: a secret in a key is redacted like one in a value
            if type(k) is str and len(k) >= _MIN_SECRET_LEN and k not in clean:
                if quick is not None and quick(k) is None:
                    if len(k) <= _CLEAN_CACHE_MAX_LEN:
                        if len(clean) >= _CLEAN_CACHE_SIZE:
                            clean.clear()
                        clean.add(k)
                else:
                    nk = redact_str(k)
                    if nk is not k and nk != k:
                        if renamed is None:
                            renamed = []
                        renamed.append((k, nk))
            t = type(v)
            if t is str:
                # redact_str's gate, inlined: most attribute values are short, seen before, or contain no anchor
                if quick is not None and (len(v) < _MIN_SECRET_LEN or v in clean):
                    nv = v
                elif quick is not None and quick(v) is None:
                    nv = v
                    if len(v) <= _CLEAN_CACHE_MAX_LEN:
                        if len(clean) >= _CLEAN_CACHE_SIZE:
                            clean.clear()
                        clean.add(v)
                else:
                    nv = redact_str(v)
                if nv and type(k) is str and key_cache.get(k, True) is not None:
                    nv = self._redact_by_key(k, nv)
            elif t is int or t is float or t is bool or v is None:
                continue
            else:
                nv = self._walk(v)
            if nv is not v:
                if out is None:
                    out = dict(value)
                out[k] = nv
        result = value if out is None else out
        if renamed is not None:
            result = _rename_keys(result, dict(renamed))
        return result

    def _walk_seq(self, value: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
        items: list[Any] | None = None
        redact_str = self.redact_str
        for i, v in enumerate(value):
            nv = redact_str(v) if type(v) is str else self._walk(v)
            if nv is not v:
                if items is None:
                    items = list(value)
                items[i] = nv
        if items is None:
            return value
        return tuple(items) if isinstance(value, tuple) else items
