"""fashion_mnist: torchvision's reader on idx files the test writes (no download), both layouts,
the LDAM-DRW subset, the padding to 32x32x3, and clear errors for missing or corrupt files."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from benchmarks import LTBenchError
from benchmarks.data.datasets import DATASETS, DatasetRequest, build_dataset
from benchmarks.data.datasets.fashion_mnist import FMNIST_MEAN, FMNIST_STD, normalisation_constants, to_rgb32
from benchmarks.run.grid import GridOptions, plan


def _idx(array: np.ndarray) -> bytes:
    """The idx format of the original files: magic 0x0000 08 <ndim>, big-endian sizes, uint8 data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fmnist(folder: Path, per_class_train=40, per_class_test=3, compress=True):
    rng = np.random.RandomState(1)
    train_y = rng.permutation(np.repeat(np.arange(10), per_class_train))
    test_y = np.repeat(np.arange(10), per_class_test)
    train_x = rng.randint(0, 256, size=(len(train_y), 28, 28))
    test_x = rng.randint(0, 256, size=(len(test_y), 28, 28))
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                        ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        if compress:
            with gzip.open(folder / (name + ".gz"), "wb") as f:
                f.write(_idx(array))
        else:
            (folder / name).write_bytes(_idx(array))
    return train_x.astype(np.uint8), train_y, test_x.astype(np.uint8), test_y


def test_reads_a_folder_of_the_four_gz_files_and_builds_the_lt_subset(tmp_path):
    train_x, train_y, test_x, test_y = write_fmnist(tmp_path / "fm")
    data = build_dataset("fashion_mnist", DatasetRequest(imb_factor=10, data_root=tmp_path / "fm"))
    # LDAM-DRW counts with n_max = 400 / 10 = 40: int(40 * 0.1 ** (i / 9))
    assert data.class_counts.tolist() == [40, 30, 23, 18, 14, 11, 8, 6, 5, 4]
    assert data.info["n_max"] == 40
    assert data.train_images.shape == (sum(data.class_counts), 32, 32, 3)
    assert data.test_images.shape == (30, 32, 32, 3) and data.test_labels.tolist() == test_y.tolist()
    # the protocol's first pick of class 0 (numpy seed 0, shuffle of that class's indices in file order)
    np.random.seed(0)
    idx = np.where(train_y == 0)[0]
    np.random.shuffle(idx)
    first = data.train_images[0]
    assert np.array_equal(first[2:30, 2:30, 0], train_x[idx[0]])
    # 2 zero pixels on every side, the grey channel repeated to R = G = B
    assert first[:2].max() == 0 and first[30:].max() == 0 and first[:, :2].max() == 0 and first[:, 30:].max() == 0
    assert np.array_equal(first[..., 0], first[..., 1]) and np.array_equal(first[..., 0], first[..., 2])
    assert data.mean == FMNIST_MEAN and data.std == FMNIST_STD
    assert not (tmp_path / "fm" / "FashionMNIST").exists()  # nothing written under --data-root


def test_reads_torchvision_layout_uncompressed(tmp_path):
    train_x, train_y, _, _ = write_fmnist(tmp_path / "FashionMNIST" / "raw", compress=False)
    data = build_dataset("fashion_mnist", DatasetRequest(imb_factor=1, data_root=tmp_path))
    assert data.class_counts.tolist() == [40] * 10
    assert sorted(data.train_labels.tolist()) == sorted(train_y.tolist())


def test_missing_or_corrupt_files_are_one_clear_error(tmp_path):
    with pytest.raises(LTBenchError, match=r"--download.*\.gz"):
        DATASETS.get("fashion_mnist").check(DatasetRequest(imb_factor=100, data_root=tmp_path / "nowhere"))
    write_fmnist(tmp_path / "bad")
    (tmp_path / "bad" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(LTBenchError, match="cannot decompress"):
        DATASETS.get("fashion_mnist").check(DatasetRequest(imb_factor=100, data_root=tmp_path / "bad"))


def test_padding_and_normalisation_constants_by_hand():
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 0, 0] = 255
    images[1] = 51  # 0.2
    rgb = to_rgb32(images)
    assert rgb.shape == (2, 32, 32, 3) and rgb[0, 2, 2].tolist() == [255, 255, 255] and rgb[0, 1, 1, 0] == 0
    mean, std = normalisation_constants(rgb)
    values = np.concatenate([[1.0], np.zeros(1023), np.full(784, 0.2), np.zeros(240)])
    assert mean == pytest.approx(values.mean()) and std == pytest.approx(values.std())


REAL = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (REAL / "train-images-idx3-ubyte.gz").exists(), reason="Debian's dataset-fashion-mnist not installed")
def test_constants_are_those_of_the_real_padded_training_set():
    from benchmarks.data.datasets.fashion_mnist import _read

    train_x = _read(DatasetRequest(imb_factor=1, data_root=REAL))[0]
    mean, std = normalisation_constants(to_rgb32(train_x))
    assert (round(mean, 4), round(std, 4)) == (FMNIST_MEAN[0], FMNIST_STD[0])


def test_fmnist_grid_plans_every_cell_with_the_lt_protocol_ifs():
    runs = plan(GridOptions(grid="fmnist"))
    assert {r.config["imb_factor"] for r in runs} == {100, 50, 10}
    assert {r.config["dataset"] for r in runs} == {"fashion_mnist"}
    assert all(r.config["backbone"] == "resnet32" and r.config["epochs"] == 20 for r in runs)


def test_native_28_variant_keeps_the_pixels_unpadded_with_their_own_constants(tmp_path):
    from benchmarks.data.datasets.fashion_mnist import FMNIST28_MEAN, FMNIST28_STD

    train_x, train_y, test_x, _ = write_fmnist(tmp_path / "fm")
    padded = build_dataset("fashion_mnist", DatasetRequest(imb_factor=10, data_root=tmp_path / "fm"))
    native = build_dataset("fashion_mnist28", DatasetRequest(imb_factor=10, data_root=tmp_path / "fm"))
    assert native.train_images.shape == (sum(native.class_counts), 28, 28, 3)
    # the same LT subset in the same order, only without the 2-pixel border
    assert np.array_equal(native.train_labels, padded.train_labels)
    assert np.array_equal(native.train_images, padded.train_images[:, 2:30, 2:30])
    assert np.array_equal(native.test_images[..., 0], test_x)
    assert native.mean == FMNIST28_MEAN and native.std == FMNIST28_STD


@pytest.mark.skipif(not (REAL / "train-images-idx3-ubyte.gz").exists(), reason="Debian's dataset-fashion-mnist not installed")
def test_native_constants_are_those_of_the_real_training_set():
    from benchmarks.data.datasets.fashion_mnist import FMNIST28_MEAN, FMNIST28_STD, _read, to_rgb

    train_x = _read(DatasetRequest(imb_factor=1, data_root=REAL))[0]
    mean, std = normalisation_constants(to_rgb(train_x))
    assert (round(mean, 4), round(std, 4)) == (FMNIST28_MEAN[0], FMNIST28_STD[0])


def test_corrupt_idx_contents_name_the_users_folder_and_what_is_wrong(tmp_path):
    """Valid gzip archives holding no idx data: the message names the folder given (not the
    temporary copy the archives were decompressed into) and a non-empty reason."""
    write_fmnist(tmp_path / "bad")
    with gzip.open(tmp_path / "bad" / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00" * 7)  # too short for an idx header
    with pytest.raises(LTBenchError) as caught:
        build_dataset("fashion_mnist", DatasetRequest(imb_factor=10, data_root=tmp_path / "bad"))
    message = str(caught.value)
    assert str(tmp_path / "bad") in message and "ltbench-fmnist-" not in message, message
    assert "()" not in message and ": )" not in message, message
