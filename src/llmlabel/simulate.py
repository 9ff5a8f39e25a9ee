"""Synthetic annotator populations, for tests and for tuning the decision policy.

Real crowd data has no known confusion matrices and no LLM voters; a simulation has both, so a
test can check that a fit *recovers* what generated the votes, and a policy can be tuned on a
replay before real votes are spent. Everything is seeded and vectorized.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from llmlabel.consensus.calibration import expected_calibration_error
from llmlabel.consensus.dawid_skene import DawidSkene
from llmlabel.consensus.em import softmax_rows
from llmlabel.consensus.errors import ConsensusInputError
from llmlabel.consensus.options import OptionItems, OptionVotes
from llmlabel.consensus.policy import Decision, Policy, decide
from llmlabel.consensus.votes import DEFAULT_KINDS, FloatArray, IntArray, VoterKinds, Votes


@dataclass(frozen=True)
class Population:
    """A group of voters of one kind.

    ``accuracy`` is a Beta(a, b) over voters; each voter's errors go to the other classes in
    proportions drawn from Dirichlet(``error_concentration``) per true class (small = errors
    pile onto one confusable class). ``spammer_share`` of the voters answer one fixed label;
    ``drift`` moves accuracy toward chance by that fraction from the first item to the last;
    ``confident`` voters state a confidence that is higher on correct votes, inflated by
    ``overconfidence``.
    """

    n_voters: int
    kind: str = "human"
    per_item: int = 3
    accuracy: tuple[float, float] = (8.0, 2.0)
    error_concentration: float = 1.0
    spammer_share: float = 0.0
    drift: float = 0.0
    confident: bool = False
    overconfidence: float = 0.0


@dataclass(frozen=True)
class Simulation:
    votes: Votes
    truth: IntArray
    kinds: VoterKinds
    confusion: FloatArray


def _sample_rows(rng: np.random.Generator, probs: FloatArray) -> IntArray:
    cum = probs.cumsum(axis=1)
    u = rng.random((probs.shape[0], 1)) * cum[:, -1:]
    out: IntArray = (u > cum).sum(axis=1).astype(np.int64)
    return np.minimum(out, probs.shape[1] - 1)


def _population_confusion(rng: np.random.Generator, pop: Population, k: int) -> FloatArray:
    acc = rng.beta(*pop.accuracy, size=pop.n_voters)
    errors = rng.dirichlet(np.full(k - 1, pop.error_concentration), size=(pop.n_voters, k))
    conf = np.zeros((pop.n_voters, k, k))
    for t in range(k):
        others = [j for j in range(k) if j != t]
        conf[:, t, others] = errors[:, t] * (1.0 - acc)[:, None]
        conf[:, t, t] = acc
    spam = rng.random(pop.n_voters) < pop.spammer_share
    fixed = rng.integers(0, k, size=pop.n_voters)
    conf[spam] = 0.0
    conf[spam, :, fixed[spam]] = 1.0
    return conf


def simulate_votes(
    n_items: int,
    n_classes: int,
    populations: Sequence[Population],
    *,
    class_prior: Sequence[float] | None = None,
    item_difficulty: tuple[float, float] | None = None,
    seed: int = 0,
) -> Simulation:
    """Votes from every population on every item (``per_item`` distinct voters each).

    ``item_difficulty`` is a Beta(a, b) over items: a vote on an item of difficulty d is drawn
    from the voter's row mixed toward chance by d. Real crowd items are not equally hard, and a
    per-voter confusion matrix cannot say so: on a hard item early votes agree by luck, which
    is what makes stopping at the first confident posterior over-promise (``StoppingRule``).
    """
    rng = np.random.default_rng(seed)
    prior = np.full(n_classes, 1.0 / n_classes) if class_prior is None else np.asarray(class_prior)
    truth = rng.choice(n_classes, size=n_items, p=prior / prior.sum()).astype(np.int64)
    hard = np.zeros(n_items) if item_difficulty is None else rng.beta(*item_difficulty, n_items)
    confs, kinds, items, voters = [], [], [], []
    offset = 0
    for pop in populations:
        if pop.per_item > pop.n_voters:
            raise ConsensusInputError(f"per_item {pop.per_item} exceeds n_voters {pop.n_voters}")
        confs.append(_population_confusion(rng, pop, n_classes))
        kinds.append(np.full(pop.n_voters, DEFAULT_KINDS.index(pop.kind), dtype=np.int64))
        pick = np.argsort(rng.random((n_items, pop.n_voters)), axis=1)[:, : pop.per_item]
        items.append(np.repeat(np.arange(n_items), pop.per_item))
        voters.append(pick.ravel() + offset)
        offset += pop.n_voters
    confusion = np.concatenate(confs)
    item = np.concatenate(items)
    voter = np.concatenate(voters)
    kind_of = np.concatenate(kinds)
    drift = np.concatenate([np.full(p.n_voters, p.drift) for p in populations])[voter]
    time = item / max(n_items - 1, 1)
    rows = confusion[voter, truth[item]]
    mix = (1.0 - (1.0 - drift * time) * (1.0 - hard[item]))[:, None]
    label = _sample_rows(rng, (1.0 - mix) * rows + mix / n_classes)
    confident = np.concatenate([np.full(p.n_voters, p.confident) for p in populations])[voter]
    over = np.concatenate([np.full(p.n_voters, p.overconfidence) for p in populations])[voter]
    correct = label == truth[item]
    stated = np.where(correct, rng.beta(8.0, 1.5, item.shape[0]), rng.beta(3.0, 2.0, item.shape[0]))
    stated = np.clip(stated + over * (1.0 - stated), 0.0, 1.0)
    votes = Votes(
        item=item,
        voter=voter,
        label=label,
        n_items=n_items,
        n_voters=offset,
        n_classes=n_classes,
        confidence=np.where(confident, stated, np.nan),
    )
    return Simulation(votes, truth, VoterKinds(kind_of), confusion)


@dataclass(frozen=True)
class PolicyReport:
    """Outcome of replaying votes through the policy (over items with known truth)."""

    accuracy: float
    ece: float
    mean_votes: float
    mean_votes_available: float
    share_final: float
    share_escalated: float
    votes_used: IntArray
    label: IntArray
    confidence: FloatArray


def simulate_policy(
    model: DawidSkene,
    votes: Votes,
    kinds: VoterKinds,
    truth: IntArray,
    policy: Policy,
    *,
    items: IntArray | None = None,
    calibrate: Callable[[FloatArray, IntArray], FloatArray] | None = None,
    seed: int = 0,
) -> PolicyReport:
    """Replay dynamic consensus: each item's votes arrive in random order, one per round,
    of the kind the policy asks for, until it finalizes or escalates.

    ``truth`` has one label per item (−1 where unknown, scored only where known). Accuracy
    and ECE are over every replayed item, escalated ones included, at their last posterior.
    ``calibrate(posteriors, cast_votes)`` repairs the posteriors (``CalibrationReport.transform``);
    it is given each item's number of cast votes so far, which a vote-count temperature needs.
    """
    rng = np.random.default_rng(seed)
    items = np.arange(votes.n_items) if items is None else np.asarray(items, dtype=np.int64)
    n_kinds = len(kinds.names)
    loglik = model.vote_log_likelihood(votes, kinds)
    vkind = kinds.kind[votes.voter]
    order = np.lexsort((rng.random(len(votes)), vkind, votes.item))
    slot = votes.item[order] * n_kinds + vkind[order]
    have = np.bincount(slot, minlength=votes.n_items * n_kinds).reshape(votes.n_items, n_kinds)
    start = np.concatenate([[0], np.cumsum(have.ravel())[:-1]]).reshape(have.shape)
    taken = np.zeros_like(have)
    logpost = np.tile(np.log(model.class_prior_), (votes.n_items, 1))
    matrices = model.kind_matrices()
    active = np.zeros(votes.n_items, dtype=bool)
    active[items] = True
    final_probs = np.zeros((votes.n_items, votes.n_classes))
    code = np.full(votes.n_items, Decision.MORE, dtype=np.int64)
    cast = np.zeros(votes.n_items, dtype=np.int64)
    while active.any():
        idx = np.flatnonzero(active)
        probs = softmax_rows(logpost[idx])
        if calibrate is not None:
            probs = calibrate(probs, cast[idx])
        d = decide(
            probs,
            taken[idx],
            matrices,
            kinds.names,
            policy,
            available=taken[idx] < have[idx],
        )
        done = d.code != Decision.MORE
        final_probs[idx] = probs
        code[idx[done]] = d.code[done]
        active[idx[done]] = False
        ask, kind = idx[~done], d.next_kind[~done]
        pos = order[start[ask, kind] + taken[ask, kind]]
        logpost[ask] += loglik[pos]
        taken[ask, kind] += 1
        cast[ask] += votes.label[pos] >= 0
    scored = items[truth[items] >= 0]
    probs = final_probs[scored]
    used = taken.sum(axis=1)
    return PolicyReport(
        accuracy=float((probs.argmax(axis=1) == truth[scored]).mean()),
        ece=expected_calibration_error(probs, truth[scored]),
        mean_votes=float(used[items].mean()),
        mean_votes_available=float(have[items].sum(axis=1).mean()),
        share_final=float((code[items] == Decision.FINAL).mean()),
        share_escalated=float((code[items] == Decision.ESCALATE).mean()),
        votes_used=used[items],
        label=final_probs[items].argmax(axis=1),
        confidence=final_probs[items].max(axis=1),
    )


def votes_needed(
    model: DawidSkene,
    votes: Votes,
    items: IntArray,
    target: float,
    *,
    kinds: VoterKinds | None = None,
    calibrate: Callable[[FloatArray, IntArray], FloatArray] | None = None,
) -> IntArray:
    """Fewest of its own votes with which each item's (calibrated) posterior could reach
    ``target``, over every subset and order of them; its vote count + 1 where none can.

    A lower bound for any policy that finalizes only at ``target``: whatever order votes
    arrive in and whoever is asked, an item cannot be finalized with fewer votes, and an item
    marked unreachable spends all its votes. It measures what a vote-saving goal can ask of a
    model and its calibration, not what a policy achieved.

    The bound is exact for two classes and safe for more. The posterior of class c after a
    set S of votes is at most 1 / (1 + Σ_{c'≠c} exp(−D_cc'(S))), where D_cc'(S) is the
    log-odds of c over c' after S; the largest D_cc' over sets of m votes sums the m votes
    that favour c over c' most (each c' may pick its own set, hence "at most"). ``calibrate``
    (as in ``simulate_policy``) is applied to that bounding distribution at m cast votes:
    temperature and isotonic repairs, and the stopping rule's step map, are monotone in those
    odds, so the bound survives them.
    """
    items = np.asarray(items, dtype=np.int64)
    k = votes.n_classes
    pos = np.full(votes.n_items, -1, dtype=np.int64)
    pos[items] = np.arange(items.shape[0])
    rows = np.flatnonzero((pos[votes.item] >= 0) & (votes.label >= 0))
    owner = pos[votes.item[rows]]
    n_cast = np.bincount(owner, minlength=items.shape[0])
    loglik = model.vote_log_likelihood(votes, kinds)[rows]
    by_item = np.argsort(owner, kind="stable")
    owner, loglik = owner[by_item], loglik[by_item]
    start = np.cumsum(n_cast) - n_cast
    m = np.arange(owner.shape[0]) - start[owner] + 1  # a row stands for "the best m votes"
    log_prior = np.log(model.class_prior_)
    best = np.full(items.shape[0], np.iinfo(np.int64).max)
    for c in range(k):
        logq = np.zeros((owner.shape[0], k))
        for other in range(k):
            if other == c:
                continue
            gain = loglik[:, c] - loglik[:, other]
            ranked = gain[np.lexsort((-gain, owner))]
            running = np.cumsum(ranked)
            top = running - np.concatenate([[0.0], running])[start[owner]]
            logq[:, other] = -(log_prior[c] - log_prior[other] + top)
        q = softmax_rows(logq)
        if calibrate is not None:
            q = calibrate(q, m)
        hit = q[:, c] >= target
        np.minimum.at(best, owner[hit], m[hit])
    out: IntArray = np.where(best <= n_cast, best, n_cast + 1).astype(np.int64)
    return out


@dataclass(frozen=True)
class OptionVoterGroup:
    """Voters choosing among options: skill ``a`` plus first-option and longest-option pulls."""

    n_voters: int
    kind: str = "human"
    per_item: int = 3
    skill: float = 2.0
    first_bias: float = 0.0
    length_bias: float = 0.0


@dataclass(frozen=True)
class OptionSimulation:
    items: OptionItems
    votes: OptionVotes
    truth: IntArray
    kinds: VoterKinds
    params: FloatArray


def simulate_options(
    n_items: int,
    groups: Sequence[OptionVoterGroup],
    *,
    options: tuple[int, int] = (2, 5),
    seed: int = 0,
) -> OptionSimulation:
    """Items with 2..5 options of random length; votes drawn from the options model itself."""
    rng = np.random.default_rng(seed)
    n_opt = rng.integers(options[0], options[1] + 1, size=n_items)
    m = int(n_opt.max())
    length = np.where(
        np.arange(m)[None, :] < n_opt[:, None], rng.lognormal(4.0, 0.6, size=(n_items, m)), np.nan
    )
    items = OptionItems(length)
    truth = (rng.random(n_items) * n_opt).astype(np.int64)
    pos, ln = items.features()
    params, kinds, item_l, voter_l = [], [], [], []
    offset = 0
    for g in groups:
        params.append(np.tile([g.skill, g.first_bias, g.length_bias], (g.n_voters, 1)))
        kinds.append(np.full(g.n_voters, DEFAULT_KINDS.index(g.kind), dtype=np.int64))
        pick = np.argsort(rng.random((n_items, g.n_voters)), axis=1)[:, : g.per_item]
        item_l.append(np.repeat(np.arange(n_items), g.per_item))
        voter_l.append(pick.ravel() + offset)
        offset += g.n_voters
    theta = np.concatenate(params).astype(np.float64)
    item, voter = np.concatenate(item_l), np.concatenate(voter_l)
    hit = np.arange(m)[None, :] == truth[item][:, None]
    logits = theta[voter, 0:1] * hit + theta[voter, 1:2] * pos[item] + theta[voter, 2:3] * ln[item]
    logits = np.where(items.valid[item], logits, -np.inf)
    choice = _sample_rows(rng, softmax_rows(logits))
    votes = OptionVotes(item, voter, choice, n_items, offset)
    return OptionSimulation(items, votes, truth, VoterKinds(np.concatenate(kinds)), theta)
