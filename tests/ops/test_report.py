"""`hybrid-router report` from a gateway's /metrics and from a `simulate --json` run."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from ops.cli import main
from ops.report import from_metrics_text
from ops.report_compare import OPTIONS, histogram_quantile
from router.app import create_app
from router.settings import Settings
from tests.server_thread import ServerThread

ROOT = Path(__file__).resolve().parents[2]


def _svg_texts(svg: str) -> list[str]:
    """The text of a well-formed SVG document (parsing fails on anything else)."""
    return [t.text or "" for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")]


def run(args: list[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code in (0, None)


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.2, 20.0), (float("inf"), 20.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.5, []) is None


@pytest.mark.redis
def test_report_from_a_gateways_metrics(write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
                                        redis_db: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = 0.9

    policy = write_policy(edit=edit)
    server = ServerThread(create_app(make_settings(policy))).start()
    try:
        texts = ["a gorgeous , witty , seductive movie .", "the film runs two hours .", "the film runs two hours ."]
        paths = [httpx.post(server.url + "/v1/classify", json={"task": "sentiment", "input": t},
                            timeout=60).json()["path"] for t in texts]
        # No source: the local gateway's /metrics (ROUTER_HOST/ROUTER_PORT), as after `make serve`.
        monkeypatch.setenv("ROUTER_PORT", str(server.port))
        monkeypatch.setenv("ROUTER_POLICY_PATH", str(policy))
        out = tmp_path / "split.svg"
        run(["report", "--out", str(out)])
        texts = _svg_texts(out.read_text())
        assert "requests by path" in texts and "requests by route and path" in texts and "sentiment" in texts
        assert "ms (log)" in texts  # latency spans decades
        assert "USD per 1,000 requests: alone vs hybrid" in texts and set(OPTIONS) <= set(texts)
        printed = capsys.readouterr().out
        assert "sentiment  specialist alone" in printed and "(card (test split))" in printed
        split = from_metrics_text(httpx.get(server.url + "/metrics").text, "t")
        counts = {r.path: r.requests for r in split.rows}
        for p in set(paths):
            assert counts[p] == paths.count(p)
        assert sum(counts.values()) == 3
        (route,) = split.routes
        assert route.route == "sentiment" and route.total == 3 and route.cost_usd > 0
        assert route.cost_by_path.get("specialist", 0.0) > 0 and sum(route.cost_by_path.values()) == route.cost_usd
        # The HTML page is written alone: a PNG of the same name stays as it was.
        html_out, neighbour = tmp_path / "split.html", tmp_path / "split.png"
        neighbour.write_bytes(b"mine")
        run(["report", "--metrics", server.url + "/metrics", "--out", str(html_out)])
        page = html_out.read_text()
        assert "<svg" in page and "<table>" in page and "USD per 1,000" in page
        assert "Specialist alone, foundation model alone, hybrid (per route)" in page
        assert "<td>sentiment</td><td>specialist alone</td><td>100.0%</td>" in page
        card = orjson.loads((ROOT / "specialists" / "bundled" / "sentiment" / "manifest.json").read_bytes())
        assert f"<td>{card['metrics']['accuracy']:.1%}</td><td>card (test split)</td>" in page
        assert f"<td>{card['trained_with']['train_rows']:,}</td>" in page
        assert neighbour.read_bytes() == b"mine"
        # From the serving install: no matplotlib (the `train` extra) importable at all.
        blocked = ("import sys; sys.modules['matplotlib'] = None; from ops.cli import main; "
                   f"main(['report', '--metrics', {server.url + '/metrics'!r}, '--out', sys.argv[1]])")
        done = subprocess.run([sys.executable, "-c", blocked, str(tmp_path / "serving.html")], cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "<svg" in (tmp_path / "serving.html").read_text()
    finally:
        server.stop()


def test_report_from_a_simulation(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    rows = [("a gorgeous , witty movie .", "positive"), ("a dull , tedious mess .", "negative"),
            ("the film runs two hours .", "negative"), ("an utterly charming film .", "positive")] * 5
    data.write_bytes(b"\n".join(orjson.dumps({"text": t, "label": y}) for t, y in rows))
    sim = tmp_path / "sim.json"
    run(["simulate", "--route", "sentiment", "--data", str(data), "--foundation-accuracy", "0.9",
         "--json", str(sim)])
    out = tmp_path / "sim.svg"
    run(["report", "--simulate", str(sim), "--out", str(out)])
    assert "requests by path" in _svg_texts(out.read_text())
    # `simulate --plot` still needs matplotlib (the `train` extra): without it, a clear error.
    blocked = ("import sys; sys.modules['matplotlib'] = None; from ops.cli import main; "
               "main(['simulate', '--route', 'sentiment', '--data', sys.argv[1], '--foundation-accuracy', '0.9', "
               "'--plot', sys.argv[2]])")
    done = subprocess.run([sys.executable, "-c", blocked, str(data), str(tmp_path / "sweep.png")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--plot needs matplotlib" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "sweep.png").exists()


def test_report_takes_at_most_one_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["report", "--metrics", "http://127.0.0.1:9/metrics", "--simulate", str(tmp_path / "s.json"),
              "--out", str(tmp_path / "x.html")])
    assert done.value.code == 2
    assert "at most one" in capsys.readouterr().err


def test_report_without_a_gateway_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ROUTER_PORT", "9")  # discard: nothing listens
    with pytest.raises(SystemExit) as done:
        main(["report", "--out", str(tmp_path / "x.html")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "cannot read the source" in err and "is the gateway running?" in err
    assert not (tmp_path / "x.html").exists()


def test_report_refuses_an_output_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["report", "--metrics", "http://127.0.0.1:9/metrics", "--out", str(tmp_path / "x.png")])
    assert done.value.code == 2
    assert ".html or .svg" in capsys.readouterr().err


def test_the_comparison_per_route() -> None:
    from ops.report import RouteRow
    from ops.report_compare import Card, compare

    route = RouteRow("spam", requests={"specialist": 90.0, "foundation": 10.0}, shadow_agreement=0.97)
    route.add_cost("specialist", 0.00009)
    route.add_cost("foundation", 0.01)
    route.avoided_usd = 0.09  # what the alias would have charged for the 90 specialist answers
    inf = float("inf")
    buckets = {"specialist": [(0.001, 90.0), (1.0, 90.0), (inf, 90.0)],
               "foundation": [(0.001, 0.0), (1.0, 10.0), (inf, 10.0)]}
    card = Card("spam", 0.99, 2_000_000, 4459)
    alone, fm, hybrid = compare([route], buckets, {"spam": card})
    assert (alone.option, alone.local_share, alone.accuracy, alone.card) == ("specialist alone", 1.0, 0.99, card)
    assert alone.usd_per_1000 == pytest.approx(0.001)  # 0.00009 USD over 90 specialist answers
    assert alone.p99_ms is not None and alone.p99_ms <= 1.0
    assert (fm.local_share, fm.accuracy_kind) == (0.0, "reference")
    assert fm.usd_per_1000 == pytest.approx(1.0)  # (0.01 spent + 0.09 avoided) over 100 requests
    assert fm.p50_ms is not None and fm.p50_ms > 1.0
    assert hybrid.local_share == pytest.approx(0.9) and hybrid.usd_per_1000 == pytest.approx(0.1009)
    assert (hybrid.accuracy, hybrid.accuracy_kind) == (0.97, "shadow agreement")
    # The route's mix: 90% of answers are specialist-fast, the slowest 10% are the foundation's.
    assert hybrid.p50_ms is not None and hybrid.p50_ms <= 1.0
    assert hybrid.p99_ms is not None and hybrid.p99_ms > 1.0
