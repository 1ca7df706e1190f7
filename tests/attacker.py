"""A loopback listener that stands in for an attacker's host: it records every connection.

Any TCP connection counts, HTTP or not, and it answers like an OpenAI-compatible server would
(a forged completion), so a gateway that was steered to it would be "happy" with the answer and
only `hits` tells. Tests assert `hits == []` after trying to redirect the gateway here.
"""

from __future__ import annotations

import socket
import socketserver
import threading

import orjson

_FORGED = orjson.dumps({
    "id": "chatcmpl-forged", "object": "chat.completion", "created": 0, "model": "forged",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "forged"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
})


class AttackerListener:
    def __init__(self) -> None:
        self.hits: list[bytes] = []
        hits = self.hits

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(2.0)
                try:
                    data = self.request.recv(65536)
                except OSError:
                    data = b""
                hits.append(data[:2048])
                head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                        b"content-length: " + str(len(_FORGED)).encode() + b"\r\n\r\n")
                try:
                    self.request.sendall(head + _FORGED)
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def server_bind(self) -> None:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                super().server_bind()

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def start(self) -> AttackerListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
