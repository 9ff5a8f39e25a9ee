"""Regression targets on real crowd data (shared/datasets/crowd, beside the repo clone).

Unsupervised: accuracy on all gold at or above the Dawid–Skene figure in each README, within
0.5 pp. Supervised: the README figure comes from one random half of gold that cannot be
reproduced, and single halves differ by several points on the small sets, so the README's
method (confusion matrices estimated from the gold half, smoothing 0.01, no EM) is recomputed
here on the same halves as ours, averaged over five halves, and ours must be within 0.5 pp
or one test item, whichever is larger (on bluebirds one item of 54 is 1.9 pp: a smaller
difference cannot be resolved there).

Dynamic consensus at target 0.95 (bench/consensus.py (c), same three splits): within 1 pp of
all-votes accuracy on every set, on at most half the votes on the sets that meet the issue's
goal (a ceiling on the others), and on adult the bound that shows why no policy can (most
items never reach 0.95). The items it finalizes keep the promise on held-out gold: at least
95% right, pooled over the splits, where 300 or more are finalized; where fewer, 95% must lie
within their 90% interval.
"""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.special import betaincinv

from llmlabel.consensus import (
    DawidSkene,
    EncodedVotes,
    Gold,
    Policy,
    calibrate,
    cast_vote_counts,
    encode_votes,
)
from llmlabel.simulate import simulate_policy, votes_needed

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "crowd"
SETS = [
    "adult",
    "amazon_negative",
    "bluebirds",
    "possent",
    "product",
    "rte",
    "sp_amt",
    "sst2_crowd",
    "temp",
    "weather_sentiment",
    "wsd",
]
TOLERANCE = 0.005

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"crowd datasets not found at {DATA}")


def load(name: str) -> tuple[EncodedVotes, Gold, str]:
    folder = DATA / name
    with open(folder / "answers.csv", newline="") as f:
        answers = list(csv.DictReader(f))
    with open(folder / "truth.csv", newline="") as f:
        truth = {r["item"]: r["label"] for r in csv.DictReader(f)}
    classes = sorted({r["label"] for r in answers} | set(truth.values()))
    enc = encode_votes(
        ({"item": r["item"], "voter": r["worker"], "label": r["label"]} for r in answers), classes
    )
    known = set(enc.items)
    gold = enc.encode_gold({i: lab for i, lab in truth.items() if i in known})
    return enc, gold, (folder / "README.md").read_text()


def readme_figure(readme: str, pattern: str) -> float:
    match = re.search(pattern + r"\s*\*\*([0-9.]+)\*\*", readme)
    assert match, pattern
    return float(match.group(1))


def gold_only_ds(enc: EncodedVotes, train: Gold) -> np.ndarray:
    """The READMEs' supervised baseline: matrices counted on gold, smoothing 0.01, no EM."""
    v, k = enc.votes, enc.votes.n_classes
    truth = np.full(v.n_items, -1)
    truth[train.item] = train.label
    on_gold = truth[v.item] >= 0
    counts = np.full((v.n_voters, k, k), 0.01)
    np.add.at(counts, (v.voter[on_gold], truth[v.item[on_gold]], v.label[on_gold]), 1.0)
    log_pi = np.log(counts / counts.sum(axis=2, keepdims=True))
    prior = np.bincount(train.label, minlength=k) + 0.01
    logp = np.tile(np.log(prior / prior.sum()), (v.n_items, 1))
    np.add.at(logp, v.item, log_pi[v.voter, :, v.label])
    return logp


@pytest.mark.parametrize("name", SETS)
def test_unsupervised_meets_readme_dawid_skene(name: str) -> None:
    enc, gold, readme = load(name)
    target = readme_figure(readme, r"unsupervised:")
    post = DawidSkene().fit(enc.votes).posteriors_
    acc = (post[gold.item].argmax(1) == gold.label).mean()
    assert acc >= target - TOLERANCE, f"{name}: {acc:.4f} < README DS {target:.4f}"


@pytest.mark.parametrize("name", SETS)
def test_half_gold_meets_supervised_baseline(name: str) -> None:
    enc, gold, readme = load(name)
    ours, baseline = [], []
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(len(gold))
        half = len(gold) // 2
        train, test = gold.subset(perm[:half]), gold.subset(perm[half:])
        post = DawidSkene().fit(enc.votes, train).posteriors_
        ours.append((post[test.item].argmax(1) == test.label).mean())
        base = gold_only_ds(enc, train)
        baseline.append((base[test.item].argmax(1) == test.label).mean())
    readme_sup = readme_figure(readme, r"all-votes accuracy")
    tolerance = max(TOLERANCE, 1.0 / len(test)) + 1e-9
    assert np.mean(ours) >= np.mean(baseline) - tolerance, (
        f"{name}: ours {np.mean(ours):.4f}, gold-only DS {np.mean(baseline):.4f} "
        f"(README, another split: {readme_sup:.4f})"
    )


@functools.cache
def replay_at_095(name: str) -> dict[str, float]:
    """bench/consensus.py's dynamic consensus (c), on its three half-gold splits."""
    enc, gold, _ = load(name)
    votes = enc.votes
    gap, share, bound = [], [], []
    n_final, n_right = 0, 0
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(len(gold))
        half = len(gold) // 2
        train, test = gold.subset(perm[:half]), gold.subset(perm[half:])
        model = DawidSkene().fit(votes, train)
        cal = calibrate(DawidSkene(), votes, train, seed=seed, by_votes=True)
        truth = np.full(votes.n_items, -1)
        truth[test.item] = test.label
        policy = Policy(target=0.95, min_human_votes=1, max_votes=10_000)
        r = simulate_policy(
            model,
            votes,
            model.kinds_,
            truth,
            policy,
            items=test.item,
            calibrate=cal.transform,
            seed=seed,
        )
        gap.append(r.accuracy - (model.posteriors_[test.item].argmax(1) == test.label).mean())
        final = r.confidence >= 0.95
        n_final += int(final.sum())
        n_right += int((r.label[final] == test.label[final]).sum())
        share.append(r.mean_votes / r.mean_votes_available)
        need = votes_needed(model, votes, test.item, 0.95, calibrate=cal.transform)
        n = cast_vote_counts(votes)[test.item]
        bound.append(np.minimum(need, n).sum() / n.sum())
    return {
        "gap": float(np.mean(gap)),
        "share": float(np.mean(share)),
        "bound": float(np.mean(bound)),
        "final": n_final,
        "right": n_right,
    }


# Share of the votes spent. Half or less is the goal; on the other sets, a ceiling a
# few points above what finalizing honestly at 0.95 spends (where first crossings of 0.95 were
# right less often than promised, the stopping rule waits for more votes). adult, bluebirds
# and weather_sentiment finalize few or no items and spend nearly all their votes.
VOTE_SHARE = {
    "amazon_negative": 0.5,
    "possent": 0.5,
    "sst2_crowd": 0.5,
    "wsd": 0.5,
    "product": 0.67,
    "rte": 0.65,
    "sp_amt": 0.67,
    "temp": 0.65,
}


@pytest.mark.parametrize("name", SETS)
def test_dynamic_consensus_within_1pp_of_all_votes(name: str) -> None:
    r = replay_at_095(name)
    assert r["gap"] > -0.01, r
    assert r["share"] <= VOTE_SHARE.get(name, 1.0), r
    assert r["bound"] <= r["share"] + 1e-9, r  # no policy at 0.95 spends fewer votes


@pytest.mark.parametrize("name", SETS)
def test_finalized_items_are_right_as_often_as_promised(name: str) -> None:
    r = replay_at_095(name)
    final, right = r["final"], r["right"]
    if final >= 300:
        assert right / final >= 0.95, r
    elif final:
        assert betaincinv(right + 0.5, final - right + 0.5, 0.95) >= 0.95, r


def test_no_policy_at_095_can_finalize_adult_on_half_its_votes() -> None:
    # Most of adult's items cannot reach 0.95 with any of their votes: the goal's arithmetic.
    assert replay_at_095("adult")["bound"] > 0.55
