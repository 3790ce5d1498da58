"""End-to-end: the real `dvc` commands on a project copy, tiny data from a local HTTP server."""

from __future__ import annotations

import csv
import json
import platform
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import yaml

from mnist_pipeline.environment import cpu_model
from mnist_pipeline.kmeans import load_model
from tests.helpers import (
    TINY_PARAMS,
    changed_stages,
    commit_all,
    dvc,
    git,
    lock_md5s,
    lock_stages,
    make_repo,
    output_files,
    ran_stages,
    rewritten_stages,
    set_params,
)

pytestmark = pytest.mark.slow

ALL_STAGES = {
    "download",
    "preprocess",
    "train_cnn",
    "evaluate_cnn",
    "kmeans_sweep",
    "kmeans_test",
    "plot_centroids",
    "demo_page",
}
# The demo page holds both models: it follows either.
KMEANS_STAGES = {"kmeans_sweep", "kmeans_test", "plot_centroids", "demo_page"}
CNN_STAGES = {"train_cnn", "evaluate_cnn", "demo_page"}


def test_first_repro_runs_every_stage(reproduced_repo):
    # A fresh repo with a cache of its own: every stage dvc.lock records was run.
    assert set(lock_stages(reproduced_repo)) == ALL_STAGES | {"environment"}
    assert changed_stages(reproduced_repo) == {}


def read_csv(path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file, delimiter="\t" if str(path).endswith(".tsv") else ","))


def test_outputs_hold_sensible_results(reproduced_repo):
    cnn = json.loads((reproduced_repo / "metrics/cnn.json").read_text())
    # Only the headline numbers: per-class results are plot data.
    assert list(cnn) == ["test_accuracy", "test_loss"]
    # Ten well-separated classes: far above the 10% of guessing after two epochs.
    assert cnn["test_accuracy"] > 0.5
    per_class = read_csv(reproduced_repo / "plots/cnn/per_class.csv")
    assert [row["class"] for row in per_class] == [str(d) for d in range(10)]
    # 20 test images per class: the mean of the per-class accuracies is the accuracy.
    mean = sum(float(row["accuracy"]) for row in per_class) / 10
    assert abs(mean - cnn["test_accuracy"]) < 1e-6

    sweep = read_csv(reproduced_repo / "plots/kmeans/sweep.csv")
    assert [row["n_clusters"] for row in sweep] == ["10", "16"]
    assert float(sweep[1]["inertia"]) < float(sweep[0]["inertia"])
    assert all(0 <= float(row["homogeneity"]) <= 1 for row in sweep)

    test = json.loads((reproduced_repo / "metrics/kmeans.json").read_text())
    assert list(test) == ["kmeans_accuracy"]
    assert test["kmeans_accuracy"] > 0.5

    live = reproduced_repo / "dvclive"
    train_loss = read_csv(live / "plots/metrics/train/loss.tsv")
    # 600 images / batch 64 = 10 batches per epoch, logged every 2 batches, 2 epochs.
    assert [int(row["step"]) for row in train_loss] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    accuracy = read_csv(live / "plots/metrics/test/accuracy.tsv")
    assert [int(row["step"]) for row in accuracy] == [1, 2]  # one row per epoch
    assert float(accuracy[-1]["accuracy"]) == cnn["test_accuracy"]
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == 2 and summary["test"]["accuracy"] == cnn["test_accuracy"]

    confusion = (reproduced_repo / "plots/cnn/confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 201
    for image in (
        "data/first_images.png",
        "cnn/examples.png",
        "cnn/misclassified.png",
        "kmeans/centroids.png",
    ):
        assert (reproduced_repo / "plots" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_repro_runs_nothing(repo_copy, mirror_env):
    lock, files = lock_stages(repo_copy), output_files(repo_copy)
    dvc(repo_copy, "repro", env=mirror_env)
    assert lock_stages(repo_copy) == lock
    assert rewritten_stages(files, output_files(repo_copy)) == set()
    assert changed_stages(repo_copy) == {}


def accelerator() -> bool:
    """Whether device auto trains anywhere but on the CPU here (CUDA, or Apple's GPU)."""
    return torch.cuda.is_available() or torch.backends.mps.is_available()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # 100 clusters kept: the model, so everything made from it, changes.
        ({"kmeans": {"n_clusters": [16, 100, 10], "test_clusters": 100}}, KMEANS_STAGES),
        ({"cnn": {"lr": 0.02}}, CNN_STAGES),
        # Threads change the last digits, and the models record them: every stage that
        # computes with them re-runs, and so does everything made from their models.
        ({"compute": {"threads": 2}}, CNN_STAGES | KMEANS_STAGES),
        # Only where the CNN trains; on the CPU, auto trains the same model byte for byte,
        # and nothing made from it runs again.
        (
            {"compute": {"device": "auto"}},
            CNN_STAGES if accelerator() else {"train_cnn"},
        ),
    ],
    ids=["kmeans-param", "cnn-param", "threads", "device"],
)
def test_param_change_reruns_only_its_stages(repo_copy, mirror_env, changes, expected):
    set_params(repo_copy, changes)
    status = changed_stages(repo_copy)
    followers = {"plot_centroids", "demo_page"}
    if "threads" not in changes.get("compute", {}):
        followers |= {"kmeans_test", "evaluate_cnn"}
    assert set(status) == expected - followers
    lock, files = lock_stages(repo_copy), output_files(repo_copy)
    dvc(repo_copy, "repro", env=mirror_env)
    assert rewritten_stages(files, output_files(repo_copy)) == expected
    assert {s for s, entry in lock_stages(repo_copy).items() if entry != lock[s]} == expected
    # The sweep lists its cluster counts in numeric order, whatever order params give.
    sweep = read_csv(repo_copy / "plots/kmeans/sweep.csv")
    counts = changes.get("kmeans", {}).get("n_clusters", TINY_PARAMS["kmeans"]["n_clusters"])
    assert [int(row["n_clusters"]) for row in sweep] == sorted(counts)


def test_forced_repro_gives_identical_outputs(reproduced_repo, repo_copy, mirror_env):
    before, files = lock_md5s(reproduced_repo), output_files(repo_copy)
    dvc(repo_copy, "repro", "--force", env=mirror_env)
    assert rewritten_stages(files, output_files(repo_copy)) == ALL_STAGES
    after = lock_md5s(repo_copy)
    assert after == before
    wanted = {"models/cnn.pt", "models/kmeans.npz", "dvclive/plots"}
    assert wanted <= set(before)
    for path in ("metrics/cnn.json", "metrics/kmeans.json", "dvclive/metrics.json"):
        assert (repo_copy / path).read_bytes() == (reproduced_repo / path).read_bytes()


def test_plots_show_renders_every_declared_plot(repo_copy):
    plots = json.loads(dvc(repo_copy, "plots", "show", "--json").stdout)["data"]
    declared = yaml.safe_load((repo_copy / "dvc.yaml").read_text())["plots"]
    for entry in declared:
        name = next(iter(entry)) if isinstance(entry, dict) else entry
        (rendered,) = plots[name]
        if rendered["type"] == "image":
            assert Path(rendered["url"]).read_bytes()[:4] == b"\x89PNG"
            continue
        spec = entry[name]
        content = rendered["content"]
        assert content["data"]["values"], f"plot {name} has no data"
        title = content["title"]
        assert (title["text"] if isinstance(title, dict) else title) == spec["title"]


def test_bad_params_stop_the_stage_naming_the_key(repo_copy, mirror_env):
    set_params(repo_copy, {"cnn": {"lr": -0.1}})
    result = dvc(repo_copy, "repro", env=mirror_env, check=False)
    assert result.returncode != 0
    assert "cnn.lr" in result.stdout + result.stderr


def test_all_mirrors_failing_leaves_no_output(tmp_path, mirror_env):
    repo = make_repo(tmp_path / "repo")
    set_params(repo, {"data": {"mirrors": ["http://127.0.0.1:9/"]}})
    result = dvc(
        repo, "repro", "download", env={"DATA_MIRROR": str(tmp_path / "nothing")}, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "http://127.0.0.1:9/" in output and "does not exist" in output
    assert "DATA_MIRROR" in output
    # No data/raw, and no temporary folder beside where it would be.
    assert list(repo.glob("data/**/*")) == []


def test_returning_to_earlier_params_restores_every_stage_from_the_run_cache(
    reproduced_repo, repo_copy, mirror_env
):
    shown = json.loads(dvc(repo_copy, "metrics", "show", "--json").stdout)
    assert shown, "dvc metrics show found no metrics"
    commit_all(repo_copy, "baseline results")
    original = yaml.safe_load((repo_copy / "params.yaml").read_text())
    set_params(repo_copy, {"cnn": {"lr": 0.02}, "kmeans": {"max_iter": 7}})
    files = output_files(repo_copy)
    dvc(repo_copy, "repro", env=mirror_env)
    assert rewritten_stages(files, output_files(repo_copy)) == CNN_STAGES | KMEANS_STAGES
    diff = json.loads(dvc(repo_copy, "metrics", "diff", "--json").stdout)
    changed = diff["metrics/cnn.json"]["test_loss"]
    assert changed["new"] != changed["old"]

    (repo_copy / "params.yaml").write_text(yaml.safe_dump(original, sort_keys=False))
    result = dvc(repo_copy, "repro", env=mirror_env)
    assert ran_stages(result.stdout) == set(), result.stdout
    # DVC says a stage came from the run-cache in this log line only.
    restored = {line.split("'")[1] for line in result.stdout.splitlines() if "is cached" in line}
    assert restored == CNN_STAGES | KMEANS_STAGES, result.stdout
    assert lock_md5s(repo_copy) == lock_md5s(reproduced_repo)
    for path in ("metrics/cnn.json", "metrics/kmeans.json", "plots/kmeans/sweep.csv"):
        assert (repo_copy / path).read_bytes() == (reproduced_repo / path).read_bytes()
    assert json.loads(dvc(repo_copy, "metrics", "diff", "--json").stdout) == {}


def test_both_models_are_registry_artifacts(repo_copy, tmp_path):
    commit_all(repo_copy, "results")
    for name, path in (("cnn", "models/cnn.pt"), ("kmeans", "models/kmeans.npz")):
        # A version is registered with an annotated git tag, as `gto register` makes.
        git(repo_copy, "tag", "-a", f"{name}@v1.0.0", "-m", f"Register {name} v1.0.0")
        dvc(tmp_path, "artifacts", "get", str(repo_copy), name, "-o", str(tmp_path / name))
        assert (tmp_path / name).read_bytes() == (repo_copy / path).read_bytes()
    spec = yaml.safe_load((repo_copy / "dvc.yaml").read_text())["artifacts"]
    assert {artifact["type"] for artifact in spec.values()} == {"model"}


def test_tables_lead_with_the_headline_metrics(repo_copy):
    shown = dvc(repo_copy, "metrics", "show").stdout.splitlines()
    assert shown and max(len(line) for line in shown) <= 120, shown
    header, workspace = dvc(repo_copy, "exp", "show", "--csv").stdout.splitlines()[:2]
    header = header.split(",")
    first = header.index("parent") + 1  # the first column after the experiment's own
    assert header[first] == "test_accuracy", header  # a name only metrics/cnn.json has
    cnn = json.loads((repo_copy / "metrics/cnn.json").read_text())
    assert float(workspace.split(",")[first]) == cnn["test_accuracy"]
    assert "kmeans_accuracy" in header


def test_results_say_what_made_them(reproduced_repo):
    """Package versions, CPU and threads, beside the metrics and in the models."""
    cnn = json.loads((reproduced_repo / "made_with/evaluate_cnn.json").read_text())
    kmeans = json.loads((reproduced_repo / "made_with/kmeans_test.json").read_text())
    assert set(cnn) == {"train", "evaluate"} and set(kmeans) == {"fit", "test"}
    machine = {"cpu": cpu_model()}
    python = ".".join(platform.python_version_tuple()[:2])  # as the lock pins it
    for record in (cnn["train"], cnn["evaluate"]):
        assert record == {
            **machine,
            "threads": 1,  # compute.threads of the tests' params
            "device": "cpu",
            "python": python,
            "torch": version("torch"),
            "numpy": version("numpy"),
        }
    for record in (kmeans["fit"], kmeans["test"]):
        assert {k: record[k] for k in ("cpu", "threads", "python", "scikit-learn", "scipy")} == {
            "python": python,
            **machine,
            "threads": 1,
            "scikit-learn": version("scikit-learn"),
            "scipy": version("scipy"),
        }
    # The models carry their own record: a copied model file still says what made it.
    trained = torch.load(reproduced_repo / "models/cnn.pt", weights_only=True)["made_with"]
    assert trained == cnn["train"]
    assert load_model(reproduced_repo / "models/kmeans.npz").made_with == kmeans["fit"]
