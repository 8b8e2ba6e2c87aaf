"""The one image decoder and writer: modes, EXIF orientation, damaged files, bombs refused before decoding."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from dlkit.core.errors import DataError, OutputError
from dlkit.vision.image import (ImageError, ImageTooLarge, image_size, open_image, save_image, to_array, to_pil,
                                to_tensor)


def png_bomb(w: int = 10000, h: int = 9500) -> bytes:
    """A tiny PNG whose header claims w x h RGB pixels (issue 9's 89-byte file is of this kind)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def rgb(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


@pytest.mark.parametrize("mode", ["RGB", "L", "LA", "RGBA", "P", "CMYK", "1", "I;16", "I", "F"])
def test_every_mode_decodes_to_rgb_and_grey(tmp_path, mode):
    base = Image.fromarray(rgb())
    if mode == "I;16":
        im = Image.fromarray(np.full((5, 7), 65535, np.uint16))
    elif mode == "F":
        im = Image.fromarray(np.full((5, 7), 0.5, np.float32))
    elif mode == "I":
        im = Image.fromarray(np.full((5, 7), 1000, np.int32))
    else:
        im = base.convert(mode)
    suffix = ".tif" if mode in ("CMYK", "F", "I") else ".png"
    p = tmp_path / f"x{suffix}"
    im.save(p)
    a = to_array(open_image(p), "RGB")
    assert a.shape == (5, 7, 3) and a.dtype == np.uint8
    assert open_image(p, mode="L").mode == "L"
    if mode in ("I;16", "I"):  # 16-bit is scaled, not clipped: full scale stays white, 1000/65535 is dark
        assert a.max() == (255 if mode == "I;16" else 4)
    assert open_image(p, mode=None).size == (7, 5)


def test_palette_with_transparency_goes_through_rgba(tmp_path):
    from dlkit.vision.image import convert

    assert convert(Image.fromarray(rgb()).convert("P").convert("PA"), "RGB").mode == "RGB"  # PNG cannot store PA
    im = Image.new("P", (4, 4), 0)
    im.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    im.info["transparency"] = 1
    im.save(tmp_path / "t.png", transparency=1)
    assert open_image(tmp_path / "t.png").getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied_and_removed(tmp_path, orientation):
    a = rgb(4, 6)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "dlkit-test-camera"  # Make: other tags survive
    im.save(tmp_path / "p.png", exif=exif.tobytes())
    up = open_image(tmp_path / "p.png")
    assert up.size == ((4, 6) if orientation in (6, 8) else (6, 4))
    assert up.getexif().get(0x0112, 1) == 1
    save_image(up, tmp_path / "out.png")
    back = Image.open(tmp_path / "out.png")
    assert back.size == up.size and back.getexif().get(0x0112, 1) == 1
    assert back.getexif().get(0x010F) == "dlkit-test-camera"
    if orientation == 6:  # rotated 90 degrees clockwise for display: the stored first column becomes the top row
        np.testing.assert_array_equal(np.asarray(up)[0], a[::-1, 0])
    if orientation == 1:  # and the JPEG route (where phone photos come from) too
        im.save(tmp_path / "p.jpg", exif=exif.tobytes())
        assert open_image(tmp_path / "p.jpg").size == (6, 4)


def test_damaged_files_are_one_line_errors_naming_the_file(tmp_path):
    Image.fromarray(rgb(32, 32)).save(tmp_path / "ok.png")
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:80])
    for name, what in [("zero.png", "empty"), ("text.png", "not an image"), ("cut.png", "truncated"),
                       ("missing.png", "does not exist")]:
        with pytest.raises(ImageError, match=what) as e:
            open_image(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)
        assert isinstance(e.value, DataError)
    with pytest.raises(ImageError, match="folder"):
        open_image(tmp_path)
    with pytest.raises(ImageError, match="member.png"):
        open_image(b"garbage", name="member.png")
    with pytest.raises(ImageError, match="empty"):
        open_image(b"", name="e.png")


def test_bombs_are_refused_before_decoding(tmp_path):
    bomb = png_bomb()
    assert len(bomb) < 120
    (tmp_path / "bomb.png").write_bytes(bomb)
    assert image_size(tmp_path / "bomb.png") == (10000, 9500)
    with pytest.raises(ImageTooLarge, match=r"bomb.png' is 10000x9500 \(95.0 Mpx\), over the limit") as e:
        open_image(tmp_path / "bomb.png")
    assert "before decoding" in str(e.value)
    with pytest.raises(ImageTooLarge, match="over the limit of 100 px"):
        open_image(png_bomb(20, 20), max_pixels=100)
    # Pillow's own limit is not left changed, and its warning is an error (here: a limit above ours is ours)
    assert Image.MAX_IMAGE_PIXELS == 89478485
    Image.fromarray(rgb(20, 20)).save(tmp_path / "small.png")
    assert open_image(tmp_path / "small.png", max_pixels=400).size == (20, 20)
    with pytest.raises(ImageTooLarge):
        open_image(tmp_path / "small.png", max_pixels=399)
    assert open_image(tmp_path / "small.png", max_pixels=None).size == (20, 20)


def test_pillow_limit_is_an_error_unless_our_limit_allows_more(tmp_path, monkeypatch):
    Image.fromarray(rgb(20, 20)).save(tmp_path / "p.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow warns over 100 px and refuses over 200
    with pytest.raises(ImageTooLarge, match="20x20 .*over the limit of 399 px"):
        open_image(tmp_path / "p.png", max_pixels=399)
    assert open_image(tmp_path / "p.png", max_pixels=1000).size == (20, 20)  # ours above Pillow's: ours rules
    assert open_image(tmp_path / "p.png", max_pixels=None).size == (20, 20)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:  # thread-safe: the lock is only taken on the rare path
        sizes = list(pool.map(lambda m: open_image(tmp_path / "p.png", max_pixels=m).size, [1000, None] * 8))
    assert sizes == [(20, 20)] * 16


def test_to_tensor_and_save_image_round_trip(tmp_path):
    a = rgb(6, 9)
    t = to_tensor(Image.fromarray(a))
    assert t.shape == (3, 6, 9) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert to_tensor(a[..., 0]).shape == (1, 6, 9)
    for src in (t, t[None], a, Image.fromarray(a)):
        save_image(src, tmp_path / "r.png")
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png")), a)
    save_image(torch.rand(1, 4, 4), tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "L"
    save_image(Image.new("RGBA", (3, 3)), tmp_path / "a.jpg")  # JPEG has no alpha: dropped, not an error
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"
    for suffix in (".webp", ".bmp", ".tif"):  # lossless
        save_image(a, tmp_path / f"l{suffix}")
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"l{suffix}").convert("RGB")), a)
    with pytest.raises(OutputError, match="format"):
        save_image(a, tmp_path / "x.xyz")
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    with pytest.raises(ValueError):
        to_pil(torch.rand(2, 3, 4, 4))


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    save_image(rgb(), tmp_path / "keep.png")
    before = (tmp_path / "keep.png").read_bytes()

    def boom(self, fp, *a, **k):
        fp.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OutputError, match="No space left"):
        save_image(rgb(seed=1), tmp_path / "keep.png")
    assert (tmp_path / "keep.png").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_open_image_reads_bytes_and_refuses_bombs_from_paths(tmp_path):
    (tmp_path / "b.png").write_bytes(png_bomb())
    with pytest.raises(ImageTooLarge):
        open_image(tmp_path / "b.png")
    buf = io.BytesIO()
    Image.fromarray(rgb()).save(buf, format="PNG")
    assert open_image(buf.getvalue()).size == (7, 5)


def test_image_guards(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        open_image(tmp_path / "zero.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(DataError, match="not an image"):
        open_image(tmp_path / "text.png")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="damaged or truncated|not an image"):
        open_image(tmp_path / "cut.png")
    assert open_image(tmp_path / "ok.png").size == (64, 64)