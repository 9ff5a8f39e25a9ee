"""The pages over plain HTTP (no browser): CSRF, cookies, headers, status codes, no tracebacks."""

from __future__ import annotations

import re

import httpx
import pytest

from llmlabel.web.auth import safe_next
from llmlabel.web.charts import columns, segments

from .conftest import Site


def client(site: Site, who: str | None = None) -> httpx.Client:
    cookies = {"llmlabel_token": site.tokens[who]} if who else {}
    return httpx.Client(base_url=site.url, cookies=cookies, follow_redirects=False, timeout=10)


def form_of(html: str) -> tuple[str, str]:
    """The answer form's action and CSRF token."""
    action = re.search(r'<form method="post" action="(/ui/p/[^"]+/annotate/[^"]+)"', html)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert action and csrf, html
    return action.group(1), csrf.group(1)


def test_a_post_without_the_csrf_token_is_refused(site: Site) -> None:
    with client(site, "cara") as c:
        page = c.get("/ui/p/reviews/annotate")
        assert page.status_code == 200
        action, csrf = form_of(page.text)
        for bad in ({}, {"csrf": "0" * 64}, {"csrf": ""}):
            r = c.post(action, data={"label": "positive", **bad})
            assert r.status_code == 403, r.text
            assert "security token" in r.text
        assert site.votes("reviews", "cara") == {}
        r = c.post(action, data={"label": "negative", "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/p/reviews/annotate?saved=")
        assert [v[1] for v in site.votes("reviews", "cara").values()] == ["negative"]
        replay = c.post(action, data={"label": "negative", "csrf": csrf})
        assert replay.status_code == 409 and "already answered" in replay.text


def test_the_csrf_token_of_one_session_does_not_work_for_another(site: Site) -> None:
    with client(site, "ann") as c:
        theirs = form_of(c.get("/ui/p/reviews/annotate").text)[1]
    with client(site, "cara") as c:
        action, _ = form_of(c.get("/ui/p/reviews/annotate").text)
        assert c.post(action, data={"label": "positive", "csrf": theirs}).status_code == 403


def test_login_needs_its_double_submit_token_and_sets_a_strict_httponly_cookie(site: Site) -> None:
    with client(site) as c:
        assert c.post("/ui/login", data={"token": site.tokens["ann"]}).status_code == 403
        form = c.get("/ui/login")
        nonce = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        wrong = c.post("/ui/login", data={"token": "llml_nope", "csrf": nonce})
        assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
        ok = c.post("/ui/login", data={"token": site.tokens["ann"], "csrf": nonce, "next": "//evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/"
        cookie = next(h for h in ok.headers.get_list("set-cookie") if h.startswith("llmlabel_token="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie


def test_logout_needs_the_csrf_token_and_clears_the_cookie(site: Site) -> None:
    with client(site, "ada") as c:
        confirm = c.get("/ui/logout")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', confirm.text).group(1)  # type: ignore[union-attr]
        assert c.post("/ui/logout", data={}).status_code == 403
        out = c.post("/ui/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        cleared = next(h for h in out.headers.get_list("set-cookie") if h.startswith("llmlabel_token="))
        assert "Max-Age=0" in cleared or "expires=" in cleared.lower()


def test_pages_without_a_session_redirect_to_login(site: Site) -> None:
    with client(site) as c:
        r = c.get("/ui/p/reviews/annotate")
        assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/p/reviews/annotate"
    with httpx.Client(base_url=site.url, cookies={"llmlabel_token": "llml_revoked"}) as c:
        r = c.get("/ui/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")


def test_roles_and_membership_match_the_api(site: Site) -> None:
    with client(site, "ann") as c:
        other = c.get("/ui/p/other/annotate")
        assert other.status_code == 404 and "no project named" in other.text
        assert c.get("/ui/p/other").status_code == 404
        assert c.get("/ui/p/reviews").status_code == 403
        assert c.get("/ui/p/reviews/review").status_code == 403
        assert c.get("/ui/p/nope").status_code == 404
    with client(site, "rita") as c:
        assert c.get("/ui/p/reviews/annotate").status_code == 403
        assert c.get("/ui/p/xss").status_code == 404


def test_staff_see_the_dashboard_and_the_review_queue(site: Site) -> None:
    with client(site, "rita") as c:
        r = c.get("/ui/p/triage")
        assert r.status_code == 200 and '<svg class="chart" id="throughput"' in r.text
        assert "gpt-test" in r.text and "hana" in r.text
    with client(site, "ada") as c:
        home = c.get("/ui/")
        assert home.status_code == 200
        assert all(f"/ui/p/{p}/review" in home.text for p in ("reviews", "triage", "other", "shop"))


def test_a_gated_annotator_gets_a_clear_message(site: Site) -> None:
    with client(site, "gus") as c:
        r = c.get("/ui/p/other/annotate")
        assert r.status_code == 403 and "paused" in r.text and "quality bar" in r.text


def test_pages_carry_security_headers_and_errors_show_no_traceback(site: Site) -> None:
    with client(site, "rita") as c:
        r = c.get("/ui/p/triage/review?kind=bogus")
        assert r.status_code == 422 and "is not one of" in r.text
        assert "Traceback" not in r.text
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert c.get("/ui/static/app.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/ui/static/../pages.py").status_code == 404
        assert c.get("/ui/nowhere").status_code == 404


@pytest.mark.parametrize(("url", "expected"), [
    ("/ui/p/x/annotate", "/ui/p/x/annotate"), ("//evil.example/ui/", "/ui/"), ("https://evil.example", "/ui/"),
    ("/ui/\\evil", "/ui/"), (None, "/ui/"), ("/api/v1/projects", "/ui/"),
])
def test_safe_next(url: str | None, expected: str) -> None:
    assert safe_next(url) == expected


def test_chart_geometry_by_hand() -> None:
    chart = columns([("human", "h", [0, 2, 4]), ("llm", "m", [0, 2, 0])], ["a", "b", "c"],
                    width=336, height=134, tick_every=1)
    # plot height 134 - 12 - 22 = 100; the tallest column (4) fills it; slot (336 - 36) / 3 = 100
    assert chart.y_max == 4
    assert [(r.css, r.height) for r in chart.rects] == [("h", 50.0), ("m", 50.0), ("h", 100.0)]
    assert chart.rects[0].y == 62.0 and chart.rects[1].y == 12.0
    assert [x for x, _ in chart.ticks] == [86.0, 186.0, 286.0]
    bar = segments([("final", "f", 3), ("escalated", "e", 0), ("open", "o", 1)], width=400)
    assert [(r.x, r.width) for r in bar.rects] == [(0.0, 300.0), (300.0, 100.0)]
    assert bar.rects[0].title == "final: 3 (75%)"


def test_an_unexpected_error_is_a_plain_500_page_and_the_traceback_goes_to_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fastapi import APIRouter, FastAPI
    from fastapi.testclient import TestClient

    from llmlabel.web.render import PageRoute

    router = APIRouter(route_class=PageRoute)

    @router.get("/ui/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    app = FastAPI()
    app.include_router(router)
    r = TestClient(app).get("/ui/boom")
    assert r.status_code == 500 and "Something went wrong" in r.text
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert "secret internals" in caplog.text


@pytest.mark.parametrize(("labels", "fields", "widget", "keys"), [
    ({"type": "single", "classes": ["a", "b"]}, {"text": "t"}, 'type="submit" name="label" value="a"', 2),
    ({"type": "multi", "classes": ["a", "b", "c"]}, {"text": "t"}, 'type="checkbox" name="label" value="c"', 3),
    ({"type": "taxonomy", "paths": ["x/y", "x/z", "w"]}, {"text": "t"}, '<option value="x/z"', 0),
    ({"type": "options"}, {"text": "t", "options": ["<i>first</i>", {"alt": 2}]}, 'value="1"', 2),
])
def test_every_label_type_renders_its_widget(labels: dict, fields: dict, widget: str, keys: int) -> None:
    from datetime import UTC, datetime

    from llmlabel.config import parse_config
    from llmlabel.tasks import Task
    from llmlabel.web.pages import _label_form
    from llmlabel.web.render import page

    config = parse_config({"name": "p", "labels": labels})
    form = _label_form(config, fields)
    task = Task("lease", "i1", "t", fields, [c.value for c in form.choices], "", datetime.now(UTC))
    html = page("annotate.html", task=task, form=_label_form(config, fields), saved=None, answered=0,
                project="p").body.decode()
    assert widget in html
    assert html.count("data-key=") == keys
    assert "<i>first</i>" not in html

