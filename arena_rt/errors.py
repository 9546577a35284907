"""The one error tree of arena_rt.

ArenaError                 a client-visible failure with a PROTOCOL.md section 4 code
├── BadRequest             400 bad_message (names the field)
├── Unauthorized           401 unauthorized
├── Forbidden              403 forbidden
├── NotFound               404 not_found
├── Conflict               409 duplicate / invalid_state
├── TooLarge               413 too_large
├── RateLimited            429 rate_limited
└── Unavailable            503 unavailable (a backend is down)
ConfigError                settings that prevent start-up (never reaches a client)

Library errors (asyncpg, redis, msgspec) are translated into these at the edge with ``from``.
"""

from __future__ import annotations

from arena_rt.protocol import ErrorCode


class ArenaError(Exception):
    status = 500
    code = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(ArenaError):
    status = 400
    code = ErrorCode.BAD_MESSAGE


class Unauthorized(ArenaError):
    status = 401
    code = ErrorCode.UNAUTHORIZED


class Forbidden(ArenaError):
    status = 403
    code = ErrorCode.FORBIDDEN


class NotFound(ArenaError):
    status = 404
    code = ErrorCode.NOT_FOUND


class Conflict(ArenaError):
    status = 409
    code = ErrorCode.DUPLICATE


class TooLarge(ArenaError):
    status = 413
    code = ErrorCode.TOO_LARGE


class RateLimited(ArenaError):
    status = 429
    code = ErrorCode.RATE_LIMITED


class Unavailable(ArenaError):
    status = 503
    code = ErrorCode.UNAVAILABLE


class ConfigError(Exception):
    """The server cannot start with these settings; the message says what to set."""


STATUS_BY_CODE = {
    ErrorCode.BAD_MESSAGE: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NOT_YOUR_TURN: 409,
    ErrorCode.WRONG_TURN: 409,
    ErrorCode.INVALID_STATE: 409,
    ErrorCode.BATTLE_FULL: 409,
    ErrorCode.DUPLICATE: 409,
    ErrorCode.NOT_OWNER: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
}


def error_for(code: ErrorCode, message: str) -> ArenaError:
    """An ArenaError carrying a section 4 code, with the HTTP status that code maps to."""
    error = ArenaError(message, code=code)
    error.status = STATUS_BY_CODE[code]
    return error
