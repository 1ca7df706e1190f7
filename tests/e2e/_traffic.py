"""Scripted, bounded traffic for the observability test: every path the gateway can take.

`send_traffic(base_url, routes)` drives a running gateway over HTTP with a few hundred requests
and returns how many answers took each path (`specialist`, `foundation`, `cache`, `degraded`) as
read from the `x-router-path` header. The policy it expects is default.yaml's routes (those whose
specialists exist) plus a `sentiment_broken` classify route whose alias answers 500, so the
degraded path is reached without stopping anything. Chat and auto routes are exercised when
their specialists are present.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection

import httpx

__all__ = ["BROKEN_ROUTE", "send_traffic"]

BROKEN_ROUTE = "sentiment_broken"

# Short movie-review sentences: the sentiment specialist is confident on the first two groups.
_POSITIVE = ["a gorgeous , witty , seductive movie .", "a delightful and moving masterpiece .",
             "one of the best films of the year , funny and warm ."]
_NEGATIVE = ["a dull , tedious and boring mess .", "the worst film i have seen , lifeless and stupid .",
             "an ugly , pointless waste of time ."]
# Unsure or novel inputs escalate; the [[label:X]] marker tells the fake upstream what to answer.
_UNSURE = ["the film runs two hours .", "it is a movie about a man .", "they released it in march ."]
_NOVEL = ["zorblax quintessify flumbergast", "vlorp skandivar mekkelrunt", "qwixotic brumblefax yorn"]
_CHAT_SUPPORT = ["hello there", "thank you so much", "i lost my card yesterday",
                 "what is the meaning of life", "can you tell me a joke about penguins"]
_CHAT_AUTO = ["summarize this paragraph about trade policy", "write a poem about the sea",
              "what is the capital of france", "extract the dates from this email"]


def _classify(client: httpx.Client, paths: Counter[str], task: str, text: str | list[str]) -> None:
    r = client.post("/v1/classify", json={"task": task, "input": text})
    r.raise_for_status()
    if isinstance(text, list):
        for item in r.json()["results"]:
            paths[item["path"]] += 1
    else:
        paths[r.headers["x-router-path"]] += 1


def _chat(client: httpx.Client, paths: Counter[str], model: str, text: str, stream: bool = False) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    if stream:
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            r.raise_for_status()
            r.read()
    else:
        r = client.post("/v1/chat/completions", json=body)
        if r.status_code == 503:  # no foundation answer for an open-ended request: still observed
            paths["unavailable"] += 1
            return
        r.raise_for_status()
    paths[r.headers.get("x-router-path", "none")] += 1


def send_traffic(base_url: str, routes: Collection[str], rounds: int = 3, pause_s: float = 0.0,
                 broken: bool = True, first_round: int = 0) -> Counter[str]:
    """Send `rounds` passes of scripted requests (30 answers a pass, more when the chat, auto and
    other classification routes exist), pausing `pause_s` seconds after each pass. `broken=False`
    leaves out the route whose alias fails: healthy traffic only. Texts that carry the round
    number (novel inputs, streamed chat) are new in every round from `first_round` on, so each
    pass escalates some requests instead of answering everything from the cache."""
    paths: Counter[str] = Counter()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for n in range(first_round, first_round + rounds):
            for text in _POSITIVE + _NEGATIVE:
                _classify(client, paths, "sentiment", text)
            # Same unsure texts every round: escalated in round 0, then answered from the cache.
            for i, text in enumerate(_UNSURE):
                _classify(client, paths, "sentiment", f"{text} [[label:{('positive', 'negative')[i % 2]}]]")
            for text in _NOVEL:
                _classify(client, paths, "sentiment", f"{text} {n}")
            _classify(client, paths, "sentiment", _POSITIVE + _UNSURE)
            for text in (_UNSURE + _NOVEL) if broken else []:
                _classify(client, paths, BROKEN_ROUTE, f"{text} round {n}")
            # The OpenAI API: a classification route, a foundation alias named directly, streaming.
            for text in _POSITIVE[:2] + _UNSURE[:2]:
                _chat(client, paths, "sentiment", text)
            _chat(client, paths, "cheap", "say hello")  # repeated each round: cached after the first
            _chat(client, paths, "cheap", f"say hello in language number {n}", stream=True)
            # A client error (unknown task) each round: the error panels have something to show.
            paths["client_error"] += client.post("/v1/classify", json={"task": "no_such_task", "input": "x"}
                                                 ).status_code == 404
            if "support" in routes:
                for text in _CHAT_SUPPORT:
                    _chat(client, paths, "support", text)
            if "auto" in routes:
                for text in _CHAT_AUTO:
                    _chat(client, paths, "auto", text)
            for route in sorted(routes):
                if route in ("sentiment", BROKEN_ROUTE, "support", "auto"):
                    continue
                for text in _POSITIVE[:1] + _UNSURE[:1] + _NOVEL[:1]:
                    _classify(client, paths, route, text)
            time.sleep(pause_s)
    return paths
