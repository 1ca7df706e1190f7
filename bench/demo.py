"""Demo traffic for the README's report image: real labeled texts through a real gateway.

`python -m bench.demo [--out docs/img/report.svg]` starts the fake upstream and a gateway (the
default policy with its aliases pointed at the upstream, in-process cache), sends the first
texts of the shared sst2, sms_spam, banking77 and clinc150 test splits to their routes (a fifth
of them twice, as repeated traffic), and renders `hybrid-router report` from the gateway's
/metrics. Bounded: a few thousand requests to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx
from ruamel.yaml import YAML

from ops.cli import main as cli_main
from router.app import create_app
from router.settings import FoundationSettings, RedisSettings, Settings
from tests.fake_upstream import Upstream
from tests.server_thread import ServerThread

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
TRAFFIC = {"sentiment": "sst2", "spam": "sms_spam", "banking": "banking77", "intent": "clinc150"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "report.svg")
    parser.add_argument("--per-route", type=int, default=600)
    args = parser.parse_args()
    upstream = Upstream().start()
    yaml = YAML(typ="rt")
    doc = yaml.load((ROOT / "policies" / "default.yaml").read_text())
    for alias in doc["aliases"].values():
        alias.update(model="openai/fake-ok", api_base=upstream.api_base, price_as="gpt-4o-mini")
    policy = Path("/tmp/hybrid-router-demo-policy.yaml")
    with policy.open("w") as f:
        yaml.dump(doc, f)
    settings = Settings(policy_path=policy, redis=RedisSettings(), foundation=FoundationSettings(),
                        _env_file=None)  # type: ignore[call-arg]
    gateway = ServerThread(create_app(settings)).start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            for route, dataset in TRAFFIC.items():
                lines = (DATA / dataset / "test.jsonl").read_text().splitlines()[: args.per_route]
                texts = [json.loads(line)["text"] for line in lines]
                texts += texts[: len(texts) // 5]  # repeated requests: cache hits
                for text in texts:
                    client.post("/v1/classify", json={"task": route, "input": text}).raise_for_status()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            cli_main(["report", "--metrics", gateway.url + "/metrics", "--out", str(args.out),
                      "--title", "Hybrid Router: shared test splits through the default policy"])
        except SystemExit as done:
            if done.code not in (0, None):
                raise
    finally:
        gateway.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
