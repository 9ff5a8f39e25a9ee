"""Consensus applied to a project: the bridge between the store and the pure engine.

``refit`` reads every vote and gold label, fits voter reliability (gated voters' votes are
left out), and decides every item: final, one more vote (and of which kind), or escalated.
For single choice it also measures calibration on held-out gold and applies the chosen
repair, and routes by expected information gain per unit cost. ``after_vote`` re-decides one
item with the fitted model, without a refit: the item's few votes are re-scored in
O(votes × K). Fits are cached per process and refreshed when stale, so several API workers
each keep a recent model without coordinating; a refit inside a request refits the model
only, and re-deciding every item is left to explicit refits and the server's periodic one.

Structured label types (multi-label, taxonomy, options) use their engine models for the
posterior and a simpler route: an LLM vote while some LLM labeler has not voted, else a
human; no early escalation on conflict. A taxonomy item whose vote budget is spent is
finalized at the deepest level that clears the target rather than escalated.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np
import sqlalchemy as sa
from sqlalchemy import bindparam, event, func, update
from sqlmodel import Session, col, select

from llmlabel.config import ProjectConfig
from llmlabel.consensus import (
    DawidSkene,
    Decision,
    VoterKinds,
    Votes,
    calibrate,
    cast_vote_counts,
    decide,
    expected_information_gain,
    find_conflicts,
)
from llmlabel.consensus import Gold as GoldArrays
from llmlabel.consensus import Policy as EnginePolicy
from llmlabel.consensus.votes import ABSTAIN, DEFAULT_KINDS
from llmlabel.labeltypes import Scored, StructuredModel, VoteTable, structured_model
from llmlabel.schema import Options, SingleChoice, canonical_json
from llmlabel.store.db import reader
from llmlabel.store.prepared import Prepared
from llmlabel.store.tables import Gold, Item, Project, Vote, Voter, utcnow

REFIT_SECONDS = 60.0
# ... or sooner once the votes seen since the fit reach this share of those it was fitted on
# (at least REFIT_MIN_NEW): a model fitted before most of the evidence arrived (the start of
# a project, a burst of votes) would otherwise decide items on stale reliabilities for a minute.
REFIT_GROWTH = 0.25
REFIT_MIN_NEW = 20
MIN_GOLD_FOR_CALIBRATION = 30
_HUMAN = ("human", "expert")
_MACHINE = ("llm", "model")


@dataclass
class Fit:
    voter_code: dict[int, int]
    kind_names: list[str]  # per voter code: what re-deciding one item builds its vote table with
    kinds: VoterKinds
    fitted_at: float
    config_hash: str
    n_votes: int = 0  # votes it was fitted on
    new_votes: int = 0  # votes this process has decided with it since
    model: DawidSkene | None = None  # single choice
    classes: list[str] = field(default_factory=list)
    calibration: Any | None = None
    structured: StructuredModel | None = None
    accuracy: dict[int, float] = field(default_factory=dict)


@dataclass
class RefitReport:
    items: int
    votes: int
    gold: int
    by_status: dict[str, int]
    calibration_method: str | None
    ece_before: float | None
    ece_after: float | None
    seconds: float


log = logging.getLogger("llmlabel.decisions")
_fits: dict[tuple[str, int], Fit] = {}  # by database and project: ids repeat across databases
_lock = threading.Lock()


def conflict_kind(votes: list[tuple[str, Any]]) -> str:
    """Which kinds of voters disagree: the two best-supported labels and who backs each."""
    sides: dict[str, set[str]] = {}
    for kind, label in votes:
        if label is not None:
            sides.setdefault(canonical_json(label), set()).add("llm" if kind in _MACHINE else "human")
    if len(sides) < 2:
        return "none"
    top = sorted(sides.values(), key=len, reverse=True)[:2]
    if top[0] | top[1] == {"llm"}:
        return "llm_vs_llm"
    if "human" in top[0] and "human" in top[1]:
        return "human_vs_human"
    return "llm_vs_human"


def _policy(config: ProjectConfig) -> EnginePolicy:
    p = config.policy
    return EnginePolicy(target=p.target_confidence, min_human_votes=p.min_human_votes, max_votes=p.max_votes,
                        costs={k: max(v, 1e-9) for k, v in p.costs.items()})


def _kind_codes(kinds: list[str]) -> np.ndarray:
    return np.array([DEFAULT_KINDS.index(k) if k in DEFAULT_KINDS else 0 for k in kinds] or [0], dtype=np.int64)


def _table(
    rows: Sequence[tuple[int, int, Any, float | None, str]], item_ids: np.ndarray, voter_code: dict[int, int],
    kind_names: list[str], fields: list[dict[str, Any]] | None,
) -> VoteTable:
    """Rows (item_id, voter_id, label, confidence, kind) → codes; unseen voters get new codes."""
    codes = dict(voter_code)
    kinds = list(kind_names)
    voters = []
    for _, voter_id, _, _, kind in rows:
        if voter_id not in codes:  # a voter the fit has not seen: an average voter of its kind
            codes[voter_id] = len(kinds)
            kinds.append(kind)
        voters.append(codes[voter_id])
    return VoteTable(
        item=np.searchsorted(item_ids, np.array([r[0] for r in rows], dtype=np.int64)).astype(np.int64),
        voter=np.array(voters, dtype=np.int64),
        labels=[r[2] for r in rows],
        confidence=np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=np.float64),
        n_items=len(item_ids), n_voters=max(len(kinds), 1),
        kinds=VoterKinds(_kind_codes(kinds), DEFAULT_KINDS), item_fields=fields,
    )


def _single_votes(t: VoteTable, classes: list[str]) -> Votes:
    code = {c: i for i, c in enumerate(classes)}
    return Votes(item=t.item, voter=t.voter, label=np.array([ABSTAIN if lab is None else code[lab] for lab in t.labels], dtype=np.int64),
                 n_items=t.n_items, n_voters=t.n_voters, n_classes=len(classes), confidence=t.confidence)


@dataclass
class _Fitted:
    fit: Fit
    item_ids: np.ndarray
    table: VoteTable
    gold_by_item: dict[int, Any]
    n_votes: int
    n_gold: int


# what a fit reads, built once
_PROJECT_VOTES = (  # sqlalchemy's select: sqlmodel's is typed for at most four columns
    sa.select(col(Vote.item_id), col(Vote.voter_id), col(Vote.label), col(Vote.confidence), col(Voter.kind))
    .join(Voter, col(Voter.id) == Vote.voter_id)
    .where(col(Vote.project_id) == bindparam("project_id"), col(Voter.status) != "gated")
)
_PROJECT_VOTERS = select(col(Voter.id), col(Voter.kind)).where(col(Voter.project_id) == bindparam("project_id"))
_PROJECT_GOLD = select(col(Gold.item_id), col(Gold.label), col(Gold.weight)).where(col(Gold.project_id) == bindparam("project_id"))
_PROJECT_ITEMS = select(col(Item.id), col(Item.id)).where(col(Item.project_id) == bindparam("project_id")).order_by(col(Item.id))
_PROJECT_ITEMS_FIELDS = _PROJECT_ITEMS.with_only_columns(col(Item.id), col(Item.fields))


def _fit_project(session: Session, project: Project, config: ProjectConfig, every_item: bool = False) -> _Fitted:
    """Read every vote and gold label and fit the engine; writes nothing but the fit cache.

    The model is fitted on the items with votes or gold (an item nobody voted on says nothing
    about any voter); ``every_item`` adds the rest, for a refit that decides them all. Rows are
    read through the connection: the ORM's row handling cost several times the query."""
    conn = session.connection()
    p = {"project_id": project.id}
    rows = [tuple(r) for r in conn.execute(_PROJECT_VOTES, p).all()]
    kind_of: dict[int, str] = dict(conn.execute(_PROJECT_VOTERS, p).all())  # type: ignore[arg-type]
    gold_rows = conn.execute(_PROJECT_GOLD, p).all()
    need_fields = isinstance(config.labels, Options)
    if need_fields or every_item:
        item_rows: Sequence[tuple[int, Any]] = conn.execute(_PROJECT_ITEMS_FIELDS if need_fields else _PROJECT_ITEMS, p).all()
    else:
        item_rows = [(i, None) for i in sorted({r[0] for r in rows} | {int(g[0]) for g in gold_rows})]
    item_ids = np.array([r[0] for r in item_rows], dtype=np.int64)
    voter_ids = sorted(kind_of)
    voter_code = {v: i for i, v in enumerate(voter_ids)}
    kind_names = [kind_of[v] for v in voter_ids]
    table = _table(rows, item_ids, voter_code, kind_names,
                   [r[1] for r in item_rows] if need_fields else None)
    row_of = {int(i): r for r, i in enumerate(item_ids.tolist())}
    gold = {row_of[i]: lab for i, lab, _ in gold_rows if i in row_of}
    weight = {row_of[i]: w for i, _, w in gold_rows if i in row_of}
    fit = Fit(voter_code, kind_names, table.kinds, time.time(), project.config_hash, n_votes=len(rows))
    if len(item_ids) and isinstance(config.labels, SingleChoice):
        fit.classes = config.labels.class_names
        votes = _single_votes(table, fit.classes)
        g_rows = np.array(sorted(gold), dtype=np.int64)
        g = GoldArrays(g_rows, np.array([fit.classes.index(gold[r]) for r in g_rows], dtype=np.int64),
                       np.array([weight[r] for r in g_rows], dtype=np.float64))
        fit.model = DawidSkene().fit(votes, g, table.kinds)
        voted_gold = int(np.isin(g.item, votes.item[votes.label != ABSTAIN]).sum())
        if voted_gold >= MIN_GOLD_FOR_CALIBRATION:
            fit.calibration = calibrate(fit.model, votes, g, kinds=table.kinds, by_votes=True)
        fit.accuracy = _accuracies(fit.model, voter_ids)
    elif len(item_ids):
        fit.structured = structured_model(config.labels, config.policy.target_confidence)
        fit.structured.fit(table, gold, weight)
    with _lock:
        _fits[_key(session, project)] = fit
    return _Fitted(fit, item_ids, table, {int(item_ids[r]): lab for r, lab in gold.items()}, len(rows), len(gold))


def refit(
    session: Session, *, project: Project, config: ProjectConfig, final_round: bool = False,
    background: bool = False,
) -> RefitReport:
    """Fit reliability on everything known and re-decide every item of the project.

    ``final_round``: no more human votes are coming (a batch closes, a crowd is done), so an
    item that is not settled now is escalated to review instead of waiting for one.
    ``background``: a refit beside live traffic (the server's periodic one) reads in a
    read-only transaction and commits the decisions every ``STORE_CHUNK`` items, so it never
    holds a large project's rows, or SQLite's write lock, for long.
    """
    started = time.perf_counter()
    read_at = utcnow()
    if background:  # read without holding SQLite's write lock through the fit
        session.commit()
        with Session(reader(session.get_bind())) as read_session:  # type: ignore[arg-type]
            f = _fit_project(read_session, project, config, every_item=True)
    else:
        f = _fit_project(session, project, config, every_item=True)
    by_status: dict[str, int] = {}
    if len(f.item_ids):
        values, votes_per_item = _decide(config, f.fit, f.table, humans_available=not final_round)
        by_status = _store_chunks(session, project, f.item_ids, values, votes_per_item, f.gold_by_item, read_at=read_at,
                                  commit_chunks=background)
    cal = f.fit.calibration
    return RefitReport(
        items=len(f.item_ids), votes=f.n_votes, gold=f.n_gold, by_status=by_status,
        calibration_method=cal.method if cal else None, ece_before=cal.ece_before if cal else None,
        ece_after=cal.ece_after if cal else None, seconds=time.perf_counter() - started,
    )


def _accuracies(model: DawidSkene, voter_ids: list[int]) -> dict[int, float]:
    """Prior-weighted diagonal of each voter's confusion (bands mixed evenly): P(correct)."""
    conf = model.confusion_.mean(axis=1)  # (voters, K, K)
    diag = np.einsum("vkk->vk", conf) @ model.class_prior_
    return {v: float(diag[i]) for i, v in enumerate(voter_ids) if i < diag.shape[0]}


def _machine_left(config: ProjectConfig, t: VoteTable, n: int) -> np.ndarray:
    """(n_items, n_kinds): which machine kinds still have a labeler that has not voted."""
    names = DEFAULT_KINDS
    avail = np.zeros((n, len(names)), dtype=bool)
    for kind in _MACHINE:
        configured = sum(1 for lab in config.labelers if lab.kind == kind)
        if configured:
            col = names.index(kind)
            voted = np.bincount(t.item[t.kinds.kind[t.voter] == col], minlength=n)
            avail[:, col] = voted < configured
    return avail


def _decide(
    config: ProjectConfig, fit: Fit, t: VoteTable, *, humans_available: bool = True,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Each item (row) of ``t``'s decision, a row for ``_STORE_DECISION`` less its id and
    times, and how many votes were cast on it."""
    n = t.n_items
    names = DEFAULT_KINDS
    cast = np.array([lab is not None for lab in t.labels], dtype=bool)
    counts = np.zeros((n, len(names)), dtype=np.int64)
    np.add.at(counts, (t.item[cast], t.kinds.kind[t.voter[cast]]), 1)
    human = counts[:, [names.index(k) for k in _HUMAN]].sum(axis=1)
    available = _machine_left(config, t, n)
    available[:, names.index("human")] = humans_available
    if fit.model is not None:
        values = _single_choice(config, fit, t, counts, available)
    else:
        assert fit.structured is not None
        values = _structured(config, fit.structured.score(t), counts, human, available)
    escalated = [r for r, v in enumerate(values) if v["status"] == "escalated"]
    if escalated:
        by_item: dict[int, list[tuple[str, Any]]] = defaultdict(list)
        for i, vo, lab in zip(t.item.tolist(), t.voter.tolist(), t.labels, strict=True):
            by_item[i].append((names[t.kinds.kind[vo]], lab))
        for r in escalated:
            values[r]["conflict_kind"] = conflict_kind(by_item[r])
    return values, counts.sum(axis=1)


def _store_chunks(
    session: Session, project: Project, item_ids: np.ndarray, values: list[dict[str, Any]], votes_per_item: np.ndarray,
    gold: dict[int, Any], *, read_at: datetime, commit_chunks: bool,
) -> dict[str, int]:
    """Store a refit's decisions that changed, a chunk of items at a time; an item decided
    since ``read_at`` (when its votes were read), by a vote that came meanwhile, keeps that
    newer decision."""
    n = len(item_ids)
    by_status: dict[str, int] = defaultdict(int)
    postgres = session.get_bind().dialect.name == "postgresql"
    no_evidence = set(item_ids[votes_per_item == 0].tolist())
    # a refit beside live traffic reads and compares each chunk in a read transaction and takes
    # the write lock (SQLite: the one writer's turn) only for the rows that changed: compared
    # inside the write transaction, every vote waited through each chunk's comparison
    read = Session(reader(session.get_bind())) if commit_chunks else session  # type: ignore[arg-type]
    try:
        for start in range(0, n, STORE_CHUNK):
            ids = item_ids[start:start + STORE_CHUNK].tolist()
            # a range of the project's ids, not an IN list: SQLite caps a statement's variables
            p = {"project_id": project.id, "lo": ids[0], "hi": ids[-1]}
            chunk = {r[0]: tuple(r[:-1]) for r in read.connection().execute(_CHUNK_STATE, p) if r[-1] <= read_at}
            if read is not session:
                read.commit()
            counted, changed = _changes(ids, values[start:start + STORE_CHUNK], gold, chunk, no_evidence)
            for k, v in counted.items():
                by_status[k] += v
            if changed and postgres:
                # never wait on a row another transaction holds: that item is being voted on,
                # and the vote re-decides it; a bulk update that waits can close a deadlock cycle
                free = set(_LOCK_ITEMS.scalars(session, {"ids": [v["_id"] for v in changed]}))
                changed = [v for v in changed if v["_id"] in free]
            # an item re-decided since it was read (by a vote) keeps that newer decision
            _STORE_CHANGED.run_many(session, [{**v, "_read_at": read_at} for v in changed])
            if commit_chunks:
                session.commit()
    finally:
        if read is not session:
            read.close()
    return dict(by_status)


def _changes(
    ids: list[int], values: list[dict[str, Any]], gold: dict[int, Any], current: dict[int, tuple[Any, ...]],
    no_evidence: frozenset[int] | set[int] = frozenset(),
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The items' outcomes counted by status, and the decisions that differ from the stored
    ones (``current``), as rows for ``_STORE_DECISION``."""
    now = utcnow()
    out: list[dict[str, Any]] = []
    by_status: defaultdict[str, int] = defaultdict(int)
    for item_id, v in zip(ids, values, strict=True):
        if item_id not in current:
            continue  # decided by a newer vote since the fit read its votes
        _, status, decided_by, decided_at, conflict, final_label, *_ = current[item_id]
        if decided_by == "adjudication" or (status == "escalated" and conflict == "audit"):
            by_status[status] += 1  # settled by a reviewer, or waiting for one to audit it
            continue
        if status == "escalated" and v["status"] == "open":
            # once escalated, an item waits for its reviewer; new evidence may settle it, but a
            # refit does not send it back to collect votes
            v.update(status="escalated", next_kind=None, votes_needed=0, priority=0.0, conflict_kind=conflict)
        if item_id in gold:
            v.update(status="final", final_label=gold[item_id], confidence=1.0, decided_by="gold", decided_level=None,
                     next_kind=None, votes_needed=0, priority=0.0, conflict_kind=None)
        by_status[v["status"]] += 1
        if _unchanged(v, current[item_id], numbers=item_id not in no_evidence):
            continue  # a refit re-decides every item; most come out as they were: no write
        final_before = (status == "final" and decided_at is not None  # the same decision, made earlier
                        and _same_label(v["final_label"], final_label))
        v.update(_id=item_id, updated_at=now,
                 decided_at=(decided_at if final_before else now) if v["status"] == "final" else None)
        out.append(v)
    return dict(by_status), out


def _unchanged(new: dict[str, Any], state: tuple[Any, ...], *, numbers: bool = True) -> bool:
    """Whether a decision is the stored one: the same outcome, and numbers within 0.1 pp. A
    refit with little new evidence moves most posteriors by less than that; rewriting every
    item of a large project each minute for it cost a third of a refit (50k rows: ~1 s of 3).

    Without ``numbers`` (an item nobody has voted on) the outcome alone: its posterior is the
    class prior, which every refit moves, and rewriting each such item for it each minute held
    SQLite's write lock 7–9 s of every 90 under the load bench (200,000 items, few voted).
    Its stored numbers are the prior of the refit that last changed its outcome."""
    _, status, decided_by, _, conflict, final_label, confidence, needed, next_kind, priority, level, posterior = state
    if (new["status"], new["decided_by"], new["conflict_kind"], new["next_kind"], new["votes_needed"], new["decided_level"]) != (
            status, decided_by, conflict, next_kind, needed, level):
        return False
    if not _same_label(new["final_label"], final_label) or confidence is None or posterior is None:
        return False
    if not numbers:
        return True
    if abs(new["confidence"] - confidence) > _SAME or abs(new["priority"] - priority) > _SAME:
        return False
    old, now = posterior if isinstance(posterior, dict) else {}, new["posterior"]
    return isinstance(now, dict) and old.keys() == now.keys() and all(
        isinstance(now[k], float) and isinstance(old[k], int | float) and abs(now[k] - old[k]) <= _SAME for k in now)


def _same_label(a: Any, b: Any) -> bool:
    """Labels compared as stored (canonical JSON); most items of a refit have none on either side."""
    return (a is None and b is None) or canonical_json(a) == canonical_json(b)


_SAME = 1e-3
STORE_CHUNK = 2000
# an item's stored decision, as _changes compares it: every reader of it selects these first
_STATE = (col(Item.id), col(Item.status), col(Item.decided_by), col(Item.decided_at), col(Item.conflict_kind),
          col(Item.final_label), col(Item.confidence), col(Item.votes_needed), col(Item.next_kind), col(Item.priority),
          col(Item.decided_level), col(Item.posterior))
_CHUNK = (col(Item.project_id) == bindparam("project_id"), col(Item.id).between(bindparam("lo"), bindparam("hi")))
_CHUNK_STATE = sa.select(*_STATE, col(Item.updated_at)).where(*_CHUNK)
_LOCK_ITEMS = Prepared(select(col(Item.id)).where(col(Item.id).in_(bindparam("ids", expanding=True)))
                       .with_for_update(skip_locked=True))
_STORE_DECISION = Prepared(update(Item.__table__).where(Item.__table__.c.id == bindparam("_id")))  # type: ignore[attr-defined]
_STORE_CHANGED = Prepared(_STORE_DECISION.clause.where(Item.__table__.c.updated_at <= bindparam("_read_at")))  # type: ignore[attr-defined]


def _need(config: ProjectConfig, next_kind: str | None, humans: int) -> int:
    return max(1, config.policy.min_human_votes - humans) if next_kind == "human" else 0


def _single_choice(config: ProjectConfig, fit: Fit, t: VoteTable, counts: np.ndarray, available: np.ndarray) -> list[dict[str, Any]]:
    assert fit.model is not None
    votes = _single_votes(t, fit.classes)
    post = fit.model.predict_proba(votes, None, t.kinds)
    if fit.calibration is not None:
        post = fit.calibration.transform(post, n_votes=cast_vote_counts(votes))
    policy = _policy(config)
    conflicts = find_conflicts(votes, fit.model.vote_reliability(votes, t.kinds), policy.conflict_threshold)
    matrices = fit.model.kind_matrices()
    dec = decide(post, counts, matrices, t.kinds.names, policy, available=available, conflict=conflicts)
    eig_human = expected_information_gain(post, matrices)[:, t.kinds.names.index("human")]
    humans = counts[:, [t.kinds.names.index(k) for k in _HUMAN]].sum(axis=1)
    out = []
    rounded = np.round(post, 6).tolist()
    for r in range(post.shape[0]):
        c, label = int(dec.code[r]), fit.classes[int(dec.label[r])]
        v: dict[str, Any] = {"posterior": dict(zip(fit.classes, rounded[r], strict=True)),
                             "confidence": float(dec.confidence[r]), "decided_level": None, "conflict_kind": None}
        if c == Decision.FINAL:
            v.update(status="final", final_label=label, decided_by=str(dec.decided_by[r]), next_kind=None,
                     votes_needed=0, priority=0.0)
        elif c == Decision.ESCALATE:
            v.update(status="escalated", final_label=None, decided_by=None, next_kind=None, votes_needed=0, priority=0.0)
        else:
            nk = t.kinds.names[int(dec.next_kind[r])] if dec.next_kind[r] >= 0 else None
            v.update(status="open", final_label=None, decided_by=None, next_kind=nk,
                     votes_needed=_need(config, nk, int(humans[r])), priority=float(eig_human[r]))
        out.append(v)
    return out


def _structured(config: ProjectConfig, scored: list[Scored], counts: np.ndarray, human: np.ndarray, available: np.ndarray) -> list[dict[str, Any]]:
    p = config.policy
    names = DEFAULT_KINDS
    machine_left = cast(np.ndarray, available[:, [names.index(k) for k in _MACHINE]].any(axis=1))  # 2-D: an array
    total = counts.sum(axis=1)
    taxonomy = config.labels.type == "taxonomy"
    leaves = set(config.labels.leaves) if taxonomy else set()  # type: ignore[union-attr]
    out = []
    for r, s in enumerate(scored):
        reached = s.confidence >= p.target_confidence and (not taxonomy or s.level is not None)
        leaf_reached = reached and (not taxonomy or s.level == config.labels.depth or s.label in leaves)  # type: ignore[union-attr]
        v: dict[str, Any] = {"posterior": s.posterior, "confidence": s.confidence, "decided_level": s.level,
                             "conflict_kind": None}
        humans_ok = human[r] >= p.min_human_votes
        spent = total[r] >= p.max_votes
        if (leaf_reached and humans_ok) or (spent and reached and humans_ok):
            v.update(status="final", final_label=s.label, decided_by="consensus" if human[r] else "auto",
                     next_kind=None, votes_needed=0, priority=0.0)
        elif spent or not (machine_left[r] or available[r, names.index("human")]):
            v.update(status="escalated", final_label=None, decided_by=None, next_kind=None, votes_needed=0, priority=0.0)
        else:
            nk = "llm" if machine_left[r] and not (leaf_reached and not humans_ok) else "human"
            v.update(status="open", final_label=None, decided_by=None, next_kind=nk,
                     votes_needed=_need(config, nk, int(human[r])), priority=1.0 - s.confidence)
        out.append(v)
    return out


def _key(session: Session, project: Project) -> tuple[str, int]:
    return str(session.get_bind().engine.url), project.id  # type: ignore[return-value]


def _fit_for(session: Session, project: Project, config: ProjectConfig) -> Fit:
    """The current fit: made now if there is none for this config, else the cached one, with a
    fresh one fitted in the background when it is stale (the model only: other items are left
    as they are). A request never waits for a refit of a model it can already use: fitting a
    large project takes far longer than a vote should."""
    key = _key(session, project)
    with _lock:
        fit = _fits.get(key)
    if fit is None or fit.config_hash != project.config_hash:
        return _fit_project(session, project, config).fit
    if time.time() - fit.fitted_at > REFIT_SECONDS or fit.new_votes >= max(REFIT_MIN_NEW, REFIT_GROWTH * fit.n_votes):
        _refit_in_background(session.get_bind(), key, project.id, config, fit.config_hash)  # type: ignore[arg-type]
    return fit


_refitting: set[tuple[str, int]] = set()
_fitter: ProcessPoolExecutor | None = None  # a server's fitting process, once it asks for one


def fit_in_child_process() -> None:
    """Fit background models, and run the periodic refit, in a child process of this one.

    A server serves annotators from one event loop per process; a fit in a thread of that
    process held the GIL in slices and stalled every request behind it (a 14k-vote fit: ~0.4 s
    of CPU, a periodic refit of a 50k-item project ~2.5 s), and on SQLite the serving process
    is the bottleneck while the second core idles. The child reads the database itself and
    sends back the fitted model (a few kB, pickled), which replaces the cached fit."""
    global _fitter
    with _lock:
        if _fitter is None:
            _fitter = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_follow_parent, initargs=(os.getpid(),))


def stop_fitting_process() -> None:
    """Stop the fitting process (a server shutting down); fits go back to threads."""
    global _fitter
    with _lock:
        pool, _fitter = _fitter, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def _follow_parent(parent: int) -> None:
    """In the fitting process: exit as soon as the server process is gone, however it went
    (a killed worker does not shut its pool down)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="llmlabel-follow-parent", daemon=True).start()


def fitter() -> ProcessPoolExecutor | None:
    """The fitting process, if this server has one (for the periodic refit)."""
    return _fitter


def _refit_in_background(
    engine: Any, key: tuple[str, int], project_id: int, config: ProjectConfig, config_hash: str,
) -> None:
    with _lock:
        if key in _refitting:
            return
        _refitting.add(key)

    def keep(fit: Fit | None) -> None:
        if fit is not None:
            with _lock:
                _fits[key] = fit

    def done(future: Future[Fit | None]) -> None:
        try:
            keep(future.result())
        except Exception:  # the next stale request tries again; the old fit keeps serving
            log.exception("background consensus refit failed")
        finally:
            with _lock:
                _refitting.discard(key)

    if _fitter is not None:
        url = engine.url.render_as_string(hide_password=False)
        _fitter.submit(fit_elsewhere, url, project_id, config_hash).add_done_callback(done)
        return

    def work() -> None:
        future: Future[Fit | None] = Future()
        try:
            with Session(reader(engine)) as session:  # reads only: on SQLite it takes no write lock
                future.set_result(_fit_stored(session, project_id, config, config_hash))
        except Exception as exc:
            future.set_exception(exc)
        done(future)

    threading.Thread(target=work, name="llmlabel-refit", daemon=True).start()


def _fit_stored(session: Session, project_id: int, config: ProjectConfig | None, config_hash: str) -> Fit | None:
    """A fit of the project as stored, or None if its config moved on meanwhile."""
    from llmlabel.projects import project_config

    project = session.get(Project, project_id)
    if project is None or project.config_hash != config_hash:
        return None
    return _fit_project(session, project, config or project_config(session, project=project)).fit


_child_engines: dict[str, Any] = {}


def _child_engine(url: str) -> Any:
    from llmlabel.store.db import make_engine

    if url not in _child_engines:
        _child_engines[url] = make_engine(url)
    return _child_engines[url]


def fit_elsewhere(url: str, project_id: int, config_hash: str) -> Fit | None:
    """In the fitting process: fit the project from the database at ``url``."""
    with Session(reader(_child_engine(url))) as session:
        return _fit_stored(session, project_id, None, config_hash)


def refit_changed_elsewhere(url: str, last_vote: dict[int, int]) -> dict[int, int]:
    """In the fitting process: ``refit_changed``; returns the votes seen, for the next round."""
    refit_changed(_child_engine(url), last_vote)
    return last_vote


# after_vote's statements, built once: it runs on every vote, and building costs more than running
_ITEM_STATES = Prepared(  # (*_STATE, gold id, fields)
    sa.select(*_STATE, col(Gold.id), col(Item.fields))
    .outerjoin(Gold, col(Gold.item_id) == Item.id)
    .where(col(Item.id).in_(bindparam("ids", expanding=True)))
    .order_by(col(Item.id))
    # PostgreSQL: locked for the decision; an item another transaction holds (a vote on it, a
    # claim looking at it) is skipped, not waited for: the batch runs on a worker's event loop
    .with_for_update(of=Item, skip_locked=True)
)
_ITEM_STATES_LEAN = Prepared(_ITEM_STATES.clause.with_only_columns(*_STATE, col(Gold.id)))  # the same, fields left out
_VOTED_ITEMS = select(col(Vote.item_id)).where(col(Vote.voter_id) == bindparam("voter_id"))
_ITEMS_VOTES = Prepared(
    sa.select(col(Vote.item_id), col(Vote.voter_id), col(Vote.label), col(Vote.confidence), col(Voter.kind))
    .join(Voter, col(Voter.id) == Vote.voter_id)
    .where(col(Vote.item_id).in_(bindparam("ids", expanding=True)), col(Voter.status) != "gated")
)
_ONE_HUMAN_VOTE_IN = Prepared(  # until the item is re-decided: one human vote fewer wanted, and
    # if that was the last one, the item leaves the front of the queue, where every claim would
    # judge it again and again (on PostgreSQL that tripled the database's CPU per vote)
    update(Item).where(col(Item.id) == bindparam("item_id"), col(Item.votes_needed) > 0)
    .values(votes_needed=col(Item.votes_needed) - 1,
            priority=sa.case((col(Item.votes_needed) <= 1, -1.0), else_=col(Item.priority)))
)

# Items voted on whose re-decision waits for the server's next batch, by (database, project).
# A server that defers (``defer_decisions``) applies them every few milliseconds, and before
# any request that reads decisions (see ``api.deferred``); a crash loses only the wait: the
# periodic refit re-decides every item.
_deferred: dict[tuple[str, int], dict[int, None]] = {}
_deferring: set[str] = set()


def defer_decisions(engine: Any, on: bool = True) -> None:
    """Make ``after_vote`` queue its item for ``apply_deferred`` instead of re-deciding it in
    the vote's transaction. Re-deciding one item is a dozen numpy calls on tiny arrays; a batch
    of items costs little more than one (measured: 208 us for 1 item, 268 us for 10)."""
    url = str(engine.url)
    with _lock:
        (_deferring.add if on else _deferring.discard)(url)


def after_vote(session: Session, *, project: Project, config: ProjectConfig, item_id: int) -> None:
    """After a human's vote on a task: re-decide the item with the current fit (a periodic
    refit keeps it fresh), now or, where the server defers, in its next batch; meanwhile the
    vote counts against the human votes the item still wants, so no one else is handed a
    vote it no longer needs."""
    key = _key(session, project)
    if key[0] in _deferring:
        _ONE_HUMAN_VOTE_IN.run(session, {"item_id": item_id})
        with _lock:
            _deferred.setdefault(key, {})[item_id] = None
        return
    redecide(session, project=project, config=config, item_ids=[item_id])


def has_deferred(engine: Any) -> bool:
    url = str(engine.url)
    return any(key[0] == url for key in _deferred)


def apply_deferred(engine: Any) -> int:
    """Re-decide, one transaction per project, the items whose decisions wait in this
    process; returns how many."""
    from llmlabel.projects import project_by_id, project_config
    from llmlabel.store.db import session_scope

    url = str(engine.url)
    with _lock:
        projects = [project_id for u, project_id in _deferred if u == url]
    done = 0
    for project_id in projects:
        with session_scope(engine) as session:
            project = project_by_id(session, project_id=project_id)
            if project is not None:
                done += settle_deferred(session, project=project, config=project_config(session, project=project))
    return done


def settle_deferred(session: Session, *, project: Project, config: ProjectConfig) -> int:
    """Re-decide, in this transaction, the project's items whose decisions wait in this
    process; returns how many. If the transaction fails they wait again."""
    key = _key(session, project)
    with _lock:
        item_ids = list(_deferred.pop(key, {}))
    if not item_ids:
        return 0

    def wait_again(_session: Session) -> None:
        with _lock:
            _deferred.setdefault(key, {}).update(dict.fromkeys(item_ids))

    def settled(_session: Session) -> None:
        event.remove(session, "after_rollback", wait_again)

    event.listen(session, "after_rollback", wait_again, once=True)
    event.listen(session, "after_commit", settled, once=True)
    held = redecide(session, project=project, config=config, item_ids=item_ids)
    if held:  # being voted on or claimed elsewhere: the next batch tries again
        with _lock:
            _deferred.setdefault(key, {}).update(dict.fromkeys(held))
    return len(item_ids) - len(held)


def redecide(session: Session, *, project: Project, config: ProjectConfig, item_ids: Sequence[int]) -> list[int]:
    """Re-decide these items with the current fit (each counted as one new vote for the fit's
    staleness), all in one vectorized pass; returns those another transaction held."""
    fit = _fit_for(session, project, config)
    fit.new_votes += len(item_ids)
    return _redecide(session, project, config, fit, sorted(set(item_ids)))


def after_gating(session: Session, *, project: Project, config: ProjectConfig, voter_id: int) -> None:
    """A gated voter's votes leave consensus: refit the model without them and re-decide the
    items they voted on, which may reopen. Other items keep their decisions until the next
    refit re-decides everything, as after any vote; re-deciding a large project on the spot
    would hold up every request behind it."""
    fit = _fit_project(session, project, config).fit
    # items another transaction holds keep their decisions until the next refit
    _redecide(session, project, config, fit, sorted(session.execute(_VOTED_ITEMS, {"voter_id": voter_id}).scalars()))


def _redecide(session: Session, project: Project, config: ProjectConfig, fit: Fit, item_ids: list[int]) -> list[int]:
    """Re-decide the items; returns those another transaction held (PostgreSQL), left as they were."""
    need_fields = isinstance(config.labels, Options)
    held: list[int] = []
    for start in range(0, len(item_ids), STORE_CHUNK):
        chunk = item_ids[start:start + STORE_CHUNK]
        states = (_ITEM_STATES if need_fields else _ITEM_STATES_LEAN).all(session, {"ids": chunk})
        if len(states) < len(chunk):
            found = {r[0] for r in states}
            held += [i for i in chunk if i not in found]
        gold_at = len(_STATE)  # the gold row's id, then the fields
        # settled by a reviewer: left alone; gold: decided by its gold label, whatever the votes say
        gold = [r[0] for r in states if r[gold_at] is not None and r[2] not in ("gold", "adjudication")]
        if gold:
            settle_gold(session, item_ids=gold)
        states = [r for r in states if r[gold_at] is None and r[2] != "adjudication"]
        if not states:
            continue
        ids = np.array([r[0] for r in states], dtype=np.int64)
        rows = _ITEMS_VOTES.all(session, {"ids": ids.tolist()})
        table = _table(rows, ids, fit.voter_code, fit.kind_names, [r[gold_at + 1] for r in states] if need_fields else None)
        values, _ = _decide(config, fit, table)
        _STORE_DECISION.run_many(session, _changes(ids.tolist(), values, {}, {r[0]: tuple(r[:gold_at]) for r in states})[1])
    return held


def settle_gold(session: Session, *, item_ids: list[int]) -> None:
    """Decide items by their gold labels as soon as they have them (a refit would too): a gold
    item left open is served as an ordinary task, to any number of annotators, and starves the
    real queue while hiding gold at far more than the gold rate."""
    now = utcnow()
    for start in range(0, len(item_ids), STORE_CHUNK):
        _SETTLE_GOLD.run(session, {"ids": item_ids[start:start + STORE_CHUNK], "now": now})


_GOLD_LABEL = select(col(Gold.label)).where(col(Gold.item_id) == Item.id).scalar_subquery()
_SETTLE_GOLD = Prepared(
    update(Item)
    .where(col(Item.id).in_(bindparam("ids", expanding=True)), sa.or_(col(Item.decided_by).is_(None),
                                                                       col(Item.decided_by) != "adjudication"))
    .values(status="final", final_label=_GOLD_LABEL, confidence=1.0, decided_by="gold", decided_level=None,
            next_kind=None, votes_needed=0, priority=0.0, conflict_kind=None, decided_at=bindparam("now"),
            updated_at=bindparam("now"))
)


def voter_reliabilities(session: Session, *, project: Project, config: ProjectConfig) -> dict[int, float]:
    """P(correct) per voter id from the current fit (fitted now if this process has none);
    single choice only: structured label types have no one-number reliability."""
    return dict(_fit_for(session, project, config).accuracy)


def refit_changed(engine: Any, last_vote: dict[int, int]) -> int:
    """Refit, each in its own transaction, the projects with votes since the last call; the
    server runs this periodically so that improved reliabilities reach every item."""
    from llmlabel.projects import project_config
    from llmlabel.store.db import session_scope

    with session_scope(engine) as session:
        latest: dict[int, int] = dict(session.exec(  # type: ignore[arg-type]  # SQLModel types ids int | None; max(id) of a group never is
            select(col(Vote.project_id), func.max(col(Vote.id))).group_by(col(Vote.project_id))).all())
    refitted = 0
    for project_id, newest in latest.items():
        if last_vote.get(project_id) == newest:
            continue
        with session_scope(engine) as session:
            project = session.get(Project, project_id)
            if project is None:
                continue
            refit(session, project=project, config=project_config(session, project=project), background=True)
        last_vote[project_id] = newest
        refitted += 1
    return refitted
