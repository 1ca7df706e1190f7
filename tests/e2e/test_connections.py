"""Hostile clients against a real uvicorn server over real sockets: oversized bodies read their
413, oversized headers get 431, slow clients are cut and counted, aborted uploads are no errors,
and past `max_connections` requests get a clear 503."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.app import create_app
from router.settings import Settings
from tests.server_thread import ServerThread


class Errors(logging.Handler):
    """Collects ERROR records of the server's loggers (uvicorn's do not propagate to root)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def errors() -> Iterator[Errors]:
    handler = Errors()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "router", "starlette")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler
    for lg in loggers:
        lg.removeHandler(handler)


@pytest.fixture
def serve(write_policy: Callable[..., Path],
          make_settings: Callable[..., Settings]) -> Iterator[Callable[..., ServerThread]]:
    servers: list[ServerThread] = []

    def no_foundation(doc: Any) -> None:  # these tests need no foundation model (nor litellm's import)
        for alias in doc["aliases"].values():
            del alias["model"]

    def start(**settings: Any) -> ServerThread:
        policy = write_policy(edit=no_foundation)
        server = ServerThread(create_app(make_settings(policy, use_redis=False, **settings))).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def connect(server: ServerThread) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a content-length body (or until close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def metric(server: ServerThread, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def classify_request(body: bytes, chunked: bool = False) -> bytes:
    head = b"POST /v1/classify HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
    if chunked:
        return head + b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


def test_twenty_3mb_bodies_all_read_their_413(serve: Callable[..., ServerThread], errors: Errors) -> None:
    gw = serve()
    body = b'{"task": "sentiment", "input": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    for i in range(20):
        with connect(gw) as sock:
            sock.sendall(classify_request(body, chunked=i % 2 == 1))  # a reset here would raise
            status, headers, payload = read_response(sock)
        assert status == 413
        assert orjson.loads(payload)["error"] == {
            "message": "request body over 1000000 bytes", "type": "invalid_request_error", "param": None,
            "code": "payload_too_large"}
        assert headers.get("connection") != "close"  # the body was read: the connection stays usable
    assert not errors.records


def test_a_body_over_the_drain_bound_gets_413_and_the_connection_closes(serve: Callable[..., ServerThread]) -> None:
    gw = serve(drain_max_bytes=2 * 1024 * 1024)
    r = httpx.post(gw.url + "/v1/classify", content=b"x" * (3 * 1024 * 1024),
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["connection"] == "close"


def test_oversized_headers_get_431_and_are_counted(serve: Callable[..., ServerThread]) -> None:
    gw = serve()
    with connect(gw) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: gw\r\nx-big: " + b"a" * 40_000 + b"\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 431 and b"too large" in body
    assert httpx.get(gw.url + "/healthz", headers={"x-fine": "a" * 8000}).status_code == 200
    assert metric(gw, 'hybrid_router_connections_cut_total{reason="header_too_large"}') == 1


def test_slow_clients_are_cut_and_counted(serve: Callable[..., ServerThread], errors: Errors) -> None:
    gw = serve(header_timeout_s=0.5, body_timeout_s=0.5)
    idle, slow_headers, slow_body = connect(gw), connect(gw), connect(gw)
    slow_headers.sendall(b"POST /v1/classify HTTP/1.1\r\nhost: gw\r\n")
    slow_body.sendall(classify_request(b'{"task": "sentiment", "input": "' + b"x" * 100)[:-50])
    for sock in (idle, slow_headers, slow_body):
        assert closed_by_server(sock, within_s=5)
        sock.close()
    assert metric(gw, 'hybrid_router_connections_cut_total{reason="header_timeout"}') == 2
    assert metric(gw, 'hybrid_router_connections_cut_total{reason="body_timeout"}') == 1
    assert metric(gw, "hybrid_router_client_disconnects_total") == 1  # the handler saw the body end early
    # A kept-alive client that is quick is not cut.
    with httpx.Client(base_url=gw.url) as client:
        for _ in range(3):
            assert client.post("/v1/classify", json={"task": "sentiment", "input": "fine ."}).status_code == 200
            time.sleep(0.3)
    assert not errors.records


def test_a_thousand_aborted_uploads_are_no_errors(serve: Callable[..., ServerThread], errors: Errors) -> None:
    gw = serve()
    head = (b"POST /v1/classify HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"content-length: 200000\r\n\r\n" + b'{"task": "sentiment", "input": "' + b"x" * 2000)
    for _ in range(20):
        batch = [connect(gw) for _ in range(50)]
        for sock in batch:
            sock.sendall(head)
        for sock in batch:  # an abortive close (RST), as a killed client
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    deadline = time.monotonic() + 10
    while metric(gw, "hybrid_router_client_disconnects_total") < 1000:
        assert time.monotonic() < deadline, metric(gw, "hybrid_router_client_disconnects_total")
        time.sleep(0.1)
    t0 = time.perf_counter()
    r = httpx.post(gw.url + "/v1/classify", json={"task": "sentiment", "input": "still here ."})
    assert r.status_code == 200 and time.perf_counter() - t0 < 1.0
    assert not errors.records, [r.getMessage() for r in errors.records[:3]]


def test_past_max_connections_requests_get_a_clear_503(serve: Callable[..., ServerThread]) -> None:
    gw = serve(max_connections=4)
    held = [connect(gw) for _ in range(4)]
    try:
        time.sleep(0.2)
        with connect(gw) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n")
            status, headers, body = read_response(sock)
        assert (status, body, headers["connection"]) == (503, b"Service Unavailable", "close")
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
    time.sleep(0.2)
    assert httpx.get(gw.url + "/healthz").status_code == 200
    assert metric(gw, 'hybrid_router_connections_cut_total{reason="overloaded"}') == 1
