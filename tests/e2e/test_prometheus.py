"""The observability assets checked for real: dashboard, alerts and Prometheus config.

A real gateway (uvicorn in a thread on 127.0.0.1, real Redis, the fake upstream) gets scripted
traffic on every path; a real `prometheus` process scrapes it every second with the rules of
deploy/prometheus/alerts.yml loaded. Then every dashboard query must return at least one series
with a number in it, every alert expression must evaluate, every rule must be healthy, and
`promtool` must accept the config and the rules. The static checks (datasource uids, template
variables, alert labels) need no binaries.

`prometheus` and `promtool` come from Debian's `prometheus` package. Without them these tests
skip with the reason on a developer's machine and fail in CI (`CI` set), where `.ci/run`
installs the package.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry

from ops.cli import main as cli_main
from ops.report import from_prometheus
from router.app import create_app
from router.decision import REASONS
from router.metrics import GatewayMetrics
from router.settings import Settings
from tests.e2e._traffic import BROKEN_ROUTE, send_traffic
from tests.fake_upstream import Upstream
from tests.server_thread import ServerThread

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "hybrid-router.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
METRICS_MD = ROOT / "docs" / "metrics.md"
DATASOURCE_UID = "prometheus"
JOB = "hybrid-router"
# What the dashboard's variables stand for in this test: every route, and windows that hold
# enough 1-second scrapes of a run that lasts a few seconds.
SUBSTITUTIONS = {"route": ".*", "alias": ".*", "instance": ".*", "__rate_interval": "1m", "__interval": "1s", "__range": "5m",
                 "__range_s": "300", "__interval_ms": "1000"}
_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_METRIC = re.compile(r"\bhybrid_router_\w+")


# ---- helpers -----------------------------------------------------------------------------------
def _binaries() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus and promtool:
        return prometheus, promtool
    reason = "prometheus/promtool not on PATH (Debian: apt-get install -y prometheus)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must install them")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def _variables_in(text: str) -> set[str]:
    return {a or b or c for a, b, c in _VAR.findall(text)}


def _substitute(expr: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return SUBSTITUTIONS.get(name, m.group(0))

    return _VAR.sub(repl, expr)


def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS_YML.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _scraped_total(registry: CollectorRegistry, metric: str, **labels: str) -> float:
    return sum(s.value for m in registry.collect() for s in m.samples
               if s.name == metric and labels.items() <= s.labels.items())


def _reload(registry: CollectorRegistry, policy: Path, text: str, result: str) -> None:
    """Rewrite the policy file and wait for the gateway's file watcher to count the reload."""
    before = _scraped_total(registry, "hybrid_router_policy_reloads_total", result=result)
    policy.write_text(text)
    deadline = time.monotonic() + 10
    while _scraped_total(registry, "hybrid_router_policy_reloads_total", result=result) == before:
        assert time.monotonic() < deadline, f"no {result} policy reload counted"
        time.sleep(0.05)


def _exported_names() -> set[str]:
    """Every sample name the gateway can export (with _total, _bucket, _sum, _count, _created)."""
    metrics = GatewayMetrics(CollectorRegistry())
    names = set()
    for metric in metrics.registry.collect():
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "gauge": [""], "info": ["_info", ""]}.get(metric.type, [""])
        names |= {metric.name + s for s in suffixes}
    return names


# ---- static checks -----------------------------------------------------------------------------
def test_docs_cover_every_metric_and_reason() -> None:
    text = METRICS_MD.read_text()
    families = {m.name for m in GatewayMetrics(CollectorRegistry()).registry.collect()
                if m.name.startswith("hybrid_router_")}
    documented = {n.removesuffix("_total") for n in _METRIC.findall(text)}
    assert families - documented == set(), "metrics missing from docs/metrics.md"
    assert [r for r in REASONS if f"`{r}`" not in text] == [], "reasons missing from docs/metrics.md"


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    dash = _dashboard()
    exprs = [t["expr"] for p in _panels(dash) for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if not a.get("builtIn")]
    exprs += [v["definition"] for v in dash["templating"]["list"]]
    exprs += [r["expr"] for r in _alert_rules()]
    used = {name for e in exprs for name in _METRIC.findall(e)}
    assert used - _exported_names() == set()


def test_dashboard_uses_one_datasource_and_defines_its_variables() -> None:
    dash = _dashboard()
    defined = {v["name"] for v in dash["templating"]["list"]}
    problems: list[str] = []
    ids: list[int] = []

    def check_ds(where: str, ds: Any) -> None:
        if not isinstance(ds, dict) or ds.get("uid") != DATASOURCE_UID or ds.get("type") != "prometheus":
            problems.append(f"{where}: datasource {ds!r} is not uid {DATASOURCE_UID!r}")

    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            check_ds(f"variable {var['name']}", var.get("datasource"))
    for ann in dash["annotations"]["list"]:
        if not ann.get("builtIn"):
            check_ds(f"annotation {ann['name']}", ann.get("datasource"))
            problems += [f"annotation {ann['name']}: undefined ${v}" for v in _variables_in(ann["expr"])
                         if v not in defined and not v.startswith("__")]
    for panel in _panels(dash):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        title = panel["title"]
        check_ds(f"panel {title!r}", panel.get("datasource"))
        if not panel.get("targets"):
            problems.append(f"panel {title!r} has no query")
        used = _variables_in(title) | {v for t in panel.get("targets", []) for v in _variables_in(t["expr"])}
        if panel.get("repeat"):
            used.add(panel["repeat"])
        problems += [f"panel {title!r}: undefined ${v}" for v in used if v not in defined and not v.startswith("__")]
        for t in panel.get("targets", []):
            check_ds(f"panel {title!r} query {t['refId']}", t.get("datasource"))
    if len(ids) != len(set(ids)):
        problems.append(f"panel ids are not unique: {sorted(ids)}")
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    if [d["uid"] for d in provisioned] != [DATASOURCE_UID]:
        problems.append(f"{DATASOURCES.name} provisions {[d['uid'] for d in provisioned]}, not [{DATASOURCE_UID!r}]")
    assert not problems, "\n".join(problems)


def test_every_alert_has_for_severity_and_annotations() -> None:
    rules = _alert_rules()
    assert rules
    problems = []
    for rule in rules:
        name = rule.get("alert")
        if name is None:
            continue  # a recording rule
        if "for" not in rule:
            problems.append(f"{name}: no `for:`")
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity must be critical, warning or info")
        if not {"summary", "description"} <= set(rule.get("annotations", {})):
            problems.append(f"{name}: needs summary and description annotations")
    assert not problems, "\n".join(problems)


def test_promtool_accepts_config_and_rules() -> None:
    _, promtool = _binaries()
    for args in (["check", "config", str(PROMETHEUS_YML)], ["check", "rules", str(ALERTS_YML)]):
        done = subprocess.run([promtool, *args], check=False, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


# ---- live check ----------------------------------------------------------------------------------
class _Prometheus:
    """A prometheus process on a free loopback port with its data in a temp directory."""

    def __init__(self, binary: str, workdir: Path, target: str, rules: Path = ALERTS_YML,
                 alertmanager: str | None = None) -> None:
        config = yaml.safe_load(PROMETHEUS_YML.read_text())
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
        job.pop("dns_sd_configs", None)  # the compose stack's service discovery; here one local target
        job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [target]}])
        config["scrape_configs"] = [job]
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(rules)]
        if alertmanager is None:
            del config["alerting"]
        else:
            config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager]}]}]
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = workdir / "prometheus.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={path}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def wait(self, what: str, check: Callable[[], bool], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                if check():
                    return
            except (httpx.HTTPError, ValueError):  # not listening yet, or a 503 text while starting
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()}")
            time.sleep(0.2)

    def query(self, expr: str) -> dict[str, Any]:
        """The /api/v1/query answer at the current time (never raises on a PromQL error)."""
        r = self.http.post("/api/v1/query", data={"query": expr})
        body: dict[str, Any] = r.json()
        return body

    def values(self, expr: str) -> dict[str, float]:
        body = self.query(expr)
        assert body["status"] == "success", (expr, body)
        return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in body["data"]["result"]}

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def prometheus_bin() -> str:
    return _binaries()[0]


@pytest.fixture
def gateway(write_policy: Callable[..., Path], make_settings: Callable[..., Settings], upstream: Upstream,
            redis_db: redis.Redis) -> Iterator[tuple[ServerThread, CollectorRegistry, set[str], Path]]:
    """The gateway on a free port: default.yaml's routes on the fake upstream, plus a route whose
    foundation alias answers 500 (the degraded path)."""

    def edit(doc: Any) -> None:
        doc["aliases"]["broken"] = {
            "model": "openai/fake-500", "api_base": upstream.api_base, "price_as": "gpt-4o-mini",
            "max_retries": 0, "timeout_s": 2, "breaker_failures": 3, "breaker_reset_s": 1,
        }
        # Every specialist answer is shadowed (the fake upstream often disagrees: agreement < 1);
        # `alert` keeps the routes serving normally.
        doc["shadow"] = {"sample_rate": 1.0, "window": 10, "on_low_agreement": "alert"}
        broken = dict(doc["routes"]["sentiment"])
        broken["escalate_to"] = "broken"
        doc["routes"][BROKEN_ROUTE] = broken
        doc["budgets"]["usd_per_day"] = 100.0  # the budget panel

    policy = write_policy(edit=edit)
    routes = set(yaml.safe_load(policy.read_text())["routes"])
    registry = CollectorRegistry()
    server = ServerThread(create_app(make_settings(policy, policy_poll_s=0.2), registry=registry)).start()
    try:
        yield server, registry, routes, policy
    finally:
        server.stop()


@pytest.mark.redis
def test_dashboard_and_alert_queries_against_live_prometheus(
    prometheus_bin: str, gateway: tuple[ServerThread, CollectorRegistry, set[str], Path], tmp_path: Path
) -> None:
    server, registry, routes, policy_path = gateway
    with httpx.Client(base_url=server.url, timeout=10) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:  # litellm loads in the background
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.1)

    prom = _Prometheus(prometheus_bin, tmp_path, server.url.removeprefix("http://"))
    try:
        prom.wait("prometheus to be ready", lambda: prom.http.get("/-/ready").status_code == 200)
        prom.wait("the gateway target to be up",
                  lambda: list(prom.values(f'up{{job="{JOB}"}}').values()) == [1.0])

        # Traffic in rounds across several scrapes, so every counter has moved between samples;
        # between the halves the policy file changes (a hot reload, a new policy version) and
        # then becomes invalid (a rejected reload), for the annotations and the reload alert.
        paths = send_traffic(server.url, routes, rounds=4, pause_s=0.25)
        _reload(registry, policy_path, policy_path.read_text() + "\n# changed by test_prometheus\n", "ok")
        paths += send_traffic(server.url, routes, rounds=4, pause_s=0.25)
        _reload(registry, policy_path, "version: 2\n", "invalid")
        assert {"specialist", "foundation", "cache", "degraded"} <= set(paths), paths
        assert sum(paths.values()) >= 200, paths

        answered = _scraped_total(registry, "hybrid_router_requests_total")
        prom.wait("the last request to be scraped",
                  lambda: sum(prom.values("sum(hybrid_router_requests_total)").values()) == answered)
        time.sleep(2.5)  # two more scrapes and rule evaluations after the traffic

        scraped_paths = {json.loads(k)["path"] for k in prom.values("sum by (path) (hybrid_router_requests_total)")}
        assert scraped_paths == {"specialist", "foundation", "cache", "degraded"}

        failures: list[str] = []
        dash = _dashboard()
        for panel in _panels(dash):
            for target in panel.get("targets", []):
                expr = _substitute(target["expr"])
                body = prom.query(expr)
                where = f"panel {panel['title']!r} query {target['refId']}"
                if body.get("status") != "success":
                    failures.append(f"{where}: {body.get('error')}\n    {expr}")
                elif not any(not math.isnan(float(s["value"][1])) for s in body["data"]["result"]):
                    failures.append(f"{where}: no series with a value\n    {expr}")
        for ann in dash["annotations"]["list"]:
            if not ann.get("builtIn"):
                body = prom.query(_substitute(ann["expr"]))
                if body.get("status") != "success":
                    failures.append(f"annotation {ann['name']!r}: {body.get('error')}")
                elif not body["data"]["result"]:
                    failures.append(f"annotation {ann['name']!r}: nothing marked after a policy reload")
        expected_values = {"route": {"sentiment", BROKEN_ROUTE}, "alias": {"cheap", "broken"},
                           "instance": {server.url.removeprefix("http://")}}
        for var in dash["templating"]["list"]:
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["definition"])
            assert m, f"variable {var['name']}: unexpected query {var['definition']!r}"
            found = prom.http.get(f"/api/v1/label/{m.group(2)}/values", params={"match[]": m.group(1)}).json()
            if not set(found["data"]) >= expected_values[var["name"]]:
                failures.append(f"variable {var['name']}: values {found['data']}")
        # Escalation share is a share for every route kind, auto and passthrough included.
        (share,) = [t["expr"] for p in _panels(dash) for t in p.get("targets", [])
                    if p["title"] == "Answers needing the foundation model, by route"]
        shares = prom.values(_substitute(share))
        if not shares or max(shares.values()) > 1:
            failures.append(f"escalation share out of 0..1: {shares}")

        for rule in _alert_rules():
            body = prom.query(rule["expr"])
            if body.get("status") != "success":
                failures.append(f"alert {rule.get('alert')}: {body.get('error')}")
        loaded = prom.http.get("/api/v1/rules").json()["data"]["groups"]
        states = {r["name"]: (r["health"], r.get("lastError", "")) for g in loaded for r in g["rules"]}
        expected = {r.get("alert") or r["record"] for r in _alert_rules()}
        if set(states) != expected:
            failures.append(f"rules loaded by prometheus {sorted(states)} != alerts.yml {sorted(expected)}")
        failures += [f"rule {name}: health {h} {err}" for name, (h, err) in states.items() if h != "ok"]
        active = {r["name"] for g in loaded for r in g["rules"] if r.get("state") in ("pending", "firing")}
        if "HybridRouterPolicyReloadFailed" not in active:
            failures.append(f"HybridRouterPolicyReloadFailed is not pending after a rejected reload: {sorted(active)}")
        assert not failures, "\n".join(failures)

        # `hybrid-router report` reads the same split from Prometheus and renders it.
        out = tmp_path / "report.svg"
        with pytest.raises(SystemExit) as done:
            cli_main(["report", "--prometheus", prom.url, "--window", "5m", "--out", str(out)])
        assert done.value.code in (0, None)
        assert "requests/s by path over time" in out.read_text()
        split = from_prometheus(prom.url, "5m", "t")
        assert split.timeline is not None and any(
            v > 0 for series in split.timeline.requests_per_s.values() for v in series if not math.isnan(v))
        assert {r.route for r in split.routes} >= {"sentiment", BROKEN_ROUTE}
        by_path = {r.path: r.requests for r in split.rows}
        assert {k for k, v in by_path.items() if v > 0} == {"specialist", "foundation", "cache", "degraded"}
        assert split.rows[0].latency_ms[0.5] is not None
    finally:
        prom.stop()
