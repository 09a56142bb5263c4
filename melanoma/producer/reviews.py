"""``melanoma review import | export``: confirmed diagnoses from the command line, thin over
:mod:`melanoma.store.reviews`."""

from __future__ import annotations

import csv
import getpass
import sys
from pathlib import Path

import click

from melanoma.core.errors import UserError
from melanoma.core.startup import preload

_DATABASE = ("melanoma.store.reviews", "melanoma.store.db", "melanoma.core.settings")


def _engine():
    from melanoma.store import db

    engine = db.get_engine()
    db.ensure_schema(engine)
    return db, engine


def _who(reviewer: str | None) -> str:
    name = (reviewer or getpass.getuser() or "").strip()
    if not name:
        raise UserError("--reviewer: give the name the reviews are recorded under")
    return name[:100]


@click.group("review")
def review_command():
    """Confirmed diagnoses (histopathology, expert consensus, follow-up) of scored images."""


@review_command.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reviewer", default=None, help="Who the reviews are recorded under (default: your user name).")
def review_import(file: Path, reviewer: str | None):
    """Record the diagnoses of FILE, a CSV (a pathology export) with columns image_path or sha256,
    diagnosis (one of the nine classes or `other`), basis (histopathology, expert consensus,
    follow-up) and an optional note. Rows that match no scored image, name an unknown class or
    basis, or repeat an image are reported line by line and skipped; the others are recorded in one
    transaction. A row equal to an image's current diagnosis adds nothing: importing a file twice
    records it once. Exits 1 when any row was refused."""
    preload(*_DATABASE)
    from melanoma.store import reviews

    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None
    who = _who(reviewer)
    db, engine = _engine()
    with db.session_scope(engine) as session:
        report = reviews.import_csv(session, text, who)
    for problem in report.problems:
        click.echo(f"{file.name}: {problem}", err=True)
    click.echo(
        f"{report.added} diagnoses recorded, {report.unchanged} already recorded, {len(report.problems)} rows refused",
        err=True,
    )
    if report.problems:
        sys.exit(1)


@review_command.command("export")
@click.option("--all", "everything", is_flag=True, help="Every entry, corrected ones too (the audit view).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here (not stdout).")
def review_export(everything: bool, out: Path | None):
    """The current diagnoses (or every entry) as CSV: image, content hash, job, site, diagnosis,
    basis, note, reviewer, when, and which entry each corrects."""
    preload(*_DATABASE)
    from melanoma.store import reviews

    db, engine = _engine()
    try:
        fh = open(out, "w", newline="") if out else sys.stdout
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}") from None
    try:
        writer = csv.DictWriter(fh, fieldnames=list(reviews.EXPORT_COLUMNS))
        writer.writeheader()
        with db.session_scope(engine) as session:
            for row in reviews.export_rows(session, include_superseded=everything):
                writer.writerow(row)
    finally:
        if out:
            fh.close()
