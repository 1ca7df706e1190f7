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

from router.app import create_app
from router.cli import main
from router.report import _quantile, from_metrics_text
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
    assert _quantile(0.5, buckets) == pytest.approx(0.1)
    assert _quantile(0.75, buckets) == pytest.approx(0.15)
    assert _quantile(0.5, []) is None


@pytest.mark.redis
def test_report_from_a_gateways_metrics(write_policy: Callable[..., Path], make_settings: Callable[..., Settings],
                                        redis_db: redis.Redis, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    def edit(doc: Any) -> None:
        doc["routes"]["sentiment"]["min_confidence"] = 0.9

    server = ServerThread(create_app(make_settings(write_policy(edit=edit)))).start()
    try:
        texts = ["a gorgeous , witty , seductive movie .", "the film runs two hours .", "the film runs two hours ."]
        paths = [httpx.post(server.url + "/v1/classify", json={"task": "sentiment", "input": t},
                            timeout=60).json()["path"] for t in texts]
        out = tmp_path / "split.svg"
        run(["report", "--metrics", server.url + "/metrics", "--out", str(out)])
        texts = _svg_texts(out.read_text())
        assert "requests by path" in texts and "requests by route and path" in texts and "sentiment" in texts
        assert "ms (log)" in texts  # latency spans decades
        split = from_metrics_text(httpx.get(server.url + "/metrics").text, "t")
        counts = {r.path: r.requests for r in split.rows}
        for p in set(paths):
            assert counts[p] == paths.count(p)
        assert sum(counts.values()) == 3
        (route,) = split.routes
        assert route.route == "sentiment" and route.total == 3 and route.cost_usd > 0
        # The HTML page is written alone: a PNG of the same name stays as it was.
        html_out, neighbour = tmp_path / "split.html", tmp_path / "split.png"
        neighbour.write_bytes(b"mine")
        run(["report", "--metrics", server.url + "/metrics", "--out", str(html_out)])
        page = html_out.read_text()
        assert "<svg" in page and "<table>" in page and "USD per 1,000" in page
        assert neighbour.read_bytes() == b"mine"
        # From the serving install: no matplotlib (the `train` extra) importable at all.
        blocked = ("import sys; sys.modules['matplotlib'] = None; from router.cli import main; "
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


def test_report_needs_exactly_one_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["report", "--out", str(tmp_path / "x.html")])
    assert done.value.code == 2
    assert "exactly one" in capsys.readouterr().err


def test_report_refuses_an_output_it_cannot_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["report", "--metrics", "http://127.0.0.1:9/metrics", "--out", str(tmp_path / "x.png")])
    assert done.value.code == 2
    assert ".html or .svg" in capsys.readouterr().err
