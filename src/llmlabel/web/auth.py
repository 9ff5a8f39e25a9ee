"""The browser session: a cookie holding the API token, and CSRF tokens for the forms.

The cookie is HttpOnly (no script can read it), SameSite=Strict (no other site's page can
send it) and scoped to ``/ui``. Because authentication rides on a cookie, every form also
carries a CSRF token: derived from the session token with HMAC, so it needs no server state
and only someone who can read the page (not a third-party site) can know it. The login form,
which has no session yet, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response
from sqlmodel import Session

from llmlabel.access import Principal, authenticate
from llmlabel.api.deps import ApiSettings
from llmlabel.errors import AuthenticationError, PermissionDeniedError

COOKIE_PATH = "/ui"
_CSRF_CONTEXT = b"llmlabel web form v1"
_STALE = "the form's security token is missing or stale; reload the page and try again"


def session_token(request: Request, settings: ApiSettings) -> str:
    token = request.cookies.get(settings.web_cookie_name)
    if not token:
        raise AuthenticationError("log in first")
    return token


def current_principal(session: Session, request: Request, settings: ApiSettings) -> Principal:
    return authenticate(session, token=session_token(request, settings))


def csrf_token(request: Request, settings: ApiSettings) -> str:
    token = session_token(request, settings)
    return hmac.new(token.encode(), _CSRF_CONTEXT, hashlib.sha256).hexdigest()


def check_csrf(request: Request, settings: ApiSettings, submitted: str) -> None:
    if not submitted or not hmac.compare_digest(submitted.encode(), csrf_token(request, settings).encode()):
        raise PermissionDeniedError(_STALE)


def _cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(name, value, httponly=True, samesite="strict", path=COOKIE_PATH,
                        secure=request.url.scheme == "https")


def start_session(response: Response, request: Request, settings: ApiSettings, token: str) -> None:
    _cookie(response, request, settings.web_cookie_name, token)
    response.delete_cookie(_login_cookie(settings), path=COOKIE_PATH)


def end_session(response: Response, settings: ApiSettings) -> None:
    response.delete_cookie(settings.web_cookie_name, path=COOKIE_PATH)


def _login_cookie(settings: ApiSettings) -> str:
    return settings.web_cookie_name + "_login"


def login_nonce(request: Request, settings: ApiSettings) -> str:
    """The double-submit value for the login form (kept while the browser has one)."""
    return request.cookies.get(_login_cookie(settings)) or secrets.token_urlsafe(24)


def set_login_nonce(response: Response, request: Request, settings: ApiSettings, nonce: str) -> None:
    _cookie(response, request, _login_cookie(settings), nonce)


def check_login_nonce(request: Request, settings: ApiSettings, submitted: str) -> None:
    expected = request.cookies.get(_login_cookie(settings), "")
    if not expected or not submitted or not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise PermissionDeniedError(_STALE)


def safe_next(url: str | None) -> str:
    """Only a path inside the UI: never another host (``//evil``) or scheme."""
    if url and url.startswith("/ui/") and not url.startswith("//") and "\\" not in url and "\n" not in url:
        return url
    return "/ui/"
