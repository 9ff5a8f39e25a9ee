"""A project's items, votes, voters and gold as integer-coded arrays: what the reports start from.

The statistics in ``quality`` are pure numpy; this module is the one place that reads them out
of the store. It reads in bulk and lean: labels come back as their raw JSON text and only the
handful of distinct texts are decoded (a million ``json.loads`` calls would dominate a report),
rows arrive in partitions and are packed into arrays as they come, and optional columns
(latency, cost, predicted distributions) are read only when asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Text, cast, func, select
from sqlmodel import Session, col

from llmlabel.config import ProjectConfig
from llmlabel.schema import SingleChoice, canonical_json
from llmlabel.store.tables import Gold, Item, Project, Vote, Voter

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
PARTITION = 100_000
HUMAN_KINDS = ("human", "expert")
MACHINE_KINDS = ("llm", "model")


class LabelCodes:
    """Canonical labels ↔ integer codes; the schema's classes first, anything else appended."""

    def __init__(self, classes: Sequence[Any] = ()) -> None:
        self.labels: list[Any] = []
        self._code: dict[str, int] = {}
        self._raw: dict[str, int] = {}
        for c in classes:
            self.code_of(c)

    def code_of(self, label: Any) -> int:
        if label is None:
            return -1
        key = canonical_json(label)
        code = self._code.get(key)
        if code is None:
            code = self._code[key] = len(self.labels)
            self.labels.append(label)
        return code

    def code_of_raw(self, raw: str | None) -> int:
        """The code of a label stored as JSON text (decoded once per distinct text)."""
        if raw is None:
            return -1
        code = self._raw.get(raw)
        if code is None:
            value = json.loads(raw)
            code = self._raw[raw] = self.code_of(value)
        return code

    def __len__(self) -> int:
        return len(self.labels)

    def names(self) -> list[str]:
        return [lab if isinstance(lab, str) else canonical_json(lab) for lab in self.labels]


def label_codes(config: ProjectConfig) -> LabelCodes:
    return LabelCodes(config.labels.class_names if isinstance(config.labels, SingleChoice) else ())


@dataclass
class ProjectData:
    codes: LabelCodes
    item_id: IntArray  # database ids, ascending; "item" codes below are rows of this
    external_id: list[str]
    status: NDArray[np.str_]
    final: IntArray  # code of the final label, -1 when none
    confidence: FloatArray
    decided_by: NDArray[np.object_]
    gold: IntArray  # code of the gold label, -1 when none
    gold_split: NDArray[np.object_]  # "dev" | "test" | None
    gold_weight: FloatArray
    vote_item: IntArray
    vote_voter: IntArray
    vote_label: IntArray  # -1 = abstained
    vote_confidence: FloatArray
    voter_id: IntArray
    voter_name: list[str]
    voter_kind: list[str]
    voter_status: list[str]
    vote_latency_ms: FloatArray | None = None
    vote_cost_usd: FloatArray | None = None
    vote_day: IntArray | None = None  # index into ``days`` of the UTC day each vote was cast
    days: list[str] = field(default_factory=list)  # ISO dates, ascending
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.item_id.shape[0])

    @property
    def n_voters(self) -> int:
        return len(self.voter_name)

    @property
    def n_classes(self) -> int:
        return max(len(self.codes), 2)

    @property
    def class_names(self) -> list[str]:
        names = self.codes.names()
        return names + [f"(unused {i})" for i in range(len(names), self.n_classes)]

    def kind_mask(self, kinds: Iterable[str]) -> NDArray[np.bool_]:
        wanted = set(kinds)
        return np.array([k in wanted for k in self.voter_kind], dtype=bool)


def _raw_batches(session: Session, stmt: Any) -> Iterator[list[tuple[Any, ...]]]:
    """Rows of a Core select as plain tuples straight from the driver's cursor, in batches.

    A million rows through SQLAlchemy's result objects cost seconds of Python per column set;
    the driver's own tuples cost a fraction. The statement runs on the session's connection,
    so it reads the same transaction (and snapshot) as the session's other queries.
    """
    conn = session.connection()
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args: Any = tuple(params[k] for k in compiled.positiontup or ()) if compiled.positional else params
    driver: Any = conn.connection.driver_connection
    # PostgreSQL: a server-side (named) cursor, so a million rows are not all held client-side
    cursor = driver.cursor(name=f"llmlabel_{id(stmt)}") if conn.dialect.name == "postgresql" else driver.cursor()
    try:
        cursor.execute(str(compiled), args)
        while batch := cursor.fetchmany(PARTITION):
            yield batch
    finally:
        cursor.close()


def fetch_columns(session: Session, stmt: Any, kinds: Sequence[str], codes: LabelCodes) -> list[np.ndarray]:
    """Each column of the result as one array: ``int``, ``float`` (NULL → NaN), ``code`` (a
    label's JSON text → its code), or ``object``. Each batch of tuples becomes a structured
    array in one C call; labels are decoded once per distinct text."""
    dtype = np.dtype([(f"c{j}", {"int": "i8", "float": "f8"}.get(k, "O")) for j, k in enumerate(kinds)])
    chunks: list[list[np.ndarray]] = [[] for _ in kinds]
    for batch in _raw_batches(session, stmt):
        table = np.array(batch, dtype=dtype)
        for j, kind in enumerate(kinds):
            column = table[f"c{j}"]
            if kind == "code":
                lookup = {raw: codes.code_of_raw(raw) for raw in set(column.tolist())}
                column = np.fromiter(map(lookup.__getitem__, column), dtype=np.int64, count=column.shape[0])
            chunks[j].append(np.ascontiguousarray(column))
    empty = {"int": np.int64, "code": np.int64, "float": np.float64}
    return [np.concatenate(c) if c else np.zeros(0, dtype=empty.get(k, object)) for c, k in zip(chunks, kinds, strict=True)]


def load_project(
    session: Session, *, project: Project, config: ProjectConfig, voter_kinds: Sequence[str] | None = None,
    latency: bool = False, cost: bool = False, day: bool = False,
) -> ProjectData:
    """Everything the reports need, in one pass over each table of the project (the optional
    vote columns ride along in the same pass: a second scan of the votes costs as much)."""
    codes = label_codes(config)
    pid = project.id
    item_id, external, status, final, confidence, decided = fetch_columns(
        session,
        select(col(Item.id), col(Item.external_id), col(Item.status), cast(col(Item.final_label), Text),
               col(Item.confidence), col(Item.decided_by)).where(col(Item.project_id) == pid).order_by(col(Item.id)),
        ("int", "object", "object", "code", "float", "object"), codes,
    )
    gold_rows = session.execute(
        select(col(Gold.item_id), cast(col(Gold.label), Text), col(Gold.split), col(Gold.weight)).where(col(Gold.project_id) == pid)
    ).all()
    gold = np.full(item_id.shape[0], -1, dtype=np.int64)
    split = np.full(item_id.shape[0], None, dtype=object)
    weight = np.zeros(item_id.shape[0])
    if gold_rows:
        rows = np.searchsorted(item_id, np.array([r[0] for r in gold_rows], dtype=np.int64))
        gold[rows] = [codes.code_of_raw(r[1]) for r in gold_rows]
        split[rows] = [r[2] for r in gold_rows]
        weight[rows] = [r[3] for r in gold_rows]
    voters = session.execute(
        select(col(Voter.id), col(Voter.name), col(Voter.kind), col(Voter.status)).where(col(Voter.project_id) == pid).order_by(col(Voter.id))
    ).all()
    if voter_kinds is not None:
        voters = [v for v in voters if v[2] in voter_kinds]
    voter_id = np.array([v[0] for v in voters], dtype=np.int64)
    cols: list[Any] = [col(Vote.item_id), col(Vote.voter_id), cast(col(Vote.label), Text), col(Vote.confidence)]
    kinds = ["int", "int", "code", "float"]
    for wanted, column in ((latency, col(Vote.latency_ms)), (cost, col(Vote.cost_usd))):
        if wanted:
            cols.append(column)
            kinds.append("float")
    if day:
        cols.append(func.date(col(Vote.created_at)))
        kinds.append("object")
    q = select(*cols).where(col(Vote.project_id) == pid)
    if voter_kinds is not None:
        q = q.where(col(Vote.voter_id).in_(voter_id.tolist()))
    packed = fetch_columns(session, q, kinds, codes)
    v_item, v_voter, v_label, v_conf = packed[:4]
    extra_cols = packed[4:]
    data = ProjectData(
        codes=codes, item_id=item_id, external_id=list(external), status=status.astype(np.str_), final=final,
        confidence=confidence, decided_by=decided, gold=gold, gold_split=split, gold_weight=weight,
        vote_item=np.searchsorted(item_id, v_item).astype(np.int64),
        vote_voter=np.searchsorted(voter_id, v_voter).astype(np.int64),
        vote_label=v_label, vote_confidence=v_conf, voter_id=voter_id,
        voter_name=[v[1] for v in voters], voter_kind=[v[2] for v in voters], voter_status=[v[3] for v in voters],
    )
    if latency:
        data.vote_latency_ms = extra_cols.pop(0)
    if cost:
        data.vote_cost_usd = extra_cols.pop(0)
    if day:
        stamps = extra_cols.pop(0)
        distinct = {d: str(d)[:10] for d in set(stamps.tolist())}  # a str on SQLite, a date on PostgreSQL
        data.days = sorted(set(distinct.values()))
        index = {d: data.days.index(iso) for d, iso in distinct.items()}
        data.vote_day = np.fromiter(map(index.__getitem__, stamps), dtype=np.int64, count=stamps.shape[0])
    return data


def load_predicted_distributions(session: Session, *, project: Project, data: ProjectData) -> tuple[IntArray, FloatArray]:
    """Votes that came with a predicted distribution of others' answers (for the truth serum):
    their row in ``data``'s vote arrays and the (votes × classes) predictions."""
    rows = session.execute(
        select(col(Vote.item_id), col(Vote.voter_id), col(Vote.predicted_distribution))
        .where(col(Vote.project_id) == project.id, col(Vote.predicted_distribution).is_not(None))
    ).all()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, data.n_classes))
    key = data.vote_item * max(data.n_voters, 1) + data.vote_voter
    order = np.argsort(key)
    items = np.searchsorted(data.item_id, np.array([r[0] for r in rows], dtype=np.int64))
    voters = np.searchsorted(data.voter_id, np.array([r[1] for r in rows], dtype=np.int64))
    want = items * max(data.n_voters, 1) + voters
    pos = order[np.clip(np.searchsorted(key[order], want), 0, max(len(order) - 1, 0))]
    pred = np.full((len(rows), data.n_classes), np.nan)
    for j, (_, _, dist) in enumerate(rows):
        if isinstance(dist, dict):
            pred[j] = 0.0
            for label, p in dist.items():
                code = data.codes.code_of(label)
                if code < data.n_classes:
                    pred[j, code] = float(p)
    good = key[pos] == want
    return pos[good], pred[good]
