"""Datasets declared by a YAML file alone (benchmarks/data/datasets/declared.py), on PNGs the test
writes: an image folder taken as given and a file list made long-tailed by the CIFAR protocol;
and the datasets registry finds its modules without a list."""

import importlib
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import benchmarks.config as config_module
import run_benchmark
from benchmarks import CONFIG_DIR, LTBenchError
from benchmarks.data.datasets import DATASETS, DatasetRequest, build_dataset
from benchmarks.data.datasets.declared import declared_entry, register_declared
from benchmarks.data.datasets.lt import lt_class_counts
from benchmarks.store.results import find_runs, read_metrics

TRAIN_COUNTS = {"ant": 12, "bee": 6, "cat": 3}  # already long-tailed: IF 4


def write_pngs(folder: Path, cls: int, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(cls * 100 + n)
    paths = []
    for i in range(n):
        pixels = np.clip(rng.normal(60 + 70 * cls, 20, (20, 24, 3)), 0, 255).astype(np.uint8)  # learnable: class = brightness
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
        paths.append(folder / f"{i:03d}.png")
    return paths


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "data" / "pets"
    for c, (name, n) in enumerate(TRAIN_COUNTS.items()):
        write_pngs(root / "train" / name, c, n)
        write_pngs(root / "test" / name, c, 4)
    return tmp_path / "data"


FOLDER_SOURCE = {"format": "image_folder", "train": "train", "test": "test", "image_size": 32,
                 "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "long_tail": "given"}


def test_an_image_folder_as_given(image_folder):
    entry = declared_entry("pets", Path("pets.yaml"), FOLDER_SOURCE)
    data = entry.build(DatasetRequest(imb_factor=4, data_root=image_folder))
    assert data.num_classes == 3 and data.info["classes"] == ["ant", "bee", "cat"]
    assert data.train_images.shape == (21, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert np.bincount(data.train_labels).tolist() == [12, 6, 3]
    assert np.bincount(data.test_labels).tolist() == [4, 4, 4] and data.test_images.shape == (12, 32, 32, 3)
    assert data.mean == (0.5, 0.5, 0.5) and data.std == (0.25, 0.25, 0.25)
    assert data.train_images[data.train_labels == 2].mean() > data.train_images[data.train_labels == 0].mean()
    with pytest.raises(LTBenchError, match=r"long-tailed as given .*its imbalance factor is 4 .*use --imb-factors 4"):
        entry.check(DatasetRequest(imb_factor=100, data_root=image_folder))


def test_file_lists_made_long_tailed_by_the_cifar_protocol(tmp_path):
    root = tmp_path / "data" / "lists"
    lines = []
    for c in range(4):
        for path in write_pngs(root / "images" / f"c{c}", c, 10):
            lines.append(f"{path.relative_to(root)} {c}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "test.txt").write_text("\n".join(lines[::5]) + "\n")
    source = {"format": "file_lists", "train": "train.txt", "test": "test.txt", "image_size": 16,
              "mean": "measure", "std": "measure", "long_tail": "protocol"}
    entry = declared_entry("lists", Path("lists.yaml"), source)
    data = entry.build(DatasetRequest(imb_factor=5, data_root=tmp_path / "data", subset_seed=0))
    assert np.bincount(data.train_labels).tolist() == lt_class_counts(10, 4, 5) == [10, 5, 3, 2]
    assert data.train_images.shape[1:] == (16, 16, 3) and len(data.test_labels) == 8
    pixels = data.train_images.reshape(-1, 3) / 255.0
    assert np.allclose(data.mean, pixels.mean(0)) and np.allclose(data.std, pixels.std(0))
    again = entry.build(DatasetRequest(imb_factor=5, data_root=tmp_path / "data", subset_seed=0))
    assert np.array_equal(again.train_images, data.train_images)  # the subset is the protocol's, seeded


@pytest.mark.parametrize("change, message", [
    ({"format": "folders"}, r"source.format must be one of image_folder, file_lists"),
    ({"long_tail": "yes"}, r"source.long_tail must be given .* or protocol"),
    ({"mean": [0.5, 0.5]}, r"source.mean must be three numbers in \[0, 1\]"),
    ({"std": [0.5, 0.0, 0.5]}, r"source.std must be three numbers"),
    ({"image_size": "32"}, r"source.image_size must be an integer >= 8"),
    ({"n_max": 5}, r"source.n_max .* only with long_tail: protocol"),
    ({"colour": "rgb"}, r"unknown source key\(s\) \['colour'\]"),
    ({"test": None}, r"source.test must be a path"),
])
def test_bad_declarations_are_clear_errors(change, message):
    source = {**FOLDER_SOURCE, **change}
    with pytest.raises(LTBenchError, match=message):
        declared_entry("pets", Path("pets.yaml"), source)


def test_missing_folders_are_named(tmp_path):
    entry = declared_entry("pets", Path("pets.yaml"), FOLDER_SOURCE)
    with pytest.raises(LTBenchError, match=r"dataset pets: train folder .*pets/train does not exist"):
        entry.check(DatasetRequest(imb_factor=4, data_root=tmp_path))


def test_a_yaml_file_alone_declares_a_dataset_that_a_grid_runs(image_folder, tmp_path, monkeypatch, capsys):
    """The worked example of docs/datasets.md, end to end: the file in configs/datasets/, a grid, a run."""
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    example = re.search(r"```yaml\n# configs/datasets/pets.yaml\n(.*?)```",
                        (Path(__file__).parents[1] / "docs" / "datasets.md").read_text(), re.S).group(1)
    (configs / "datasets" / "pets.yaml").write_text(example)
    monkeypatch.setattr(config_module, "CONFIG_DIR", configs)
    DATASETS.names()  # the project's datasets first
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))  # registrations end with the test
    register_declared(configs)
    assert "pets" in DATASETS.names()
    grid = tmp_path / "pets.yaml"
    grid.write_text(yaml.safe_dump({"datasets": ["pets"], "imb_factors": [4], "methods": ["ce"], "seeds": [0],
                                    "overrides": {"epochs": 1, "batch_size": 8, "warmup_epochs": 0}}))
    code = run_benchmark.main(["--grid", str(grid), "--data-root", str(image_folder), "--results-dir",
                               str(tmp_path / "results"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    [folder] = find_runs(tmp_path / "results")
    metrics = read_metrics(folder)
    assert metrics["class_counts"] == [12, 6, 3] and metrics["test_images"] == 12
    assert yaml.safe_load((folder / "config.yaml").read_text())["dataset"] == "pets"


def test_the_registry_imports_every_module_of_the_package():
    DATASETS.names()
    package = Path(importlib.import_module("benchmarks.data.datasets").__file__).parent
    for path in package.glob("*.py"):
        if path.stem != "__init__":
            assert f"benchmarks.data.datasets.{path.stem}" in sys.modules, path.name
    assert DATASETS._modules == () and DATASETS._packages == ("benchmarks.data.datasets",)
