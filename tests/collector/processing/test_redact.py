"""Secret redaction (``collector.processing.redact``): the corpus, structure walking, configuration, invariants.

The corpus (``tests/fixtures/secrets_corpus.yaml``) holds realistic positives per kind and realistic negatives;
every value in it is fabricated.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.config import ConfigError, build, validate_tree
from collector.processing.redact import (
    BUILTIN_KINDS,
    BUILTIN_RULES,
    CustomRuleConfig,
    RedactionConfig,
    RedactionRule,
    Redactor,
    is_placeholder,
    marker,
    shannon_entropy,
)

TESTS = Path(__file__).resolve().parents[2]
CORPUS = yaml.safe_load((TESTS / "fixtures" / "secrets_corpus.yaml").read_text(encoding="utf-8"))
POSITIVES: list[dict[str, Any]] = CORPUS["positives"]
NEGATIVES: list[str] = CORPUS["negatives"]
FIXTURE_LOGS = sorted((TESTS / "fixtures" / "claude-code").glob("*/otlp/log_records.jsonl"))
MARKER_RE = re.compile(r"\[REDACTED:([A-Za-z0-9_.\-]+)\]")


def _pid(sample: dict[str, Any]) -> str:
    return f"{sample['kind']}:{sample['text'][:40]}"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


# ---------------------------------------------------------------------------------------------------------------
# The corpus


def test_corpus_covers_every_builtin_kind() -> None:
    covered = {p["kind"] for p in POSITIVES}
    assert covered == set(BUILTIN_KINDS)
    assert len(BUILTIN_KINDS) >= 20


def test_corpus_samples_are_well_formed() -> None:
    for p in POSITIVES:
        assert p["secrets"], p
        for secret in p["secrets"]:
            assert secret in p["text"], (p["kind"], secret)
        for kept in p.get("keep", []):
            assert kept in p["text"], (p["kind"], kept)
    assert len(set(NEGATIVES)) == len(NEGATIVES)


@pytest.mark.parametrize("sample", POSITIVES, ids=_pid)
def test_positive_is_redacted_with_its_kind(sample: dict[str, Any]) -> None:
    r = Redactor()
    out = r.redact_str(sample["text"])
    assert marker(sample["kind"]) in out
    for secret in sample["secrets"]:
        assert secret not in out
    for kept in sample.get("keep", []):
        assert kept in out
    reported = set(r.counts)
    assert sample["kind"] in reported
    assert reported <= {sample["kind"], *sample.get("also", [])}
    assert sum(r.counts.values()) == len(MARKER_RE.findall(out))


@pytest.mark.parametrize("sample", POSITIVES, ids=_pid)
def test_positive_is_idempotent(sample: dict[str, Any]) -> None:
    r = Redactor()
    once = r.redact_str(sample["text"])
    counts = dict(r.counts)
    assert r.redact_str(once) == once
    assert r.counts == counts


@pytest.mark.parametrize("sample", POSITIVES, ids=_pid)
def test_positive_inside_a_record_is_redacted(sample: dict[str, Any]) -> None:
    r = Redactor()
    record = {"attributes": {"event.name": "tool_result", "tool_input": sample["text"], "n": 3}}
    out = r.redact(record)
    dumped = json.dumps(out)
    for secret in sample["secrets"]:
        assert secret not in out["attributes"]["tool_input"]
        assert json.dumps(secret)[1:-1] not in dumped
    assert out["attributes"]["n"] == 3


@pytest.mark.parametrize("text", NEGATIVES, ids=lambda t: t[:50])
def test_negative_is_untouched(redactor: Redactor, text: str) -> None:
    out = redactor.redact_str(text)
    assert out == text
    assert out is text
    assert redactor.counts == {}


@pytest.mark.parametrize("path", FIXTURE_LOGS, ids=lambda p: p.parent.parent.name)
def test_real_claude_code_records_are_untouched(path: Path) -> None:
    r = Redactor()
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        assert r.redact(record) is record
    assert r.counts == {}


def test_all_negatives_in_one_structure_come_back_as_the_same_object(redactor: Redactor) -> None:
    doc = {"items": list(NEGATIVES), "pairs": tuple(NEGATIVES[:5]), "nested": {"x": [{"y": NEGATIVES[0]}]}}
    assert redactor.redact(doc) is doc


# ---------------------------------------------------------------------------------------------------------------
# Assignment forms keep the left side


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2", "password=[REDACTED:password]"),
        ("password = 'hunter2'", "password = '[REDACTED:password]'"),
        ('"password": "hunter2"', '"password": "[REDACTED:password]"'),
        ('{\\"password\\":\\"hunter2\\"}', '{\\"password\\":\\"[REDACTED:password]\\"}'),
        ("export DB_PASSWORD=hunter2; ./run", "export DB_PASSWORD=[REDACTED:password]; ./run"),
        ("--password hunter2 --host db", "--password [REDACTED:password] --host db"),
        ("--password=hunter2", "--password=[REDACTED:password]"),
        ("'password' => 'hunter2',", "'password' => '[REDACTED:password]',"),
        ('password := "hunter2"', 'password := "[REDACTED:password]"'),
        ("db_pass: hunter2", "db_pass: [REDACTED:password]"),
        ("MYSQL_PWD=hunter2", "MYSQL_PWD=[REDACTED:password]"),
        ("$env:DB_PASSWORD = 'hunter2'", "$env:DB_PASSWORD = '[REDACTED:password]'"),
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer [REDACTED:bearer_token]"),
        ("authorization: bearer abc123", "authorization: bearer [REDACTED:bearer_token]"),
        ("export SECRET_KEY=Zx81_kq0-PLm3", "export SECRET_KEY=[REDACTED:generic_secret]"),
        ('"token": "abcd1234efgh5678"', '"token": "[REDACTED:generic_secret]"'),
        ("apiKey: 'f00dFace1234beef'", "apiKey: '[REDACTED:generic_secret]'"),
        ("https://bob:pa55word@example.com/x", "https://bob:[REDACTED:password_in_url]@example.com/x"),
    ],
)
def test_assignment_keeps_the_key(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact_str(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "token=abc",
        "secret=changeme",
        "api_key=12345678901234",
        "private_key: ./keys/deploy.pem",
        "bypass=hunter2",
        "compass: north-by-northwest",
        "password: required",
        "password = input('Password: ')",
        "password=self.password",
        "password = request.form['password']",
        "token=tokens[0]",
        "f(password=pw, user=u)",
        "{ password: hashedPassword }",
        "Authorization: required",
        "authorization: $AUTH_HEADER",
    ],
)
def test_assignment_values_that_are_not_secrets(redactor: Redactor, text: str) -> None:
    assert redactor.redact_str(text) == text


# ---------------------------------------------------------------------------------------------------------------
# Structures


def test_nested_structures_are_walked(redactor: Redactor) -> None:
    token = "ghp_FAKEexample0a493af2551398c22cc36c3aa"
    record = {
        "resource": {"service.name": "claude-code"},
        "attributes": {
            "tool_input": json.dumps({"command": f"GITHUB_TOKEN={token} gh pr list"}),
            "list": ["plain", f"token {token}", ("tuple", f"x {token}"), 42, None, True, 1.5, b"bytes"],
            "deep": {"a": {"b": {"c": [f"{token}"]}}},
            token: "a secret in a key is redacted, its value kept",
        },
    }
    out = redactor.redact(record)
    assert token not in json.dumps(out["attributes"]["tool_input"])
    assert out["attributes"]["list"][0] == "plain"
    assert out["attributes"]["list"][1] == "token [REDACTED:github_token]"
    assert out["attributes"]["list"][2] == ("tuple", "x [REDACTED:github_token]")
    assert isinstance(out["attributes"]["list"][2], tuple)
    assert out["attributes"]["list"][3:] == [42, None, True, 1.5, b"bytes"]
    assert out["attributes"]["deep"]["a"]["b"]["c"] == ["[REDACTED:github_token]"]
    assert token not in out["attributes"]
    assert out["attributes"]["[REDACTED:github_token]"] == "a secret in a key is redacted, its value kept"
    assert list(out["attributes"])[-1] == "[REDACTED:github_token]"  # same place in the mapping
    assert redactor.counts == {"github_token": 5}


def test_only_changed_containers_are_copied(redactor: Redactor) -> None:
    clean = {"a": ["x", "y"], "b": {"c": "d"}}
    record = {"clean": clean, "dirty": ["keep", "password=hunter2"], "n": 1}
    out = redactor.redact(record)
    assert out is not record
    assert out["clean"] is clean
    assert out["dirty"] == ["keep", "password=[REDACTED:password]"]
    assert record["dirty"] == ["keep", "password=hunter2"]


def test_non_string_values_pass_unchanged(redactor: Redactor) -> None:
    for value in (None, 0, 1.25, True, b"password=hunter2", {1, 2}):
        assert redactor.redact(value) is value


def test_str_subclasses_and_dict_subclasses_are_walked(redactor: Redactor) -> None:
    class Text(str):
        pass

    class Attrs(dict):  # type: ignore[type-arg]
        pass

    out = redactor.redact(Attrs(cmd=Text("export TOKEN=ghp_FAKEexample0a493af2551398c22cc36c3aa")))
    assert out == {"cmd": "export TOKEN=[REDACTED:github_token]"}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("password", "hunter2", "[REDACTED:password]"),
        ("DB_PASSWORD", "correct horse battery staple", "[REDACTED:password]"),
        ("api_key", "f00dFace1234beef", "[REDACTED:generic_secret]"),
        ("x-api-key", "f00dFace1234beef", "[REDACTED:generic_secret]"),
        ("client_secret", "FakeClientSecret-42", "[REDACTED:generic_secret]"),
        ("aws_secret_access_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "[REDACTED:aws_secret_access_key]"),
        ("private_key_id", "3bf41fc5e52d0d1ab4708bb2901775d83e11bc91", "[REDACTED:gcp_service_account_key]"),
        ("http.request.header.authorization", "Bearer test-token", "Bearer [REDACTED:bearer_token]"),
        ("Authorization", "Splunk 6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b", "Splunk [REDACTED:splunk_hec_token]"),
        ("authorization", "opaque-value-123", "[REDACTED:authorization_header]"),
    ],
)
def test_dict_values_are_judged_by_their_key(redactor: Redactor, key: str, value: str, expected: str) -> None:
    last_word = value.rsplit(" ", maxsplit=1)[-1]
    out = redactor.redact({key: value, "description": last_word})
    assert out[key] == expected
    assert out["description"] == last_word


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("password", "<REDACTED>"),
        ("password", "${DB_PASSWORD}"),
        ("password", "********"),
        ("password", ""),
        ("token_count", "1234"),
        ("input_tokens", "2579"),
        ("max_tokens", "4096"),
        ("token_usage", "high"),
        ("session.id", "d2369f49-d11c-4322-b8a2-818d9c23de10"),
        ("prompt_length", "47"),
        ("api_key", "changeme"),
        ("key", "f00dFace1234beef"),
        ("cache_key", "v1-deps-f00dFace1234beef"),
        ("secret_count", "3"),
        ("prompt", "<REDACTED>"),
    ],
)
def test_dict_values_with_harmless_keys_or_placeholders(redactor: Redactor, key: str, value: str) -> None:
    record = {key: value}
    assert redactor.redact(record) is record


def test_keyed_values_leave_non_strings_alone(redactor: Redactor) -> None:
    record = {"password": 1234, "token": None, "api_key": ["f00dFace1234beef"]}
    assert redactor.redact(record) is record


# ---------------------------------------------------------------------------------------------------------------
# Counts and hooks


def test_counts_per_kind_accumulate(redactor: Redactor) -> None:
    redactor.redact_str("AKIAIOSFODNN7EXAMPLE and ASIAEXAMPLEFAKE0TEMP")
    redactor.redact({"cmd": "password=hunter2", "list": ["password=hunter3"]})
    assert redactor.counts == {"aws_access_key_id": 2, "password": 2}


def test_on_match_hook_receives_each_kind() -> None:
    seen: list[str] = []
    r = Redactor(on_match=seen.append)
    r.redact_str("password=hunter2 token=ghp_FAKEexample0a493af2551398c22cc36c3aa")
    assert sorted(seen) == ["github_token", "password"]
    assert r.counts == {"github_token": 1, "password": 1}


def test_kinds_lists_builtins_and_custom() -> None:
    r = Redactor(RedactionConfig(custom_rules=[CustomRuleConfig(name="acme_token", pattern=r"acme_[0-9a-f]{16}")]))
    assert r.kinds[0] == "acme_token"
    assert set(BUILTIN_KINDS) <= set(r.kinds)
    assert len(set(BUILTIN_KINDS)) == len(BUILTIN_KINDS)


# ---------------------------------------------------------------------------------------------------------------
# Configuration


def test_custom_rules_from_config() -> None:
    cfg = build(
        RedactionConfig,
        {
            "custom_rules": [
                {"name": "acme_token", "pattern": r"\bacme_[0-9a-f]{16}\b"},
                {"name": "employee_id", "pattern": r"emp-id: (E\d{6})", "replace_group": 1},
            ]
        },
        "redaction",
    )
    validate_tree(cfg, "redaction")
    assert cfg.custom_rules[1] == CustomRuleConfig(name="employee_id", pattern=r"emp-id: (E\d{6})", replace_group=1)
    r = Redactor(cfg)
    out = r.redact_str("use acme_0123456789abcdef for emp-id: E123456")
    assert out == "use [REDACTED:acme_token] for emp-id: [REDACTED:employee_id]"
    assert r.counts == {"acme_token": 1, "employee_id": 1}
    assert r.redact_str(out) == out


def test_custom_rule_runs_before_builtins() -> None:
    r = Redactor(RedactionConfig(custom_rules=[CustomRuleConfig(name="ci_github", pattern=r"ghp_[A-Za-z0-9]{36}")]))
    assert r.redact_str("t=ghp_FAKEexample0a493af2551398c22cc36c3aa") == "t=[REDACTED:ci_github]"


def test_custom_rule_does_not_touch_markers() -> None:
    r = Redactor(RedactionConfig(custom_rules=[CustomRuleConfig(name="caps", pattern=r"[A-Z]{6,}")]))
    once = r.redact_str("password=hunter2 and SHOUTING")
    assert once == "password=[REDACTED:password] and [REDACTED:caps]"
    assert r.redact_str(once) == once


def test_disabled_redactor_changes_nothing() -> None:
    r = Redactor(RedactionConfig(enabled=False, custom_rules=[CustomRuleConfig(name="x", pattern="hunter")]))
    record = {"cmd": "password=hunter2 AKIAIOSFODNN7EXAMPLE"}
    assert r.redact(record) is record
    assert r.redact_str("password=hunter2") == "password=hunter2"
    assert r.counts == {}


def test_config_defaults() -> None:
    cfg = RedactionConfig()
    assert cfg.enabled is True
    assert cfg.custom_rules == []
    cfg.validate("redaction")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.enabled = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"name": "bad", "pattern": "acme_[0-9"}, r"^redaction\.custom_rules\[1\]\.pattern: invalid regular expr"),
        ({"name": "", "pattern": "x+"}, r"^redaction\.custom_rules\[1\]\.name: must not be empty"),
        ({"name": "has space", "pattern": "x+"}, r"^redaction\.custom_rules\[1\]\.name: "),
        ({"name": "empty", "pattern": "x*"}, r"^redaction\.custom_rules\[1\]\.pattern: must not match the empty"),
        ({"name": "nopattern", "pattern": ""}, r"^redaction\.custom_rules\[1\]\.pattern: must not be empty"),
        ({"name": "grp", "pattern": "(a)b", "replace_group": 2}, r"^redaction\.custom_rules\[1\]\.replace_group: "),
    ],
)
def test_invalid_custom_rule_names_its_path(rule: dict[str, Any], message: str) -> None:
    cfg = build(RedactionConfig, {"custom_rules": [{"name": "ok", "pattern": "ok_[0-9]+"}, rule]}, "redaction")
    with pytest.raises(ConfigError, match=message):
        validate_tree(cfg, "redaction")
    with pytest.raises(ConfigError, match=message):
        Redactor(cfg)


def test_unknown_custom_rule_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"redaction\.custom_rules\[0\]\.regex: unknown key"):
        build(RedactionConfig, {"custom_rules": [{"name": "x", "regex": "y"}]}, "redaction")


# ---------------------------------------------------------------------------------------------------------------
# Rules and helpers


def test_rule_with_validator_and_entropy() -> None:
    rule = RedactionRule(
        "ticket_secret",
        re.compile(r"tkt_([A-Za-z0-9]{12,})"),
        group=1,
        validator=lambda v: not v.startswith("test"),
        min_entropy=3.0,
    )
    r = Redactor(extra_rules=[rule])
    assert r.redact_str("tkt_Zq81mX0pLk3v") == "tkt_[REDACTED:ticket_secret]"
    assert r.redact_str("tkt_testZq81mX0pLk3v") == "tkt_testZq81mX0pLk3v"
    assert r.redact_str("tkt_aaaaaaaaaaaaaa") == "tkt_aaaaaaaaaaaaaa"
    assert rule.spans("x tkt_Zq81mX0pLk3v") == [(6, 18, "ticket_secret")]


def test_builtin_rules_have_anchors_and_stable_kinds() -> None:
    for rule in BUILTIN_RULES:
        assert rule.anchors, rule.kind
        assert re.fullmatch(r"[a-z0-9_]+", rule.kind)


def test_shannon_entropy() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)
    assert shannon_entropy("0123456789abcdef") == pytest.approx(4.0)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "<REDACTED>",
        "${PASSWORD}",
        "$DB_PASSWORD",
        "********",
        "xxxxxxxx",
        "{{ .Values.pw }}",
        "%PASS%",
        "[REDACTED:password]",
        "null",
        "None",
        "your-api-key-here",
        "$(pass show db)",
        "${{ secrets.TOKEN }}",
    ],
)
def test_placeholders(value: str) -> None:
    assert is_placeholder(value)


@pytest.mark.parametrize("value", ["hunter2", "Tr0ub4dor&3", "$ecretP4ss", "changeme", "abc8Q~xyz"])
def test_not_placeholders(value: str) -> None:
    assert not is_placeholder(value)


def test_pem_block_in_json_string_is_removed_but_framing_kept(redactor: Redactor) -> None:
    body = "MIIEowIBAAKCAQEAFAKEexampleRSAkeyMaterial0123456789abcdefABCD"
    text = json.dumps({"content": f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n{body}\n-----END RSA PRIVATE KEY-----\n"})
    out = redactor.redact_str(text)
    assert body not in out
    assert "-----BEGIN RSA PRIVATE KEY-----[REDACTED:private_key]-----END RSA PRIVATE KEY-----" in out
    assert json.loads(out)["content"].endswith("-----\n")


def test_secret_in_large_tool_input(redactor: Redactor) -> None:
    handler = "def handler_{0}(event, ctx):\n    return process(event['key_{0}'], token=None)"
    code = "\n".join(handler.format(i) for i in range(60))
    text = json.dumps({"file_path": "/srv/app/handlers.py", "content": code + "\nAPI_TOKEN = 'Zq81mX0pLk3vB7nW'\n"})
    assert len(text) > 4000
    out = redactor.redact_str(text)
    assert "Zq81mX0pLk3vB7nW" not in out
    assert out.count("[REDACTED:") == 1
    assert redactor.counts == {"generic_secret": 1}


def test_long_values_are_redacted_whole(redactor: Redactor) -> None:
    value = "".join(f"{i:04x}Zq81mX0p" for i in range(700))
    assert len(value) > 8000
    out = redactor.redact_str(f"export API_TOKEN={value} && run")
    assert out == "export API_TOKEN=[REDACTED:generic_secret] && run"


def test_redaction_that_changes_context_is_settled_in_one_call(redactor: Redactor) -> None:
    text = "Authorization: Basic AccountKey=AccountKey="
    once = redactor.redact_str(text)
    assert redactor.redact_str(once) == once


# ---------------------------------------------------------------------------------------------------------------
# Properties

CLEAN_TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,!?", max_size=300)
SECRETISH_TEXT = st.lists(
    st.sampled_from(
        [
            *"aAbBkKpPsSeEyYJ0123456789 =:\"'-_./@\\~Q+%\n",
            "password",
            "token",
            "secret",
            "api_key",
            "Bearer ",
            "Basic ",
            "AKIA",
            "://",
            "-----BEGIN ",
            "eyJ",
            "[REDACTED:x]",
            "ghp_",
            "sk-",
            "Authorization: ",
            "PRIVATE KEY-----",
            "Splunk ",
            "hunter2",
            "FAKEexample0123456789",
            "ant-api03-",
        ]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CLEAN_TEXT)
def test_clean_text_is_never_changed(text: str) -> None:
    assert Redactor().redact_str(text) == text


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_redact_never_raises_and_is_idempotent_on_any_text(text: str) -> None:
    r = Redactor()
    once = r.redact_str(text)
    assert isinstance(once, str)
    assert r.redact_str(once) == once


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SECRETISH_TEXT)
def test_redact_is_idempotent_on_secret_looking_text(text: str) -> None:
    r = Redactor()
    once = r.redact_str(text)
    counts = dict(r.counts)
    assert r.redact_str(once) == once
    assert r.counts == counts
    assert sum(counts.values()) == len(MARKER_RE.findall(once)) - len(MARKER_RE.findall(text))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.integers() | st.booleans() | SECRETISH_TEXT,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.sampled_from(["a", "password", "token_count", "cmd"]), children, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_redact_on_structures_matches_redact_str(value: Any) -> None:
    r = Redactor()
    out = r.redact(value)

    def strings(v: Any) -> list[str]:
        if isinstance(v, str):
            return [v]
        if isinstance(v, dict):
            return [s for x in v.values() for s in strings(x)]
        if isinstance(v, list | tuple):
            return [s for x in v for s in strings(x)]
        return []

    assert len(strings(out)) == len(strings(value))
    assert r.redact(out) == out


def test_values_remembered_as_clean_are_still_judged_by_their_key(redactor: Redactor) -> None:
    value = "Zq8vR2mK9pLx4Tw7"
    assert redactor.redact({"note": value}) == {"note": value}  # no anchor: remembered as clean
    assert value in redactor._clean
    assert redactor.redact({"db_password": value}) == {"db_password": "[REDACTED:password]"}
    assert redactor.redact({"note": value}) == {"note": value}


def test_the_clean_value_cache_is_bounded_and_skips_long_values(redactor: Redactor, monkeypatch) -> None:
    import collector.processing.redact as module

    monkeypatch.setattr(module, "_CLEAN_CACHE_SIZE", 10)
    for i in range(25):
        redactor.redact({"k": f"value-number-{i:04d}"})
        assert len(redactor._clean) <= 10
    redactor.redact({"k": "x" * 65})
    assert "x" * 65 not in redactor._clean


def test_a_value_under_a_secret_key_is_judged_after_the_detectors(redactor: Redactor) -> None:
    once = redactor.redact({"password": "Authorization: 0"})  # found by hypothesis: the detector redacted part of it
    assert redactor.redact(once) == once
    assert once == {"password": "[REDACTED:password]"}
