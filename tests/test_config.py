"""params.yaml validation: every bad value stops with a message naming its key."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml
from pydantic import ValidationError
from ruamel.yaml import YAML

from mnist_pipeline.config import CnnParams, ParamsError, load_params, parse_params
from mnist_pipeline.datasets import get_dataset
from tests.helpers import NOTEBOOK_PARAMS, ROOT

DEFAULTS = NOTEBOOK_PARAMS


def with_change(section: str, key: str, value) -> dict:
    raw = copy.deepcopy(DEFAULTS)
    raw[section][key] = value
    return raw


def test_shipped_params_have_the_keys_the_tests_use():
    # Only the structure, read and never written: a user may have switched data.dataset or
    # any value (`dvc exp run -S` does), and the tests write params of their own.
    shipped = YAML(typ="safe").load((ROOT / "params.yaml").read_text())
    assert {s: set(v) for s, v in shipped.items()} == {s: set(v) for s, v in DEFAULTS.items()}


def test_notebook_params_reproduce_the_notebooks():
    params = parse_params(DEFAULTS)
    assert params.data.dataset == "mnist" and params.data.verify is True
    assert (params.preprocess.mean, params.preprocess.std) == (0.1307, 0.3081)
    cnn = params.cnn
    assert (cnn.seed, cnn.epochs, cnn.batch_size, cnn.test_batch_size) == (1, 5, 64, 1000)
    assert (cnn.lr, cnn.momentum, cnn.log_interval) == (0.01, 0.5, 10)
    assert params.kmeans.n_clusters == (10, 16, 36, 64, 144, 256)
    assert params.kmeans.test_clusters == 256


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("cnn", "lr", -0.01, "cnn.lr"),
        ("cnn", "lr", 0, "cnn.lr"),
        ("cnn", "batch_size", 0, "cnn.batch_size"),
        ("cnn", "epochs", "5", "cnn.epochs: expected int"),
        ("cnn", "epochs", True, "cnn.epochs: expected int"),
        ("cnn", "momentum", 1.5, "cnn.momentum"),
        ("kmeans", "n_clusters", [10, 5], "kmeans.n_clusters: 5"),
        ("kmeans", "n_clusters", [], "kmeans.n_clusters"),
        ("kmeans", "n_clusters", 256, "kmeans.n_clusters: expected a list"),
        ("kmeans", "n_clusters", [10, 10], "without repeats"),
        ("kmeans", "test_clusters", 20, "kmeans.test_clusters: 20 is not in kmeans.n_clusters"),
        ("kmeans", "batch_size", -1, "kmeans.batch_size"),
        ("kmeans", "random_state", 2**32, "kmeans.random_state"),
        ("cnn", "seed", 2**64, "cnn.seed"),
        ("data", "verify", "yes", "data.verify: expected bool"),
        ("data", "mirrors", "http://x/", "data.mirrors: expected a list"),
        ("preprocess", "std", 0.0, "preprocess.std"),
        ("preprocess", "std", float("inf"), "preprocess.std: inf is not allowed"),
        ("preprocess", "std", 1e-300, "preprocess.std: 1e-300 is not allowed"),
        ("preprocess", "mean", float("nan"), "preprocess.mean: nan is not allowed"),
        ("cnn", "lr", float("inf"), "cnn.lr: inf is not allowed; it must be a finite number"),
        ("cnn", "lr", 1e6, "cnn.lr: 1000000.0 is not allowed"),
        ("cnn", "momentum", float("nan"), "cnn.momentum: nan is not allowed"),
    ],
)
def test_bad_value_names_its_key(section, key, value, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_params(with_change(section, key, value))


def test_unknown_data_set_is_named_where_it_is_used():
    with pytest.raises(ParamsError, match="data.dataset: unknown data set 'cifar'; choose one"):
        get_dataset("cifar")
    assert get_dataset("fashion-mnist").classes[0] == "T-shirt/top"


def test_unknown_key_is_named():
    raw = with_change("cnn", "learning_rate", 0.1)
    with pytest.raises(ParamsError, match=r"unknown key cnn\.learning_rate"):
        parse_params(raw)


def test_unknown_section_is_named():
    raw = copy.deepcopy(DEFAULTS)
    raw["trainer"] = {}
    with pytest.raises(ParamsError, match="unknown key trainer"):
        parse_params(raw)


def test_missing_key_is_named():
    raw = copy.deepcopy(DEFAULTS)
    del raw["kmeans"]["n_init"]
    with pytest.raises(ParamsError, match=r"missing key kmeans\.n_init"):
        parse_params(raw)


def test_ints_are_accepted_where_floats_are_meant():
    params = parse_params(with_change("cnn", "lr", 1))
    assert params.cnn.lr == 1.0 and isinstance(params.cnn.lr, float)


def test_null_mirrors_mean_the_defaults():
    assert parse_params(with_change("data", "mirrors", None)).data.mirrors == ()


def test_params_are_frozen():
    params = parse_params(DEFAULTS)
    with pytest.raises(AttributeError):
        params.cnn.lr = 1.0


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cnn: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(bad)


def test_params_are_read_as_dvc_reads_them(tmp_path):
    # YAML 1.2, as DVC reads params.yaml: 1e-3 is a float (PyYAML's YAML 1.1: a string),
    # .inf is infinity, and a repeated key is an error rather than a silent overwrite.
    # The tests' own params as text, never the user's file (whose lr may be 0.015).
    text = yaml.safe_dump(DEFAULTS, sort_keys=False)
    assert text.count("\n  lr: 0.01\n") == 1
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("\n  lr: 0.01\n", "\n  lr: 1e-3\n"))
    assert load_params(path).cnn.lr == 0.001
    path.write_text(text.replace("\n  lr: 0.01\n", "\n  lr: .inf\n"))
    with pytest.raises(ParamsError, match="cnn.lr: inf is not allowed"):
        load_params(path)
    path.write_text(text.replace("\n  lr: 0.01\n", "\n  lr: 0.01\n  lr: 0.02\n"))
    with pytest.raises(ParamsError, match="not valid YAML: .*duplicate key"):
        load_params(path)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        # The bound that is crossed, and its reason where the field gives one.
        ("cnn", "batch_size", 0, "cnn.batch_size: 0 is not allowed; it must be at least 1"),
        ("cnn", "seed", 2**63, f"cnn.seed: {2**63} is not allowed; it must be less than 2**63"),
        ("cnn", "lr", 0, "cnn.lr: 0 is not allowed; it must be greater than 0"),
        (
            "kmeans",
            "n_clusters",
            [10, 5],
            "kmeans.n_clusters: 5 is not allowed; it must be at least 10 (one per class)",
        ),
        (
            "kmeans",
            "n_clusters",
            None,
            "kmeans.n_clusters: [] is not allowed; it must be a non-empty list",
        ),
        (
            "compute",
            "device",
            "gpu",
            "compute.device: 'gpu' is not allowed; it must be one of 'auto', 'cpu', 'cuda' "
            "or 'mps'",
        ),
        ("data", "dataset", 3, "data.dataset: expected str, got int 3"),
    ],
)
def test_messages_read_in_full(section, key, value, message):
    with pytest.raises(ParamsError) as caught:
        parse_params(with_change(section, key, value))
    assert str(caught.value) == message


def test_a_misspelt_key_is_named_before_the_one_it_stands_for():
    raw = with_change("cnn", "learning_rate", 0.1)
    del raw["cnn"]["lr"]
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    assert str(caught.value) == (
        "unknown key cnn.learning_rate; known keys here: seed, epochs, batch_size, "
        "test_batch_size, lr, momentum, log_interval"
    )


def test_the_first_section_with_a_problem_is_named():
    raw = with_change("kmeans", "n_init", 0)
    raw["data"]["verify"] = "yes"
    with pytest.raises(ParamsError, match="^data.verify: expected bool"):
        parse_params(raw)


def test_params_made_in_python_are_checked_too():
    # The stages' own objects: a test or a script that builds one gets the same bounds.
    made = parse_params(DEFAULTS).cnn
    assert CnnParams(**dataclasses.asdict(made)) == made
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        dataclasses.replace(made, epochs=0)
