"""The shared preprocessing: real images decode to RGB 180x180; bad ones give one-line reasons."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from melanoma.core import images
from melanoma.core.errors import ImageError
from melanoma.core.files import read_file, resolve_allowed
from melanoma.core.images import decode
from tests.conftest import TEST_IMAGES


@pytest.fixture(scope="module")
def real_jpeg():
    return next((TEST_IMAGES / "melanoma").glob("*.jpg")).read_bytes()


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_real_jpeg_decodes_to_rgb_180(real_jpeg):
    arr = decode(real_jpeg)
    assert arr.shape == (180, 180, 3) and arr.dtype == np.uint8
    assert 20 < arr.mean() < 240  # a photograph, not a blank


def test_decode_is_pillows_bilinear_resize_of_the_upright_rgb_image():
    img = Image.open(next((TEST_IMAGES / "nevus").glob("*.jpg"))).convert("RGB").resize((600, 450))
    expected = np.asarray(img.resize((180, 180), Image.Resampling.BILINEAR))
    assert np.array_equal(decode(_encode(img, "PNG")), expected)


def test_larger_images_are_squashed_like_training_not_cropped():
    """A 600x450 image whose left tenth is red: squashed to 180x180 the red band keeps a tenth of the
    width (a centre crop, as some pipelines do, would drop it)."""
    arr = np.zeros((450, 600, 3), np.uint8)
    arr[:, :60] = (255, 0, 0)
    out = decode(_encode(Image.fromarray(arr), "PNG"))
    assert out.shape == (180, 180, 3)
    assert (out[:, :17, 0] > 200).all() and (out[:, 19:, 0] < 50).all()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA"])
def test_any_colour_mode_becomes_rgb(real_jpeg, mode):
    img = Image.open(io.BytesIO(real_jpeg)).convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    arr = decode(_encode(img, fmt)).astype(int)
    assert arr.shape == (180, 180, 3)
    reference = decode(real_jpeg).astype(int)
    if mode in ("L", "LA"):
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()  # grey stays grey
        grey = np.asarray(Image.fromarray(reference.astype(np.uint8)).convert("L"), dtype=int)
        assert np.abs(arr[..., 0] - grey).mean() < 3
    else:  # the same picture: exactly for RGBA; up to JPEG's CMYK round trip and the dithered web palette
        assert np.abs(arr - reference).mean() <= {"RGBA": 0, "CMYK": 5, "P": 25}[mode]


def test_16_bit_png_is_scaled_not_clipped(real_jpeg):
    grey = np.asarray(Image.open(io.BytesIO(real_jpeg)).convert("L"), dtype=np.uint16) * 257
    arr = decode(_encode(Image.fromarray(grey), "PNG"))
    eight_bit = decode(_encode(Image.fromarray((grey // 257).astype(np.uint8)), "PNG"))
    assert arr.shape == (180, 180, 3)
    # Scaled, the 16-bit image is the 8-bit one (clipping would make it nearly all white, a wrong
    # scale would darken or brighten it).
    assert np.abs(arr.astype(int) - eight_bit.astype(int)).max() <= 1


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (200, 100), "white")
    img.paste((255, 0, 0), (0, 0, 100, 100))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 3  # rotated 180°: the red half belongs on the right
    arr = decode(_encode(img, "JPEG", exif=exif, quality=95))
    assert arr[90, 20, 0] > 200 and arr[90, 20, 1] > 200  # left is white
    assert arr[90, 160, 0] > 200 and arr[90, 160, 1] < 60  # right is red


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"this is not an image", "not an image"),
        (os.urandom(4096), "not an image"),
    ],
)
def test_garbage_is_rejected(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode(data)


def test_truncated_jpeg_is_rejected(real_jpeg):
    with pytest.raises(ImageError, match="corrupt image"):
        decode(real_jpeg[: len(real_jpeg) // 3])


def test_too_many_pixels_is_rejected():
    data = _encode(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(ImageError, match="too large"):
        decode(data, limits=images.DecodeLimits(max_pixels=1_000_000))


def test_read_file_reasons(tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        read_file(tmp_path / "nope.jpg", 100)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_file(tmp_path / "empty.jpg", 100)
    (tmp_path / "big.jpg").write_bytes(b"x" * 101)
    with pytest.raises(ImageError, match="larger than"):
        read_file(tmp_path / "big.jpg", 100)


def test_allowed_roots(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    inside = root / "sub" / "a.jpg"
    inside.write_bytes(b"x")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    (root / "link.jpg").symlink_to(outside)
    roots = (root,)
    assert resolve_allowed(str(inside), roots) == inside.resolve()
    with pytest.raises(ImageError, match="outside the allowed roots"):
        resolve_allowed(str(outside), roots)
    with pytest.raises(ImageError, match="outside the allowed roots"):
        resolve_allowed(str(root / "link.jpg"), roots)
    with pytest.raises(ImageError, match="outside the allowed roots"):
        resolve_allowed(str(root / "sub" / ".." / ".." / "secret.jpg"), roots)
    with pytest.raises(ImageError, match="not absolute"):
        resolve_allowed("sub/a.jpg", roots)
    # a sibling folder whose name merely starts with the root's name is outside too
    (tmp_path / "root2").mkdir()
    (tmp_path / "root2" / "b.jpg").write_bytes(b"x")
    with pytest.raises(ImageError, match="outside"):
        resolve_allowed(str(tmp_path / "root2" / "b.jpg"), roots)
