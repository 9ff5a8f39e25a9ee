"""Templates, response headers, and the one table that turns errors into pages.

Templates are loaded through ``importlib.resources`` (so they work from a wheel or a zip) and
always autoescape: item text, rationales and comments are untrusted. Every page carries a
Content-Security-Policy that allows only this server's own script and style, so even a missed
escape could not run injected script.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FunctionLoader, StrictUndefined

from llmlabel.api.errors import status_of
from llmlabel.errors import AuthenticationError, LLMLabelError

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

TITLES = {401: "Please log in", 403: "Not allowed", 404: "Not found", 409: "Already changed",
          422: "Cannot accept that", 500: "Something went wrong"}


def _template_source(name: str) -> str | None:
    resource = resources.files("llmlabel.web").joinpath("templates", *name.split("/"))
    return resource.read_text(encoding="utf-8") if resource.is_file() else None


ENV = Environment(loader=FunctionLoader(_template_source), autoescape=True, undefined=StrictUndefined,
                  trim_blocks=True, lstrip_blocks=True)


def static_file(name: str) -> bytes | None:
    resource = resources.files("llmlabel.web").joinpath("static", name)
    return resource.read_bytes() if resource.is_file() else None


def page(template: str, *, http_status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("who", None)
    context.setdefault("csrf", "")
    context.setdefault("project", None)
    return HTMLResponse(ENV.get_template(template).render(**context), status_code=http_status, headers=HEADERS)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    section = re.match(r"^/ui/p/[^/]+/(annotate|review)", request.url.path)
    retry = section.group(0) if section and status in (404, 409, 422) and request.method == "POST" else None
    return page("error.html", http_status=status, title=TITLES.get(status, "Cannot do that"), message=message, retry=retry)


def login_redirect(request: Request, cookie_name: str) -> RedirectResponse:
    target = request.url.path if request.method == "GET" else "/ui/"
    response = redirect(f"/ui/login?next={quote(target, safe='/')}")
    response.delete_cookie(cookie_name, path="/ui")
    return response


class PageRoute(APIRoute):
    """A route whose errors become pages: log in again, a message with the right status, or a
    plain 500 (the traceback goes to the log, never to the browser)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthenticationError:
                return login_redirect(request, request.app.state.settings.web_cookie_name)
            except LLMLabelError as exc:
                return error_page(request, status_of(exc), str(exc))
            except RequestValidationError as exc:
                fields = ", ".join(str(e.get("loc", ("?",))[-1]) for e in exc.errors())
                return error_page(request, 422, f"the form was incomplete or malformed ({fields}); go back and try again")
            except HTTPException:
                raise
            except Exception:
                log.exception("web page %s %s failed", request.method, request.url.path)
                return error_page(request, 500, "the server could not show this page; the error was logged")

        return guarded
