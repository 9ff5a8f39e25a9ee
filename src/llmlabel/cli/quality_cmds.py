"""``llmlabel eval | agreement | alerts | report | audit | gold mine``: measuring a project.

Thin: each command opens the project, calls the ``quality`` service functions and prints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmlabel.cli.context import DbOpt, ProjectContext, ProjectOpt, open_project
from llmlabel.errors import InputError
from llmlabel.store.db import reader, session_scope

gold_app = typer.Typer(help="Gold beyond importing it: mining new gold from confident consensus.", no_args_is_help=True)
BootOpt = Annotated[int, typer.Option("--boot", min=50, help="bootstrap resamples behind each interval")]


def _runs_dir(project: Path, runs_dir: Path | None) -> Path:
    return runs_dir or project.resolve().parent / ".llmlabel" / "evals"


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _iv(i: Any, digits: int = 3) -> str:
    if math.isnan(i.estimate):
        return "-"
    if math.isnan(i.low):
        return _fmt(i.estimate, digits)
    return f"{i.estimate:.{digits}f} [{i.low:.{digits}f}, {i.high:.{digits}f}]"


# -- eval ------------------------------------------------------------------------------------------


def _print_metrics(out: Console, run: Any, m: Any, names: list[str]) -> None:
    cached = sum(1 for i in run.items if i.cached)
    failed = sum(1 for i in run.items if i.failed)
    title = (f"{run.name}: {run.labeler} ({run.model or 'votes'}) on {m.n} {run.split} gold items"
             f"{f', prompt {run.prompt_version}' if run.prompt_version else ''}")
    t = Table(title=escape(title), title_justify="left")
    t.add_column("metric")
    t.add_column("value [95%]", justify="right")
    rows = [("accuracy (abstentions count wrong)", _iv(m.accuracy)), ("accuracy where answered", _iv(m.answered_accuracy)),
            ("macro-F1", _iv(m.macro_f1)), ("ECE (calibration error)", _iv(m.ece)),
            ("abstention rate", _iv(m.abstention_rate)), ("cost per item (USD)", _iv(m.cost_per_item, 6)),
            ("cost, all items (USD)", f"{m.cost_usd_total:.6f}"), ("latency p50 (ms)", _iv(m.latency_p50, 0)),
            ("latency p95 (ms)", _iv(m.latency_p95, 0))]
    for name, value in rows:
        t.add_row(name, value)
    out.print(t)
    pc = Table("class", "gold", "predicted", "precision", "recall", "F1", title="per class", title_justify="left")
    for c in m.per_class:
        pc.add_row(escape(names[c.code]), str(c.support), str(c.predicted), _fmt(c.precision), _fmt(c.recall), _fmt(c.f1))
    out.print(pc)
    extra = f", {failed} without an answer (rerun to retry them)" if failed else ""
    out.print(f"{cached} of {len(run.items)} answers from the ledger cache; this run spent ${run.spent_usd:.6f}{extra}")


def _compare(out: Console, store: Any, config: Any, a_name: str, b_name: str, n_boot: int, as_json: bool) -> None:
    from llmlabel.quality.eval_runs import aligned, flip_rows, run_codes
    from llmlabel.quality.evaluation import compare

    a, b = store.load(a_name), store.load(b_name)
    ia, ib = aligned(a, b)
    if not ia:
        raise InputError(f"runs {a.name!r} and {b.name!r} share no gold item")
    codes = run_codes(config, a, b)
    cmp = compare(a.predictions(codes, ia), b.predictions(codes, ib), n_boot=n_boot)
    fixed, broken = flip_rows(ia, ib, cmp.fixed.tolist()), flip_rows(ia, ib, cmp.broken.tolist())
    if as_json:
        print(json.dumps({"a": a.name, "b": b.name, "n": cmp.n, "fixed": fixed, "broken": broken,
                          "deltas": {d.metric: {"a": d.a, "b": d.b, **d.delta.as_dict(), "better": d.better}
                                     for d in cmp.deltas}}, ensure_ascii=False, default=str))
        return
    t = Table(title=escape(f"B = {b.name} against A = {a.name} on {cmp.n} shared gold items"), title_justify="left")
    for col in ("metric", "A", "B", "B − A [95%]", ""):
        t.add_column(col, justify="left" if col == "metric" else "right")
    digits = {"cost_per_item": 6, "latency_p50": 0, "latency_p95": 0}
    for d in cmp.deltas:
        n = digits.get(d.metric, 3)
        verdict = {1: "[green]B better[/]", -1: "[red]B worse[/]", 0: "no clear change"}[d.better]
        t.add_row(d.metric, _fmt(d.a, n), _fmt(d.b, n), _iv(d.delta, n), verdict)
    out.print(t)
    for title, rows in (("wrong → right (fixed by B)", fixed), ("right → wrong (broken by B)", broken)):
        out.print(f"[bold]{title}: {len(rows)}[/]")
        for r in rows[:25]:
            out.print(escape(f"  {r['item_id']}: gold {r['gold']!r}, A said {r['a']!r}, B said {r['b']!r}"), highlight=False)
        if len(rows) > 25:
            out.print(f"  … and {len(rows) - 25} more (--json lists all)")


def eval_cmd(
    project: ProjectOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
    labeler: Annotated[list[str] | None, typer.Option("--labeler", "-l", help="only this labeler (repeatable); with --stored: the voter")] = None,
    variant: Annotated[Path | None, typer.Option("--config", help="a variant project file, or just the keys that differ (labelers:, instructions:)")] = None,
    split: Annotated[str, typer.Option("--split", help="dev (default: iterate here), test (the final check), or all")] = "dev",
    stored: Annotated[bool, typer.Option("--stored", help="score votes already stored instead of asking the labelers")] = False,
    prompt_version: Annotated[str | None, typer.Option("--prompt-version", help="with --stored: only votes of this prompt version")] = None,
    name: Annotated[str | None, typer.Option("--name", help="name for the stored run (default: labeler-split-hash)")] = None,
    budget: Annotated[float | None, typer.Option("--budget", min=0, help="USD cap for the calls this eval makes")] = None,
    compare_runs: Annotated[tuple[str, str] | None, typer.Option("--compare", help="compare two stored runs: A B")] = None,
    list_runs: Annotated[bool, typer.Option("--list", help="list the stored runs")] = False,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="where runs are stored (default: .llmlabel/evals beside the project file)")] = None,
    n_boot: BootOpt = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Score labelers on gold (dev split by default): accuracy, macro-F1, per-class precision and
    recall, ECE, abstentions, cost, latency; or compare two stored runs."""
    from llmlabel.quality.eval_runs import (
        RunStore,
        evaluate_votes,
        run_codes,
        run_eval,
        variant_config,
    )
    from llmlabel.quality.evaluation import evaluate

    ctx = open_project(project, db)
    store = RunStore(_runs_dir(project, runs_dir), ctx.project.name)
    out = Console()
    if compare_runs:
        _compare(out, store, ctx.config, compare_runs[0], compare_runs[1], n_boot, as_json)
        return
    if list_runs:
        _list_runs(out, store, ctx)
        return
    config = variant_config(ctx.config, variant) if variant else ctx.config
    prompts_dir = variant.resolve().parent if variant and (variant.resolve().parent / "prompts").is_dir() else project.resolve().parent
    if stored:
        if not labeler:
            raise InputError("--stored needs --labeler NAME: the voter whose stored votes to score")
        with session_scope(reader(ctx.engine)) as session:
            runs = [evaluate_votes(session, project=ctx.project, config=config, voter=v, prompt_version=prompt_version,
                                   split=split, name=name) for v in labeler]
    else:
        bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True, disable=as_json)
        tasks: dict[str, Any] = {}

        def progress(who: str, done: int, total: int) -> None:
            if who not in tasks:
                tasks[who] = bars.add_task(who, total=total)
            bars.update(tasks[who], completed=done)

        with bars:
            assert ctx.project.id is not None
            runs = run_eval(ctx.engine, project=ctx.project, config=config, labelers=labeler, split=split,
                            project_dir=prompts_dir, budget_usd=budget, name=name, progress=progress)
    results = {}
    for run in runs:
        store.save(run)
        codes = run_codes(config, run)
        metrics = evaluate(run.predictions(codes), n_boot=n_boot)
        if as_json:
            results[run.name] = metrics.as_dict(codes.names())
        else:
            _print_metrics(out, run, metrics, codes.names())
    if as_json:
        print(json.dumps(results, ensure_ascii=False))
    elif runs:
        out.print(f"stored as {', '.join(r.name for r in runs)}; compare two runs with `llmlabel eval --compare A B`")


def _list_runs(out: Console, store: Any, ctx: ProjectContext) -> None:
    from llmlabel.quality.eval_runs import run_codes
    from llmlabel.quality.evaluation import evaluate

    t = Table("run", "labeler", "model", "prompt", "split", "items", "accuracy", "created")
    for run in store.runs():
        m = evaluate(run.predictions(run_codes(ctx.config, run)), n_boot=0)
        t.add_row(escape(run.name), escape(run.labeler), escape(run.model or "-"), run.prompt_version or "-", run.split,
                  str(m.n), _fmt(m.accuracy.estimate), run.created_at[:16])
    out.print(t)


# -- agreement ---------------------------------------------------------------------------------------


def agreement_cmd(project: ProjectOpt = Path("llmlabel.yaml"), db: DbOpt = None, n_boot: BootOpt = 1000) -> None:
    """Agreement: Krippendorff's α, Fleiss' κ, Cohen's κ per pair, LLM vs human, per voter."""
    from llmlabel.quality.dataset import load_predicted_distributions, load_project
    from llmlabel.quality.intervals import affordable_boot
    from llmlabel.quality.summary import agreement_summary

    ctx = open_project(project, db)
    with session_scope(reader(ctx.engine)) as session:
        data = load_project(session, project=ctx.project, config=ctx.config)
        serum = load_predicted_distributions(session, project=ctx.project, data=data)
    s = agreement_summary(data, n_boot=affordable_boot(n_boot, data.n_items), truth_serum=serum)
    out = Console()
    t = Table("statistic", "value [95%]", "items", title="agreement", title_justify="left")
    for label, iv in (("Krippendorff α (nominal), humans", s.human_alpha), ("Krippendorff α (nominal), all voters", s.all_alpha),
                      ("Fleiss κ, humans", s.human_fleiss), ("κ, LLM majority vs human majority", s.llm_vs_human_kappa),
                      ("agreement, LLM majority vs human majority", s.llm_vs_human_agreement)):
        t.add_row(label, _iv(iv), str(iv.n))
    if s.human_alpha_interval is not None:
        t.add_row("Krippendorff α (interval: classes are numbers), humans", _iv(s.human_alpha_interval),
                  str(s.human_alpha_interval.n))
    out.print(t)
    if s.pairs:
        pt = Table("voter", "voter", "shared", "agreement", "Cohen κ [95%]", title="pairs (most shared first)", title_justify="left")
        for p in s.pairs[:15]:
            pt.add_row(escape(p.voter_a), escape(p.voter_b), str(p.kappa.n), _fmt(p.agreement), _iv(p.kappa))
        out.print(pt)
    vt = Table("voter", "kind", "state", "votes", "gold accuracy [95%]", "vs consensus [95%]", "vs human majority", "BTS",
               title="voters", title_justify="left")
    for v in s.voters:
        vt.add_row(escape(v.name), v.kind, v.status, str(v.votes), f"{_iv(v.gold)} (n={v.gold.n})", _iv(v.consensus),
                   _iv(v.vs_human) if v.vs_human else "", _fmt(v.truth_serum) if v.truth_serum is not None else "")
    out.print(vt)


# -- alerts ------------------------------------------------------------------------------------------


def alerts_cmd(
    project: ProjectOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
    check: Annotated[bool, typer.Option("--check", help="measure the latest window now and raise new alerts")] = False,
    window_hours: Annotated[float, typer.Option("--window-hours", min=0.01, help="length of one window")] = 24.0,
    windows: Annotated[int, typer.Option("--windows", min=3, help="windows of history, the latest included")] = 8,
    k: Annotated[float, typer.Option("--k", min=0.5, help="band width in standard deviations")] = 3.0,
    webhook: Annotated[str | None, typer.Option("--webhook", help="POST the alerts (new ones with --check) as JSON to this URL")] = None,
    allow_private: Annotated[bool, typer.Option("--allow-private-webhook", help="allow a webhook on a private or loopback address")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="include acknowledged alerts")] = False,
    ack: Annotated[list[int] | None, typer.Option("--ack", help="acknowledge this alert id (repeatable)")] = None,
) -> None:
    """List open alerts; --check raises new ones from rolling windows; --webhook sends them."""
    from datetime import timedelta

    from llmlabel.quality import monitoring

    ctx = open_project(project, db)
    out = Console()
    with session_scope(ctx.engine) as session:
        for alert_id in ack or []:
            monitoring.acknowledge(session, project=ctx.project, alert_id=alert_id)
        new = []
        if check:
            new = monitoring.check(session, project=ctx.project, config=ctx.config, window=timedelta(hours=window_hours),
                                   n_windows=windows, k=k)
            out.print(f"{len(new)} new alert(s)")
        listed = monitoring.list_alerts(session, project=ctx.project, include_acknowledged=show_all)
        send = new if check else listed
    t = Table("id", "raised", "kind", "subject", "what", title=f"{'all' if show_all else 'open'} alerts", title_justify="left")
    for a in listed:
        d = monitoring.alert_dict(a)
        t.add_row(str(a.id), d["created_at"][:16].replace("T", " "), a.kind, escape(a.subject or ""), escape(a.message))
    out.print(t if listed else "no alerts")
    if webhook and send:
        status = monitoring.post_webhook(webhook, project=ctx.project.name, alerts=send, allow_private=allow_private)
        out.print(f"sent {len(send)} alert(s) to the webhook (HTTP {status})")


# -- report, audit, gold mining ---------------------------------------------------------------------


def report_cmd(
    project: ProjectOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write")] = Path("report.html"),
    n_boot: BootOpt = 1000,
    days: Annotated[int, typer.Option("--days", min=1, max=365, help="days of throughput to chart")] = 14,
) -> None:
    """Write one self-contained HTML report (no network needed to open it)."""
    from llmlabel.report import write_report

    ctx = open_project(project, db)
    data = write_report(ctx.engine, project=ctx.project, config=ctx.config, path=output, n_boot=n_boot, days=days)
    Console().print(f"wrote {output} in {data.seconds:.1f} s: {data.status.items} items, expected accuracy of the "
                    f"final items {_iv(data.accuracy.expected)}")


def audit_cmd(
    project: ProjectOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
    sample: Annotated[int | None, typer.Option("--sample", min=1, help="send N random final items to reviewers")] = None,
    report: Annotated[bool, typer.Option("--report", help="accuracy measured on audited items vs what the posteriors predicted")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="random seed for the sample")] = None,
) -> None:
    """Audit finalized items: --sample N to draw them into the review queue, --report to score them."""
    from llmlabel.quality import audit

    if (sample is None) == (not report):
        raise InputError("pass --sample N (draw items for review) or --report (score the audited ones)")
    ctx = open_project(project, db)
    out = Console()
    if sample is not None:
        with session_scope(ctx.engine) as session:
            draw = audit.draw_audit(session, project=ctx.project, n=sample, seed=seed)
        out.print(f"sent {len(draw.drawn)} of {draw.available} finalized items to the review queue as audits "
                  "(conflict kind 'audit'); reviewers resolve them as usual")
        return
    with session_scope(reader(ctx.engine)) as session:
        r = audit.audit_report(session, project=ctx.project)
    out.print(f"{r.audited} audited items resolved, {r.pending} waiting for a reviewer")
    out.print(f"measured accuracy {_iv(r.measured)}; the posteriors predicted {_iv(r.predicted)}")
    out.print(r.verdict)
    for m in r.misses[:25]:
        out.print(escape(f"  {m.item_id}: consensus {m.predicted!r} at {m.confidence:.3f}, reviewer {m.audited!r}"), highlight=False)


@gold_app.command("mine")
def gold_mine(
    project: ProjectOpt = Path("llmlabel.yaml"),
    db: DbOpt = None,
    min_posterior: Annotated[float, typer.Option("--min-posterior", min=0.5, max=1.0, help="lowest final posterior")] = 0.99,
    min_trusted: Annotated[int, typer.Option("--min-trusted", min=1, help="trusted votes for the label, none against")] = 2,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="at most N candidates")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="add the candidates as gold (source 'mined')")] = False,
    split: Annotated[str, typer.Option("--split", help="split for mined gold: dev or test")] = "dev",
) -> None:
    """Find gold candidates among confidently decided items, weighted up where lazy heuristics fail."""
    from llmlabel.quality import mining

    if split not in ("dev", "test"):
        raise InputError(f"--split {split!r} must be dev or test")
    ctx = open_project(project, db)
    with session_scope(ctx.engine) as session:
        found = mining.mine(session, project=ctx.project, config=ctx.config, min_posterior=min_posterior,
                            min_trusted=min_trusted, limit=limit)
        added = mining.apply(session, project=ctx.project, candidates=found, split=split) if apply else 0
    out = Console()
    t = Table("item", "label", "posterior", "trusted votes", "lazy heuristics fooled", "weight",
              title=f"{len(found)} gold candidates", title_justify="left")
    for c in found[:30]:
        fooled = ", ".join(k for k, v in c.wrong.items() if v) or "-"
        t.add_row(escape(c.external_id), escape(str(c.label)), f"{c.confidence:.4f}", str(c.support), fooled, f"{c.weight:.2f}")
    out.print(t)
    out.print(f"added {added} mined gold items ({split})" if apply else "dry run: pass --apply to add them as gold")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
    app.command("agreement")(agreement_cmd)
    app.command("alerts")(alerts_cmd)
    app.command("report")(report_cmd)
    app.command("audit")(audit_cmd)
    app.add_typer(gold_app, name="gold")
