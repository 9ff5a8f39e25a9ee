"""Benchmark the consensus engine on the real crowd sets, beside crowd-kit.

    /tmp/benchvenv/bin/python bench/consensus.py            # crowd-kit columns filled
    PYTHONPATH=src python bench/consensus.py                # crowd-kit columns say so
    /tmp/benchvenv/bin/python bench/consensus.py adult rte  # only these sets

For every categorical set under shared/datasets/crowd (emotion_numeric is numeric, skipped):
(a) accuracy with all votes, unsupervised and with half the gold used for fitting (scored on
the other half, mean over SPLITS random halves), with the gold items only one of ours and
crowd-kit's DS gets right and the exact McNemar p-value of that split; (b) ECE of the
posteriors on the held-out half, raw and after the calibration chosen on the fitting half
(basic bootstrap 90% interval below 300 items); (c) dynamic consensus: votes of each held-out
item replayed in random order, stopping at posterior ≥ 0.95, calibrated with a repair that may
read each item's vote count so far (``calibrate(..., by_votes=True)``) and the stopping rule
fitted with it (``StoppingRule``), and beside it what no policy finalizing at 0.95 could beat
with that calibrated model (``simulate.votes_needed``: the fewest votes with which each item
could reach 0.95, in any order); what the finalized items promised and kept on held-out gold,
pooled over the splits (90% bootstrap interval), with the stopping rule and with the repair
alone (the replay without the rule: what optional stopping costs); (d) fit time, median of
several runs, crowd-kit's Dawid–Skene fits alternating with batches of ours, also per EM
iteration (crowd-kit stops after 2 iterations on some sets, when its ELBO first changes by
less than 1e-5 per vote or falls; ours runs to a 1e-6 relative log-likelihood change), and
the policy's calibration (5 refits, repairs and stopping rule), median over the splits.
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llmlabel.consensus import (  # noqa: E402
    DawidSkene,
    EncodedVotes,
    Gold,
    Policy,
    bootstrap_ece,
    calibrate,
    cast_vote_counts,
    encode_votes,
    expected_calibration_error,
)
from llmlabel.simulate import simulate_policy, votes_needed  # noqa: E402

try:
    import pandas as pd
    from crowdkit.aggregation import DawidSkene as CkDawidSkene
    from crowdkit.aggregation import MajorityVote as CkMajorityVote

    HAVE_CROWDKIT = True
except ImportError:
    HAVE_CROWDKIT = False

DATA = ROOT.parent / "shared" / "datasets" / "crowd"
SPLITS = 3
TIMING_RUNS = 5  # crowd-kit's fits (up to seconds each)
OUR_TIMING_RUNS = 20  # ours take milliseconds: a median of more runs rides out a busy machine
TARGET = 0.95


def load(name: str) -> tuple[EncodedVotes, Gold, list[dict[str, str]]]:
    with open(DATA / name / "answers.csv", newline="") as f:
        answers = list(csv.DictReader(f))
    with open(DATA / name / "truth.csv", newline="") as f:
        truth = {r["item"]: r["label"] for r in csv.DictReader(f)}
    classes = sorted({r["label"] for r in answers} | set(truth.values()))
    enc = encode_votes(
        ({"item": r["item"], "voter": r["worker"], "label": r["label"]} for r in answers), classes
    )
    known = set(enc.items)
    gold = enc.encode_gold({i: lab for i, lab in truth.items() if i in known})
    return enc, gold, answers


def accuracy(probs: np.ndarray, gold: Gold) -> float:
    return float((probs[gold.item].argmax(axis=1) == gold.label).mean())


def time_ours(votes) -> list[float]:
    times = []
    for _ in range(OUR_TIMING_RUNS // TIMING_RUNS):
        t0 = time.perf_counter()
        DawidSkene().fit(votes)
        times.append(time.perf_counter() - t0)
    return times


def crowdkit_columns(enc: EncodedVotes, gold: Gold, answers: list[dict[str, str]], halves):
    """crowd-kit's figures; its DS fits alternate with batches of ours (``our_times``), so
    both sides of the speed-up see the same load on a shared machine."""
    if not HAVE_CROWDKIT:
        return None
    df = pd.DataFrame(
        {
            "task": [r["item"] for r in answers],
            "worker": [r["worker"] for r in answers],
            "label": [r["label"] for r in answers],
        }
    )
    code = {c: i for i, c in enumerate(enc.classes)}
    item_code = {name: i for i, name in enumerate(enc.items)}

    def to_probs(frame: pd.DataFrame) -> np.ndarray:
        out = np.zeros((enc.votes.n_items, len(enc.classes)))
        rows = np.array([item_code[t] for t in frame.index])
        for col in frame.columns:
            out[rows, code[str(col)]] = frame[col].to_numpy()
        return out

    mv = to_probs(CkMajorityVote().fit_predict_proba(df))
    times, ours = [], []
    for _ in range(TIMING_RUNS):
        t0 = time.perf_counter()
        ds = CkDawidSkene(n_iter=100).fit(df)
        times.append(time.perf_counter() - t0)
        ours += time_ours(enc.votes)
    ds_probs = to_probs(ds.probas_)
    held = [accuracy(ds_probs, test) for _, test in halves]
    ece_held = statistics.mean(
        expected_calibration_error(ds_probs[test.item], test.label) for _, test in halves
    )
    return {
        "mv": accuracy(mv, gold),
        "ds": accuracy(ds_probs, gold),
        "ds_right": ds_probs[gold.item].argmax(axis=1) == gold.label,
        "ds_test": statistics.mean(held),
        "ds_ece": ece_held,
        "ds_time": statistics.median(times),
        "our_times": ours,
        "ds_iter": len(ds.loss_history_),
    }


def run(name: str) -> dict[str, object]:
    enc, gold, answers = load(name)
    votes = enc.votes
    unsup = DawidSkene().fit(votes)
    halves = []
    for seed in range(SPLITS):
        perm = np.random.default_rng(seed).permutation(len(gold))
        half = len(gold) // 2
        halves.append((gold.subset(perm[:half]), gold.subset(perm[half:])))

    sup_acc, raw_ece, cal_ece, methods, policy_methods, dyn, needed = [], [], [], [], [], [], []
    alone, thresholds, cal_times = [], [], []
    n_cast = cast_vote_counts(votes)
    cal_probs, cal_truth = [], []
    for seed, (train, test) in enumerate(halves):
        model = DawidSkene().fit(votes, train)
        post = model.posteriors_
        sup_acc.append(accuracy(post, test))
        # Final posteriors are calibrated on all-vote posteriors; the policy, which reads
        # posteriors after a few votes, on a mix with random vote prefixes.
        # Both may choose the vote-count temperature (by_votes), which reads each item's votes.
        report = calibrate(DawidSkene(), votes, train, prefixes=0, seed=seed, by_votes=True)
        t0 = time.perf_counter()
        policy_cal = calibrate(DawidSkene(), votes, train, seed=seed, by_votes=True)
        cal_times.append(time.perf_counter() - t0)
        assert policy_cal.stopping is not None
        thresholds.append(policy_cal.stopping.threshold(TARGET))
        methods.append(report.method)
        policy_methods.append(policy_cal.method)
        calibrated = report.transform(post[test.item], n_cast[test.item])
        raw_ece.append(expected_calibration_error(post[test.item], test.label))
        cal_ece.append(expected_calibration_error(calibrated, test.label))
        cal_probs.append(calibrated)
        cal_truth.append(test.label)
        truth = np.full(votes.n_items, -1, dtype=np.int64)
        truth[test.item] = test.label
        policy = Policy(target=TARGET, min_human_votes=1, max_votes=10_000)
        for out, transform in (
            (dyn, policy_cal.transform),
            (alone, policy_cal.calibrator.transform),
        ):
            out.append(
                simulate_policy(
                    model,
                    votes,
                    model.kinds_,
                    truth,
                    policy,
                    items=test.item,
                    calibrate=transform,
                    seed=seed,
                )
            )
        needed.append(
            votes_needed(
                model, votes, test.item, TARGET, kinds=model.kinds_, calibrate=policy_cal.transform
            )
        )
    n_test = len(halves[0][1])
    ece_note = ""
    cal_shown = statistics.mean(cal_ece)
    if n_test < 300:
        # Small sets: the held-out halves of all splits pooled, with a bootstrap interval.
        cal_shown, lo, hi = bootstrap_ece(np.concatenate(cal_probs), np.concatenate(cal_truth))
        ece_note = f" [{lo:.3f}, {hi:.3f}]"
    ck = crowdkit_columns(enc, gold, answers, halves)
    times = ck["our_times"] if ck else [t for _ in range(TIMING_RUNS) for t in time_ours(votes)]
    return {
        "name": name,
        "n_gold": len(gold),
        "n_test": n_test,
        "unsup": accuracy(unsup.posteriors_, gold),
        "sup": statistics.mean(sup_acc),
        "raw_ece": statistics.mean(raw_ece),
        "cal_ece": cal_shown,
        "ece_note": ece_note,
        "methods": "/".join(sorted(set(methods))),
        "policy_methods": "/".join(sorted(set(policy_methods))),
        "dyn_acc": statistics.mean(r.accuracy for r in dyn),
        "dyn_ece": statistics.mean(r.ece for r in dyn),
        "dyn_votes": statistics.mean(r.mean_votes for r in dyn),
        "all_votes": statistics.mean(r.mean_votes_available for r in dyn),
        "time": statistics.median(times),
        "cal_time": statistics.median(cal_times),
        "threshold": statistics.median(thresholds),
        "alone_votes": statistics.mean(r.mean_votes / r.mean_votes_available for r in alone),
        "alone": finalized(alone, halves),
        "stopped": finalized(dyn, halves),
        "n_iter": unsup.n_iter_,
        "ours_right": unsup.posteriors_[gold.item].argmax(axis=1) == gold.label,
        "ck": ck,
        **limits(needed, [n_cast[test.item] for _, test in halves]),
    }


def limits(needed, n_votes) -> dict[str, float]:
    """What no policy that finalizes at ``TARGET`` can beat with the policy's calibrated
    model (``votes_needed``), mean over splits.

    ``bound``: share of the votes spent if every item stopped at the fewest of its votes that
    could reach the target and items that cannot reach it spent all of theirs; ``never``:
    items that cannot reach it with any of their votes, and their share of the votes;
    ``two_plus``: items that need at least two votes.
    """
    rows: dict[str, list[float]] = {k: [] for k in ("bound", "never", "never_votes", "two_plus")}
    for need, n in zip(needed, n_votes, strict=True):
        never = need > n
        rows["bound"].append(np.minimum(need, n).sum() / n.sum())
        rows["never"].append(never.mean())
        rows["never_votes"].append(n[never].sum() / n.sum())
        rows["two_plus"].append((need >= 2).mean())
    return {k: float(statistics.mean(v)) for k, v in rows.items()}


def finalized(replays, halves) -> str:
    """Finalized held-out items, pooled over the splits: mean confidence when finalized
    (promised) → share right (kept), how many, and a 90% bootstrap interval of kept. Pooled,
    because a split with little gold may finalize nothing; the interval says how far a few
    hundred items can be trusted."""
    conf = np.concatenate([r.confidence for r in replays])
    right = np.concatenate(
        [r.label == test.label for r, (_, test) in zip(replays, halves, strict=True)]
    )
    final = conf >= TARGET
    if not final.any():
        return "none finalized"
    hits = right[final].astype(np.float64)
    draws = np.random.default_rng(0).integers(0, hits.shape[0], size=(2000, hits.shape[0]))
    lo, hi = np.quantile(hits[draws].mean(axis=1), [0.05, 0.95])
    return f"{conf[final].mean():.4f} → {hits.mean():.4f} [{lo:.3f}, {hi:.3f}] ({hits.shape[0]})"


def paired(ours: np.ndarray, theirs: np.ndarray) -> str:
    """Gold items only ours / only crowd-kit's DS gets right, and the exact two-sided
    (McNemar) p-value of that split: how far an accuracy gap is from a coin toss."""
    a, b = int((ours & ~theirs).sum()), int((~ours & theirs).sum())
    p = binomtest(a, a + b).pvalue if a + b else 1.0
    return f"{a} / {b} (p {p:.2f})"


def main() -> None:
    known = sorted(p.name for p in DATA.iterdir() if p.is_dir() and p.name != "emotion_numeric")
    names = sys.argv[1:] or known
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown set(s): {', '.join(unknown)}; known: {', '.join(known)}")
    rows = [run(n) for n in names]
    na = "crowd-kit not installed"
    print("### (a) accuracy with all votes\n")
    print(
        "| set | gold | ck MV | ck DS | ours unsup | only ours / only ck DS right (p) "
        "| ck DS, test half | ours, half gold → test half |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ck = r["ck"]
        cks = f"{ck['mv']:.4f} | {ck['ds']:.4f}" if ck else f"{na} | {na}"
        ckt = f"{ck['ds_test']:.4f}" if ck else na
        split = paired(r["ours_right"], ck["ds_right"]) if ck else na
        print(
            f"| {r['name']} | {r['n_gold']} | {cks} | {r['unsup']:.4f} | {split} | {ckt} "
            f"| {r['sup']:.4f} |"
        )
    print(
        "\n### (b) ECE on held-out gold (half gold for fitting) and (c) dynamic consensus at "
        f"target {TARGET}\n"
    )
    print(
        "| set | test items | ck DS ECE | ours raw ECE | ours calibrated ECE | method | "
        "dyn acc | all-votes acc | dyn ECE | votes used / all | policy calibration |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ck = r["ck"]
        ckece = f"{ck['ds_ece']:.3f}" if ck else na
        share = r["dyn_votes"] / r["all_votes"]
        print(
            f"| {r['name']} | {r['n_test']} | {ckece} | {r['raw_ece']:.3f} | "
            f"{r['cal_ece']:.3f}{r['ece_note']} | {r['methods']} | {r['dyn_acc']:.4f} | "
            f"{r['sup']:.4f} | {r['dyn_ece']:.3f} | {r['dyn_votes']:.2f} / {r['all_votes']:.2f} "
            f"({share:.0%}) | {r['policy_methods']} |"
        )
    print(
        f"\n### (c) limits: what no policy finalizing at {TARGET} can beat with the policy's "
        "calibrated model (simulate.votes_needed), held-out halves\n"
    )
    print(
        "| set | votes used / all | fewest possible | items that can never reach "
        f"{TARGET}: items, their votes | items needing ≥ 2 votes | finalized: promised → kept "
        "[90%] (items) | stopping threshold | repair alone: votes used, promised → kept |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = r["dyn_votes"] / r["all_votes"]
        print(
            f"| {r['name']} | {share:.0%} | {r['bound']:.0%} | {r['never']:.0%}, "
            f"{r['never_votes']:.0%} | {r['two_plus']:.0%} | {r['stopped']} | "
            f"{r['threshold']:.4f} | {r['alone_votes']:.0%}, {r['alone']} |"
        )
    print(
        f"\n### (d) fit time, median of {OUR_TIMING_RUNS} runs (ours) and {TIMING_RUNS} "
        "(crowd-kit, alternating with batches of ours), unsupervised, all votes\n"
    )
    print(
        "| set | votes | ours ms (EM iters) | ck DS ms (iters) | speed-up | per iteration "
        "| policy calibration ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ck = r["ck"]
        with open(DATA / str(r["name"]) / "answers.csv") as f:
            enc_votes = sum(1 for _ in f) - 1
        ours = float(r["time"]) * 1000
        if ck:
            print(
                f"| {r['name']} | {enc_votes} | {ours:.1f} ({r['n_iter']}) | "
                f"{ck['ds_time'] * 1000:.1f} ({ck['ds_iter']}) | "
                f"{ck['ds_time'] * 1000 / ours:.0f}× | "
                f"{ck['ds_time'] / ck['ds_iter'] * 1000 / (ours / int(r['n_iter'])):.0f}× | "
                f"{float(r['cal_time']) * 1000:.0f} |"
            )
        else:
            print(
                f"| {r['name']} | {enc_votes} | {ours:.1f} ({r['n_iter']}) | {na} | {na} | {na} "
                f"| {float(r['cal_time']) * 1000:.0f} |"
            )


if __name__ == "__main__":
    main()
