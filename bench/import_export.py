"""Benchmark importing and exporting items, on SQLite and PostgreSQL, beside a raw insert loop.

    python bench/import_export.py                      # 1,000,000 items
    python bench/import_export.py --rows 100000 --no-postgres
    python bench/import_export.py --postgres-url postgresql://postgres@127.0.0.1:5432/test

Generates a JSONL file of items (id, a short text, a category), then per database runs each
phase in a fresh process so its peak RSS is its own: ``import`` (``llmlabel.ingest``),
``export`` (``llmlabel.export`` to JSONL) and ``raw`` (the same rows read and parsed the same
way, then inserted by a bare ``executemany`` loop with sqlite3 / psycopg into a table with the
same unique key, in batches of the same size, one transaction). Prints rows/s, peak RSS and
RSS growth during the phase, and llmlabel's import rate as a share of the raw loop's.
Goal: SQLite import ≥ 50,000 rows/s with peak RSS < 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_PG = os.environ.get("LLMLABEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PROJECT = {"name": "bench", "labels": {"type": "single", "classes": ["pos", "neg", "neu"]}}
CATEGORIES = ["books", "music", "garden", "toys", "kitchen", "phones", "shoes", "games"]
WORDS = ["good", "bad", "fine", "great", "awful", "okay", "cheap", "broken", "lovely", "slow", "fast", "quiet", "loud", "small", "large"]
GOAL_ROWS_PER_S = 50_000
GOAL_PEAK_MB = 300


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: on Linux that keeps the parent's peak across exec."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, rows: int) -> None:
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            text = " ".join(rng.choices(WORDS, k=rng.randint(5, 12)))
            fh.write(json.dumps({"id": f"item-{i:07d}", "text": text, "category": rng.choice(CATEGORIES)}) + "\n")


# --- phases, each run in its own process ------------------------------------------------------


def _result(rows: int, start: float, cpu: float, base_mb: float) -> dict[str, Any]:
    """Wall and CPU seconds (CPU time is this process only: not the PostgreSQL server's)."""
    return {"rows": rows, "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
            "peak_mb": peak_mb(), "growth_mb": peak_mb() - base_mb}


def phase_import(url: str, data: Path) -> dict[str, Any]:
    from llmlabel.config import parse_config
    from llmlabel.ingest import import_items
    from llmlabel.projects import get_project
    from llmlabel.store.db import make_engine, session_scope

    config = parse_config(PROJECT)
    engine = make_engine(url)
    with session_scope(engine) as session:
        project = get_project(session, name=config.name)
    base, cpu, start = rss_mb(), time.process_time(), time.perf_counter()
    report = import_items(engine, project=project, config=config, path=data)
    return _result(report.inserted, start, cpu, base)


def phase_export(url: str, data: Path) -> dict[str, Any]:
    from llmlabel.export import export_items
    from llmlabel.projects import get_project
    from llmlabel.store.db import make_engine, session_scope

    engine = make_engine(url)
    with session_scope(engine) as session:
        project = get_project(session, name=PROJECT["name"])
    out = data.with_name(f"export-{uuid.uuid4().hex[:6]}.jsonl")
    base, cpu, start = rss_mb(), time.process_time(), time.perf_counter()
    report = export_items(engine, project=project, path=out)
    result = _result(report.rows, start, cpu, base)
    out.unlink()
    return result


RAW_TABLE = "raw_items"


def phase_raw(url: str, data: Path) -> dict[str, Any]:
    """The floor: read, parse and insert the same rows with the bare driver."""
    import hashlib

    create = (
        f"CREATE TABLE {RAW_TABLE} (id {{pk}}, project_id INTEGER NOT NULL, external_id VARCHAR(256) NOT NULL, "
        "fields TEXT NOT NULL, content_hash VARCHAR(32) NOT NULL, UNIQUE (project_id, external_id))"
    )
    if url.startswith("sqlite"):
        import sqlite3

        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(create.format(pk="INTEGER PRIMARY KEY"))
        insert = f"INSERT INTO {RAW_TABLE} (project_id, external_id, fields, content_hash) VALUES (?, ?, ?, ?)"
    else:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        conn.execute(create.format(pk="SERIAL PRIMARY KEY"))
        insert = f"INSERT INTO {RAW_TABLE} (project_id, external_id, fields, content_hash) VALUES (%s, %s, %s, %s)"
    base, cpu, start = rss_mb(), time.process_time(), time.perf_counter()
    n = 0
    batch: list[tuple[int, str, str, str]] = []
    cur = conn.cursor()
    cur.execute("BEGIN")

    def flush() -> None:
        cur.executemany(insert, batch)
        batch.clear()

    with data.open("rb") as fh:
        for raw in fh:
            row = json.loads(raw)
            ext = str(row.pop("id"))
            fields = json.dumps(row, ensure_ascii=False)
            digest = hashlib.blake2b(fields.encode(), digest_size=12).hexdigest()
            batch.append((1, ext, fields, digest))
            n += 1
            if len(batch) >= 2000:
                flush()
    if batch:
        flush()
    cur.execute("COMMIT")
    result = _result(n, start, cpu, base)
    conn.close()
    return result


PHASES = {"import": phase_import, "export": phase_export, "raw": phase_raw}


def run_phase(phase: str, url: str, data: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--url", url, "--data", str(data)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} on {url} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- databases --------------------------------------------------------------------------------


def fresh_sqlite(workdir: Path, name: str) -> str:
    path = workdir / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def fresh_postgres_schema(base: str) -> tuple[str, str] | None:
    try:
        import psycopg

        with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:
        print(f"PostgreSQL skipped: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
        return None
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(base: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def register(url: str) -> None:
    from llmlabel.config import parse_config
    from llmlabel.projects import sync_project
    from llmlabel.store.db import open_engine, session_scope

    engine = open_engine(url)
    with session_scope(engine) as session:
        sync_project(session, config=parse_config(PROJECT))
    engine.dispose()


def bench_backend(label: str, llmlabel_url: str, raw_url: str, data: Path) -> dict[str, dict[str, Any]]:
    register(llmlabel_url)
    results = {
        "import": run_phase("import", llmlabel_url, data),
        "export": run_phase("export", llmlabel_url, data),
        "raw insert": run_phase("raw", raw_url, data),
    }
    for phase, r in results.items():
        print(f"{label:<10} {phase:<11} {r['rows']:>10,} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>10,.0f} "
              f"{r['cpu']:>7.1f} {r['rows'] / max(r['cpu'], 1e-9):>12,.0f} {r['peak_mb']:>8.0f} {r['growth_mb']:>10.0f}")
    ratio = (results["import"]["rows"] / results["import"]["seconds"]) / (
        results["raw insert"]["rows"] / results["raw insert"]["seconds"]
    )
    print(f"{label:<10} import speed is {ratio:.0%} of the raw executemany loop")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="where the data and SQLite files go (default: a temp dir)")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args.url, args.data)))
        return

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        data = workdir / "items.jsonl"
        start = time.perf_counter()
        generate(data, args.rows)
        print(f"generated {args.rows:,} items ({data.stat().st_size / 2**20:.0f} MB JSONL) in {time.perf_counter() - start:.1f} s")
        print(f"{'database':<10} {'phase':<11} {'rows':>10} {'seconds':>8} {'rows/s':>10} "
              f"{'cpu s':>7} {'rows/cpu-s':>12} {'peak MB':>8} {'growth MB':>10}")
        sqlite = bench_backend("sqlite", fresh_sqlite(workdir, "llmlabel"), fresh_sqlite(workdir, "raw"), data)
        if not args.no_postgres:
            made = fresh_postgres_schema(args.postgres_url)
            if made:
                url, schema = made
                try:
                    bench_backend("postgres", url, url, data)
                finally:
                    drop_schema(args.postgres_url, schema)
        imp = sqlite["import"]
        rate = imp["rows"] / imp["seconds"]
        ok = rate >= GOAL_ROWS_PER_S and imp["peak_mb"] < GOAL_PEAK_MB
        print(f"goal (SQLite import ≥ {GOAL_ROWS_PER_S:,} rows/s, peak < {GOAL_PEAK_MB} MB): "
              f"{'met' if ok else 'NOT met'} ({rate:,.0f} rows/s wall, {imp['rows'] / imp['cpu']:,.0f} rows per CPU "
              f"second, {imp['peak_mb']:.0f} MB); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
