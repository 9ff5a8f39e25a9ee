"""The pages in headless Chromium: keyboard labelling, escaping, review, dashboard, access."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import select

from llmlabel.store.tables import Adjudication, Gold, Item, Lease, Voter

from .conftest import XSS, Site, login

pytestmark = pytest.mark.browser


def shot(page: Any, site: Site, name: str) -> None:
    page.screenshot(path=str(site.shots / f"{name}.png"), full_page=True)


def press(page: Any, key: str) -> None:
    with page.expect_navigation():
        page.keyboard.press(key)


def test_annotate_three_items_with_keys_1_and_2(page: Any, site: Site) -> None:
    page.goto("/ui/login")
    shot(page, site, "login")
    login(page, site, "ann")
    shot(page, site, "home")
    page.goto("/ui/p/reviews/annotate")
    shot(page, site, "annotate")
    expected: dict[str, tuple[str, bool, str | None]] = {}
    for key, label in (("1", "positive"), ("2", "negative"), ("1", "positive")):
        html = page.content()
        assert "gpt-test" not in html and "LLM-SAYS" not in html  # no other votes: no suggestions in this project
        item = page.inner_text("#item-id")
        comment = None
        if len(expected) == 1:  # the second answer is unsure and has a comment; Esc leaves the box
            page.check("#unsure")
            page.fill("#comment", "typing 1 2 3 here does not answer")
            page.keyboard.press("1")
            page.keyboard.press("Escape")
            comment = "typing 1 2 3 here does not answer1"
        press(page, key)
        assert page.inner_text(".flash") == f"Saved your answer on item {item}."
        expected[item] = (label, len(expected) == 1, comment)
    votes = site.votes("reviews", "ann")
    assert {i: (v[1], v[2], v[3]) for i, v in votes.items()} == expected
    assert not page.dialogs


def test_reloading_the_annotate_page_shows_the_same_task(page: Any, site: Site) -> None:
    login(page, site, "cara")
    page.goto("/ui/p/reviews/annotate")
    item = page.inner_text("#item-id")
    page.reload()
    assert page.inner_text("#item-id") == item
    with site.engine.connect() as conn:
        live = conn.execute(
            select(Lease.item_id).join(Voter, Voter.id == Lease.voter_id)
            .where(Voter.name == "cara", Lease.state == "active")
        ).all()
    assert len(live) == 1  # a reload does not lease a second item


def test_a_gold_task_page_shows_no_gold_flag(page: Any, site: Site) -> None:
    login(page, site, "ann")
    page.goto("/ui/p/quals/annotate")  # qualifying: every task is a gold task
    item = page.inner_text("#item-id")
    with site.engine.connect() as conn:
        lease = conn.execute(
            select(Lease.is_gold).join(Item, Item.id == Lease.item_id).join(Voter, Voter.id == Lease.voter_id)
            .where(Item.external_id == item, Voter.name == "ann")
        ).one()
    assert lease.is_gold
    html = page.content().lower()
    assert "gold" not in html and "qualif" not in html
    assert [t.split()[-1] for t in page.locator("button.choice").all_inner_texts()] == ["yes", "no"]


def test_item_text_is_escaped_and_no_script_runs(page: Any, site: Site) -> None:
    login(page, site, "ann")
    page.goto("/ui/p/xss/annotate")
    assert page.inner_text("#item-text") == f"{XSS} & <b>bold</b>"
    assert page.locator("#item-text script, #item-text b").count() == 0
    assert "<img src=x onerror=alert(2)>" in page.inner_text(".instructions")
    page.wait_for_timeout(200)
    press(page, "2")
    assert "No task right now" in page.inner_text("h1")
    shot(page, site, "annotate-empty")
    assert not page.dialogs


def test_review_resolves_an_escalated_item_which_becomes_final_and_gold(page: Any, site: Site) -> None:
    login(page, site, "rita")
    page.goto("/ui/p/triage/review")
    assert page.inner_text("#item-id") == "t1"
    rows = page.locator("table.votes tbody tr").all_inner_texts()
    assert len(rows) == 3
    assert "gpt-test" in rows[0] and "llm" in rows[0] and "81%" in rows[0] and XSS in rows[0]
    assert "hana" in rows[1] and "sarcastic, I think" in rows[1]
    assert "ivo" in rows[2] and "unsure" in rows[2]
    assert "llm vs human 1" in " ".join(page.locator("nav.kinds a").all_inner_texts())
    shot(page, site, "review")
    page.keyboard.press("2")  # picks "negative"; resolving waits for the button
    assert page.is_checked("input[name=label][value=negative]")
    page.fill("#note", "Sarcasm: the reviewer is unhappy.")
    with page.expect_navigation():
        page.click("#resolve button.primary")
    assert "Resolved item t1" in page.inner_text(".flash")
    with site.engine.connect() as conn:
        item = conn.execute(select(Item).where(Item.external_id == "t1")).one()
        gold = conn.execute(select(Gold.label, Gold.source).where(Gold.item_id == item.id)).one()
    assert (item.status, item.final_label, item.decided_by) == ("final", "negative", "adjudication")
    assert tuple(gold) == ("negative", "adjudicated")
    assert not page.dialogs


def test_blind_review_asks_first_then_shows_the_votes(page: Any, site: Site) -> None:
    login(page, site, "rita")
    page.goto("/ui/p/blind/review")
    html = page.content()
    assert "Your answer first" in html and "hana" not in html and "gpt-test" not in html
    shot(page, site, "review-blind")
    press(page, "3")  # the blind answer: neutral
    assert "hana" in page.inner_text("table.votes")
    page.check("input[name=label][value=positive]")
    with page.expect_navigation():
        page.click("#resolve button.primary")
    with site.engine.connect() as conn:
        item = conn.execute(select(Item).where(Item.external_id == "b1")).one()
        blind = conn.execute(select(Adjudication.blind_label).where(Adjudication.item_id == item.id,
                                                                    Adjudication.blind_label.is_not(None))).scalar_one()  # type: ignore[union-attr]
    assert (item.status, item.final_label, blind) == ("final", "positive", "neutral")


def test_dashboard_draws_an_svg_chart(page: Any, site: Site) -> None:
    login(page, site, "ada")
    page.goto("/ui/p/reviews")
    assert page.locator("svg#throughput").count() == 1
    assert page.locator("svg#throughput rect.machine").count() >= 1  # the seeded LLM votes, this hour
    assert page.locator("svg.bar rect").count() >= 2
    assert "gpt-test" in page.inner_text("table.grid >> nth=-1")
    assert "Krippendorff" in page.inner_text("body")
    shot(page, site, "dashboard")


def test_an_annotator_gets_404_on_another_team_and_403_on_the_dashboard(page: Any, site: Site) -> None:
    login(page, site, "ann")
    response = page.goto("/ui/p/other/annotate")
    assert response.status == 404 and "no project named 'other'" in page.inner_text(".error-text")
    response = page.goto("/ui/p/reviews")
    assert response.status == 403 and page.inner_text("h1") == "Not allowed"
    shot(page, site, "error-403")


def test_a_taxonomy_offers_a_filtered_list(page: Any, site: Site) -> None:
    login(page, site, "ann")
    page.goto("/ui/p/shop/annotate")
    page.fill("input.tree-filter", "cook")
    visible = page.eval_on_selector("#label", "s => [...s.options].filter(o => !o.hidden).map(o => o.value)")
    assert visible == ["Home/Kitchen/Cookware"]
    assert page.eval_on_selector("#label", "s => s.value") == "Home/Kitchen/Cookware"
    shot(page, site, "annotate-taxonomy")

