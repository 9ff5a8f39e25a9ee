"""Monitoring: rolling windows of the signals that say a project is healthy, and alerts when one
leaves the band its own history draws.

Signals, per window (default: the last 8 days, one window per day, the newest ending now):
throughput (human and machine votes), time per human task (median latency), agreement between
humans (share of agreeing answer pairs, each pair counted in the window of its later answer),
gold accuracy of every voter — humans and LLM labelers alike, since a provider that silently
swaps the model behind a name shows up first as a drop on gold —, the share of decided items
that were escalated, and LLM spend.

The band is learned, not configured: the mean of the previous windows ± k·σ. For a proportion,
σ adds the binomial noise of the newest window to the spread between earlier windows, so five
gold answers in a quiet window do not raise an alarm that five hundred would. A fixed floor
(the project's quality bar) also applies to gold accuracy. When many voters' gold accuracy
falls in the same window, the likelier cause is the data or the gold itself, not the voters:
that is raised once, as concept drift, besides the per-voter alerts.

Alerts are stored (deduplicated: one per signal and subject per window), listed, acknowledged,
and can be POSTed to a webhook. ``prometheus_text`` exposes aggregate counts for scraping.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import numpy as np
from sqlalchemy import Text, cast, extract, func, or_, select
from sqlmodel import Session, col

from llmlabel.callbacks import check_callback_url
from llmlabel.config import ProjectConfig
from llmlabel.errors import InputError, NotFoundError
from llmlabel.quality.dataset import HUMAN_KINDS, LabelCodes, fetch_columns
from llmlabel.quality.intervals import wilson_interval
from llmlabel.store.tables import Alert, Gold, Item, LLMCall, Project, Vote, Voter, utcnow

Kind = Literal["proportion", "value"]
Direction = Literal["low", "high", "both"]
MIN_HISTORY = 4
MIN_GOLD_IN_WINDOW = 5
DRIFT_MIN_VOTERS = 3


@dataclass(frozen=True)
class Observation:
    value: float
    n: float  # how much data is behind the value (votes, pairs, gold answers); 0 = none


@dataclass(frozen=True)
class Series:
    metric: str
    subject: str | None
    kind: Kind
    direction: Direction
    windows: list[Observation]  # oldest first; the last one is the window being checked
    floor: float | None = None


@dataclass(frozen=True)
class Band:
    mean: float
    sd: float
    low: float
    high: float


@dataclass(frozen=True)
class Finding:
    kind: str
    subject: str | None
    value: float
    low: float | None
    high: float | None
    message: str


def expected_band(history: Sequence[Observation], current_n: float, kind: Kind, k: float = 3.0,
                  min_history: int = MIN_HISTORY) -> Band | None:
    """The band the newest value should fall in, from earlier windows; None without enough history."""
    hist = [o for o in history if o.n > 0 and not math.isnan(o.value)]
    if len(hist) < min_history:
        return None
    values = np.array([o.value for o in hist])
    if kind == "proportion":
        ns = np.array([o.n for o in hist])
        mu = float((values * ns).sum() / ns.sum())
        binomial = mu * (1 - mu)
        between = max(0.0, float(values.var(ddof=1)) - float((binomial / ns).mean()))
        sd = math.sqrt(between + binomial / max(current_n, 1.0))
        sd = max(sd, 0.01)
        return Band(mu, sd, max(0.0, mu - k * sd), min(1.0, mu + k * sd))
    mu = float(values.mean())
    sd = max(float(values.std(ddof=1)), 0.1 * abs(mu), 1e-9)
    return Band(mu, sd, mu - k * sd, mu + k * sd)


_WORDS = {
    "throughput": "votes per window",
    "time_per_task": "median seconds per human task",
    "agreement": "share of agreeing human answer pairs",
    "gold_accuracy": "gold accuracy",
    "escalations": "share of decided items escalated",
    "llm_cost": "LLM spend (USD) per window",
}


def find_departures(series: Iterable[Series], *, k: float = 3.0, min_history: int = MIN_HISTORY) -> list[Finding]:
    """A finding for every series whose newest window left its band (or fell under its floor)."""
    out = []
    for s in series:
        *history, current = s.windows
        if current.n <= 0 or math.isnan(current.value):
            continue
        what = f"{_WORDS.get(s.metric, s.metric)}" + (f" of {s.subject}" if s.subject else "")
        band = expected_band(history, current.n, s.kind, k, min_history)
        if band is not None:
            low = current.value < band.low and s.direction in ("low", "both")
            high = current.value > band.high and s.direction in ("high", "both")
            if low or high:
                out.append(Finding(s.metric, s.subject, current.value, band.low, band.high,
                                   f"{what} is {_fmt(current.value)} in the latest window, "
                                   f"{'under' if low else 'over'} its expected band {_fmt(band.low)}–{_fmt(band.high)} "
                                   f"(mean of the previous windows {_fmt(band.mean)}; n={_fmt(current.n)})"))
                continue
        if s.floor is not None and current.n >= MIN_GOLD_IN_WINDOW:
            upper = wilson_interval(current.value * current.n, current.n).high
            if upper < s.floor:
                out.append(Finding(s.metric, s.subject, current.value, s.floor, None,
                                   f"{what} is {_fmt(current.value)} in the latest window (n={_fmt(current.n)}): "
                                   f"even its upper bound {upper:.2f} is under the project's bar {s.floor:.2f}"))
    return out


def concept_drift(series: Iterable[Series], *, z: float = 2.0, min_voters: int = DRIFT_MIN_VOTERS,
                  share: float = 0.5) -> Finding | None:
    """Many voters' gold accuracy falling together: a change in the data or the gold, not in them."""
    eligible, fell = 0, []
    for s in series:
        if s.metric != "gold_accuracy":
            continue
        *history, current = s.windows
        hist_n = sum(o.n for o in history)
        if current.n < MIN_GOLD_IN_WINDOW or hist_n < MIN_GOLD_IN_WINDOW:
            continue
        eligible += 1
        mu = sum(o.value * o.n for o in history) / hist_n
        sd = math.sqrt(max(mu * (1 - mu), 0.01) * (1 / current.n + 1 / hist_n))
        if (current.value - mu) / sd < -z:
            fell.append(s.subject or "?")
    if len(fell) >= min_voters and len(fell) >= share * eligible:
        return Finding("concept_drift", None, len(fell) / eligible, None, None,
                       f"{len(fell)} of {eligible} voters' gold accuracy fell together in the latest window "
                       f"({', '.join(sorted(fell)[:8])}{', …' if len(fell) > 8 else ''}): check whether the "
                       "incoming data or the gold labels changed before blaming the voters")
    return None


def _fmt(x: float) -> str:
    if abs(x) >= 100 or float(x).is_integer():
        return f"{x:.0f}"
    return f"{x:.3g}"


# -- reading the windows out of the store --------------------------------------------------------


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _slots(times: Sequence[datetime], start: datetime, window: timedelta, n: int) -> np.ndarray:
    secs = np.array([(_aware(t) - start).total_seconds() for t in times], dtype=np.float64)
    slot = np.floor(secs / window.total_seconds()).astype(np.int64) if secs.size else np.zeros(0, dtype=np.int64)
    return np.where((slot >= 0) & (slot < n), slot, -1)


def _series(metric: str, subject: str | None, kind: Kind, direction: Direction, values: np.ndarray, ns: np.ndarray,
            floor: float | None = None) -> Series:
    return Series(metric, subject, kind, direction,
                  [Observation(float(v), float(c)) for v, c in zip(values, ns, strict=True)], floor)


def _epoch(column: Any) -> Any:
    """Seconds since 1970 computed by the database (SQLite: STRFTIME('%s'); PostgreSQL: EXTRACT),
    so a window index is arithmetic on a column rather than a datetime per row in Python."""
    return extract("epoch", column)


def _slot_of(seconds: np.ndarray, start: datetime, window: timedelta, n: int) -> np.ndarray:
    slot = np.floor((seconds.astype(np.float64) - start.timestamp()) / window.total_seconds())
    return np.where((slot >= 0) & (slot < n), slot, -1).astype(np.int64)


def collect(
    session: Session, *, project: Project, config: ProjectConfig, now: datetime | None = None,
    window: timedelta = timedelta(days=1), n_windows: int = 8,
) -> list[Series]:
    """Every monitored series of the project over ``n_windows`` windows ending at ``now``."""
    now = _aware(now or utcnow())
    start = now - n_windows * window
    pid = project.id
    codes = LabelCodes()
    voters = session.execute(select(col(Voter.id), col(Voter.name), col(Voter.kind)).where(col(Voter.project_id) == pid)).all()
    voter_ids = np.array(sorted(v[0] for v in voters), dtype=np.int64)
    by_id = {v[0]: v for v in voters}
    names = [f"{by_id[i][2]}:{by_id[i][1]}" for i in voter_ids.tolist()]
    is_human = np.array([by_id[i][2] in HUMAN_KINDS for i in voter_ids.tolist()], dtype=bool)
    item, voter, label, latency, seconds = fetch_columns(
        session,
        select(col(Vote.item_id), col(Vote.voter_id), cast(col(Vote.label), Text), col(Vote.latency_ms),
               _epoch(col(Vote.created_at))).where(col(Vote.project_id) == pid, col(Vote.created_at) >= start),
        ("int", "int", "code", "float", "float"), codes,
    )
    v = np.searchsorted(voter_ids, voter)
    slot = _slot_of(seconds, start, window, n_windows)
    human = is_human[v] if voter_ids.size else np.zeros(0, dtype=bool)
    out: list[Series] = []
    for name, mask in (("human", human), ("machine", ~human)):
        counts = np.bincount(slot[mask & (slot >= 0)], minlength=n_windows).astype(np.float64)
        out.append(_series("throughput", name, "value", "low", counts, np.ones(n_windows)))
    medians, ns = np.full(n_windows, np.nan), np.zeros(n_windows)
    for w in range(n_windows):
        lat = latency[human & (slot == w) & ~np.isnan(latency)] / 1000
        if lat.size:
            medians[w], ns[w] = float(np.median(lat)), lat.size
    out.append(_series("time_per_task", "human", "value", "both", medians, ns))
    out.append(_agreement_series(session, pid, start, window, n_windows, codes))
    out.extend(_gold_series(session, pid, (item, v, label, slot), names, n_windows, codes, config.policy.quality_bar))
    out.append(_escalation_series(session, pid, start, window, n_windows))
    at, cost = fetch_columns(
        session, select(_epoch(col(LLMCall.created_at)), col(LLMCall.cost_usd))
        .where(col(LLMCall.project_id) == pid, col(LLMCall.created_at) >= start), ("float", "float"), codes)
    cslot = _slot_of(at, start, window, n_windows)
    ok = cslot >= 0
    spend = np.bincount(cslot[ok], weights=cost[ok], minlength=n_windows)
    out.append(_series("llm_cost", None, "value", "high", spend, (np.bincount(cslot[ok], minlength=n_windows) > 0).astype(float)))
    return out


def _agreement_series(session: Session, pid: int | None, start: datetime, window: timedelta, n_windows: int,
                      codes: LabelCodes) -> Series:
    """Each pair of human answers on an item counts once, in the window of its later answer."""
    recent = select(col(Vote.item_id)).join(Voter, col(Voter.id) == col(Vote.voter_id)).where(
        col(Vote.project_id) == pid, col(Vote.created_at) >= start, col(Voter.kind).in_(HUMAN_KINDS))
    item, label, seconds = fetch_columns(
        session,
        select(col(Vote.item_id), cast(col(Vote.label), Text), _epoch(col(Vote.created_at)))
        .join(Voter, col(Voter.id) == col(Vote.voter_id))
        .where(col(Vote.item_id).in_(recent), col(Voter.kind).in_(HUMAN_KINDS), col(Vote.label).is_not(None)),
        ("int", "code", "float"), codes,
    )
    pairs, agree = np.zeros(n_windows), np.zeros(n_windows)
    if item.size:
        secs = seconds - start.timestamp()
        order = np.lexsort((secs, item))
        item, label, secs = item[order], label[order], secs[order]
        rank_in_item = _rank_within(item)
        rank_in_label = _rank_within(item * max(len(codes), 1) + label, order_key=(item, label, secs))
        slot = np.floor(secs / window.total_seconds()).astype(np.int64)
        ok = (slot >= 0) & (slot < n_windows)
        pairs = np.bincount(slot[ok], weights=rank_in_item[ok], minlength=n_windows).astype(np.float64)
        agree = np.bincount(slot[ok], weights=rank_in_label[ok], minlength=n_windows).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(pairs > 0, agree / pairs, np.nan)
    return _series("agreement", "human", "proportion", "low", share, pairs)


def _rank_within(group: np.ndarray, order_key: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """For rows sorted by time within ``group``, how many earlier rows share the group."""
    if order_key is None:
        idx = np.arange(group.shape[0])
        sorted_group = group
    else:
        idx = np.lexsort(tuple(reversed(order_key)))
        sorted_group = group[idx]
    if sorted_group.size == 0:
        return np.zeros(0)
    new = np.concatenate([[True], sorted_group[1:] != sorted_group[:-1]])
    starts = np.flatnonzero(new)
    run_start = np.repeat(starts, np.diff(np.concatenate([starts, [sorted_group.size]])))
    rank = np.arange(sorted_group.size) - run_start
    out = np.empty(group.shape[0])
    out[idx] = rank
    return out


def _gold_series(session: Session, pid: int | None, votes: tuple[np.ndarray, ...], names: list[str], n_windows: int,
                 codes: LabelCodes, bar: float) -> list[Series]:
    """Gold accuracy of every voter (``kind:name``) per window."""
    gold_item, gold_label = fetch_columns(
        session, select(col(Gold.item_id), cast(col(Gold.label), Text)).where(col(Gold.project_id) == pid),
        ("int", "code"), codes)
    if not gold_item.size:
        return []
    item, v, label, slot = votes
    order = np.argsort(gold_item)
    gold_item, gold_label = gold_item[order], gold_label[order]
    pos = np.clip(np.searchsorted(gold_item, item), 0, gold_item.size - 1)
    on_gold = (gold_item[pos] == item) & (slot >= 0) & (label >= 0)
    n = len(names)
    cell = v[on_gold] * n_windows + slot[on_gold]
    total = np.bincount(cell, minlength=n * n_windows).reshape(n, n_windows).astype(np.float64)
    right = np.bincount(cell, weights=(label[on_gold] == gold_label[pos[on_gold]]).astype(np.float64),
                        minlength=n * n_windows).reshape(n, n_windows)
    out = []
    for i in sorted(np.flatnonzero(total.sum(axis=1)).tolist(), key=lambda i: names[i]):
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(total[i] > 0, right[i] / total[i], np.nan)
        out.append(_series("gold_accuracy", names[i], "proportion", "low", acc, total[i], floor=bar))
    return out


def _escalation_series(session: Session, pid: int | None, start: datetime, window: timedelta, n_windows: int) -> Series:
    """Share of items escalated (now, or resolved by a reviewer since; audits left out), by the
    window of their last vote: decision times are restamped by every refit, the last vote's
    time is not."""
    last = (select(col(Vote.item_id), func.max(col(Vote.created_at)).label("last")).where(col(Vote.project_id) == pid)
            .group_by(col(Vote.item_id)).subquery())
    status, decided_by, seconds = fetch_columns(
        session,
        select(col(Item.status), col(Item.decided_by), _epoch(last.c.last)).join(last, last.c.item_id == col(Item.id))
        .where(last.c.last >= start, col(Item.status) != "open",
               or_(col(Item.decided_by).is_(None), col(Item.decided_by) != "gold"),
               or_(col(Item.conflict_kind).is_(None), col(Item.conflict_kind) != "audit")),
        ("object", "object", "float"), LabelCodes(),
    )
    slot = _slot_of(seconds, start, window, n_windows)
    escalated = (status == "escalated") | (decided_by == "adjudication")
    ok = slot >= 0
    total = np.bincount(slot[ok], minlength=n_windows).astype(np.float64)
    esc = np.bincount(slot[ok & escalated], minlength=n_windows)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, esc / total, np.nan)
    return _series("escalations", None, "proportion", "high", share, total)


# -- alerts ----------------------------------------------------------------------------------------


def check(
    session: Session, *, project: Project, config: ProjectConfig, now: datetime | None = None,
    window: timedelta = timedelta(days=1), n_windows: int = 8, k: float = 3.0,
) -> list[Alert]:
    """Collect the windows, find departures, store the new alerts (one per signal and subject
    per window: re-running a check within a window raises nothing twice); returns them."""
    now = _aware(now or utcnow())
    series = collect(session, project=project, config=config, now=now, window=window, n_windows=n_windows)
    findings = find_departures(series, k=k)
    drift = concept_drift(series)
    if drift is not None:
        findings.append(drift)
    recent = {
        (a, s) for a, s in session.execute(
            select(col(Alert.kind), col(Alert.subject)).where(col(Alert.project_id) == project.id, col(Alert.created_at) > now - window)
        ).all()
    }
    new = []
    for f in findings:
        if (f.kind, f.subject) in recent:
            continue
        alert = Alert(project_id=project.id, kind=f.kind, subject=f.subject, value=_finite(f.value),  # type: ignore[arg-type]
                      low=_finite(f.low), high=_finite(f.high), message=f.message, created_at=now)
        session.add(alert)
        new.append(alert)
    session.flush()
    return new


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def list_alerts(session: Session, *, project: Project, include_acknowledged: bool = False, limit: int = 200) -> list[Alert]:
    q = select(Alert).where(col(Alert.project_id) == project.id)
    if not include_acknowledged:
        q = q.where(col(Alert.acknowledged_at).is_(None))
    return list(session.execute(q.order_by(col(Alert.created_at).desc(), col(Alert.id).desc()).limit(limit)).scalars())


def acknowledge(session: Session, *, project: Project, alert_id: int) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None or alert.project_id != project.id:
        raise NotFoundError(f"no alert {alert_id} in project {project.name!r}")
    if alert.acknowledged_at is None:
        alert.acknowledged_at = utcnow()
        session.add(alert)
        session.flush()
    return alert


def alert_dict(alert: Alert) -> dict[str, Any]:
    return {"id": alert.id, "kind": alert.kind, "subject": alert.subject, "value": alert.value, "low": alert.low,
            "high": alert.high, "message": alert.message, "created_at": _aware(alert.created_at).isoformat(),
            "acknowledged_at": _aware(alert.acknowledged_at).isoformat() if alert.acknowledged_at else None}


def post_webhook(
    url: str, *, project: str, alerts: Sequence[Alert], allow_private: bool = False, attempts: int = 4,
    backoff_seconds: float = 0.5, client: httpx.Client | None = None,
) -> int:
    """POST the alerts as one JSON document; retried with exponential backoff on connection
    errors, 408, 429 and 5xx. Returns the HTTP status. URLs resolving to private addresses are
    refused unless allowed (the same SSRF rule as batch callbacks)."""
    check_callback_url(url, allow_private=allow_private)
    body = json.dumps({"project": project, "alerts": [alert_dict(a) for a in alerts]}).encode()
    owns = client is None
    client = client or httpx.Client(timeout=10.0, follow_redirects=False)
    last = ""
    try:
        for attempt in range(attempts):
            try:
                resp = client.post(url, content=body, headers={"Content-Type": "application/json"})
                if 200 <= resp.status_code < 300:
                    return resp.status_code
                last = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code not in (408, 429):
                    break
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < attempts:
                time.sleep(backoff_seconds * 2**attempt)
    finally:
        if owns:
            client.close()
    raise InputError(f"the webhook {url} did not accept the alerts ({last}); they are stored: `llmlabel alerts` lists them")


# -- Prometheus ------------------------------------------------------------------------------------


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(session: Session, *, project_ids: Sequence[int] | None = None) -> str:
    """Aggregate counters in the Prometheus text exposition format (0.0.4). Counts only: no item
    content, ids or labels leave through here."""
    names = dict(session.execute(select(col(Project.id), col(Project.name))).all())
    wanted = set(names) if project_ids is None else set(project_ids) & set(names)

    def grouped(q: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in session.execute(q).all() if r[0] in wanted]

    metrics: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = []

    def add(name: str, typ: str, help_: str, rows: list[tuple[Any, ...]], label: str | None) -> None:
        samples = [({"project": names[r[0]], **({label: str(r[1])} if label else {})}, float(r[-1] or 0)) for r in rows]
        metrics.append((name, typ, help_, samples))

    add("llmlabel_items", "gauge", "Items per status.",
        grouped(select(col(Item.project_id), col(Item.status), func.count()).group_by(col(Item.project_id), col(Item.status))), "status")
    add("llmlabel_gold_items", "gauge", "Gold items.",
        grouped(select(col(Gold.project_id), func.count()).group_by(col(Gold.project_id))), None)
    add("llmlabel_votes_total", "counter", "Votes per voter kind.",
        grouped(select(col(Vote.project_id), col(Voter.kind), func.count()).join(Voter, col(Voter.id) == col(Vote.voter_id))
                .group_by(col(Vote.project_id), col(Voter.kind))), "kind")
    add("llmlabel_llm_calls_total", "counter", "LLM provider calls per outcome.",
        grouped(select(col(LLMCall.project_id), col(LLMCall.outcome), func.count()).group_by(col(LLMCall.project_id), col(LLMCall.outcome))), "outcome")
    add("llmlabel_llm_cost_usd_total", "counter", "USD spent on LLM calls.",
        grouped(select(col(LLMCall.project_id), func.coalesce(func.sum(col(LLMCall.cost_usd)), 0.0)).group_by(col(LLMCall.project_id))), None)
    add("llmlabel_alerts_open", "gauge", "Unacknowledged alerts per kind.",
        grouped(select(col(Alert.project_id), col(Alert.kind), func.count()).where(col(Alert.acknowledged_at).is_(None))
                .group_by(col(Alert.project_id), col(Alert.kind))), "kind")
    add("llmlabel_alerts_total", "counter", "Alerts raised.",
        grouped(select(col(Alert.project_id), func.count()).group_by(col(Alert.project_id))), None)
    lines = []
    for name, typ, help_, samples in metrics:
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {typ}"]
        for labels, value in sorted(samples, key=lambda s: sorted(s[0].items())):
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{inner}}} {value:.10g}")
    return "\n".join(lines) + "\n"
