"""What every page of the web face shares for safety: the cookies' names, the security
headers (a middleware), the form reader with its size cap, and the sign-in redirect check.

The session cookie and the CSRF tokens are checked in :mod:`server_ext.net.web_face`; the
sessions themselves are :mod:`server_ext.app.web_sessions`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

SESSION_COOKIE = "__Host-session"  # RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain
LOGIN_COOKIE = "__Host-login"  # the login form's CSRF token (double submit)
#: No inline script or style: everything the page loads comes from here.
CSP = (
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
_MAX_FORM = 16 * 1024
_SAFE_NEXT = re.compile(r"^/[A-Za-z0-9/_\-]*$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The headers above on every page and static file (not on ``/api/``); no caching of
    pages."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if not request.path.startswith("/api/"):
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
    if isinstance(response, web.HTTPException):
        raise response
    return response


async def form_fields(request: web.Request) -> dict[str, str]:
    """A posted form's text fields; a body over the cap is refused before it is read."""
    if request.content_length is not None and request.content_length > _MAX_FORM:
        raise web.HTTPRequestEntityTooLarge(max_size=_MAX_FORM, actual_size=request.content_length)
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


def safe_next(value: str) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    return value if _SAFE_NEXT.match(value) and not value.startswith("//") else ""


__all__ = [
    "CSP",
    "LOGIN_COOKIE",
    "SECURITY_HEADERS",
    "SESSION_COOKIE",
    "Handler",
    "form_fields",
    "safe_next",
    "security_headers",
]
