"""The Compose stack, checked offline (no container engine runs here).

docker-compose.yml must validate against the compose spec (the schema check-jsonschema ships),
and everything it refers to must exist and agree with the gateway: mounted files, the
gateway's environment variables (each one a real `Settings` field, valid after interpolation),
ports, healthchecks, Prometheus' scrape targets, the HAProxy backend and the Redis split. The
security defaults of issue 11 are asserted too: ports on 127.0.0.1 only, Grafana's admin
password from the environment, no Prometheus lifecycle API. The configs of Prometheus,
Alertmanager and HAProxy pass their own checkers (`promtool`, `amtool`, `haproxy -c`), which
`.ci/run` installs; a developer machine without them skips those with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from router.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"

_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def _raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _env_example() -> dict[str, str]:
    """Variables deploy/env.example names (set or commented out), with sample values for the required ones."""
    names: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if m:
            names[m.group(1)] = m.group(2)
    return names


def _interpolate(value: Any, env: dict[str, str], used: set[str], required: set[str]) -> Any:
    """Compose-style `${VAR}`, `${VAR:-default}`, `${VAR:?error}` (and `$$` escapes), recursively."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env, used, required) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, used, required) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(4)
        used.add(name)
        op, arg = m.group(2), m.group(3)
        if op in (":?", "?"):
            required.add(name)
            if not env.get(name):
                raise AssertionError(f"{name} is required: {arg}")
        if op in (":-", "-") and not env.get(name):
            return arg
        return env.get(name, "")

    parts = value.split("$$")
    return "$".join(_VAR.sub(sub, p) for p in parts)


SAMPLE_SECRETS = {"REDIS_PASSWORD": "0123abcd" * 8, "ROUTER_ADMIN_TOKEN": "admin-" + "x" * 40,
                  "GRAFANA_ADMIN_PASSWORD": "grafana-" + "y" * 24, "ROUTER_AUTH__SECRET": "z" * 48}


def _resolved() -> tuple[dict[str, Any], set[str], set[str]]:
    used: set[str] = set()
    required: set[str] = set()
    return _interpolate(_raw(), dict(SAMPLE_SECRETS), used, required), used, required


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                             str(COMPOSE)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_variable_is_documented_and_secrets_are_required() -> None:
    _, used, required = _resolved()
    documented = _env_example()
    assert used <= set(documented), f"variables missing from deploy/env.example: {sorted(used - set(documented))}"
    # Secrets have no default: compose refuses to start without them.
    assert {"REDIS_PASSWORD", "ROUTER_ADMIN_TOKEN", "ROUTER_AUTH__SECRET", "GRAFANA_ADMIN_PASSWORD"} <= required
    for name in required:
        assert documented[name] == "", f"{name} must be left empty in env.example (a secret, never a sample)"
    with pytest.raises(AssertionError, match="GRAFANA_ADMIN_PASSWORD is required"):
        _interpolate(_raw(), {k: v for k, v in SAMPLE_SECRETS.items() if k != "GRAFANA_ADMIN_PASSWORD"}, set(), set())
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored and "/deploy/.env" in ignored


def test_every_service_has_healthcheck_limits_log_rotation_and_restart() -> None:
    services = _resolved()[0]["services"]
    assert {"gateway", "proxy", "redis-state", "redis-cache", "prometheus", "alertmanager", "grafana",
            "upstream"} <= set(services)
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name}: no healthcheck"
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("memory") and limits.get("cpus"), f"{name}: no memory/cpu limit"
        logging = svc.get("logging", {})
        assert logging.get("driver") == "json-file" and logging["options"]["max-size"], f"{name}: no log rotation"
        assert svc.get("restart") == "unless-stopped", name
        assert svc.get("read_only") is True and svc.get("cap_drop") == ["ALL"], f"{name}: not hardened"
        assert "no-new-privileges:true" in svc.get("security_opt", []), name


def test_ports_are_published_on_loopback_only() -> None:
    services = _resolved()[0]["services"]
    published = {}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert isinstance(port, str) and port.count(":") == 2, f"{name}: {port!r} must name the host address"
            host, host_port, container_port = port.split(":")
            assert host == "127.0.0.1", f"{name} publishes {port} beyond loopback"
            published[name] = (int(host_port), int(container_port))
    # Only the proxy, Prometheus, Alertmanager and Grafana are reachable from the host; the
    # replicas, both Redis servers and the fake upstream are not.
    assert set(published) == {"proxy", "prometheus", "alertmanager", "grafana"}
    assert published["proxy"] == (8080, 8080)
    assert services["redis-state"]["networks"] == ["backend"] == services["redis-cache"]["networks"]
    assert _resolved()[0]["networks"]["backend"]["internal"] is True


def _field(settings_model: type[BaseModel], path: list[str]) -> bool:
    fields = settings_model.model_fields
    if path[0] not in fields:
        return False
    if len(path) == 1:
        return True
    sub = fields[path[0]].annotation
    return isinstance(sub, type) and issubclass(sub, BaseModel) and _field(sub, path[1:])


def test_gateway_environment_matches_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = _resolved()[0]["services"]["gateway"]
    env = {k: str(v) for k, v in gateway["environment"].items()}
    for name in env:
        assert name.startswith("ROUTER_"), name
        path = name.removeprefix("ROUTER_").lower().split("__")
        assert _field(Settings, path), f"{name} is not a gateway setting (Settings ignores unknown names)"
    for name in list(os.environ):
        if name.startswith("ROUTER_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    for name, value in env.items():
        got: Any = settings
        for part in name.removeprefix("ROUTER_").lower().split("__"):
            got = getattr(got, part)
        got = got.get_secret_value() if isinstance(got, SecretStr) else got
        assert str(got) == value, f"{name}: {got!r} != {value!r}"
    assert settings.host == "0.0.0.0" and settings.workers >= 2
    assert settings.redis.url is not None and settings.redis.cache_url is not None
    assert "@redis-state:6379" in settings.redis.url.get_secret_value()
    assert "@redis-cache:6379" in settings.redis.cache_url.get_secret_value()
    assert settings.admin_token is not None and settings.auth.secret is not None
    # The policy is read from the mounted directory, which is ./policies on the host.
    mounts = {v.split(":")[1]: v.split(":")[0] for v in gateway["volumes"]}
    assert settings.policy_path.parent.as_posix() in mounts
    host_dir = ROOT / mounts[settings.policy_path.parent.as_posix()]
    assert (host_dir / settings.policy_path.name).is_file()
    assert any(t.startswith("/tmp") for t in gateway["tmpfs"]), "read-only root: /tmp must be a tmpfs"


def test_healthchecks_probe_real_endpoints_on_the_configured_ports() -> None:
    services = _resolved()[0]["services"]
    gateway = services["gateway"]
    port = gateway["environment"]["ROUTER_PORT"]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(gateway["healthcheck"]["test"])
    assert gateway["expose"] == [port]
    cfg = HAPROXY_CFG.read_text()
    assert "option httpchk GET /readyz" in cfg
    assert re.search(rf"server-template \w+ \d+ gateway:{port}\b", cfg)
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "hybrid-router"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["gateway"] and str(sd["port"]) == port
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    redis_state = " ".join(services["redis-state"]["command"])
    redis_cache = " ".join(services["redis-cache"]["command"])
    assert "--maxmemory-policy noeviction" in redis_state and "--appendonly yes" in redis_state
    assert "--maxmemory-policy allkeys-lru" in redis_cache and "--appendonly no" in redis_cache


def test_security_defaults_of_issue_11() -> None:
    raw = _raw()["services"]
    assert not any("lifecycle" in str(arg) for arg in raw["prometheus"]["command"])
    password = raw["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?"), "no default Grafana password"
    for name, svc in raw.items():
        for port in svc.get("ports", []):
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"


def test_referenced_files_exist() -> None:
    services = _resolved()[0]["services"]
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
    assert (ROOT / "deploy" / "grafana" / "dashboards" / "hybrid-router.json").is_file()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/etc/grafana/dashboards/hybrid-router.json"
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    for rule_file in prom["rule_files"]:
        assert (PROMETHEUS_YML.parent / rule_file).is_file(), rule_file
    command = services["upstream"]["command"]
    assert (ROOT / command[1]).is_file()


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} not found (.ci/run installs Debian's {package})")
        pytest.skip(f"{name} not found: install Debian's {package} to run this check")
    return path


@pytest.mark.parametrize("args", [["check", "config", str(PROMETHEUS_YML)],
                                  ["check", "rules", str(PROMETHEUS_YML.parent / "alerts.yml")]])
def test_promtool_accepts_the_prometheus_config(args: list[str]) -> None:
    result = subprocess.run([_tool("promtool", "prometheus"), *args], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = subprocess.run([_tool("amtool", "prometheus-alertmanager"), "check-config", str(ALERTMANAGER_YML)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_haproxy_accepts_its_config() -> None:
    result = subprocess.run([_tool("haproxy", "haproxy"), "-c", "-f", str(HAPROXY_CFG)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
