"""`hybrid-router report` from a gateway's /metrics and from a `simulate --json` run."""

from __future__ import annotations

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

PNG = b"\x89PNG\r\n\x1a\n"


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
        paths = [httpx.post(server.url + "/v1/classify", json={"task": "sentiment", "input": t}).json()["path"]
                 for t in texts]
        out = tmp_path / "split.png"
        run(["report", "--metrics", server.url + "/metrics", "--out", str(out)])
        assert out.read_bytes()[:8] == PNG
        split = from_metrics_text(httpx.get(server.url + "/metrics").text, "t")
        counts = {r.path: r.requests for r in split.rows}
        for p in set(paths):
            assert counts[p] == paths.count(p)
        assert sum(counts.values()) == 3
        html_out = tmp_path / "split.html"
        run(["report", "--metrics", server.url + "/metrics", "--out", str(html_out)])
        page = html_out.read_text()
        assert "data:image/png;base64," in page and "<table>" in page
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
    out = tmp_path / "sim.png"
    run(["report", "--simulate", str(sim), "--out", str(out)])
    assert out.read_bytes()[:8] == PNG


def test_report_needs_exactly_one_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["report", "--out", str(tmp_path / "x.png")])
    assert done.value.code == 2
    assert "exactly one" in capsys.readouterr().err
