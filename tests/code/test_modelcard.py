"""The model card is rendered from a version's metadata alone (no model, no data)."""

import pytest

from melanoma.versions import modelcard
from melanoma.versions.registry import ModelMeta, Registry
from tests.conftest import REPO


def _metrics(n: int, bal: float, auc: float | None) -> dict:
    return {
        "n": n,
        "accuracy": 0.5,
        "balanced_accuracy": bal,
        "melanoma_auc": auc,
        "macro_auc": None,
        "melanoma_sensitivity": 0.9,
        "melanoma_specificity": 0.4,
        "per_class": {"melanoma": {"support": 3, "precision": 0.5, "recall": 1.0, "f1": 0.667, "auc": auc}},
    }


def _meta(**data) -> ModelMeta:
    val = _metrics(40, 0.4125, 0.8)
    val["by_source"] = None
    return ModelMeta(
        version="robust-20260101T000000-abcd",
        architecture="robust",
        recipe="robust",
        data={"sources": ["ham10000", "isic2017"], "train_counts": {"melanoma": 7}, **data},
        metrics={
            **val,
            "by_source": {"val": {"ham10000": _metrics(30, 0.5, 0.9), "isic2017": _metrics(10, 0.25, None)}},
        },
        melanoma_threshold=0.1234,
        target_sensitivity=0.85,
    )


def test_card_carries_the_figures_of_its_metadata():
    card = modelcard.render(_meta())
    assert card.startswith("# Model card: `robust-20260101T000000-abcd`")
    assert "| balanced accuracy | 0.412 |" in card  # three decimals, rounded
    assert "P(melanoma) ≥ 0.123" in card
    assert "| melanoma | 7 | 0 | 0 | 0 |" in card  # counts per class, zero where a split has none
    rows = {line.split(" | ")[0]: line for line in card.splitlines() if line.startswith("| ham10000 |")}
    assert "| ham10000 | 30 | 0.500 | 0.900 |" in rows["| ham10000"]
    assert "| isic2017 | 10 | 0.250 | n/a |" in card  # a missing AUC says so, it is not 0
    assert "## External test" not in card and "## Test" not in card


def test_external_sources_get_their_own_section():
    meta = _meta(excluded_sources=["isic2017"], external_images=10)
    meta.metrics["external"] = {"isic2017": _metrics(10, 0.3, 0.55)}
    card = modelcard.render(meta)
    assert "* left out of training (external test): isic2017; 10 images" in card
    section = card[card.index("## External test") : card.index("## Validation")]
    assert "| isic2017 | 10 | 0.300 | 0.550 |" in section


@pytest.mark.parametrize("version", sorted(p.name for p in (REPO / "models").iterdir() if p.is_dir()))
def test_shipped_cards_are_what_render_makes_of_their_metadata(version):
    """Each shipped version's MODEL_CARD.md is render(metadata.json), plus the familiarity section of
    the benchmark report that names it (any docs/bench/familiarity*.json), where one was measured:
    the card cannot drift from the figures it reports."""
    import json
    import re

    meta = Registry(REPO / "models").meta(version)
    card = modelcard.render(meta)
    reports = [json.loads(p.read_text()) for p in sorted((REPO / "docs" / "bench").glob("familiarity*.json"))]
    measured = [r for r in reports if r["version"] == version]
    assert len(measured) <= 1, f"two familiarity reports name {version}"
    if measured:
        card = modelcard.with_familiarity(card, measured[0])
    assert card == (REPO / "models" / version / "MODEL_CARD.md").read_text()
    if meta.decision_weights is not None:  # the card lists the weights themselves
        assert f"nevus {meta.decision_weights[meta.classes.index('nevus')]:.3g}, " in card
    for plot in re.findall(r"!\[[^]]*\]\(([^)]+)\)", card):
        assert (REPO / "models" / version / plot).is_file(), plot


def test_replacing_the_familiarity_section_gives_the_card_a_first_insertion_gives():
    """A benchmark run again rewrites the section in place: the card is what one run makes."""
    import json

    report = json.loads((REPO / "docs" / "bench" / "familiarity-pretrained.json").read_text())
    # That version's weights have left models/; its card and metadata stay in docs/models.
    held = REPO / "models" if (REPO / "models" / report["version"]).is_dir() else REPO / "docs" / "models"
    card = modelcard.render(Registry(held).meta(report["version"]))
    once = modelcard.with_familiarity(card, report)
    assert "## Familiarity" in once and once.index("## Familiarity") < once.index("## Plots")
    assert modelcard.with_familiarity(once, report) == once
