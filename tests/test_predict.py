"""Preparing a picture the way its data set was made, and the command that predicts pictures."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_pipeline.cnn import Net, save_checkpoint
from mnist_pipeline.datasets import get_dataset
from mnist_pipeline.digits import BlankImageError, prepare
from mnist_pipeline.kmeans import KmeansModel, save_model
from mnist_pipeline.predict import Models, main, model_paths, predict_files
from mnist_pipeline.processed import PREPARATIONS, preparation_of
from mnist_pipeline.runtime import PipelineError
from tests.helpers import BIN, ROOT, TINY_CNN, boot, rgba, run, seven

CLASSES = tuple(str(d) for d in range(10))
MNIST = PREPARATIONS["mnist"]
FASHION = PREPARATIONS["fashion-mnist"]


def ink_extent(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the rows and of the columns that hold ink."""
    return np.flatnonzero(field.any(axis=1)), np.flatnonzero(field.any(axis=0))


def centre_of_mass(field: np.ndarray) -> tuple[float, float]:
    """(y, x) of the ink's centre of mass, pixel i spanning [i, i + 1)."""
    weights = field / field.sum()
    cy = (weights.sum(axis=1) * (np.arange(28) + 0.5)).sum()
    cx = (weights.sum(axis=0) * (np.arange(28) + 0.5)).sum()
    return cy, cx


def test_digit_ink_fills_a_20_pixel_box_centred_by_mass():
    field = prepare(rgba(seven(300, 180)), MNIST)  # wider than tall: the width is fitted to 20
    assert field.shape == (28, 28) and field.dtype == np.uint8
    rows, cols = ink_extent(field)
    assert cols[-1] - cols[0] + 1 == 20 and rows[-1] - rows[0] + 1 < 20
    assert field.max() == 255
    # The centre of mass lands within half a pixel of the field's centre (14, 14).
    cy, cx = centre_of_mass(field)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_garment_ink_fills_the_field_centred_by_its_box():
    picture = rgba(boot(300, 200))  # wider than tall, its mass low and to the left
    field = prepare(picture, FASHION)
    rows, cols = ink_extent(field)
    assert (cols[0], cols[-1]) == (0, 27)  # the longest edge is 28, as in Fashion-MNIST
    assert 14 <= len(rows) < 28
    # Centred by its box, an odd margin's extra pixel on top, as Fashion-MNIST's images.
    assert rows[0] - (27 - rows[-1]) in (0, 1)
    cy, cx = centre_of_mass(field)
    assert cx < 13 and cy > 15  # not by its mass
    # The same picture as a digit: 20 columns, the mass centred.
    rows, cols = ink_extent(prepare(picture, MNIST))
    assert cols[-1] - cols[0] + 1 == 20
    cy, cx = centre_of_mass(prepare(picture, MNIST))
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_a_model_without_a_recorded_preparation_gets_mnists():
    # Models trained before meta recorded it were all used with MNIST's preparation.
    old = {"dataset": "fashion-mnist", "classes": list(CLASSES), "mean": 0.2, "std": 0.3}
    assert preparation_of(old) == MNIST
    assert preparation_of({**old, "preparation": dataclasses.asdict(FASHION)}) == FASHION
    with pytest.raises(PipelineError, match="unknown preparation"):
        preparation_of({**old, "preparation": {"subject": "x", "box": 20, "center": "middle"}})
    with pytest.raises(PipelineError, match="unknown preparation"):
        preparation_of({**old, "preparation": {"box": 20, "center": "mass", "margin": 2}})


def test_both_polarities_and_transparency_give_the_same_input():
    dark_on_light = prepare(rgba(seven(200, 200)), MNIST)
    light_on_dark = prepare(rgba(seven(200, 200, ink="white", paper="black")), MNIST)
    np.testing.assert_array_equal(dark_on_light, light_on_dark)
    # Grey ink on coloured paper: the same shape, up to the stretch of the contrast.
    tinted = prepare(rgba(seven(200, 200, ink="#333366", paper="#f0e8d0")), MNIST)
    assert np.abs(tinted.astype(int) - dark_on_light).max() <= 1
    transparent = Image.new("RGBA", (200, 200), (0, 0, 0, 0))  # black ink on nothing
    transparent.paste(seven(200, 200), mask=seven(200, 200, "white", "black").convert("L"))
    np.testing.assert_array_equal(prepare(rgba(transparent), MNIST), dark_on_light)


def test_blank_pictures_are_refused():
    with pytest.raises(BlankImageError, match="blank image"):
        prepare(rgba(Image.new("RGB", (50, 40), "white")), MNIST)
    noise = np.random.default_rng(0).integers(120, 135, size=(40, 50, 3), dtype=np.uint8)
    with pytest.raises(BlankImageError, match="blank image"):
        prepare(rgba(Image.fromarray(noise)), FASHION)


def write_models(directory: Path, meta: dict) -> list[str]:
    """An untrained CNN and random centroids: enough to check what the command prints."""
    torch.manual_seed(0)
    save_checkpoint(directory / "cnn.pt", Net(), TINY_CNN, meta)
    centroids = np.random.default_rng(0).random((16, 784), dtype=np.float32)
    save_model(directory / "kmeans.npz", KmeansModel(centroids, np.arange(16) % 10, CLASSES))
    return ["--cnn", str(directory / "cnn.pt"), "--kmeans", str(directory / "kmeans.npz")]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    # A meta from before models recorded their preparation: they get MNIST's.
    meta = {"dataset": "mnist", "classes": list(CLASSES), "mean": 0.1307, "std": 0.3081}
    return write_models(tmp_path_factory.mktemp("models"), meta)


def test_the_command_prepares_as_the_models_data_set_did(tmp_path, model_files):
    fashion = get_dataset("fashion-mnist")
    meta = {
        "dataset": "fashion-mnist",
        "classes": list(fashion.classes),
        "mean": 0.2860,
        "std": 0.3530,
        "preparation": dataclasses.asdict(FASHION),
    }
    write_models(tmp_path, meta)
    models = Models(tmp_path / "cnn.pt", tmp_path / "kmeans.npz")
    assert models.preparation == FASHION
    assert Models(Path(model_files[1]), Path(model_files[3])).preparation == MNIST
    boot(280, 200).save(tmp_path / "boot.png")
    (line,), errors = predict_files(models, [tmp_path / "boot.png"])
    assert errors == []
    picture = rgba(boot(280, 200))
    fields = np.stack([prepare(picture, rule) for rule in (FASHION, MNIST)])
    garment, digit = models.predictions(fields)
    assert line.split(": ", 1)[1] == models.describe(garment)
    assert models.describe(garment) != models.describe(digit)  # the check can tell them apart


def predict(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


def test_command_prints_class_top_three_and_centroid_per_image(tmp_path, model_files, capsys):
    seven(200, 200).save(tmp_path / "dark.png")
    seven(200, 200, ink="white", paper="black").save(tmp_path / "light.png")
    seven(90, 400).save(tmp_path / "tall.jpg", quality=90)
    files = [str(tmp_path / name) for name in ("dark.png", "light.png", "tall.jpg")]
    status, out, err = predict(capsys, *files, *model_files)
    assert status == 0 and err == []
    assert len(out) == 3
    dark, light, tall = (line.split(": ", 1)[1] for line in out)
    assert dark == light  # the same pixels, whichever the polarity
    for line in (dark, tall):
        assert line.startswith("CNN ") and "top 3: " in line and "; k-means: " in line
        top = line.split("top 3: ")[1].split(";")[0].split(", ")
        assert len(top) == 3 and all(item.endswith("%") for item in top)


def test_bad_pictures_get_one_line_each_and_the_rest_still_run(tmp_path, model_files, capsys):
    (tmp_path / "notes.txt").write_text("not a picture")
    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    seven(100, 100).save(tmp_path / "good.png")
    files = [str(tmp_path / n) for n in ("notes.txt", "blank.png", "good.png", "gone.png")]
    status, out, err = predict(capsys, *files, *model_files)
    assert status == 1
    assert [line.split(": ", 1)[0] for line in out] == [files[2]]
    assert err == [
        f"error: {files[0]}: cannot read it as an image (not an image)",
        f"error: {files[1]}: blank image: no ink stands out from the paper",
        f"error: {files[3]}: no such file",
    ]


def test_models_default_to_dvc_yaml_and_missing_ones_name_their_stage(
    tmp_path, model_files, capsys, monkeypatch
):
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    paths = model_paths()
    assert {name: (str(path), stage) for name, (path, stage) in paths.items()} == {
        "cnn": ("models/cnn.pt", "train_cnn"),
        "kmeans": ("models/kmeans.npz", "kmeans_sweep"),
    }
    seven(100, 100).save("digit.png")
    status, out, err = predict(capsys, "digit.png")
    assert status == 1 and out == []
    assert err == ["error: models/cnn.pt: model not found; run `dvc repro train_cnn` to make it"]
    status, _, err = predict(capsys, "digit.png", "--cnn", model_files[1])
    assert err == [
        "error: models/kmeans.npz: model not found; run `dvc repro kmeans_sweep` to make it"
    ]


def test_the_command_says_its_own_name_and_what_each_argument_is(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    shown = capsys.readouterr().out
    assert done.value.code == 0
    assert shown.startswith("usage: mnist-predict [-h] [--cnn PATH] [--kmeans PATH] IMAGE")
    assert "PNG, JPEG or any other format Pillow reads" in shown
    assert "default: dvc.yaml's cnn artifact, models/cnn.pt" in shown
    assert "default: dvc.yaml's kmeans artifact, models/kmeans.npz" in shown


def test_a_dvc_yaml_it_cannot_read_is_one_line_and_unread_when_both_paths_are_given(
    tmp_path, model_files, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    seven(100, 100).save("digit.png")
    Path("dvc.yaml").write_text("stages: [unclosed\n")
    status, out, err = predict(capsys, "digit.png")
    assert status == 1 and out == []
    assert err == [
        "error: dvc.yaml: cannot read its artifacts (not the project's dvc.yaml?); "
        "pass --cnn PATH and --kmeans PATH"
    ]
    status, out, err = predict(capsys, "digit.png", *model_files)
    assert status == 0 and len(out) == 1 and err == []
    Path("dvc.yaml").write_text("stages: {}\n")  # a dvc.yaml without the artifacts
    status, _, err = predict(capsys, "digit.png")
    assert err == ["error: no dvc.yaml here names a cnn model: pass --cnn PATH"]


@pytest.mark.slow
def test_the_installed_command_runs_unactivated_with_no_traceback(tmp_path, model_files):
    # The one run of the real console script (a few seconds: a new Python imports torch);
    # every other test of the command calls main() in-process.
    (tmp_path / "notes.txt").write_text("not a picture")
    # Outside the project and without activating its environment.
    args = [str(BIN / "mnist-predict"), str(tmp_path / "notes.txt")]
    result = run([*args, *model_files], tmp_path, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'notes.txt'}: cannot read it as an image (not an image)"
    ]
