"""Audits through the reviewer queue, and gold mining from confident consensus."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from llmlabel import adjudication, decisions
from llmlabel.projects import get_or_create_voter
from llmlabel.quality import audit, mining
from llmlabel.store.db import session_scope
from llmlabel.store.tables import Gold, Item, Voter

from .conftest import CLASSES, Seeded


def _item(s: Session, ext: str) -> Item:
    return s.execute(select(Item).where(Item.external_id == ext)).scalar_one()


def test_audit_draws_final_consensus_items_into_the_review_queue(seeded: Seeded) -> None:
    with session_scope(seeded.engine) as s:
        before = {i.external_id: (i.final_label, i.posterior) for i in s.execute(select(Item)).scalars()}
        draw = audit.draw_audit(s, project=seeded.project, n=5, seed=1)
    assert len(draw.drawn) == 5 and draw.available > 5
    with session_scope(seeded.engine) as s:
        gold_items = set(s.execute(select(Gold.item_id)).scalars())
        for ext in draw.drawn:
            item = _item(s, ext)
            assert (item.status, item.conflict_kind) == ("escalated", "audit")
            assert item.id not in gold_items and item.decided_by in ("consensus", "auto")
            assert (item.final_label, item.posterior) == before[ext]  # the consensus answer is kept
        assert adjudication.queue_counts(s, project=seeded.project).get("audit") == 5
        # once the ordinary escalations are settled, the reviewer gets the audits
        s.execute(update(Item).where(Item.status == "escalated", Item.conflict_kind != "audit").values(status="final"))  # type: ignore[arg-type]
        reviewer = get_or_create_voter(s, project_id=seeded.project.id, name="rev", kind="expert")  # type: ignore[arg-type]
        s.flush()
        case = adjudication.next_case(s, project=seeded.project, config=seeded.config, reviewer=reviewer)
        assert case is not None and case.conflict_kind == "audit" and case.item_id in draw.drawn
    with session_scope(seeded.engine) as s:
        again = audit.draw_audit(s, project=seeded.project, n=1000, seed=2)
    assert not set(again.drawn) & set(draw.drawn)  # items under audit are not drawn twice


def test_audit_report_compares_reviewers_with_posteriors(seeded: Seeded) -> None:
    with session_scope(seeded.engine) as s:
        [ext] = audit.draw_audit(s, project=seeded.project, n=1, seed=3).drawn
        item = _item(s, ext)
        said = max(item.posterior, key=item.posterior.get)
        p = item.posterior[said]
        reviewer = get_or_create_voter(s, project_id=seeded.project.id, name="rev", kind="expert")  # type: ignore[arg-type]
        s.flush()
        wrong = CLASSES[(CLASSES.index(said) + 1) % 3]
        adjudication.resolve(s, project=seeded.project, config=seeded.config, reviewer=reviewer,
                             item_external_id=ext, label=wrong)
    with session_scope(seeded.engine) as s:
        r = audit.audit_report(s, project=seeded.project)
        assert _item(s, ext).posterior[said] == p  # resolution leaves the posterior: the audit keeps its prediction
    assert (r.audited, r.pending) == (1, 0)
    assert r.measured.estimate == 0.0 and r.predicted.estimate == pytest.approx(p)
    assert [(m.item_id, m.predicted, m.audited) for m in r.misses] == [(ext, said, wrong)]
    assert "over-confident" in r.verdict


def test_a_refit_keeps_items_under_audit_in_the_queue(seeded: Seeded) -> None:
    with session_scope(seeded.engine) as s:
        drawn = audit.draw_audit(s, project=seeded.project, n=3, seed=4).drawn
    with session_scope(seeded.engine) as s:
        decisions.refit(s, project=seeded.project, config=seeded.config)
    with session_scope(seeded.engine) as s:
        assert {_item(s, e).conflict_kind for e in drawn} == {"audit"}


def test_lazy_heuristics_and_weights() -> None:
    assert mining.lazy_heuristics("neutral", majority="positive") == {"majority_class": True}
    assert mining.heuristic_weight(mining.lazy_heuristics("positive", majority="positive")) == 1.0
    wrong = mining.lazy_heuristics(2, majority=0, options=["a", "a much longer option", "ccc"])
    assert wrong == {"majority_class": True, "first_option": True, "longest_option": True}
    assert mining.heuristic_weight(wrong) == 2.0
    assert mining.heuristic_weight(mining.lazy_heuristics(1, majority=0, options=["a", "longest one", "c"])) == pytest.approx(1 + 2 / 3)


def test_mining_finds_confident_consensus_backed_by_trusted_voters(seeded: Seeded) -> None:
    with session_scope(seeded.engine) as s:
        found = mining.mine(s, project=seeded.project, config=seeded.config, min_posterior=0.95, min_trusted=1)
    assert found
    index = {ext: i for i, ext in enumerate(f"i{i:05d}" for i in range(len(seeded.truth)))}
    right = np.mean([c.label == CLASSES[int(seeded.truth[index[c.external_id]])] for c in found])
    assert right >= 0.95  # mined gold is (nearly) true
    weights = [c.weight for c in found]
    assert weights == sorted(weights, reverse=True) and set(weights) <= {1.0, 2.0}
    assert all(c.confidence >= 0.95 and c.support >= 1 for c in found)
    with session_scope(seeded.engine) as s:
        added = mining.apply(s, project=seeded.project, candidates=found[:10])
    assert added == 10
    with session_scope(seeded.engine) as s:
        rows = s.execute(select(Gold.item_id, Gold.source, Gold.weight, Gold.split).where(Gold.source == "mined")).all()
        assert len(rows) == 10 and {r[3] for r in rows} == {"dev"}
        assert sorted(r[2] for r in rows) == sorted(c.weight for c in found[:10])
        again = mining.mine(s, project=seeded.project, config=seeded.config, min_posterior=0.95, min_trusted=1)
    assert not {c.item_id for c in again} & {r[0] for r in rows}  # gold is not mined twice


def test_gated_voters_are_not_trusted(seeded: Seeded) -> None:
    with session_scope(seeded.engine) as s:
        s.execute(update(Voter).values(status="gated"))
    with session_scope(seeded.engine) as s:
        assert mining.mine(s, project=seeded.project, config=seeded.config, min_posterior=0.5, min_trusted=1) == []
