"""Trainer commands: ``melanoma train``, ``evaluate``, ``models``, ``trainer serve``. Thin over the core."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from melanoma.core.errors import UserError
from melanoma.trainer.options import data_option, training_options


def _registry(model_dir: Path | None):
    from melanoma.core.settings import get_settings
    from melanoma.versions.registry import Registry

    return Registry(model_dir or get_settings().model_dir)


def _config(options: dict):
    """The TrainConfig of the shared training options (click's parameter names are its fields)."""
    if options.get("resume") and options.get("workdir") is None:
        raise UserError("--resume needs --workdir (the folder of the run to continue)")
    from melanoma.ml.recipes import TrainConfig

    try:
        return TrainConfig(
            **{
                **options,
                "data_dirs": tuple(options["data_dirs"]),
                "exclude_sources": tuple(options["exclude_sources"]),
                "review_sites": tuple(options.get("review_sites", ())),
            }
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _summary(meta) -> str:
    m = meta.metrics

    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    return (
        f"val accuracy {f(m['accuracy'])}, balanced accuracy {f(m['balanced_accuracy'])}, melanoma AUC "
        f"{f(m.get('melanoma_auc'))}, at P>={f(meta.melanoma_threshold)}: sensitivity "
        f"{f(m.get('melanoma_sensitivity_at_threshold'))}, specificity "
        f"{f(m.get('melanoma_specificity_at_threshold'))}"
    )


@click.command("train")
@training_options
@click.option(
    "--promote/--no-promote",
    default=True,
    show_default=True,
    help="Make the new version current if it passes the gate.",
)
@click.option("--force", is_flag=True, help="Promote even if the gate refuses.")
def train_command(model_dir, promote, force, **options):
    """Train a model on labelled images, publish it, and promote it through the gate."""
    cfg = _config(options)
    registry = _registry(model_dir)
    from melanoma.ml.train import train

    try:
        meta, prepared, val = train(cfg, registry)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    _published(registry, meta, prepared, val, promote, force)


def _published(registry, meta, prepared, val, promote: bool, force: bool) -> None:
    """Say what was published, put it through the gate on its validation images (``val``: arrays)
    when asked, and print its version id last (for scripts)."""
    from melanoma.lifecycle.promotion import gate

    click.echo(f"published {meta.version} to {registry.root}: {_summary(meta)}", err=True)
    if promote or force:
        (x_val, y_val), samples = val, prepared.val
        sources, paths = [s.source for s in samples], [s.path for s in samples]
        result = gate(registry, meta.version, x_val, y_val, force, sources, paths)
        click.echo(f"{'promoted' if result.promoted else 'not promoted'}: {result.reason}", err=True)
    click.echo(meta.version)


@click.command("evaluate")
@click.argument("model", required=False, default="current")
@click.argument("folder", type=click.Path(path_type=Path), required=False)
@click.option("--reviews", is_flag=True, help="Instead of FOLDER: on the clinic's confirmed diagnoses.")
@click.option("--job", default=None, help="With --reviews: this job's.")
@click.option("--root", default=None, help="With --reviews: the images under this folder.")
@click.option("--site", default=None, help="With --reviews: this site's jobs.")
@click.option(
    "--split-of",
    default=None,
    help="Instead of FOLDER: score MODEL on this version's test split and left-out sources, per "
    "source (a version id or folder; needs --data, the folders it was trained from).",
)
@data_option("With --split-of: the data folders (repeat).", required=False)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--plots",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also write confusion-matrix and ROC PNGs to this folder.",
)
@click.option("--model-dir", type=click.Path(path_type=Path), default=None)
def evaluate_command(model, folder, reviews, job, root, site, split_of, data_dirs, fmt, plots, model_dir):
    """Score labelled FOLDER (one sub-folder per class) with MODEL and print the metrics.

    MODEL is a version id, `current` (the default), or the path of a version folder. With
    --split-of, score it per source on another version's test split and left-out sources instead.
    With --reviews, on the confirmed diagnoses of a job, folder or site (all without one): melanoma
    sensitivity/specificity at the operating point, AUC and balanced accuracy, with counts and
    95 % intervals.
    """
    from melanoma.ml import evaluate
    from melanoma.ml import plots as charts

    registry, version = _version(model, model_dir)
    if reviews:
        from melanoma.trainer.clinic import evaluate_reviews

        evaluate_reviews(registry, version, job, root, site, fmt)
        return
    if job or root or site:
        raise UserError("--job, --root and --site go with --reviews")
    if split_of:
        from melanoma.ml.assess import evaluate_on_split
        from melanoma.versions.modelcard import source_rows

        if not data_dirs:
            raise UserError("--split-of needs --data (the folders that version was trained from)")
        split_registry, split_version = _version(split_of, model_dir)
        result = evaluate_on_split(registry, version, split_registry, split_version, tuple(data_dirs))
        if fmt == "json":
            click.echo(json.dumps({"version": version, "split_of": split_version, **result}, indent=1))
        else:
            for part, per_source in result.items():
                click.echo(f"\n{version} on the {part} images of {split_version}:\n")
                click.echo("\n".join(source_rows(per_source)))
        return
    if folder is None:
        raise UserError("give a FOLDER of labelled images, or --split-of VERSION with --data")
    if not folder.is_dir():
        raise UserError(f"folder not found: {folder}")
    try:
        from melanoma.ml.assess import evaluate_folder

        m, y, probs = evaluate_folder(registry, version, folder)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if plots:
        plots.mkdir(parents=True, exist_ok=True)
        charts.plot_confusion(m["confusion_matrix"], plots / "confusion_matrix.png", f"{version} on {folder.name}")
        charts.plot_roc(
            y, probs, m.get("melanoma_threshold"), plots / "roc_melanoma.png", f"Melanoma ROC: {folder.name}"
        )
    if fmt == "json":
        click.echo(json.dumps({"version": version, "folder": str(folder), **m}, indent=1))
    else:
        click.echo(evaluate.format_report(m, f"model {version} on {folder}"))


def _version(model: str, model_dir: Path | None):
    """(registry, version id) for a version id, `current`, or a version folder's path."""
    from melanoma.versions.registry import Registry

    if Path(model).is_dir():
        registry, version = Registry(Path(model).resolve().parent), Path(model).resolve().name
    else:
        registry = _registry(model_dir)
        version = registry.current() if model == "current" else model
        if version is None:
            raise UserError(f"no current model version in {registry.root}")
    registry.meta(version)  # one-line error for an unknown version
    return registry, version


@click.group("trainer")
def trainer_command():
    """The trainer service."""


@trainer_command.command("serve")
@training_options
@click.option("--poll", default=60.0, show_default=True, type=click.FloatRange(1), help="Seconds between checks.")
@click.option("--every", default=None, type=click.FloatRange(0.01), help="Also retrain every N hours.")
@click.option("--once", is_flag=True, help="Check once, train if due, and exit.")
def trainer_serve(model_dir, poll, every, once, **options):
    """Watch the data folders; retrain when labelled images are added (or every N hours) and promote
    the result through the gate."""
    from melanoma.lifecycle.retrain import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = _config({**options, "workdir": None, "resume": False})
    serve(cfg, _registry(model_dir), poll_s=poll, every_s=every * 3600 if every else None, once=once)
