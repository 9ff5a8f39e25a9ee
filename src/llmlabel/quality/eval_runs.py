"""``llmlabel eval``: run labelers on the gold set, score them, store the run, compare two runs.

A prompt engineer's loop is edit → eval → compare. So an eval run:

* asks each labeler about every gold item of one split (``dev`` by default: iterate there and
  keep ``test`` for the final check, so the prompt is not tuned to the test items), through the
  ledger, so an answer already paid for — by an earlier eval or by ``llmlabel label`` on the
  same item with the same request — costs nothing and returns at once;
* does *not* record votes: a variant being tried is not a voter of the project;
* keeps per item what was answered, with what confidence, at what cost and latency, so two runs
  can be compared item by item (what flipped) and with paired bootstrap intervals.

``evaluate_votes`` scores votes already stored (any voter, optionally one prompt version) the
same way, for labelers run with ``llmlabel label`` or for human annotators.

Runs are JSON documents in a folder beside the project file (``.llmlabel/evals/<project>/``):
the store has no table for them yet (see ``RunStore``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Text, cast, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from llmlabel.config import LabelerConfig, ProjectConfig
from llmlabel.errors import InputError, NotFoundError
from llmlabel.quality.dataset import LabelCodes, label_codes
from llmlabel.quality.evaluation import Predictions
from llmlabel.schema import canonical_json
from llmlabel.store.db import reader
from llmlabel.store.tables import Gold, Item, LLMCall, Project, Vote, Voter

SPLITS = ("dev", "test", "all")


@dataclass
class EvalItem:
    item_id: str
    truth: Any
    label: Any  # None: abstained (or failed, see ``failed``)
    confidence: float | None = None
    cost_usd: float = 0.0
    latency_ms: float | None = None
    cached: bool = False
    abstain_reason: str | None = None
    failed: str | None = None  # no answer at all (transient failures outlasted the retries)


@dataclass
class EvalRun:
    name: str
    project: str
    labeler: str
    model: str | None
    prompt_version: str | None
    split: str
    source: str  # "run": asked now (through the ledger) | "votes": stored votes
    created_at: str
    items: list[EvalItem] = field(default_factory=list)
    spent_usd: float = 0.0  # paid by this run (answers from the ledger cost nothing now)

    @property
    def scored(self) -> list[EvalItem]:
        return [i for i in self.items if i.failed is None]

    def predictions(self, codes: LabelCodes, items: Sequence[EvalItem] | None = None) -> Predictions:
        rows = self.scored if items is None else list(items)
        truth = np.array([codes.code_of(i.truth) for i in rows], dtype=np.int64)
        label = np.array([codes.code_of(i.label) for i in rows], dtype=np.int64)
        return Predictions(
            truth=truth, label=label, n_classes=max(len(codes), 2),
            confidence=np.array([math.nan if i.confidence is None else i.confidence for i in rows]),
            cost_usd=np.array([i.cost_usd for i in rows]),
            latency_ms=np.array([math.nan if i.latency_ms is None else i.latency_ms for i in rows]),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> EvalRun:
        data = json.loads(text)
        data["items"] = [EvalItem(**i) for i in data.get("items", [])]
        return cls(**data)


def aligned(a: EvalRun, b: EvalRun) -> tuple[list[EvalItem], list[EvalItem]]:
    """The gold items both runs scored, in the same order (for a paired comparison)."""
    in_b = {i.item_id: i for i in b.scored}
    pairs = [(i, in_b[i.item_id]) for i in a.scored if i.item_id in in_b]
    return [p[0] for p in pairs], [p[1] for p in pairs]


class RunStore:
    """Eval runs as JSON files, one per run. A table (``eval_runs``: project, name, labeler,
    model, prompt version, split, created_at, metrics JSON, items JSON) would let the API list
    them; until it exists, runs live beside the project file."""

    def __init__(self, directory: Path, project: str) -> None:
        self.dir = directory / project

    def save(self, run: EvalRun) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{run.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(run.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json")) if self.dir.is_dir() else []

    def load(self, name: str) -> EvalRun:
        path = self.dir / f"{name}.json"
        if not path.is_file():
            matches = [n for n in self.names() if n.startswith(name)]
            if len(matches) != 1:
                known = ", ".join(self.names()) or "(none yet: run `llmlabel eval`)"
                what = "matches several runs" if matches else "is not a stored eval run"
                raise NotFoundError(f"{name!r} {what}; runs: {known}")
            path = self.dir / f"{matches[0]}.json"
        return EvalRun.from_json(path.read_text(encoding="utf-8"))

    def runs(self) -> list[EvalRun]:
        return sorted((self.load(n) for n in self.names()), key=lambda r: r.created_at)


def run_key(labeler: LabelerConfig, prompt_version: str, model: str | None = None, api_base: str | None = None) -> str:
    """What decides a labeler's answers: prompt version, model, endpoint and call parameters."""
    params = {k: v for k, v in labeler.params.items() if k not in ("api_key",)}
    body = json.dumps({"v": prompt_version, "model": model or labeler.model, "api_base": api_base, "params": params,
                       "name": labeler.name}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:8]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def gold_items(session: Session, *, project: Project, split: str) -> list[tuple[int, str, dict[str, Any], Any]]:
    """(item id, external id, fields, gold label) of one split, in id order."""
    if split not in SPLITS:
        raise InputError(f"split {split!r} must be one of: {', '.join(SPLITS)}")
    q = (select(col(Item.id), col(Item.external_id), col(Item.fields), col(Gold.label)).join(Gold, col(Gold.item_id) == col(Item.id))
         .where(col(Gold.project_id) == project.id).order_by(col(Item.id)))
    if split != "all":
        q = q.where(col(Gold.split) == split)
    return [(int(i), str(e), dict(f), lab) for i, e, f, lab in session.execute(q).all()]


def _ledger(engine: Engine, hashes: Sequence[str]) -> dict[str, tuple[Any, float, float]]:
    """Answers already paid for, with what they cost and how long they took then."""
    from llmlabel.labelers.completion import Completion

    found: dict[str, tuple[Any, float, float]] = {}
    wanted = sorted(set(hashes))
    with Session(reader(engine)) as session:
        for i in range(0, len(wanted), 500):
            rows = session.execute(
                select(col(LLMCall.request_hash), col(LLMCall.response), col(LLMCall.cost_usd), col(LLMCall.latency_ms))
                .where(col(LLMCall.request_hash).in_(wanted[i:i + 500]), col(LLMCall.outcome) == "ok")
                .order_by(col(LLMCall.id))
            ).all()
            for h, response, cost, latency in rows:
                if isinstance(response, dict):
                    completion = Completion.from_dict(response)
                    completion.latency_ms = float(latency or 0.0)
                    found[h] = (completion, float(cost or 0.0), float(latency or 0.0))
    return found


Progress = Callable[[str, int, int], None]


def run_eval(
    engine: Engine, *, project: Project, config: ProjectConfig, labelers: Sequence[str] | None = None,
    split: str = "dev", project_dir: Path | None = None, completer: Any = None, budget_usd: float | None = None,
    name: str | None = None, progress: Progress | None = None,
) -> list[EvalRun]:
    """Ask each chosen labeler about every gold item of ``split``; one run per labeler."""
    from llmlabel.labelers.service import bind, run_sync, select_labelers

    with Session(reader(engine)) as session:
        gold = gold_items(session, project=project, split=split)
        dev = [(i, f, lab) for i, _, f, lab in gold_items(session, project=project, split="dev")]
    if not gold:
        raise InputError(f"project {project.name!r} has no gold items in split {split!r}; import gold with a "
                         "'split' column (dev|test), or pass --split all")
    chosen = select_labelers(config, labelers)
    if name is not None and len(chosen) > 1:
        raise InputError("--name needs a single --labeler (each labeler makes its own run)")
    runs = []
    with ExitStack() as stack:
        for lab in chosen:
            spec = bind(lab, stack, completer)
            runs.append(run_sync(_run_one(engine, project, config, spec, gold, dev, split, project_dir,
                                             budget_usd, name, progress)))
    return runs


async def _run_one(
    engine: Engine, project: Project, config: ProjectConfig, spec: Any, gold: list[tuple[int, str, dict[str, Any], Any]],
    dev: list[tuple[int, dict[str, Any], Any]], split: str, project_dir: Path | None, budget_usd: float | None,
    name: str | None, progress: Progress | None,
) -> EvalRun:
    from llmlabel.labelers.ledger import Budget, Writer
    from llmlabel.labelers.limits import Limits
    from llmlabel.labelers.llm import ItemFailed, LLMLabeler
    from llmlabel.labelers.prompts import FewShot, Prompter

    cfg = spec.config
    prompter = Prompter(config, cfg, project_dir)
    key = run_key(cfg, prompter.version, spec.endpoint.model, spec.endpoint.api_base)
    run_name = name or f"{cfg.name}-{split}-{key}"
    writer = Writer(engine)
    budget = Budget(budget_usd)
    labeler = LLMLabeler(
        config, cfg, endpoint=spec.endpoint, completer=spec.completer, prompter=prompter,
        few_shot=FewShot(prompter, dev if cfg.few_shot.count else []), writer=writer, budget=budget,
        limits=Limits(concurrency=cfg.concurrency, rpm=cfg.requests_per_minute, tpm=cfg.tokens_per_minute),
        project_id=project.id, run_id=f"eval-{run_name}"[:64],  # type: ignore[arg-type]
    )
    run = EvalRun(run_name, project.name, cfg.name, cfg.model, prompter.version, split, "run", _now())
    done = 0
    try:
        units = [labeler.prepare(item_id, 0, fields) for item_id, _, fields, _ in gold]
        ledger = await asyncio.to_thread(_ledger, engine, [u.hash for u in units])
        for u in units:
            hit = ledger.get(u.hash)
            u.cached = hit[0] if hit else None

        async def one(u: Any, ext: str, truth: Any) -> EvalItem:
            nonlocal done
            hit = ledger.get(u.hash)
            try:
                vote, tally = await labeler.label(u)
            except ItemFailed as exc:
                return EvalItem(ext, truth, None, failed=str(exc)[:500])
            finally:
                done += 1
                if progress is not None:
                    progress(cfg.name, done, len(units))
            cost = tally.cost + (hit[1] if hit else 0.0)
            latency = (hit[2] + tally.latency_ms) if hit else tally.latency_ms
            return EvalItem(ext, truth, vote.label, vote.confidence, cost, latency or None, hit is not None,
                            vote.abstain_reason)

        tasks = [asyncio.create_task(one(u, ext, truth)) for u, (_, ext, _, truth) in zip(units, gold, strict=True)]
        try:
            run.items = list(await asyncio.gather(*tasks))
        except BaseException:  # a fatal provider error or the budget: stop the other items too
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
    finally:
        await asyncio.to_thread(writer.close)
    run.spent_usd = budget.spent
    return run


def evaluate_votes(
    session: Session, *, project: Project, config: ProjectConfig, voter: str, prompt_version: str | None = None,
    split: str = "dev", name: str | None = None,
) -> EvalRun:
    """An eval run from votes already stored (a labeler run by ``llmlabel label``, or a human)."""
    v = session.execute(select(Voter).where(col(Voter.project_id) == project.id, col(Voter.name) == voter)).scalar_one_or_none()
    if v is None:
        known = session.execute(select(col(Voter.name)).where(col(Voter.project_id) == project.id).order_by(col(Voter.name))).scalars().all()
        raise NotFoundError(f"no voter {voter!r} in project {project.name!r}; voters: {', '.join(known) or '(none)'}")
    gold = {i: (e, lab) for i, e, _, lab in gold_items(session, project=project, split=split)}
    if not gold:
        raise InputError(f"project {project.name!r} has no gold items in split {split!r}")
    q = (select(col(Vote.item_id), cast(col(Vote.label), Text), col(Vote.confidence), col(Vote.cost_usd), col(Vote.latency_ms),
                col(Vote.prompt_version), col(Vote.abstain_reason))
         .where(col(Vote.voter_id) == v.id, col(Vote.item_id).in_(list(gold))))
    if prompt_version is not None:
        q = q.where(col(Vote.prompt_version) == prompt_version)
    rows = session.execute(q.order_by(col(Vote.item_id))).all()
    if not rows:
        which = f" with prompt version {prompt_version!r}" if prompt_version else ""
        raise InputError(f"voter {voter!r} has no votes{which} on gold items of split {split!r}")
    versions = sorted({r[5] for r in rows if r[5]})
    items = [EvalItem(gold[i][0], gold[i][1], None if raw is None else json.loads(raw), conf, float(cost or 0.0), lat,
                      False, reason) for i, raw, conf, cost, lat, _, reason in rows]
    pv = prompt_version or (versions[0] if len(versions) == 1 else None)
    key = hashlib.sha256(f"{voter}|{pv}|{len(items)}".encode()).hexdigest()[:8]
    labeler_model = next((lab.model for lab in config.labelers if lab.name == voter), None)
    return EvalRun(name or f"{voter}-{split}-votes-{key}", project.name, voter, labeler_model, pv, split, "votes",
                   _now(), items)


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


def variant_config(base: ProjectConfig, path: Path) -> ProjectConfig:
    """The project's config with a variant file applied: a whole project file, or only the keys
    that differ (``labelers:``, ``instructions:``, …) merged over the project's (lists replace).
    The label schema must stay the project's: the variant is scored against the same gold."""
    import yaml

    from llmlabel.config import parse_config

    try:
        over = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"variant file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise InputError(f"variant file {path} is not valid YAML: {exc}") from None
    if not isinstance(over, dict):
        raise InputError(f"variant file {path} must be a YAML mapping (a project file, or the keys that differ)")
    merged = _merge(base.model_dump(mode="json"), over)
    merged["name"] = base.name
    variant = parse_config(merged, str(path))
    if variant.labels.model_dump(mode="json") != base.labels.model_dump(mode="json"):
        raise InputError(f"variant file {path} changes the label schema; an eval scores against the project's gold, "
                         "so the labels must stay the same")
    return variant


def run_codes(config: ProjectConfig, *runs: EvalRun) -> LabelCodes:
    """One label coding for the runs being scored together (schema classes first)."""
    codes = label_codes(config)
    for run in runs:
        for i in run.items:
            codes.code_of(i.truth)
            if i.label is not None:
                codes.code_of(i.label)
    return codes


def flip_rows(a: Sequence[EvalItem], b: Sequence[EvalItem], rows: Sequence[int]) -> list[dict[str, Any]]:
    return [{"item_id": a[r].item_id, "gold": a[r].truth, "a": a[r].label, "b": b[r].label,
             "a_confidence": a[r].confidence, "b_confidence": b[r].confidence} for r in rows]


def same_label(x: Any, y: Any) -> bool:
    return x is not None and y is not None and canonical_json(x) == canonical_json(y)
