import json, time
from tests.e2e.test_prometheus import *  # noqa
from tests.e2e.test_prometheus import _Prometheus, _binaries, _dashboard, _panels, _substitute, _alert_rules, _scraped_total

def test_dump(gateway, tmp_path):
    server, registry, routes = gateway
    with httpx.Client(base_url=server.url) as c:
        while c.get("/readyz").status_code != 200: time.sleep(0.1)
    prom = _Prometheus(_binaries()[0], tmp_path, server.url.removeprefix("http://"))
    try:
        prom.wait("up", lambda: list(prom.values('up{job="hybrid-router"}').values()) == [1.0])
        print(send_traffic(server.url, routes, rounds=8, pause_s=0.25))
        ans = _scraped_total(registry, "hybrid_router_requests_total")
        prom.wait("s", lambda: sum(prom.values("sum(hybrid_router_requests_total)").values()) == ans)
        time.sleep(2.5)
        for p in _panels(_dashboard()):
            for t in p.get("targets", []):
                v = prom.values(_substitute(t["expr"]))
                print("##", p["title"], t["refId"])
                for k, x in v.items(): print("   ", k, round(x, 6))
        for a in _dashboard()["annotations"]["list"][1:]:
            print("## ann", a["name"], prom.values(a["expr"]))
        for r in _alert_rules():
            print("## alert", r["alert"], prom.values(r["expr"]))
    finally:
        prom.stop()
