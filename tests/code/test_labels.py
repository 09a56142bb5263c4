import pytest

from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS, is_image_file, parse_class, prob_column
from melanoma.store.schema import Prediction


def test_nine_classes_in_alphabetical_order():
    assert len(CLASS_NAMES) == 9
    assert list(CLASS_NAMES) == sorted(CLASS_NAMES)


def test_probability_columns():
    assert prob_column("basal cell carcinoma") == "p_basal_cell_carcinoma"
    assert PROB_COLUMNS[3] == "p_melanoma"
    # every class has its column in the table
    assert set(PROB_COLUMNS) <= set(Prediction.__table__.columns.keys())


@pytest.mark.parametrize("text", ["melanoma", "Melanoma", "MELANOMA "])
def test_parse_class_accepts_any_case(text):
    assert parse_class(text) == "melanoma"


def test_parse_class_underscores_and_unknown():
    assert parse_class("basal_cell_carcinoma") == "basal cell carcinoma"
    with pytest.raises(ValueError, match="unknown class"):
        parse_class("freckle")


def test_extensions():
    assert is_image_file("a/B.JPG") and is_image_file("x.tiff") and is_image_file("y.Png")
    assert not is_image_file("notes.txt") and not is_image_file("scan.gif")
