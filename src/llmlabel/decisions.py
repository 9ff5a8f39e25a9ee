"""Consensus applied to a project: the bridge between the store and the pure engine.

``refit`` reads every vote and gold label, fits voter reliability (gated voters' votes are
left out), measures calibration on held-out gold and applies the chosen repair, then decides
every item: final, one more vote (and of which kind), or escalated. ``after_vote`` re-decides
one item with the fitted model, without a refit: the item's few votes are re-scored in
O(votes × K). Fits are cached per process and refreshed when stale, so several API workers
each keep a recent model without coordinating.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import bindparam, update
from sqlmodel import Session, select

from llmlabel.config import ProjectConfig
from llmlabel.consensus import (
    DawidSkene,
    Decision,
    VoterKinds,
    Votes,
    calibrate,
    decide,
    expected_information_gain,
    find_conflicts,
    votes_by_kind,
)
from llmlabel.consensus import (
    Gold as GoldArrays,
)
from llmlabel.consensus import (
    Policy as EnginePolicy,
)
from llmlabel.consensus.votes import ABSTAIN, DEFAULT_KINDS
from llmlabel.errors import ConfigError
from llmlabel.schema import SingleChoice, canonical_json
from llmlabel.store.tables import Gold, Item, Project, Vote, Voter, utcnow

REFIT_SECONDS = 60.0
MIN_GOLD_FOR_CALIBRATION = 30
_HUMAN = ("human", "expert")
_MACHINE = ("llm", "model")


@dataclass
class Fit:
    model: DawidSkene
    classes: list[str]
    voter_code: dict[int, int]
    kinds: VoterKinds
    calibration: Any | None
    fitted_at: float
    config_hash: str
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


_fits: dict[int, Fit] = {}
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


def _classes(config: ProjectConfig) -> list[str]:
    if not isinstance(config.labels, SingleChoice):
        raise ConfigError(
            f"consensus for label type {config.labels.type!r} is not wired into projects yet; "
            "single-choice projects are supported"
        )
    return config.labels.class_names


def _policy(config: ProjectConfig) -> EnginePolicy:
    p = config.policy
    return EnginePolicy(target=p.target_confidence, min_human_votes=p.min_human_votes, max_votes=p.max_votes,
                        costs={k: max(v, 1e-9) for k, v in p.costs.items()})


def _load(session: Session, project: Project) -> tuple[list[tuple[Any, ...]], dict[int, str], dict[int, Any], dict[int, float]]:
    votes = session.exec(
        select(Vote.item_id, Vote.voter_id, Vote.label, Vote.confidence)
        .join(Voter, Voter.id == Vote.voter_id)  # type: ignore[arg-type]
        .where(Vote.project_id == project.id, Voter.status != "gated")
    ).all()
    kinds = dict(session.exec(select(Voter.id, Voter.kind).where(Voter.project_id == project.id)).all())
    gold_rows = session.exec(select(Gold.item_id, Gold.label, Gold.weight).where(Gold.project_id == project.id)).all()
    return list(votes), kinds, {i: lab for i, lab, _ in gold_rows}, {i: w for i, _, w in gold_rows}  # type: ignore[misc]


def _kinds(voter_ids: list[int], kind_of: dict[int, str]) -> VoterKinds:
    names = DEFAULT_KINDS
    return VoterKinds(np.array([names.index(kind_of[v]) if kind_of[v] in names else 0 for v in voter_ids], dtype=np.int64), names)


def refit(session: Session, *, project: Project, config: ProjectConfig) -> RefitReport:
    """Fit reliability on everything known and re-decide every item of the project."""
    started = time.perf_counter()
    classes = _classes(config)
    code = {c: i for i, c in enumerate(classes)}
    vote_rows, kind_of, gold, gold_weight = _load(session, project)
    item_ids = np.array(sorted(session.exec(select(Item.id).where(Item.project_id == project.id)).all()), dtype=np.int64)
    voter_ids = sorted(kind_of)
    voter_code = {v: i for i, v in enumerate(voter_ids)}
    kinds = _kinds(voter_ids, kind_of) if voter_ids else VoterKinds(np.zeros(0, dtype=np.int64))
    n_items = len(item_ids)
    if n_items == 0:
        return RefitReport(0, 0, 0, {}, None, None, None, time.perf_counter() - started)
    v_item = np.searchsorted(item_ids, np.array([r[0] for r in vote_rows], dtype=np.int64))
    votes = Votes(
        item=v_item.astype(np.int64),
        voter=np.array([voter_code[r[1]] for r in vote_rows], dtype=np.int64),
        label=np.array([ABSTAIN if r[2] is None else code[r[2]] for r in vote_rows], dtype=np.int64),
        n_items=n_items, n_voters=max(len(voter_ids), 1), n_classes=len(classes),
        confidence=np.array([np.nan if r[3] is None else r[3] for r in vote_rows], dtype=np.float64),
    )
    if not voter_ids:
        kinds = VoterKinds(np.zeros(1, dtype=np.int64))
    g_items = np.array(sorted(i for i in gold if i in set(item_ids.tolist())), dtype=np.int64)
    gold_arr = GoldArrays(
        item=np.searchsorted(item_ids, g_items).astype(np.int64),
        label=np.array([code[gold[i]] for i in g_items], dtype=np.int64),
        weight=np.array([gold_weight[i] for i in g_items], dtype=np.float64),
    )
    model = DawidSkene().fit(votes, gold_arr, kinds)
    calibration = None
    voted_gold = np.isin(gold_arr.item, votes.item[votes.label != ABSTAIN]).sum()
    if voted_gold >= MIN_GOLD_FOR_CALIBRATION:
        calibration = calibrate(model, votes, gold_arr, kinds=kinds)
    post = model.predict_proba(votes, None, kinds)
    if calibration is not None:
        post = calibration.transform(post)
    fit = Fit(model, classes, voter_code, kinds, calibration, time.time(), project.config_hash)
    fit.accuracy = _accuracies(model, voter_ids)
    with _lock:
        _fits[project.id] = fit  # type: ignore[index]
    by_status = _decide_and_store(session, project, config, fit, item_ids, votes, post, gold, kind_of)
    return RefitReport(
        items=n_items, votes=len(vote_rows), gold=len(g_items), by_status=by_status,
        calibration_method=calibration.method if calibration else None,
        ece_before=calibration.ece_before if calibration else None,
        ece_after=calibration.ece_after if calibration else None,
        seconds=time.perf_counter() - started,
    )


def _accuracies(model: DawidSkene, voter_ids: list[int]) -> dict[int, float]:
    """Prior-weighted diagonal of each voter's confusion (bands mixed evenly): P(correct)."""
    conf = model.confusion_.mean(axis=1)  # (voters, K, K)
    diag = np.einsum("vkk->vk", conf) @ model.class_prior_
    return {v: float(diag[i]) for i, v in enumerate(voter_ids) if i < diag.shape[0]}


def _available(config: ProjectConfig, item_voters: dict[int, set[int]], kind_of: dict[int, str], n: int, item_ids: np.ndarray) -> np.ndarray:
    names = DEFAULT_KINDS
    avail = np.zeros((n, len(names)), dtype=bool)
    avail[:, names.index("human")] = True
    llm_names = [lab.name for lab in config.labelers if lab.kind == "llm"]
    model_names = [lab.name for lab in config.labelers if lab.kind == "model"]
    for col, count in ((names.index("llm"), len(llm_names)), (names.index("model"), len(model_names))):
        if count == 0:
            continue
        kind = names[col]
        for row, item_id in enumerate(item_ids.tolist()):
            voted = sum(1 for v in item_voters.get(item_id, ()) if kind_of.get(v) == kind)
            avail[row, col] = voted < count
    return avail


def _decide_and_store(
    session: Session, project: Project, config: ProjectConfig, fit: Fit, item_ids: np.ndarray, votes: Votes,
    post: np.ndarray, gold: dict[int, Any], kind_of: dict[int, str],
) -> dict[str, int]:
    item_voters: dict[int, set[int]] = defaultdict(set)
    voter_ids = sorted(fit.voter_code, key=fit.voter_code.__getitem__)
    for it, vo in zip(votes.item.tolist(), votes.voter.tolist(), strict=True):
        item_voters[int(item_ids[it])].add(voter_ids[vo])
    policy = _policy(config)
    counts = votes_by_kind(votes, fit.kinds)
    reliability = fit.model.vote_reliability(votes, fit.kinds)
    conflicts = find_conflicts(votes, reliability, policy.conflict_threshold)
    matrices = fit.model.kind_matrices()
    dec = decide(post, counts, matrices, fit.kinds.names, policy,
                 available=_available(config, item_voters, kind_of, len(item_ids), item_ids), conflict=conflicts)
    eig_human = expected_information_gain(post, matrices)[:, fit.kinds.names.index("human")]
    labels_by_item: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    escalated = set(np.flatnonzero(dec.code == Decision.ESCALATE).tolist())
    if escalated:
        for it, vo, lab in zip(votes.item.tolist(), votes.voter.tolist(), votes.label.tolist(), strict=True):
            if it in escalated:
                labels_by_item[it].append((kind_of[voter_ids[vo]], None if lab == ABSTAIN else lab))
    adjudicated = set(session.exec(
        select(Item.id).where(Item.project_id == project.id, Item.decided_by == "adjudication")
    ).all())
    now = utcnow()
    rows = []
    by_status: dict[str, int] = defaultdict(int)
    human_col = [fit.kinds.names.index(k) for k in _HUMAN]
    for row, item_id in enumerate(item_ids.tolist()):
        if item_id in adjudicated:
            by_status["final"] += 1
            continue
        p = post[row]
        values: dict[str, Any] = {"_id": item_id, "posterior": dict(zip(fit.classes, np.round(p, 6).tolist(), strict=True)),
                                  "updated_at": now, "conflict_kind": None}
        if item_id in gold:
            values.update(status="final", final_label=gold[item_id], confidence=1.0, decided_by="gold",
                          next_kind=None, votes_needed=0, priority=0.0, decided_at=now)
        else:
            c = int(dec.code[row])
            label = fit.classes[int(dec.label[row])]
            if c == Decision.FINAL:
                values.update(status="final", final_label=label, confidence=float(dec.confidence[row]),
                              decided_by=str(dec.decided_by[row]), next_kind=None, votes_needed=0, priority=0.0, decided_at=now)
            elif c == Decision.ESCALATE:
                values.update(status="escalated", final_label=None, confidence=float(dec.confidence[row]),
                              decided_by=None, next_kind=None, votes_needed=0, priority=0.0, decided_at=None,
                              conflict_kind=conflict_kind([(k, None if lab is None else fit.classes[lab]) for k, lab in labels_by_item[row]]))
            else:
                nk = fit.kinds.names[int(dec.next_kind[row])] if dec.next_kind[row] >= 0 else None
                humans = int(counts[row, human_col].sum())
                need = max(1, config.policy.min_human_votes - humans) if nk == "human" else 0
                values.update(status="open", final_label=None, confidence=float(dec.confidence[row]), decided_by=None,
                              next_kind=nk, votes_needed=need, priority=float(eig_human[row]), decided_at=None)
        by_status[values["status"]] += 1
        rows.append(values)
    if rows:
        items = Item.__table__  # type: ignore[attr-defined]
        stmt = update(items).where(items.c.id == bindparam("_id"))
        session.connection().execute(stmt, rows)
    return dict(by_status)


def _fit_for(session: Session, project: Project, config: ProjectConfig) -> Fit:
    with _lock:
        fit = _fits.get(project.id)  # type: ignore[arg-type]
    if fit is None or fit.config_hash != project.config_hash or time.time() - fit.fitted_at > REFIT_SECONDS:
        refit(session, project=project, config=config)
        with _lock:
            fit = _fits[project.id]  # type: ignore[index]
    return fit


def after_vote(session: Session, *, project: Project, config: ProjectConfig, item_id: int) -> None:
    """Re-decide one item after a vote, with the current fit (a periodic refit keeps it fresh)."""
    fit = _fit_for(session, project, config)
    item = session.get(Item, item_id, populate_existing=True)  # a refit may just have updated it
    if item is None or item.decided_by == "adjudication":
        return
    if session.exec(select(Gold.id).where(Gold.item_id == item_id)).first() is not None:
        return  # gold is decided by its gold label, whatever the votes say
    rows = session.exec(
        select(Vote.voter_id, Vote.label, Vote.confidence, Voter.kind)
        .join(Voter, Voter.id == Vote.voter_id)  # type: ignore[arg-type]
        .where(Vote.item_id == item_id, Voter.status != "gated")
    ).all()
    code = {c: i for i, c in enumerate(fit.classes)}
    n_fit = len(fit.voter_code)
    new_voters: dict[int, int] = {}
    voter_codes, kind_codes = [], list(fit.kinds.kind.tolist())
    for voter_id, _, _, kind in rows:
        if voter_id in fit.voter_code:
            voter_codes.append(fit.voter_code[voter_id])
        else:  # a voter the fit has not seen: treated as an average voter of its kind
            if voter_id not in new_voters:
                new_voters[voter_id] = n_fit + len(new_voters)
                kind_codes.append(DEFAULT_KINDS.index(kind) if kind in DEFAULT_KINDS else 0)
            voter_codes.append(new_voters[voter_id])
    kinds = VoterKinds(np.array(kind_codes or [0], dtype=np.int64), fit.kinds.names)
    votes = Votes(
        item=np.zeros(len(rows), dtype=np.int64), voter=np.array(voter_codes, dtype=np.int64),
        label=np.array([ABSTAIN if r[1] is None else code[r[1]] for r in rows], dtype=np.int64),
        n_items=1, n_voters=max(len(kind_codes), 1), n_classes=len(fit.classes),
        confidence=np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=np.float64),
    )
    post = fit.model.predict_proba(votes, None, kinds)
    if fit.calibration is not None:
        post = fit.calibration.transform(post)
    kind_of = {r[0]: r[3] for r in rows}
    _decide_and_store(session, project, config, _with_kinds(fit, kinds, new_voters), np.array([item_id]), votes, post, {}, kind_of)


def _with_kinds(fit: Fit, kinds: VoterKinds, new_voters: dict[int, int]) -> Fit:
    return Fit(fit.model, fit.classes, {**fit.voter_code, **new_voters}, kinds, fit.calibration, fit.fitted_at, fit.config_hash, fit.accuracy)


def reconsider_voter(session: Session, *, project: Project, config: ProjectConfig, voter_id: int) -> RefitReport:
    """A gated voter's votes leave consensus: refit, which reopens the items they carried."""
    return refit(session, project=project, config=config)


def voter_reliabilities(session: Session, *, project: Project) -> dict[int, float]:
    with _lock:
        fit = _fits.get(project.id)  # type: ignore[arg-type]
    return dict(fit.accuracy) if fit else {}
