"""The deployment artifacts through scripts/check-deploy's checks: each check passes on the real files and fails,
naming the problem, on a deliberately broken copy.

The full builder replay (``pip install .`` into a fresh venv, ~15 s) runs in ``make check-deploy`` only; here the
replay machinery runs on a small project, and the container config plus the HEALTHCHECK run against this venv.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-deploy"


def _load() -> ModuleType:
    loader = SourceFileLoader("check_deploy", str(SCRIPT))
    spec = importlib.util.spec_from_loader("check_deploy", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_deploy"] = module
    loader.exec_module(module)
    return module


cd = _load()


def _chart_copy(tmp_path: Path) -> Path:
    """The chart with its linked files resolved, for tests that break a template."""
    dest = tmp_path / "ccbridge"
    shutil.copytree(cd.CHART, dest, symlinks=False)
    return dest


def _render(values: dict[str, Any], chart: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in cd.render_chart(values, chart or cd.CHART):
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


# ---------------------------------------------------------------------------------------------------------------
# the command


def test_cli_runs_named_steps_and_refuses_unknown_ones() -> None:
    ok = subprocess.run([sys.executable, str(SCRIPT), "dashboard"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   dashboard" in ok.stdout
    bad = subprocess.run([sys.executable, str(SCRIPT), "dashbord"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "unknown step(s) dashbord" in bad.stderr


def test_makefile_test_target_runs_check_deploy() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/check-deploy" in makefile
    test_line = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert "check-deploy" in test_line.split()


# ---------------------------------------------------------------------------------------------------------------
# Dockerfile and image


def test_dockerfile_lints_clean_and_keeps_its_promises() -> None:
    assert "hadolint clean" in cd.check_dockerfile()


def _dockerfile_variant(tmp_path: Path, edit: dict[str, str]) -> Path:
    text = cd.DOCKERFILE.read_text()
    for old, new in edit.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return path


def test_dockerfile_hadolint_findings_fail(tmp_path: Path) -> None:
    path = _dockerfile_variant(tmp_path, {"WORKDIR /var/lib/ccbridge\n": "RUN cd /var/lib/ccbridge\n"})
    with pytest.raises(cd.CheckFailed, match=r"(?s)hadolint failed.*DL3003"):
        cd.check_dockerfile(path)


def test_dockerfile_missing_volume_port_and_arena_setting_fail(tmp_path: Path) -> None:
    path = _dockerfile_variant(
        tmp_path,
        {
            'VOLUME ["/var/lib/ccbridge"]\n': "",
            "EXPOSE 4317 4318 9464": "EXPOSE 4317 4318",
            "    MALLOC_ARENA_MAX=2 \\\n": "",
        },
    )
    with pytest.raises(cd.CheckFailed) as exc:
        cd.check_dockerfile(path)
    msg = str(exc.value)
    assert "/var/lib/ccbridge is not declared as a VOLUME" in msg
    assert "ports not exposed: ['9464']" in msg
    assert "MALLOC_ARENA_MAX=2" in msg


def test_dockerfile_entrypoint_and_cmd_must_run_the_copied_config(tmp_path: Path) -> None:
    path = _dockerfile_variant(tmp_path, {'"/etc/ccbridge/config.yaml"]': '"/etc/ccbridge/other.yaml"]'})
    with pytest.raises(cd.CheckFailed, match=r"CMD's config /etc/ccbridge/other.yaml is not copied"):
        cd.check_dockerfile(path)


def test_build_context_follows_dockerignore() -> None:
    context = cd.build_context(ROOT)
    for needed in ("pyproject.toml", "README.md", "collector/cli/__init__.py", "exporters/__init__.py"):
        assert needed in context
    assert "deploy/ccbridge.container.yaml" in context
    assert not any(f.startswith(("tests/", "docs/", "helm/", ".venv/")) for f in context)
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in context)
    assert "Makefile" not in context


def _small_project(tmp_path: Path, run_line: str, extra_copy: str = "") -> Path:
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "app.txt").write_text("app\n")
    (project / "pkg" / "a.txt").write_text("a\n")
    (project / "pkg" / "secret.txt").write_text("do not ship\n")
    (project / ".dockerignore").write_text("pkg/secret.txt\n")
    (project / "Dockerfile").write_text(
        "FROM python:3.11-slim AS builder\n"
        "ENV MARKER=/opt/app/marker\n"
        "WORKDIR /src\n"
        "COPY app.txt ./\n"
        "COPY pkg ./pkg\n"
        f"{extra_copy}"
        f"RUN {run_line}\n"
        "FROM python:3.11-slim\n"
        "COPY --from=builder /opt/app /opt/app\n"
    )
    return project


def test_replay_builder_copies_the_context_and_runs_with_mapped_paths(tmp_path: Path) -> None:
    project = _small_project(
        tmp_path,
        "python -m venv --without-pip /opt/app && cp app.txt /opt/app/app.txt && cp -r pkg /opt/app/pkg"
        ' && echo "$MARKER" > /opt/app/where',
    )
    build = cd.replay_builder(tmp_path / "work", project)
    assert build.venv == build.rootfs / "opt" / "app"
    assert (build.venv / "app.txt").read_text() == "app\n"
    assert (build.venv / "pkg" / "a.txt").exists()
    assert not (build.venv / "pkg" / "secret.txt").exists(), ".dockerignore'd file reached the image"
    assert (build.venv / "where").read_text().strip() == str(build.venv / "marker")
    assert (build.venv / "bin" / "python").exists()


def test_replay_builder_refuses_copy_of_an_ignored_file(tmp_path: Path) -> None:
    project = _small_project(tmp_path, "true", extra_copy="COPY pkg/secret.txt ./\n")
    with pytest.raises(cd.CheckFailed, match=r"COPY pkg/secret.txt: not in the build context"):
        cd.replay_builder(tmp_path / "work", project)


def test_replay_builder_reports_a_failing_run_line(tmp_path: Path) -> None:
    project = _small_project(tmp_path, "python -m venv --without-pip /opt/app && exit 7")
    with pytest.raises(cd.CheckFailed, match=r"RUN failed \(exit 7\)"):
        cd.replay_builder(tmp_path / "work", project)


def test_container_config_is_valid_and_the_healthcheck_passes_against_a_bridge(tmp_path: Path) -> None:
    runtime = cd.parse_dockerfile(cd.DOCKERFILE.read_text())[-1]
    source, in_image = cd.image_config_source(runtime)
    assert (source, in_image) == ("deploy/ccbridge.container.yaml", "/etc/ccbridge/config.yaml")
    tree = yaml.safe_load((ROOT / source).read_text())
    assert tree["receivers"]["otlp"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert tree["receivers"]["otlp"]["http"]["endpoint"] == "0.0.0.0:4318"
    assert tree["telemetry"]["endpoint"] == "0.0.0.0:9464"
    assert tree["storage"]["directory"] == "/var/lib/ccbridge"
    env = cd.image_env(runtime, Path(sys.executable).parent)
    cd.run([sys.executable, "-m", "collector.cli", "validate-config", str(ROOT / source)], what="validate", env=env)
    cd.smoke_bridge([sys.executable, "-m", "collector.cli"], ROOT / source, runtime, env, tmp_path)


def test_healthcheck_command_fails_when_nothing_answers() -> None:
    runtime = cd.parse_dockerfile(cd.DOCKERFILE.read_text())[-1]
    command = cd.healthcheck_command(runtime)
    env = {**os.environ, "CCBRIDGE_HEALTHCHECK_URL": f"http://127.0.0.1:{cd.free_port()}/healthz"}
    res = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode != 0


# ---------------------------------------------------------------------------------------------------------------
# alert rules


def test_rules_check_and_unit_tests_pass() -> None:
    assert "13 alerts" in cd.check_rules()


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    assert cd.rule_test_coverage(cd.RULES, cd.RULE_TESTS) == []
    assert set(cd.alert_names()) >= {
        "CCBridgeIngestionStopped",
        "CCBridgeIngestionAbsent",
        "CCBridgeStorageUnhealthy",
        "CCBridgeBacklogGrowing",
        "CCBridgeBacklogOldestTooOld",
        "CCBridgeDeadLettersIncreasing",
        "CCBridgeDestinationFailing",
        "CCBridgeDestinationUnhealthy",
        "ClaudeCodeToolRejectionSpike",
        "ClaudeCodeCostSpike",
    }


def _prom_dir(tmp_path: Path) -> Path:
    d = tmp_path / "prom"
    shutil.copytree(cd.RULES.parent, d)
    return d


def test_coverage_reports_an_alert_without_a_quiet_case(tmp_path: Path) -> None:
    d = _prom_dir(tmp_path)
    doc = yaml.safe_load((d / "rules.test.yaml").read_text())
    for test in doc["tests"]:
        test["alert_rule_test"] = [
            c for c in test["alert_rule_test"] if c["alertname"] != "CCBridgeStorageUnhealthy" or c.get("exp_alerts")
        ]
    (d / "rules.test.yaml").write_text(yaml.safe_dump(doc))
    problems = cd.rule_test_coverage(d / "rules.yaml", [d / "rules.test.yaml", d / "rules.weekly.test.yaml"])
    assert problems == ["CCBridgeStorageUnhealthy: no unit test where it must not fire"]


def test_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    d = _prom_dir(tmp_path)
    rules = d / "rules.yaml"
    rules.write_text(rules.read_text().replace("ccbridge_storage_healthy == 0", "ccbridge_storage_healthy < 2"))
    with pytest.raises(cd.CheckFailed, match="promtool test rules failed"):
        cd.run(
            [cd.tool("promtool", "/usr/bin/promtool"), "test", "rules", str(d / "rules.test.yaml")],
            what="promtool test rules",
        )


def test_rules_with_a_syntax_error_or_an_unknown_metric_fail(tmp_path: Path) -> None:
    d = _prom_dir(tmp_path)
    rules = d / "rules.yaml"
    original = rules.read_text()
    rules.write_text(original.replace("expr: ccbridge_storage_healthy == 0", "expr: ccbridge_storage_healthy == ("))
    with pytest.raises(cd.CheckFailed, match="promtool check rules failed"):
        cd.check_rules(rules, [d / "rules.test.yaml", d / "rules.weekly.test.yaml"])
    rules.write_text(original.replace("ccbridge_storage_healthy == 0", "ccbridge_storage_healthly == 0"))
    with pytest.raises(cd.CheckFailed, match="does not export: ccbridge_storage_healthly"):
        cd.check_rules(rules, [d / "rules.test.yaml", d / "rules.weekly.test.yaml"])


# ---------------------------------------------------------------------------------------------------------------
# Grafana dashboard


def test_dashboard_is_importable_and_every_expression_parses() -> None:
    assert "PromQL expressions parse" in cd.check_dashboard()
    dash = json.loads(cd.DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in cd.iter_panels(dash["panels"]) for t in p.get("targets", []))
    for metric in (
        "claude_code_analytics_users",
        "claude_code_analytics_cost_usd",
        "claude_code_analytics_commits",
        "claude_code_tool_decisions_total",
        "claude_code_cost_usage_usd_total",
        "ccbridge_receiver_accepted_items_total",
        "ccbridge_exporter_backlog_records",
        "ccbridge_exporter_dead_letter_records_total",
    ):
        assert metric in exprs


def _broken_dashboard(tmp_path: Path, edit: Any) -> Path:
    dash = json.loads(cd.DASHBOARD.read_text())
    edit(dash)
    path = tmp_path / "dashboard.json"
    path.write_text(json.dumps(dash))
    return path


def _first_data_panel(dash: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in dash["panels"] if p["type"] != "row")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["panels"][2].update(id=d["panels"][1]["id"]), "already used by"),
        (lambda d: _first_data_panel(d).update(targets=[]), "no targets"),
        (lambda d: _first_data_panel(d).update(datasource={"type": "prometheus", "uid": "abc"}), "not a fixed data"),
        (lambda d: _first_data_panel(d)["targets"][0].update(expr="sum(rate(x[5m])"), "PromQL does not parse"),
        (lambda d: _first_data_panel(d)["targets"][0].update(expr="up{job=~'$cluster'}"), "undefined variables"),
        (lambda d: _first_data_panel(d)["targets"][0].update(expr="ccbridge_backlog_records"), "does not export"),
        (lambda d: d.pop("__inputs"), "__inputs must declare DS_PROMETHEUS"),
        (lambda d: d.update(schemaVersion="39"), "schemaVersion"),
        (lambda d: _first_data_panel(d)["gridPos"].update(x=20, w=8), "24-column grid"),
    ],
)
def test_dashboard_problems_are_reported(tmp_path: Path, edit: Any, message: str) -> None:
    with pytest.raises(cd.CheckFailed, match=message):
        cd.check_dashboard(_broken_dashboard(tmp_path, edit))


def test_dashboard_that_is_not_json_fails(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.json"
    path.write_text("{'panels': []}")
    with pytest.raises(cd.CheckFailed, match="not valid JSON"):
        cd.check_dashboard(path)


# ---------------------------------------------------------------------------------------------------------------
# Helm chart


@pytest.mark.parametrize("values_file", cd.values_files(), ids=lambda p: p.name)
def test_chart_renders_valid_manifests(values_file: Path) -> None:
    assert "manifests valid" in cd.check_chart_values(values_file)


def test_ci_values_cover_defaults_minimal_and_every_feature() -> None:
    names = {p.name for p in cd.values_files()}
    assert {"default-values.yaml", "minimal-values.yaml", "full-values.yaml"} <= names
    kinds = _render(cd.load_values(cd.CHART / "ci" / "full-values.yaml"))
    assert {"StatefulSet", "Service", "ConfigMap", "Ingress", "PodDisruptionBudget", "ServiceAccount"} <= set(kinds)
    assert {"ServiceMonitor", "PrometheusRule"} <= set(kinds)
    assert len(kinds["Service"]) == 2


def test_prometheus_rule_and_dashboard_come_from_deploy_files() -> None:
    kinds = _render(cd.load_values(cd.CHART / "ci" / "full-values.yaml"))
    assert kinds["PrometheusRule"][0]["spec"] == yaml.safe_load(cd.RULES.read_text())
    dashboards = [m for m in kinds["ConfigMap"] if "ccbridge-dashboard.json" in m["data"]]
    assert json.loads(dashboards[0]["data"]["ccbridge-dashboard.json"]) == json.loads(cd.DASHBOARD.read_text())


def test_default_pod_is_locked_down_and_keeps_data_on_a_claim() -> None:
    sts = _render({})["StatefulSet"][0]
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["ccbridge"]
    assert c["args"] == ["run", "--config", "/etc/ccbridge/config.yaml"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsUser"] == 10001
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/var/lib/ccbridge"} in c["volumeMounts"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        (
            {
                "securityContext": {
                    "runAsNonRoot": True,
                    "readOnlyRootFilesystem": False,
                    "allowPrivilegeEscalation": False,
                }
            },
            "readOnlyRootFilesystem",
        ),
        ({"secretEnv": [{"name": "HEC TOKEN", "secretName": "s", "key": "k"}]}, "secretEnv/0/name"),
        ({"config": {"storage": {"directory": "/data"}}}, "config.storage.directory is set by the chart"),
        ({"config": {"receivers": {"otlp": {"grpc": {"endpoint": "0.0.0.0:5317"}}}}}, "receivers.otlp.grpc.endpoint"),
        ({"config": {"enrichment": {"analytics_api": {"enabled": True}}}}, "use the chart values"),
        (
            {"analytics": {"enabled": True, "adminApiKey": {"secretName": "", "key": "k"}}},
            "needs analytics.adminApiKey",
        ),
    ],
)
def test_bad_values_are_refused_by_name(values: dict[str, Any], message: str) -> None:
    with pytest.raises(cd.CheckFailed, match=message):
        cd.render_chart(values)


def test_config_referencing_an_unset_variable_fails() -> None:
    values = {
        "config": {
            "exporters": {"http/siem": {"url": "https://siem.example.com", "headers": {"X-Key": "${env:SIEM_KEY}"}}}
        }
    }
    problems = cd.validate_manifests(cd.render_chart(values))
    assert any("references ${env:SIEM_KEY} but the pod does not set SIEM_KEY" in p for p in problems), problems
    values["secretEnv"] = [{"name": "SIEM_KEY", "secretName": "siem", "key": "key"}]
    assert cd.validate_manifests(cd.render_chart(values)) == []


def test_config_that_ccbridge_refuses_fails() -> None:
    problems = cd.validate_manifests(cd.render_chart({"config": {"storage": {"retension": "30d"}}}))
    assert any("validate-config" in p and "retension" in p for p in problems), problems


def test_template_rendering_an_invalid_manifest_fails(tmp_path: Path) -> None:
    chart = _chart_copy(tmp_path)
    sts = chart / "templates" / "statefulset.yaml"
    sts.write_text(sts.read_text().replace("containerPort: 4317", "containerPort: grpc-port"))
    with pytest.raises(cd.CheckFailed, match=r"invalid for Kubernetes .*containerPort"):
        cd.check_chart_values(cd.CHART / "ci" / "default-values.yaml", chart)
    sts.write_text(
        sts.read_text()
        .replace("containerPort: grpc-port", "containerPort: 4317")
        .replace("podManagementPolicy: Parallel", "podManagementPolicy: Parallel\n  paused: true")
    )
    with pytest.raises(cd.CheckFailed, match=r"invalid for Kubernetes .*paused"):
        cd.check_chart_values(cd.CHART / "ci" / "default-values.yaml", chart)


def test_chart_rule_copy_that_drifts_from_deploy_fails(tmp_path: Path) -> None:
    chart = _chart_copy(tmp_path)
    rules = chart / "files" / "prometheus-rules.yaml"
    rules.write_text(rules.read_text().replace("for: 2m", "for: 20m"))
    with pytest.raises(cd.CheckFailed, match=r"differs from deploy/prometheus/rules\.yaml"):
        cd.check_chart_values(cd.CHART / "ci" / "full-values.yaml", chart)


def test_invariants_catch_a_writable_root_and_a_selector_mismatch() -> None:
    by_kind = _render({})
    c = by_kind["StatefulSet"][0]["spec"]["template"]["spec"]["containers"][0]
    c["securityContext"]["readOnlyRootFilesystem"] = False
    by_kind["Service"][0]["spec"]["selector"] = {"app.kubernetes.io/name": "other"}
    problems = cd.chart_invariants(by_kind)
    assert "readOnlyRootFilesystem must be true" in problems
    assert any("selector does not match the pods" in p for p in problems)


def test_analytics_sync_runs_only_on_ordinal_zero(tmp_path: Path) -> None:
    values = cd.load_values(cd.CHART / "ci" / "full-values.yaml")
    by_kind = _render(values)
    c = by_kind["StatefulSet"][0]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:2] == ["/bin/sh", "-c"]
    config = yaml.safe_load(next(m for m in by_kind["ConfigMap"] if "config.yaml" in m["data"])["data"]["config.yaml"])
    assert config["enrichment"]["analytics_api"]["enabled"] == "${env:CCBRIDGE_ANALYTICS_LEADER:-false}"
    assert config["enrichment"]["analytics_api"]["admin_api_key"] == "${env:ANTHROPIC_ADMIN_API_KEY}"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "ccbridge"
    fake.write_text('#!/bin/sh\necho "leader=$CCBRIDGE_ANALYTICS_LEADER args=$*"\n')
    fake.chmod(0o755)
    seen = {}
    for pod in ("audit-bridge-0", "audit-bridge-1", "audit-bridge-10"):
        env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "POD_NAME": pod}
        out = subprocess.run(c["command"], env=env, capture_output=True, text=True, check=True).stdout.strip()
        seen[pod] = out
    assert seen == {
        "audit-bridge-0": "leader=true args=run --config /etc/ccbridge/config.yaml",
        "audit-bridge-1": "leader=false args=run --config /etc/ccbridge/config.yaml",
        "audit-bridge-10": "leader=false args=run --config /etc/ccbridge/config.yaml",
    }


def test_config_file_outside_every_mount_fails_and_an_extra_mount_fixes_it() -> None:
    exporter = {"url": "https://siem.example.com", "tls": {"ca_file": "/etc/ccbridge-ca/siem/ca.pem"}}
    values: dict[str, Any] = {"config": {"exporters": {"http/siem": exporter}}}
    problems = cd.validate_manifests(cd.render_chart(values))
    assert problems == [
        "config.yaml exporters.http/siem.tls.ca_file: /etc/ccbridge-ca/siem/ca.pem is not under any volume mount"
        " of the container"
    ]
    values["extraVolumes"] = [{"name": "siem-ca", "configMap": {"name": "siem-ca"}}]
    values["extraVolumeMounts"] = [{"name": "siem-ca", "mountPath": "/etc/ccbridge-ca/siem", "readOnly": True}]
    assert cd.validate_manifests(cd.render_chart(values)) == []


def test_receiver_tokens_and_tls_come_from_secrets_mounted_as_directories() -> None:
    values = {
        "receiverAuth": {"tokensSecret": {"name": "otlp-tokens", "key": "tokens.txt"}},
        "tls": {"secretName": "otlp-tls", "clientCaKey": "ca.crt"},
    }
    by_kind = _render(values)
    config = yaml.safe_load(next(m for m in by_kind["ConfigMap"])["data"]["config.yaml"])
    assert config["receivers"]["auth"] == {"tokens_file": "/run/secrets/ccbridge/receiver-tokens/tokens"}
    for transport in ("grpc", "http"):
        assert config["receivers"]["otlp"][transport]["tls"] == {
            "cert_file": "/run/secrets/ccbridge/receiver-tls/tls.crt",
            "key_file": "/run/secrets/ccbridge/receiver-tls/tls.key",
            "client_ca_file": "/run/secrets/ccbridge/receiver-tls/client-ca.crt",
        }
    pod = by_kind["StatefulSet"][0]["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert "subPath" not in mounts["receiver-tokens"], "a subPath mount would never see a rotated Secret"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["receiver-tokens"]["secret"]["items"] == [{"key": "tokens.txt", "path": "tokens"}]
    assert {"key": "ca.crt", "path": "client-ca.crt"} in volumes["receiver-tls"]["secret"]["items"]
    assert cd.validate_manifests(cd.render_chart(values)) == []
    with pytest.raises(cd.CheckFailed, match=r"receivers.auth.tokens_file \(receiverAuth.tokensSecret is set\)"):
        cd.render_chart({**values, "config": {"receivers": {"auth": {"tokens_file": "/x"}}}})
    with pytest.raises(cd.CheckFailed, match=r"telemetry.tls"):
        cd.render_chart({"config": {"telemetry": {"tls": {"cert_file": "/x"}}}})


def test_receiver_tokens_can_also_come_from_secret_environment_variables() -> None:
    tokens = [{"token": "${env:TEAM_A_TOKEN}", "identity": "team-a"}, {"token": "${env:CI_TOKEN}", "identity": "ci"}]
    values: dict[str, Any] = {"config": {"receivers": {"auth": {"tokens": tokens}}}}
    problems = cd.validate_manifests(cd.render_chart(values))
    assert any("does not set TEAM_A_TOKEN" in p for p in problems), problems
    values["secretEnv"] = [
        {"name": "TEAM_A_TOKEN", "secretName": "otlp-tokens", "key": "team-a"},
        {"name": "CI_TOKEN", "secretName": "otlp-tokens", "key": "ci"},
    ]
    assert cd.validate_manifests(cd.render_chart(values)) == []
