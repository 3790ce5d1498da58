"""What the predict command does with the pictures it is given: big ones, wide pixels, and
paths that are not pictures at all."""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from mnist_pipeline import predict
from mnist_pipeline.cnn import Net, save_checkpoint
from mnist_pipeline.config import CnnParams
from mnist_pipeline.digits import prepare
from mnist_pipeline.kmeans import KmeansModel, save_model
from mnist_pipeline.predict import MAX_PIXELS, SIDE, Models, main, predict_files, read_image
from mnist_pipeline.processed import PREPARATIONS
from mnist_pipeline.runtime import PipelineError

CLASSES = tuple(str(d) for d in range(10))
MNIST = PREPARATIONS["mnist"]
FASHION = PREPARATIONS["fashion-mnist"]


def seven(width: int, height: int, scale: float = 1.0, mode: str = "L") -> Image.Image:
    """A dark 7 on light paper, `scale` of the picture's size, in its middle."""
    image = Image.new("L", (width, height), 255)
    w, h = width * scale, height * scale
    left, top = (width - w) / 2, (height - h) / 2
    corners = [(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]
    draw = ImageDraw.Draw(image)
    stroke = max(2, int(min(w, h)) // 12)
    draw.line([(left + x * w, top + y * h) for x, y in corners], 0, stroke)
    draw.line([(left + 0.35 * w, top + 0.5 * h), (left + 0.65 * w, top + 0.5 * h)], 0, stroke)
    return image.convert(mode)


def save(image: Image.Image, path: Path, **options) -> None:
    """image.save, PNGs at zlib level 1: the same pixels, the big ones written 4x faster."""
    if path.suffix == ".png":
        options.setdefault("compress_level", 1)
    image.save(path, **options)


def todays_field(path: Path, rule=MNIST) -> np.ndarray:
    """The field as the command made it before pictures were reduced: all pixels, 8 bits."""
    with Image.open(path) as image:
        return prepare(np.asarray(ImageOps.exif_transpose(image).convert("RGBA")), rule)


def white_png(path: Path, width: int, height: int) -> None:
    """A 1-bit white PNG written row by row (Pillow would first hold all of it in memory),
    a few kilobytes however many pixels it says it has."""
    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter type 0, then the packed pixels
    pack = zlib.compressobj(9)
    data = b"".join(pack.compress(row) for _ in range(height)) + pack.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, grey
    png = chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[str]:
    """An untrained CNN and random centroids: enough to see what the command does."""
    folder = tmp_path_factory.mktemp("models")
    meta = {"dataset": "mnist", "classes": list(CLASSES), "mean": 0.1307, "std": 0.3081}
    params = CnnParams(
        seed=1, epochs=1, batch_size=64, test_batch_size=100, lr=0.05, momentum=0.5, log_interval=2
    )
    torch.manual_seed(0)
    save_checkpoint(folder / "cnn.pt", Net(), params, meta)
    centroids = np.random.default_rng(0).random((16, 784), dtype=np.float32)
    save_model(folder / "kmeans.npz", KmeansModel(centroids, np.arange(16) % 10, CLASSES))
    return ["--cnn", str(folder / "cnn.pt"), "--kmeans", str(folder / "kmeans.npz")]


def loaded(models: list[str]) -> Models:
    return Models(Path(models[1]), Path(models[3]))


def test_big_pictures_reach_the_float_work_reduced(tmp_path, models, monkeypatch):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to show it upright
    pictures = {  # name: the picture, how to save it, its upright width / height
        "photo.jpg": (seven(6000, 4000, mode="RGB"), {}, 6000 / 4000),  # JPEG draft: 1/2
        "scan.png": (seven(5000, 7000, 0.5), {}, 5000 / 7000),
        "strip.png": (seven(20000, 600, mode="RGBA"), {}, 20000 / 600),
        "palette.gif": (seven(4500, 3000, mode="P"), {}, 4500 / 3000),
        "turned.png": (seven(3000, 5000), {"exif": exif}, 5000 / 3000),
    }
    for name, (image, options, _) in pictures.items():
        save(image, tmp_path / name, **options)
    handed = []

    def spy(rgba, rule):
        handed.append(rgba.shape)
        return prepare(rgba, rule)

    monkeypatch.setattr(predict, "prepare", spy)
    lines, errors = predict_files(loaded(models), [tmp_path / name for name in pictures])
    assert errors == [] and len(lines) == len(pictures)
    for (height, width, channels), (*_, aspect) in zip(handed, pictures.values(), strict=True):
        assert channels == 4 and max(height, width) <= SIDE
        assert max(height, width) > SIDE / 2  # reduced, but not more than it needs
        assert abs(width / height - aspect) < 0.02 * aspect


@pytest.mark.parametrize("mode, averaged", [("P", "RGBA"), ("1", "L"), ("I;16", "I")])
def test_pictures_converted_in_bands_come_out_as_converted_whole(mode, averaged, monkeypatch):
    noise = np.random.default_rng(0).integers(0, 256, (601, 403), dtype=np.uint8)
    image = {
        "P": lambda: Image.fromarray(noise).convert("RGB").quantize(32),
        "1": lambda: Image.fromarray(noise).convert("1"),
        "I;16": lambda: Image.fromarray(noise.astype(np.uint16) * 257),
    }[mode]()
    assert image.mode == mode
    monkeypatch.setattr(predict, "BAND", 10_000)  # bands of 24 or 21 rows, the last one short
    for factor in (1, 3, 7):
        banded = predict.converted_and_reduced(image, averaged, factor)
        whole = image.convert(averaged).reduce(factor)
        np.testing.assert_array_equal(np.asarray(banded), np.asarray(whole))


def test_pictures_up_to_the_side_are_read_as_before_and_bigger_ones_nearly(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to show it upright
    small = seven(500, 350, mode="RGB")
    transparent = Image.new("RGBA", small.size, (0, 0, 0, 0))
    transparent.putalpha(ImageOps.invert(small.convert("L")))  # black ink on nothing
    as_saved = {
        "small.png": (small, {}),
        "small.jpg": (small, {"quality": 90}),
        "turned.jpg": (seven(SIDE, 1500, 0.6, mode="RGB"), {"exif": exif}),
        "transparent.png": (transparent, {}),
        "palette.png": (small.convert("P"), {}),
        "one-bit.png": (small.convert("1"), {}),
        "cmyk.jpg": (small.convert("CMYK"), {}),
    }
    for name, (image, options) in as_saved.items():
        save(image, tmp_path / name, **options)
        for rule in (MNIST, FASHION):
            expected = todays_field(tmp_path / name, rule)
            np.testing.assert_array_equal(prepare(read_image(tmp_path / name), rule), expected)
    # Bigger ones are averaged in blocks first: the ink's box moves by a fraction of a pixel.
    seven(4032, 3024, mode="RGB").save(tmp_path / "phone.jpg", quality=90, exif=exif)
    save(seven(3000, 2200), tmp_path / "scan.png")
    for name in ("phone.jpg", "scan.png"):
        assert max(read_image(tmp_path / name).shape[:2]) <= SIDE
        for rule in (MNIST, FASHION):
            field = prepare(read_image(tmp_path / name), rule).astype(int)
            difference = np.abs(field - todays_field(tmp_path / name, rule))
            assert difference.max() <= 8 and difference.mean() < 0.5


def sixteen_bits(levels: np.ndarray) -> np.ndarray:
    return np.floor(levels * 65535 + 0.5).astype(np.uint16)


@pytest.mark.parametrize("paper", [0.0, 1.0])
def test_wide_pixels_are_read_by_their_range(tmp_path, paper):
    # Grey ink, 20000 of 65535, on black or on white paper.
    ink = np.asarray(ImageOps.invert(seven(400, 300)), dtype=np.float64) / 255
    levels = paper + ink * (20000 / 65535 - paper)
    Image.fromarray(sixteen_bits(levels)).save(tmp_path / "16-bit.png")
    assert Image.open(tmp_path / "16-bit.png").mode == "I;16"
    eight = np.floor(sixteen_bits(levels) / 257 + 0.5).astype(np.uint8)
    Image.fromarray(eight).save(tmp_path / "8-bit.png")
    expected = prepare(read_image(tmp_path / "8-bit.png"), MNIST)
    assert expected.max() == 255  # the 8-bit picture has ink to read
    Image.fromarray(sixteen_bits(levels).astype(np.int32)).save(tmp_path / "int.tiff")
    Image.fromarray(levels.astype(np.float32)).save(tmp_path / "unit.tiff")
    Image.fromarray((levels * 7 - 3).astype(np.float32)).save(tmp_path / "any.tiff")
    wide = {"16-bit.png": "I;16", "int.tiff": "I", "unit.tiff": "F", "any.tiff": "F"}
    for name, mode in wide.items():
        assert Image.open(tmp_path / name).mode == mode
        field = prepare(read_image(tmp_path / name), MNIST).astype(int)
        assert np.abs(field - expected).max() <= 1, name
    levels[0, 0] = np.nan
    Image.fromarray(levels.astype(np.float32)).save(tmp_path / "nan.tiff")
    with pytest.raises(PipelineError, match=r"\(some of its pixels are NaN or infinite\)$"):
        read_image(tmp_path / "nan.tiff")


def test_a_16_bit_picture_bigger_than_the_side_is_reduced_too(tmp_path):
    ink = np.asarray(ImageOps.invert(seven(3000, 2500)), dtype=np.float64) / 255
    save(Image.fromarray(sixteen_bits(1 - ink * 0.7)), tmp_path / "16-bit.png")
    picture = read_image(tmp_path / "16-bit.png")
    assert max(picture.shape[:2]) <= SIDE
    assert prepare(picture, MNIST).max() == 255


def test_pictures_over_the_cap_are_refused_with_their_size(tmp_path, monkeypatch):
    seven(400, 300).save(tmp_path / "small.png")
    monkeypatch.setattr(predict, "MAX_PIXELS", 100_000)
    with pytest.raises(PipelineError) as refused:
        read_image(tmp_path / "small.png")
    assert str(refused.value) == (
        "too large: 400 x 300 pixels (0.12 megapixels), and the most this command reads is "
        "0.1 megapixels; scale it down (the models see 28 x 28 pixels) and try again"
    )
    monkeypatch.undo()
    white_png(tmp_path / "13k.png", 13000, 13000)  # over the cap, under Pillow's limit
    with pytest.raises(PipelineError, match=r"^too large: 13000 x 13000 pixels \(169 mega"):
        read_image(tmp_path / "13k.png")
    assert MAX_PIXELS < 2 * Image.MAX_IMAGE_PIXELS  # so that the cap is the one users meet


def test_odd_paths_get_one_line_each_and_the_rest_are_answered(tmp_path, models, capsys):
    seven(300, 300).save(tmp_path / "good.png")
    os.mkfifo(tmp_path / "fifo")  # nobody writes to it: opening it to read would block
    (tmp_path / "folder.png").mkdir()
    white_png(tmp_path / "bomb.png", 30000, 30000)  # over Pillow's decompression-bomb limit
    names = ["fifo", "folder.png", "good.png", "bomb.png"]
    with fifo_unblocked(tmp_path / "fifo"):  # a command that opened it fails, not hangs
        status = main([*(str(tmp_path / n) for n in names), "/dev/zero", *models])
    out, err = capsys.readouterr()
    assert status == 1
    assert [line.split(": ", 1)[0] for line in out.splitlines()] == [str(tmp_path / "good.png")]
    fix = "give the path of a picture file"
    assert err.splitlines() == [
        f"error: {tmp_path / 'fifo'}: not a picture file but a FIFO (named pipe): {fix}",
        f"error: {tmp_path / 'folder.png'}: not a picture file but a folder: {fix}",
        f"error: {tmp_path / 'bomb.png'}: too large: over 179 megapixels, and the most this "
        "command reads is 150 megapixels; scale it down (the models see 28 x 28 pixels) and "
        "try again",
        f"error: /dev/zero: not a picture file but a character device: {fix}",
    ]


@contextlib.contextmanager
def fifo_unblocked(fifo: Path) -> Iterator[None]:
    """While it lasts, a reader that opens `fifo` is let through to an empty read at once
    (a writer opens and closes it), instead of blocking for ever."""
    done = threading.Event()

    def unblock() -> None:
        while not done.wait(0.05):
            with contextlib.suppress(OSError):  # ENXIO: no reader, as it should be
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, models, monkeypatch, capsys):
    seven(100, 100).save(tmp_path / "digit.png")

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict, "read_image", interrupted)
    try:
        status = main([str(tmp_path / "digit.png"), *models])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C went past main")
    out, err = capsys.readouterr()
    assert status == 130 and out == ""
    assert err.splitlines() == ["error: interrupted: no picture was answered; run it again"]


def test_help_gives_the_cap_and_the_side(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    assert f"up to {MAX_PIXELS / 1e6:g} megapixels; larger ones are refused" in shown
    assert f"over {SIDE} pixels a side is first reduced" in shown
