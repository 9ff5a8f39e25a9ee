"""A project's quality in a few numbers, assembled from its arrays for the CLI, the API and the
HTML report alike: agreement (α, κ, per pair, LLM vs human, per voter), held-out calibration of
the consensus, and how accurate the exported dataset is likely to be.

Who counts where: agreement among humans is the classic inter-annotator figure; α over all
voters (LLMs included) says how consistent the evidence behind consensus is. Gated voters are
left out of both (their votes are out of consensus too) but keep their row in the voter table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from llmlabel.quality import agreement as agr
from llmlabel.quality.dataset import HUMAN_KINDS, MACHINE_KINDS, ProjectData
from llmlabel.quality.intervals import (
    NAN_INTERVAL,
    Interval,
    poisson_binomial_interval,
    wilson_interval,
)

MIN_GOLD_FOR_CALIBRATION = 30


@dataclass
class VoterRow:
    name: str
    kind: str
    status: str
    votes: int
    abstentions: int
    gold: Interval
    consensus: Interval
    confusion_gold: list[list[int]]
    truth_serum: float | None = None
    vs_human: Interval | None = None  # machines: agreement with the human majority


@dataclass
class PairRow:
    voter_a: str
    voter_b: str
    kappa: Interval
    agreement: float


@dataclass
class AgreementSummary:
    classes: list[str]
    human_alpha: Interval
    all_alpha: Interval
    human_fleiss: Interval
    llm_vs_human_agreement: Interval
    llm_vs_human_kappa: Interval
    llm_vs_human_items: int
    pairs: list[PairRow] = field(default_factory=list)
    voters: list[VoterRow] = field(default_factory=list)
    human_alpha_interval: Interval | None = None  # when every class name is a number (ratings)


def numeric_values(names: list[str]) -> np.ndarray | None:
    """The numbers behind class names like "1".."5", for interval-level α; None otherwise."""
    try:
        return np.array([float(n) for n in names], dtype=np.float64)
    except ValueError:
        return None


def _active_votes(data: ProjectData, kinds: tuple[str, ...] | None = None) -> np.ndarray:
    ok = np.array([s != "gated" for s in data.voter_status], dtype=bool)
    if kinds is not None:
        ok &= data.kind_mask(kinds)
    return ok[data.vote_voter] if data.n_voters else np.zeros(0, dtype=bool)


def consensus_codes(data: ProjectData) -> np.ndarray:
    """The consensus label of each final item (-1 elsewhere)."""
    out: np.ndarray = np.where(data.status == "final", data.final, -1).astype(np.int64)
    return out


def agreement_summary(
    data: ProjectData, *, n_boot: int = 1000, seed: int = 0, min_shared: int = 10, max_pairs: int = 50,
    truth_serum: tuple[np.ndarray, np.ndarray] | None = None,
) -> AgreementSummary:
    k = data.n_classes
    human = _active_votes(data, HUMAN_KINDS)
    active = _active_votes(data)

    def counts(mask: np.ndarray) -> agr.sparse.csr_matrix:
        return agr.value_counts(data.vote_item[mask], data.vote_label[mask], data.n_items, k)

    h_counts = counts(human)
    human_alpha, fleiss = agr.alpha_and_fleiss(h_counts, n_boot=n_boot, seed=seed)
    numbers = numeric_values(data.class_names)
    interval = (agr.krippendorff_alpha(h_counts, level="interval", values=numbers, n_boot=n_boot, seed=seed)
                if numbers is not None else None)
    all_alpha = agr.krippendorff_alpha(counts(active), n_boot=n_boot, seed=seed)
    pairs = agr.pairwise_kappa(data.vote_item[active], data.vote_voter[active], data.vote_label[active],
                               n_voters=max(data.n_voters, 1), n_classes=k, min_shared=min_shared,
                               n_boot=min(n_boot, 200), seed=seed)[:max_pairs]
    machine_voters = data.kind_mask(MACHINE_KINDS)
    human_voters = data.kind_mask(HUMAN_KINDS)
    group = agr.group_agreement(data.vote_item[active], data.vote_voter[active], data.vote_label[active],
                                group_a=machine_voters, group_b=human_voters, n_items=data.n_items, n_classes=k,
                                n_boot=n_boot, seed=seed)
    per = agr.voter_agreement(data.vote_item, data.vote_voter, data.vote_label, n_voters=data.n_voters, n_classes=k,
                              gold=data.gold, consensus=consensus_codes(data))
    bts = None
    if truth_serum is not None and truth_serum[0].size:
        rows, pred = truth_serum
        bts = agr.bayesian_truth_serum(data.vote_item[rows], data.vote_voter[rows], data.vote_label[rows], pred,
                                       n_items=data.n_items, n_voters=data.n_voters)
    voters = []
    for v in range(data.n_voters):
        serum = None if bts is None or bts.voter_votes[v] == 0 else float(bts.voter_score[v])
        voters.append(VoterRow(
            data.voter_name[v], data.voter_kind[v], data.voter_status[v], int(per.votes[v]), int(per.abstentions[v]),
            per.gold_accuracy(v), per.consensus_accuracy(v), per.confusion_gold[v].tolist(), serum,
            group.per_voter.get(v) if machine_voters[v] else None,
        ))
    return AgreementSummary(
        classes=data.class_names, human_alpha=human_alpha, all_alpha=all_alpha, human_fleiss=fleiss,
        llm_vs_human_agreement=group.agreement, llm_vs_human_kappa=group.kappa, llm_vs_human_items=group.items,
        pairs=[PairRow(data.voter_name[p.voter_a], data.voter_name[p.voter_b], p.kappa, p.agreement) for p in pairs],
        voters=voters, human_alpha_interval=interval,
    )


@dataclass
class Calibration:
    """Consensus posteriors on gold, from fits that did not see that gold (out of fold)."""

    n: int
    method: str | None  # the repair the engine would choose (None: too little gold to choose)
    rows: list[tuple[float, float, int, float, float]]  # reliability table: lo, hi, n, confidence, accuracy
    ece: Interval
    accuracy: Interval
    note: str | None = None
    confusion: list[list[int]] = field(default_factory=list)  # [gold, consensus top label], held out


def heldout_calibration(data: ProjectData, *, n_folds: int = 5, seed: int = 0) -> Calibration:
    """Fit the consensus engine as ``refit`` does and score it on held-out gold."""
    from llmlabel.consensus import (
        DawidSkene,
        Gold,
        VoterKinds,
        Votes,
        bootstrap_ece,
        reliability_table,
    )
    from llmlabel.consensus.calibration import choose_calibration, out_of_fold_posteriors
    from llmlabel.consensus.votes import DEFAULT_KINDS

    active = _active_votes(data)
    voted = np.zeros(data.n_items, dtype=bool)
    voted[data.vote_item[active & (data.vote_label >= 0)]] = True
    gold_rows = np.flatnonzero((data.gold >= 0) & voted)
    empty = Calibration(len(gold_rows), None, [], NAN_INTERVAL, NAN_INTERVAL)
    if len(gold_rows) < max(n_folds, 10) or data.n_voters == 0:
        empty.note = f"needs at least {max(n_folds, 10)} gold items with votes; the project has {len(gold_rows)}"
        return empty
    conf = data.vote_confidence[active]
    votes = Votes(item=data.vote_item[active], voter=data.vote_voter[active], label=data.vote_label[active],
                  n_items=data.n_items, n_voters=data.n_voters, n_classes=data.n_classes,
                  confidence=np.where((conf >= 0) & (conf <= 1), conf, np.nan))
    kinds = VoterKinds(np.array([DEFAULT_KINDS.index(k) if k in DEFAULT_KINDS else 0 for k in data.voter_kind],
                                dtype=np.int64), DEFAULT_KINDS)
    gold = Gold(item=gold_rows, label=data.gold[gold_rows], weight=data.gold_weight[gold_rows])
    model = DawidSkene().fit(votes, gold, kinds)
    probs, truth, _ = out_of_fold_posteriors(model, votes, gold, kinds=kinds, n_folds=n_folds, seed=seed)
    method = None
    held = probs
    if len(gold_rows) >= MIN_GOLD_FOR_CALIBRATION:
        method = choose_calibration(probs, truth, n_folds=n_folds, seed=seed).method
        held = _held_out(method, probs, truth, n_folds, seed)
    table = reliability_table(held, truth)
    est, lo, hi = bootstrap_ece(held, truth, seed=seed)
    said = held.argmax(axis=1)
    k = data.n_classes
    confusion = np.bincount(truth * k + said, minlength=k * k).reshape(k, k).tolist()
    return Calibration(len(truth), method, table.rows(), Interval(est, lo, hi, len(truth)),
                       wilson_interval(int((said == truth).sum()), len(truth)), None, confusion)


def _held_out(method: str, probs: np.ndarray, truth: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """The chosen repair fitted on the other folds and applied to each fold: held out twice."""
    from llmlabel.consensus.calibration import CALIBRATORS

    folds = np.array_split(np.random.default_rng(seed + 1).permutation(truth.shape[0]), n_folds)
    out = np.zeros_like(probs)
    for f in folds:
        train = np.ones(truth.shape[0], dtype=bool)
        train[f] = False
        out[f] = CALIBRATORS[method]().fit(probs[train], truth[train]).transform(probs[f])
    return out


@dataclass
class DatasetAccuracy:
    final_items: int
    expected: Interval  # from the final items' posteriors
    decided_by: dict[str, int]
    heldout_gold: Interval | None = None  # consensus accuracy on held-out gold
    audit: Interval | None = None  # measured on audited items


def dataset_accuracy(data: ProjectData, calibration: Calibration | None = None, audit: Interval | None = None) -> DatasetAccuracy:
    """What accuracy the exported final items have, as their posteriors say (gold and reviewed
    items count as certain), beside what was measured on held-out gold and audits."""
    final = data.status == "final"
    conf = np.where(np.isnan(data.confidence), 0.0, data.confidence)[final]
    by: dict[str, int] = {}
    for d in data.decided_by[final]:
        key = str(d or "unknown")
        by[key] = by.get(key, 0) + 1
    held = calibration.accuracy if calibration is not None and not math.isnan(calibration.accuracy.estimate) else None
    return DatasetAccuracy(int(final.sum()), poisson_binomial_interval(conf), by, held, audit)
