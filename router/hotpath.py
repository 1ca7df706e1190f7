"""The hot paths' dispatch: `POST /v1/classify` and `POST /v1/chat/completions` without the framework layers.

Every request through Starlette passes five ASGI layers before its handler (ServerErrorMiddleware,
the access log, ExceptionMiddleware, the router's linear route match, and the route's own
exception wrapper), each wrapping ``send`` in one more closure. Profiled on the specialist path
(issue 15, BENCHMARKS.md) they cost about a fifth of the gateway's own per-request work. This
module serves the two hot routes with one lookup and the same handlers, so nothing a client sees
changes:

- the same handler functions (`routes.build_routes`): auth, body limits, validation, headers;
- the same access log middleware (`access.AccessLog`): request id, context, one access line;
- the same renderers for errors: `GatewayError` -> its status and envelope, a client that went
  away -> 400, anything else -> a 500 ``internal_error`` with the request id, after which the
  exception is re-raised for the server to log, as Starlette's ServerErrorMiddleware does.

Any other method or path (a GET on a hot path, a trailing slash, an app mounted under a root
path) goes to the full Starlette app, unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import GatewayError

__all__ = ["HOT_PATHS", "HotPaths"]

HOT_PATHS = ("/v1/classify", "/v1/chat/completions")

Handler = Callable[[Request], Awaitable[Response]]
Renderer = Callable[[Request, Exception], Awaitable[Response]]


class HotPaths:
    """ASGI: the app's POST handlers for `HOT_PATHS` called directly, inside ``wrap`` (the access
    log); everything else to ``app``.

    ``on_gateway_error``, ``on_client_gone`` and ``on_unexpected`` are the app's own exception
    handlers, so an error looks the same whichever way the request came.
    """

    def __init__(self, app: ASGIApp, handlers: Mapping[str, Handler],
                 wrap: Callable[[ASGIApp], ASGIApp], on_gateway_error: Renderer,
                 on_client_gone: Renderer, on_unexpected: Renderer) -> None:
        self.app = app
        self._handlers = dict(handlers)
        self._on_gateway_error = on_gateway_error
        self._on_client_gone = on_client_gone
        self._on_unexpected = on_unexpected
        self._served = wrap(self._serve)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self._handlers:
            await self._served(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request: Request = Request(scope, receive, send)
        try:
            response = await self._handlers[scope["path"]](request)
        except GatewayError as exc:
            response = await self._on_gateway_error(request, exc)
        except ClientDisconnect as exc:
            response = await self._on_client_gone(request, exc)
        except Exception as exc:
            await (await self._on_unexpected(request, exc))(scope, receive, send)
            raise  # for the server's log, as Starlette's ServerErrorMiddleware does
        await response(scope, receive, send)
