"""The gateway's error tree, and the one place that turns an error into an HTTP body.

    GatewayError                      500 server_error / internal_error
    ├── InvalidRequestError           400 invalid_request_error   (bad JSON, bad fields)
    │   ├── PayloadTooLargeError      413 invalid_request_error / payload_too_large
    │   └── UpstreamRejectedError     400 invalid_request_error / upstream_rejected (provider 4xx)
    ├── AuthenticationError           401 authentication_error     (API keys, admin; WWW-Authenticate)
    ├── PermissionDeniedError         403 permission_error / model_not_permitted (the key's routes/aliases)
    ├── ModelNotFoundError            404 invalid_request_error / model_not_found
    ├── RateLimitedError              429 rate_limit_error         (queue full, key rates; Retry-After)
    │   └── InsufficientQuotaError    429 insufficient_quota       (the key's spend budget; Retry-After)
    ├── UpstreamError                 502 api_error / upstream_error
    │   ├── UpstreamTimeoutError      504 api_error / upstream_timeout
    │   └── UpstreamRefusedError      502 api_error / upstream_refused (our key/model refused)
    └── ServiceUnavailableError       503 api_error / foundation_unavailable (Retry-After)

`/v1/*` routes render OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}`` so
the official SDK raises its matching exception class; other routes render RFC 9457
``application/problem+json``. Start-up failures (`PolicyConfigError`, `ArtifactError`) are not
in this tree: they stop the process and never become responses.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "GatewayError",
    "InsufficientQuotaError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UpstreamError",
    "UpstreamRefusedError",
    "UpstreamRejectedError",
    "UpstreamTimeoutError",
    "error_body",
    "problem_body",
]


class GatewayError(Exception):
    status: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"
    close_connection: bool = False
    """Answer with `connection: close` (e.g. a 413 whose body was not read to its end)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        headers = {"connection": "close"} if self.close_connection else {}
        if self.retry_after_s is not None:
            headers["retry-after"] = str(max(1, round(self.retry_after_s)))
        return headers


class InvalidRequestError(GatewayError):
    status, error_type, code = 400, "invalid_request_error", "invalid_request"


class PayloadTooLargeError(InvalidRequestError):
    status, code = 413, "payload_too_large"


class AuthenticationError(GatewayError):
    status, error_type, code = 401, "authentication_error", "invalid_admin_token"

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "www-authenticate": 'Bearer realm="hybrid-router"'}


class PermissionDeniedError(GatewayError):
    status, error_type, code = 403, "permission_error", "model_not_permitted"


class ModelNotFoundError(GatewayError):
    status, error_type, code = 404, "invalid_request_error", "model_not_found"


class RateLimitedError(GatewayError):
    status, error_type, code = 429, "rate_limit_error", "rate_limited"


class InsufficientQuotaError(RateLimitedError):
    error_type, code = "insufficient_quota", "insufficient_quota"

    def headers(self) -> dict[str, str]:
        # OpenAI SDKs retry a 429 at once unless told not to; a spent budget stays spent for
        # the rest of its window (Retry-After), so retrying now only adds load.
        return {**super().headers(), "x-should-retry": "false"}


class UpstreamError(GatewayError):
    status, error_type, code = 502, "api_error", "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    status, code = 504, "upstream_timeout"


class UpstreamRefusedError(UpstreamError):
    """The provider refused the operator's key, model or account (401/402/403/404): not the caller's doing."""

    code = "upstream_refused"


class UpstreamRejectedError(InvalidRequestError):
    """The provider rejected this request (400/413/422: a value out of its range, context length,
    content policy): the caller's to fix, and no sign that the alias is failing."""

    code = "upstream_rejected"


class ServiceUnavailableError(GatewayError):
    status, error_type, code = 503, "api_error", "foundation_unavailable"


def error_body(exc: GatewayError) -> dict[str, object]:
    """OpenAI's error envelope."""
    return {
        "error": {
            "message": exc.message,
            "type": exc.error_type,
            "param": exc.param,
            "code": exc.code,
        }
    }


def problem_body(exc: GatewayError, instance: str) -> dict[str, object]:
    """RFC 9457 problem details, for routes outside /v1."""
    return {
        "type": f"https://hybrid-router.dev/errors/{exc.code}",
        "title": exc.error_type,
        "status": exc.status,
        "detail": exc.message,
        "instance": instance,
    }
