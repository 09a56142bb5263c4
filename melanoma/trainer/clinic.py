"""A version on the clinic's own confirmed cases: ``melanoma evaluate --reviews`` (the figures) and
``melanoma threshold set | list | clear`` (a local operating point). Thin over
:mod:`melanoma.lifecycle.sites` and :mod:`melanoma.store.thresholds`."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import click

from melanoma.core.errors import UserError
from melanoma.trainer.cli import _version


def _database():
    from melanoma.store import db

    engine = db.get_engine()
    db.ensure_schema(engine)
    return db, engine


def _scope_label(job, root: str | None, site: str | None) -> str:
    if job is not None:
        return f"job {job.id}" + (f" (site {job.site})" if job.site else "")
    if root is not None:
        return f"folder {root}"
    return f"site {site}" if site is not None else "every job"


def evaluate_reviews(registry, version: str, job_ref: str | None, root: str | None, site: str | None, fmt: str) -> None:
    """Print ``version``'s figures on the confirmed cases of a job, folder or site (all without one)."""
    from melanoma.core.settings import get_settings
    from melanoma.lifecycle.sites import measure
    from melanoma.ml.clinic import format_figures
    from melanoma.store import jobs

    if sum(x is not None for x in (job_ref, root, site)) > 1:
        raise UserError("give at most one of --job, --root and --site")
    db, engine = _database()
    job = None
    if job_ref is not None:
        with db.session_scope(engine) as session:
            job = jobs.find_job(session, job_ref)
            session.expunge(job)
    measured = measure(engine, registry, version, get_settings(), job=job, root=root, site=site)
    label = _scope_label(job, root, site)
    if fmt == "json":
        click.echo(json.dumps({"scope": label, **measured.as_dict()}, indent=1))
        return
    if not measured.figures["cases"]:
        raise UserError(f"no confirmed diagnoses among the scored images of {label}")
    at = ", ".join(f"{n} at {whose}" for whose, n in measured.thresholds.items())
    click.echo(f"model {version} on the confirmed cases of {label}")
    click.echo(format_figures(measured.figures, " at the operating point"))
    click.echo(f"operating points: {at}")
    if measured.rescored:
        click.echo(f"scored now: {measured.rescored} cases this version had not scored")
    for reason in measured.skipped:
        click.echo(f"skipped: {reason}", err=True)


@click.group("threshold")
def threshold_command():
    """A clinic's own melanoma flag threshold, chosen on its confirmed cases."""


@threshold_command.command("set")
@click.option("--site", default=None, help="The site (clinic) whose jobs it applies to.")
@click.option("--root", default=None, help="Or the folder whose images it applies to.")
@click.option(
    "--sensitivity",
    type=click.FloatRange(0.5, 1.0),
    required=True,
    help="Melanoma sensitivity to reach on the confirmed cases (e.g. 0.9).",
)
@click.option("--model", default="current", show_default=True, help="Model version (id, current or folder).")
@click.option("--min-melanomas", default=10, show_default=True, type=click.IntRange(1), help="Refuse with fewer.")
@click.option("--model-dir", type=click.Path(path_type=Path), default=None)
def threshold_set(site, root, sensitivity, model, min_melanomas, model_dir):
    """Choose and store the threshold on P(melanoma) that flags at least --sensitivity of the
    confirmed melanomas of a site (or folder) for a model version; workers apply it from their next
    batch to that site's images, and every result says which threshold flagged it."""
    import numpy as np

    from melanoma.core.settings import get_settings
    from melanoma.lifecycle.sites import measure
    from melanoma.ml.clinic import flag_rates
    from melanoma.ml.evaluate import threshold_for_sensitivity
    from melanoma.store import thresholds

    scope = thresholds.scope_of(site, root)
    registry, version = _version(model, model_dir)
    db, engine = _database()
    measured = measure(engine, registry, version, get_settings(), site=site, root=root)
    diagnoses, p_mel = measured.diagnoses, measured.p_melanoma
    is_mel = np.asarray([d == "melanoma" for d in diagnoses], dtype=bool)
    melanomas = int(is_mel.sum())
    if melanomas < min_melanomas:
        raise UserError(
            f"{scope}: {melanomas} confirmed melanomas among {len(diagnoses)} cases; a threshold needs at least "
            f"{min_melanomas} (--min-melanomas)"
        )
    threshold = threshold_for_sensitivity(p_mel[is_mel], sensitivity)
    assert threshold is not None
    who = getpass.getuser() or "unknown"
    with db.session_scope(engine) as session:
        thresholds.set_point(session, scope, version, threshold, sensitivity, len(diagnoses), melanomas, who)
    sens, spec = flag_rates(diagnoses, [bool(p >= threshold) for p in p_mel])
    click.echo(
        f"{scope}, version {version}: flag at P(melanoma) >= {threshold:.4f} (sensitivity "
        f"{sens['k']}/{sens['n']}, specificity {float('nan') if spec['value'] is None else spec['value']:.3f} "
        f"on {spec['n']} non-melanomas; version's own {registry.meta(version).melanoma_threshold})"
    )


@threshold_command.command("list")
def threshold_list():
    """The stored local thresholds: scope, version, threshold, target, cases, who and when."""
    from melanoma.store import thresholds

    db, engine = _database()
    with db.session_scope(engine) as session:
        points = thresholds.points(session)
        if not points:
            click.echo("no local operating points: every version flags at its own", err=True)
        for p in points:
            click.echo(
                f"{p.scope}\t{p.model_version}\tP>={p.threshold:.4f}\tsensitivity {p.target_sensitivity:g}\t"
                f"{p.cases} cases ({p.melanomas} melanomas)\t{p.set_by}\t{p.set_at.isoformat(timespec='seconds')}"
            )


@threshold_command.command("clear")
@click.option("--site", default=None)
@click.option("--root", default=None)
@click.option("--model", default="current", show_default=True)
@click.option("--model-dir", type=click.Path(path_type=Path), default=None)
def threshold_clear(site, root, model, model_dir):
    """Remove a local threshold: the version's own operating point applies again."""
    from melanoma.store import thresholds

    scope = thresholds.scope_of(site, root)
    _, version = _version(model, model_dir)
    db, engine = _database()
    with db.session_scope(engine) as session:
        if not thresholds.clear_point(session, scope, version, getpass.getuser() or "unknown"):
            raise UserError(f"no local threshold for {scope} and version {version}")
    click.echo(f"{scope}, version {version}: the version's own operating point applies again")
