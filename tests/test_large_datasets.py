"""ImageNet-LT / iNaturalist 2018: split-file readers, lazy images, natural IFs, 224 views,
torchvision backbones, the large-dataset recipes and grids, and a CLI run on a tiny file tree."""

import json
import math
import random

import numpy as np
import pytest
import torch
import yaml

import run_benchmark
from _tiny_data import TEST_COUNTS, TRAIN_COUNTS, make_imagenet_lt_tree, register_tiny_backbone, write_image
from benchmarks import LTBenchError
from benchmarks.config import resolve_config
from benchmarks.data.datasets import DATASETS, DatasetRequest, build_dataset
from benchmarks.data.datasets.large import FileImages, read_text_list
from benchmarks.train.methods import build_method
from benchmarks.train.schedules import learning_rate
from benchmarks.train.methods import METHODS
from benchmarks.data.views.large import (
    LARGE_VIEW_NAMES, RANDAUG_OPS, TimmRandAugment, check_views_config, large_reference_transform,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    data_root = tmp_path_factory.mktemp("data")
    make_imagenet_lt_tree(data_root)
    return data_root


def request(data_root, **kw):
    return DatasetRequest(imb_factor=kw.pop("imb_factor", 256), data_root=data_root, **kw)


# -- datasets -----------------------------------------------------------------------------------

def test_imagenet_lt_from_split_files_is_lazy_and_counts_come_from_the_training_list(tree):
    data = build_dataset("imagenet_lt", request(tree))
    assert data.file_based and isinstance(data.train_images, FileImages)
    assert data.num_classes == 3
    assert data.class_counts.tolist() == list(TRAIN_COUNTS)
    assert np.bincount(data.test_labels).tolist() == list(TEST_COUNTS)
    image = data.train_images[0]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert data.train_images[1].shape[:2] == (32, 40)  # any size: no resizing at read time
    assert (data.mean, data.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert data.info["published_classes"] == 1000 and data.info["imb_factor_measured"] == 5.0
    capped = build_dataset("imagenet_lt", request(tree, train_cap_per_class=2, test_cap_per_class=1))
    assert isinstance(capped.train_images, FileImages)
    assert capped.class_counts.tolist() == [2, 2, 1] and len(capped.test_labels) == 3


def test_natural_imbalance_factor_only(tree):
    with pytest.raises(LTBenchError, match="only imbalance factor is 256"):
        DATASETS.get("imagenet_lt").check(request(tree, imb_factor=100))
    with pytest.raises(LTBenchError, match="only imbalance factor is 500"):
        DATASETS.get("inat2018").check(request(tree, imb_factor=256))


def test_missing_root_and_split_files_say_what_where_and_where_from(tmp_path, tree):
    with pytest.raises(LTBenchError, match=r"image folder .*imagenet_lt/ not found.*OLTR"):
        DATASETS.get("imagenet_lt").check(request(tmp_path))
    (tmp_path / "imagenet_lt").mkdir()
    with pytest.raises(LTBenchError, match=r"no training split file in .*imagenet_lt/.*ImageNet_LT_train\.txt.*OLTR"):
        DATASETS.get("imagenet_lt").check(request(tmp_path))
    with pytest.raises(LTBenchError, match=r"no training split file in .*elsewhere/ \(--split-dir\)"):
        DATASETS.get("imagenet_lt").check(request(tree, split_dir=tmp_path / "elsewhere"))


def test_split_dir_and_inat_json_lists(tmp_path):
    # iNaturalist's own JSON annotation files, in a separate --split-dir
    root = tmp_path / "data" / "inat2018"
    images, annotations = [], []
    for i, (cls, n) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (2, 0)]):
        rel = f"train_val2018/Plantae/{cls}/{n}.jpg"
        write_image(root / rel, 50 * cls, seed=i)
        images.append({"id": 100 + i, "file_name": rel})
        annotations.append({"id": i, "image_id": 100 + i, "category_id": cls})
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train2018.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    (splits / "val2018.json").write_text(json.dumps({"images": images[:3], "annotations": annotations[:3]}))
    data = build_dataset("inat2018", DatasetRequest(imb_factor=500, data_root=tmp_path / "data", split_dir=splits))
    assert data.class_counts.tolist() == [3, 1, 1] and len(data.test_labels) == 3
    assert data.mean == (0.466, 0.471, 0.380) and data.info["test_split"] == "validation"
    assert data.test_images[2].shape == (32, 32, 3)


def test_text_list_errors(tmp_path):
    bad = tmp_path / "list.txt"
    bad.write_text("train/a.jpg 0\nno_label_here\n")
    with pytest.raises(LTBenchError, match=r"list\.txt:2: expected 'relative/path label'"):
        read_text_list(bad)
    good = tmp_path / "good.txt"
    good.write_text("train/my image.jpg 3\n\n")
    assert read_text_list(good) == (["train/my image.jpg"], [3])


# -- views --------------------------------------------------------------------------------------

def test_224_views_take_any_image_size(tree):
    data = build_dataset("imagenet_lt", request(tree))
    torch.manual_seed(0)
    random.seed(0)
    for name in LARGE_VIEW_NAMES:
        out = large_reference_transform(name, data.mean, data.std)(data.train_images[1])  # 32x40
        assert out.shape == (3, 224, 224) and out.dtype == torch.float32, name
    a = large_reference_transform("test224", data.mean, data.std)(data.test_images[0])
    b = large_reference_transform("test224", data.mean, data.std)(data.test_images.open(0))
    assert torch.equal(a, b)  # deterministic, and arrays and PIL images give the same tensor


def test_timm_style_randaugment():
    from PIL import Image

    img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (30, 40, 3)).astype(np.uint8))
    for name, op in RANDAUG_OPS.items():
        for level in (0.0, 5.0, 10.0):
            assert op(img, level, Image.BILINEAR).size == img.size, name
    never = TimmRandAugment(prob=0.0)
    assert np.array_equal(np.asarray(never(img)), np.asarray(img))
    random.seed(3)
    first = np.asarray(TimmRandAugment()(img))
    random.seed(3)
    assert np.array_equal(first, np.asarray(TimmRandAugment()(img)))  # Python's `random` only


def test_views_config_checks():
    check_views_config({"views": ["simclr224", "simclr224"], "test_view": "test224"})
    check_views_config({"views": [], "test_view": "test"})
    with pytest.raises(LTBenchError, match="unknown view 'simclr999'"):
        check_views_config({"views": ["simclr999"], "test_view": "test224"})
    with pytest.raises(LTBenchError, match="does not fit test_view"):
        check_views_config({"views": ["autoaug_cutout", "simclr"], "test_view": "test224", "method": "bccl",
                            "dataset": "x"})
    with pytest.raises(LTBenchError, match="the method takes 2 views"):
        check_views_config({"views": ["simclr224"], "test_view": "test224", "method": "bccl", "dataset": "x"},
                           METHODS.get("bccl").views)


# -- backbones, recipes, grids ------------------------------------------------------------------

def test_torchvision_backbones_keep_the_release_key_names():
    from benchmarks.train.models import build_backbone

    net = build_backbone("resnet50")
    keys = list(net.state_dict())
    assert net.out_dim == 2048 and keys[:2] == ["conv1.weight", "bn1.weight"]
    assert "layer1.0.conv1.weight" in keys and "layer1.0.downsample.0.weight" in keys
    assert not any(k.startswith("fc.") for k in keys)
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 2048)
    resnext = build_backbone("resnext50_32x4d")
    assert resnext.out_dim == 2048 and resnext.layer1[0].conv2.groups == 32


@pytest.mark.parametrize("dataset", ["imagenet_lt", "inat2018"])
def test_large_recipes(dataset):
    imb = {"imagenet_lt": 256, "inat2018": 500}[dataset]
    bccl = resolve_config("bccl", dataset, imb)
    assert (bccl["backbone"], bccl["epochs"], bccl["temperature"], bccl["lr"], bccl["weight_decay"],
            bccl["batch_size"], bccl["head_hidden_dim"], bccl["proj_dim"]) == ("resnet50", 100, 0.07, 0.1, 5e-4, 128,
                                                                              2048, 2048)
    assert bccl["views"] == ["simclr224", "simclr224"] and bccl["test_view"] == "test224" and bccl["sync_bn"]
    bcl = resolve_config("bcl", dataset, imb)
    assert (bcl["lambda_la"], bcl["mu_bcl"], bcl["temperature"], bcl["proj_dim"], bcl["proj_hidden_dim"]) == (
        1.0, 0.35, 0.07, 1024, 2048)
    assert bcl["views"][0] == "rrc224_randaug" and bcl["epochs"] == (90 if dataset == "imagenet_lt" else 100)
    paco = resolve_config("paco", dataset, imb)
    assert (paco["epochs"], paco["lr"], paco["alpha"], paco["temperature"], paco["queue_size"], paco["proj_dim"]) == (
        400, 0.02, 0.05, 0.2, 8192, 128)
    assert paco["views"] == ["rrc224_randaug", "paco_sim224"]
    assert paco["weight_decay"] == (5e-4 if dataset == "imagenet_lt" else 1e-4)
    ce = resolve_config("ce", dataset, imb)
    assert (ce["epochs"], ce["batch_size"], ce["lr"], ce["lr_schedule"]) == (90, 512, 0.2, "cosine_stepped_first")
    assert learning_rate(0, ce) == pytest.approx(0.1 * (1 + math.cos(math.pi / 90))) and learning_rate(44, ce) == pytest.approx(0.1)


def test_heads_follow_the_options():
    register_tiny_backbone()
    counts = torch.tensor([5, 3, 1])
    bccl = build_method(resolve_config("bccl", "imagenet_lt", 256, overrides={"backbone": "tiny_cnn"}), 3, counts)
    assert bccl.head[0].weight.shape == (2048, 8) and bccl.head[3].weight.shape == (2048, 2048)
    assert bccl.queues.features.shape[-1] == 2048 and bccl.view_names() == ("simclr224", "simclr224")
    cifar = build_method(resolve_config("bccl", "cifar10", 100), 10, torch.ones(10, dtype=torch.long))
    assert cifar.head[0].weight.shape == (512, 64) and cifar.head[3].weight.shape == (128, 512)
    bcl = build_method(resolve_config("bcl", "imagenet_lt", 256, overrides={"backbone": "tiny_cnn"}), 3, counts)
    assert bcl.head[3].weight.shape == (1024, 2048) and bcl.head_prototype[3].weight.shape == (1024, 2048)
    assert bcl.view_names() == ("rrc224_randaug", "simclr224", "simclr224")


def test_grids_dry_run(capsys, tmp_path):
    for grid, folder in (("imagenet", "imagenet_lt/if256/paco/seed0"), ("inat", "inat2018/if500/bccl/seed0")):
        assert run_benchmark.main(["--grid", grid, "--dry-run", "--results-dir", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "8 runs" in out and str(tmp_path / folder) in out  # every method with a recipe there
        assert "no recipe: ldam_drw on " in out and "no recipe: balanced_softmax on " in out


# -- the command line on the tiny tree ----------------------------------------------------------

def test_cli_trains_on_the_tiny_tree_with_split_dir(tmp_path, capsys):
    register_tiny_backbone()
    splits = tmp_path / "splits"
    make_imagenet_lt_tree(tmp_path / "data", split_dir=splits)
    results = tmp_path / "results"
    base = ["--grid", "imagenet", "--methods", "ce", "--data-root", str(tmp_path / "data"), "--results-dir",
            str(results), "--no-progress"]
    # wrong IF: one error line, nothing written
    assert run_benchmark.main(base + ["--split-dir", str(splits), "--imb-factors", "100"]) == 2
    assert "only imbalance factor is 256" in capsys.readouterr().err and not results.exists()
    # split files not in the default place: a clear error before anything is written
    assert run_benchmark.main(base) == 2
    assert "ImageNet_LT_train.txt" in capsys.readouterr().err and not results.exists()
    args = base + ["--split-dir", str(splits), "--epochs", "1",
                   "--set", "backbone=tiny_cnn", "batch_size=4", "num_workers=0", "pipeline=auto",
                   "select_on=test"]  # the tiny tree has no ImageNet_LT_val.txt (the recipe selects on val)
    assert run_benchmark.main(args) == 0, capsys.readouterr()
    folder, = (results / "imagenet_lt" / "if256").glob("ce@*/seed0")  # a variant of the recipe (--epochs, --set)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["test_images"] == sum(TEST_COUNTS) and metrics["class_counts"] == list(TRAIN_COUNTS)
    assert len(metrics["last"]["per_class"]) == 3 and metrics["last"]["few"] is not None
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["views"] == ["rrc224_jitter"] and config["test_view"] == "test224"
    assert json.loads((folder / "env.json").read_text())["pipeline"] == "reference"


# -- model selection on the validation split (select_on: val) ---------------------------------

def _val_split(data_root):
    """ImageNet_LT_val.txt next to the training list: 2 fresh images per class."""
    root = data_root / "imagenet_lt"
    lines = []
    for cls in range(3):
        for i in range(2):
            rel = f"val/n0000{cls}/img_valsplit_{cls}_{i}.png"
            write_image(root / rel, 60 * cls + 40, seed=7000 + 10 * cls + i)
            lines.append(f"{rel} {cls}")
    (root / "ImageNet_LT_val.txt").write_text("\n".join(lines) + "\n")


def test_select_on_val_chooses_the_best_validation_epoch_and_reports_its_test_accuracy(tmp_path):
    """BCL's ImageNet-LT release keeps the epoch best on ImageNet_LT_val and tests it once: `best`
    is that epoch with its *test* metrics, `best_on_test` the (biased) best test epoch besides."""
    import pandas as pd
    import torch

    from benchmarks.train.training import Trainer

    register_tiny_backbone()
    make_imagenet_lt_tree(tmp_path)
    with pytest.raises(LTBenchError, match="validation"):  # asked for, but no ImageNet_LT_val.txt yet
        DATASETS.get("imagenet_lt").check(request(tmp_path, need_val=True))
    _val_split(tmp_path)
    DATASETS.get("imagenet_lt").check(request(tmp_path, need_val=True))
    data = build_dataset("imagenet_lt", request(tmp_path, need_val=True))
    assert np.bincount(data.val_labels).tolist() == [2, 2, 2] and isinstance(data.val_images, FileImages)
    assert resolve_config("bcl", "imagenet_lt", 256)["select_on"] == "val"  # the release's selection
    assert resolve_config("bcl", "cifar100")["select_on"] == "test"  # the CIFAR releases select on test
    with pytest.raises(LTBenchError, match="no validation split"):
        resolve_config("ce", "cifar10", overrides={"select_on": "val"})

    config = resolve_config("ce", "imagenet_lt", 256, 0, overrides={
        "backbone": "tiny_cnn", "batch_size": 4, "num_workers": 0, "eval_batch_size": 8, "epochs": 3,
        "select_on": "val"})
    trainer = Trainer(config, data, tmp_path / "run", torch.device("cpu"), progress=False)
    metrics = trainer.run()
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    chosen = int(np.argmax(history["val_top1"].to_numpy()))  # the first maximum, as `>` keeps it
    assert metrics["best"]["epoch"] == chosen and metrics["best"]["top1"] == pytest.approx(history["top1"][chosen])
    assert metrics["selection"] == {"split": "val", "val_top1": pytest.approx(history["val_top1"][chosen])}
    assert metrics["best_on_test"]["epoch"] == int(np.argmax(history["top1"].to_numpy()))

    # The rule on a sequence where the two choices differ (test top-1, validation top-1 per epoch).
    test_metrics, outputs = trainer.evaluate()
    trainer.best = trainer.best_on_test = None
    for epoch, (test, val) in enumerate([(50.0, 60.0), (70.0, 55.0), (60.0, 80.0), (65.0, 80.0)]):
        trainer.record_epoch({**test_metrics, "top1": test}, outputs, epoch, val_top1=val)
    assert (trainer.best["epoch"], trainer.best["top1"], trainer.best["val_top1"]) == (2, 60.0, 80.0)
    assert (trainer.best_on_test["epoch"], trainer.best_on_test["top1"]) == (1, 70.0)
