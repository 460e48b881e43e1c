"""Dataset registry: CIFAR through torchvision's real reader, digits, synthetic, tiny subsets."""

import pickle

import numpy as np
import pytest

from benchmarks import LTBenchError
from benchmarks.data.datasets import DATASETS, DatasetRequest, build_dataset


def write_cifar10_folder(root, per_class_train=30, per_class_test=5):
    """A small CIFAR-10 folder in torchvision's pickle layout (5 train batches, test, meta)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    train_labels = rng.permutation(np.repeat(np.arange(10), per_class_train))
    test_labels = np.repeat(np.arange(10), per_class_test)

    def dump(name, labels):
        data = rng.randint(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist()}, f)
        return data

    chunks = np.array_split(np.arange(len(train_labels)), 5)
    train_data = [dump(f"data_batch_{i + 1}", train_labels[c]) for i, c in enumerate(chunks)]
    dump("test_batch", test_labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return train_labels, np.concatenate(train_data)


def test_cifar10_reads_torchvision_layout_and_builds_the_lt_subset(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    labels, flat = write_cifar10_folder(tmp_path)
    # Only the md5 check of the real archive is bypassed: our files cannot have its checksums.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    data = build_dataset("cifar10", DatasetRequest(imb_factor=10, data_root=tmp_path))
    assert data.class_counts.tolist() == [30, 23, 17, 13, 10, 8, 6, 5, 3, 3]
    assert data.train_images.shape == (sum(data.class_counts), 32, 32, 3)
    assert data.test_images.shape == (50, 32, 32, 3)
    # the first selected image is the protocol's first pick of class 0, decoded as HWC
    np.random.seed(0)
    idx = np.where(labels == 0)[0]
    np.random.shuffle(idx)
    expected = flat[idx[0]].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(data.train_images[0], expected)


def test_missing_cifar_root_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(LTBenchError, match="--download"):
        DATASETS.get("cifar100").check(DatasetRequest(imb_factor=100, data_root=tmp_path / "nowhere"))
    with pytest.raises(LTBenchError, match="--download"):
        build_dataset("cifar10", DatasetRequest(imb_factor=100, data_root=tmp_path))


def test_corrupt_cifar_folder_fails_in_the_check_with_a_clear_error(tmp_path):
    """torchvision's md5 test fails on these files: the preflight check says so, naming --download
    (not torchvision's `download=True`)."""
    write_cifar10_folder(tmp_path)
    with pytest.raises(LTBenchError, match="incomplete or corrupt.*--download"):
        DATASETS.get("cifar10").check(DatasetRequest(imb_factor=100, data_root=tmp_path))


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(LTBenchError, match="downloading cifar100 into .* failed .*Name or service"):
        DATASETS.get("cifar100").check(DatasetRequest(imb_factor=100, data_root=tmp_path, download=True))


def test_unknown_dataset_lists_known_names():
    with pytest.raises(LTBenchError, match="known: .*cifar10.*digits"):
        DATASETS.get("mnist")


def test_digits_is_long_tailed_with_balanced_test_split():
    data = build_dataset("digits", DatasetRequest(imb_factor=100))
    counts = data.class_counts
    assert counts[0] / counts[-1] == pytest.approx(124, rel=0.01)
    assert list(counts) == sorted(counts, reverse=True)
    assert np.bincount(data.test_labels).tolist() == [50] * 10
    assert data.train_images.shape[1:] == (32, 32, 3) and data.train_images.dtype == np.uint8
    # train and test never share an image
    train = {img.tobytes() for img in data.train_images}
    assert sum(img.tobytes() in train for img in data.test_images) < 5  # digits has a few exact duplicates


def test_synthetic_has_real_cifar_counts_and_tiny_caps():
    data = build_dataset("synthetic", DatasetRequest(imb_factor=100))
    assert data.class_counts.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    tiny = build_dataset("synthetic", DatasetRequest(imb_factor=100, train_cap_per_class=20, test_cap_per_class=3))
    assert tiny.class_counts.tolist() == [20] * 10
    assert len(tiny.test_labels) == 30
