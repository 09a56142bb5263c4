"""The options every training command shares (``melanoma train``, ``trainer serve``): click's
parameter names are :class:`melanoma.ml.recipes.TrainConfig`'s fields."""

from __future__ import annotations

from pathlib import Path

import click

from melanoma.core.errors import UserError
from melanoma.ml.recipes import AUGMENTATIONS, DEFAULT_RECIPE, RECIPES

# The recipes module is plain data (no TensorFlow); the default first.
_RECIPES = sorted(RECIPES, key=lambda name: name != DEFAULT_RECIPE)


def _existing_folders(ctx, param, folders):
    # UserErrors, not click's usage errors: one line and exit status 1, as every user error.
    for d in folders:
        if not d.exists():
            raise UserError(f"data folder not found: {d}")
        if not d.is_dir():
            raise UserError(f"--data is not a folder: {d}")
    return folders


def data_option(help: str, required: bool = True):
    """The repeatable ``--data`` option (folder-per-class image sets) of every command that reads the
    training data; a folder that is not there ends the command in one line before any work."""
    return click.option(
        "--data",
        "data_dirs",
        multiple=True,
        required=required,
        type=click.Path(path_type=Path),
        callback=_existing_folders,
        help=help,
    )


def training_options(f):
    """Decorate a click command with the training options."""
    options = [
        data_option("Folder-per-class image set (repeat to combine sets)."),
        click.option("--recipe", type=click.Choice(_RECIPES), default=DEFAULT_RECIPE, show_default=True),
        click.option("--epochs", default=None, type=click.IntRange(1), help="Override the recipe's epochs."),
        click.option("--patience", default=None, type=click.IntRange(1), help="Override early-stopping patience."),
        click.option(
            "--augment-per-class",
            default=None,
            type=click.IntRange(0),
            help="Override the recipe's Augmentor count (origin: added per class; resnet: top-up target).",
        ),
        click.option("--limit-per-class", default=None, type=click.IntRange(2), help="At most N images per class."),
        click.option(
            "--train-fraction",
            default=1.0,
            show_default=True,
            type=click.FloatRange(0.05, 1.0),
            help="Train on this fraction of the training side's lesions (whole lesions, by class), with "
            "validation and test as the full run's: a learning curve. A stage continuing such a run "
            "needs the same fraction and seed to draw the same images.",
        ),
        click.option("--val-fraction", default=0.2, show_default=True, type=click.FloatRange(0.05, 0.5)),
        click.option("--test-fraction", default=0.0, show_default=True, type=click.FloatRange(0.0, 0.5)),
        click.option("--seed", default=123, show_default=True),
        click.option(
            "--target-sensitivity",
            default=0.85,
            show_default=True,
            type=click.FloatRange(0.01, 1.0),
            help="Melanoma sensitivity the operating point must reach on validation.",
        ),
        click.option(
            "--model-dir",
            type=click.Path(path_type=Path),
            default=None,
            help="Registry folder (default: MELANOMA_MODEL_DIR).",
        ),
        click.option(
            "--exclude-source",
            "exclude_sources",
            multiple=True,
            help="Leave this source (isic-9class, ham10000, isic2017, isic-fullres) out of training and "
            "report it as an external test (repeatable).",
        ),
        click.option(
            "--init-from",
            default=None,
            help="Fine-tune from this version (an id in the registry or a version folder's path); images "
            "it was trained, validated or tested on keep their side of the split.",
        ),
        click.option(
            "--split-of",
            default=None,
            help="Keep this version's split (an id or a version folder's path) without its weights: compare "
            "another recipe on the same test images.",
        ),
        click.option(
            "--learning-rate",
            default=None,
            type=click.FloatRange(1e-6, 1.0),
            help="Override the recipe's peak learning rate.",
        ),
        click.option(
            "--samples-per-epoch",
            default=None,
            type=click.IntRange(32),
            help="Images drawn per epoch (recipes that sample by source and class).",
        ),
        click.option(
            "--train-from-block",
            default=None,
            type=click.IntRange(0),
            help="Pretrained backbones: train this block and the ones above it (the recipe's default: "
            "pretrained 11); the stem and blocks below stay as ImageNet left them.",
        ),
        click.option(
            "--backbone",
            default=None,
            type=click.Choice(["lite0", "lite1", "lite2"]),
            help="Pretrained recipes: the EfficientNet-Lite to fine-tune (default lite0; with --init-from, the "
            "version's). Lite1/Lite2 have 21 blocks: Lite0's blocks 11+ start there at 15 (--train-from-block).",
        ),
        click.option(
            "--image-size",
            default=None,
            type=click.IntRange(96, 600),
            help="Pretrained recipes: input size in pixels (default: the backbone's own, 224/240/260).",
        ),
        click.option(
            "--augmentation",
            default=None,
            type=click.Choice(AUGMENTATIONS),
            help="Pretrained recipes: device (the recipe's) or device-strong (wider colour changes, and each "
            "batch shrunk to 35-100 % of its resolution and enlarged back, as a lower-resolution device shows it).",
        ),
        click.option(
            "--follow-up-weight",
            default=None,
            type=click.FloatRange(0.0, 1.0),
            help="Sampling recipes: draw HAM10000's nevi confirmed by follow-up (never excised) this often "
            "against its excised and consensus nevi (default 1: alike); the nevi's share stays.",
        ),
        click.option(
            "--precision",
            type=click.Choice(["float32", "mixed_bfloat16", "mixed_float16"]),
            default="float32",
            show_default=True,
            help="Training compute precision (the published model is float32 either way).",
        ),
        click.option(
            "--workdir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Keep the run's decoded images, checkpoints and epoch log here (needed for --resume).",
        ),
        click.option("--resume", is_flag=True, help="Continue the run stopped in --workdir."),
        click.option(
            "--reviews-site",
            "review_sites",
            multiple=True,
            help="Also train on this site's confirmed diagnoses, as a source of their own (reviews-SITE), "
            "split by image like the others (repeatable; reads MELANOMA_DATABASE_URL).",
        ),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f
