"""``melanoma jobs | status | results``: how far a job is and what it found, thin over
:mod:`melanoma.store.jobs`."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import click

from melanoma.core.errors import UserError
from melanoma.core.startup import preload
from melanoma.producer.cli import _DATABASE, _session_and_schema


@click.command("jobs")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def jobs_command(limit: int, fmt: str):
    """The newest jobs: name, folder, created, progress, model versions, counts per predicted class."""
    preload(*_DATABASE)
    from melanoma.store import jobs

    db, engine = _session_and_schema()
    with db.session_scope(engine) as session:
        rows = jobs.list_jobs(session, limit)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'job':<12} {'created (UTC)':<20} {'done':>7} {'failed':>6} {'pending':>7}  name / folder")
    for r in rows:
        label = _printable((r["name"] or r["folder"]) + (f"  [site {r['site']}]" if r["site"] else ""))
        click.echo(
            f"{r['id'][:12]:<12} {r['created_at'][:19].replace('T', ' '):<20} {r['done']:>7} {r['failed']:>6} "
            f"{r['pending']:>7}  {label}"
        )


@click.command("status")
@click.argument("job")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status_command(job: str, fmt: str):
    """How far JOB is: images total, done, failed, pending, and counts per predicted class."""
    preload(*_DATABASE)
    from melanoma.store import jobs

    db, engine = _session_and_schema()
    with db.session_scope(engine) as session:
        st = jobs.job_status(session, jobs.find_job(session, job))
    from melanoma.core.settings import get_settings

    warning = st.shift_warning(get_settings().unfamiliar_warn_share)
    if fmt == "json":
        click.echo(json.dumps({**st.as_dict(), "warning": warning}, indent=2))
        return
    click.echo(f"job      {st.job_id}" + (f"  ({_printable(st.name)})" if st.name else ""))
    click.echo(f"folder   {_printable(st.root)}")
    if st.site:
        click.echo(f"site     {_printable(st.site)}")
    click.echo(f"created  {st.created_at}")
    click.echo(
        f"images   {st.total} total, {st.done} done, {st.failed} failed, {st.pending} pending"
        + ("  [complete]" if st.complete else "")
    )
    if st.enqueued < st.total and not st.complete:
        click.echo(
            f"queued   {st.enqueued} of {st.total}: if the producer is no longer running, "
            f"`melanoma requeue {st.job_id}` queues the rest"
        )
    for name, n in st.classes.items():
        if n:
            click.echo(f"  {name:<28} {n}")
    for scope, threshold, n, k in st.flags:
        whose = "the version's operating point" if scope == "version" else f"the local operating point of {scope}"
        click.echo(f"flagged  {k} of {n} at P(melanoma) >= {threshold:.4f} ({_printable(whose)})")
    if st.measured:
        click.echo(
            f"unfamiliar {st.unfamiliar} of {st.measured} scored images ({st.unfamiliar_share:.0%}); median "
            f"familiarity percentile {st.median_familiarity:.0f} (about 50 for images like the version's own)"
        )
    elif st.done:
        click.echo("unfamiliar unknown: the model version that scored these images has no familiarity statistics")
    if warning:
        click.echo(f"WARNING  {warning}")


def _printable(text: str) -> str:
    """``text`` with control characters (terminal escapes) shown as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text)


@click.command("results")
@click.argument("job")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--class", "class_name", default=None, help="Only this class (e.g. melanoma, basal_cell_carcinoma).")
@click.option(
    "--min-prob",
    type=click.FloatRange(0, 1),
    default=None,
    help="With --class: probability of that class at least P; alone: confidence at least P.",
)
@click.option(
    "--unfamiliar",
    is_flag=True,
    help="Only images that look unlike the images the model version was validated on.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file instead of stdout.",
)
def results_command(
    job: str, fmt: str, class_name: str | None, min_prob: float | None, unfamiliar: bool, output: Path | None
):
    """What JOB found: one row per image (CSV columns as documented in the README)."""
    preload(*_DATABASE)
    from melanoma.store import jobs

    db, engine = _session_and_schema()
    try:
        out = open(output, "w", newline="", encoding="utf-8") if output else sys.stdout
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror}") from None
    try:
        with db.session_scope(engine) as session:
            j = jobs.find_job(session, job)
            rows = jobs.job_results(session, j, class_name, min_prob, unfamiliar)
            if fmt == "csv":
                w = csv.writer(out)
                w.writerow(jobs.RESULT_COLUMNS)
                for r in rows:
                    w.writerow(jobs.csv_row(r))
            elif fmt == "json":
                json.dump(list(rows), out, indent=1)
                out.write("\n")
            else:
                _table(out, rows, j.root)
    finally:
        if output:
            out.close()


def _table(out, rows, root: str) -> None:
    rows = list(rows)
    paths = [
        os.path.relpath(r["image_path"], root) if r["image_path"].startswith(root) else r["image_path"] for r in rows
    ]
    width = min(max([len(p) for p in paths] + [5]), 70)
    scopes: set[str] = set()
    header = (
        f"{'image':<{width}} {'status':<7} {'predicted class':<27} {'conf':>5} {'p_mel':>5} {'flag':>4} {'at':>5} "
        f"{'famil':>5}"
        "  model / error"
    )
    out.write(header + "\n" + "-" * len(header) + "\n")
    for path, r in zip(paths, rows):
        if len(path) > width:
            path = "…" + path[-(width - 1) :]
        conf = f"{r['confidence']:.2f}" if r["confidence"] is not None else ""
        mel = f"{r['p_melanoma']:.2f}" if r["p_melanoma"] is not None else ""
        tail = r["error"] if r["status"] == "error" else (r["model_version"] or "")
        path, tail = _printable(path), _printable(tail)
        flag = {True: "MEL", False: "-", None: ""}[r["melanoma_flag"]]
        # The flag's threshold; "*" marks a clinic's own (named below the table).
        local = r["flag_scope"] not in (None, "version")
        at = "" if r["flag_threshold"] is None else f"{r['flag_threshold']:.2f}" + ("*" if local else " ")
        if local:
            scopes.add(r["flag_scope"])
        # The familiarity percentile; "!" marks an image unlike the model's validation images.
        fam = "" if r["familiarity"] is None else f"{r['familiarity']:.0f}" + ("!" if r["unfamiliar"] else " ")
        out.write(
            f"{path:<{width}} {r['status']:<7} {r['predicted_class'] or '':<27} {conf:>5} {mel:>5} {flag:>4} {at:>5} "
            f"{fam:>5}  {tail}\n"
        )
    for scope in sorted(scopes):
        out.write(f"* flagged at the local operating point of {_printable(scope)}\n")
