"""A method recipe may start from another's (`base: ce` in its YAML): merged, then overridden;
an unknown base and a cycle are refused with errors that name the files."""

import shutil

import pytest

import benchmarks.config as config_module
from benchmarks import CONFIG_DIR, LTBenchError
from benchmarks.config import method_yaml, recipe_status, release_precision, resolve_config


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """A copy of configs/ that the test may edit, in place of the project's."""
    root = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, root)
    monkeypatch.setattr(config_module, "CONFIG_DIR", root)
    return root


# ce_drw's recipe is ce's with three re-weighting keys and its release's linear init: stated as such.
CE_DRW_FROM_CE = """
base: ce
recipe:
  linear_init: kaiming
  momentum: 0.9
  reweight: class_balanced
  reweight_beta: 0.9999
  reweight_epoch: 160
datasets:
  imagenet_lt: null
  inat2018: null
"""


def test_a_recipe_from_a_base_resolves_like_the_full_copy(configs):
    expected = {d: resolve_config("ce_drw", d, 100) for d in ("cifar10", "cifar100", "digits")}
    (configs / "methods" / "ce_drw.yaml").write_text(CE_DRW_FROM_CE)
    for dataset, config in expected.items():
        assert resolve_config("ce_drw", dataset, 100) == config


def test_the_child_overrides_one_key_of_a_base_dataset_section(configs):
    (configs / "methods" / "ce_drw.yaml").write_text("base: ce\ndatasets:\n  imagenet_lt:\n    lr: 0.3\n"
                                                       "release_precision: bf16\nrecipe_status:\n  cifar10: reconstructed\n")
    merged = method_yaml("ce_drw")
    ce = method_yaml("ce")
    assert merged["datasets"]["imagenet_lt"] == {**ce["datasets"]["imagenet_lt"], "lr": 0.3}
    assert merged["datasets"]["inat2018"] == ce["datasets"]["inat2018"]
    assert merged["recipe"] == ce["recipe"] and "base" not in merged
    assert release_precision("ce_drw") == "bf16" and release_precision("ce") == "fp32"
    assert recipe_status("ce_drw", "cifar10") == "reconstructed" and recipe_status("ce", "cifar10") == "release"
    assert method_yaml("ce") == ce  # the base's own file is not changed by the merge


def test_a_base_of_a_base_is_followed(configs):
    # cb_focal -> focal -> ce (cb_focal's class reads focal_gamma, which focal's file gives)
    (configs / "methods" / "focal.yaml").write_text("base: ce\noptions:\n  focal_gamma: 1.0\n")
    (configs / "methods" / "cb_focal.yaml").write_text("base: focal\nrecipe:\n  lr: 0.3\n")
    config = resolve_config("cb_focal", "cifar10")
    assert config["lr"] == 0.3 and config["focal_gamma"] == 1.0
    assert config["lr_steps"] == resolve_config("ce", "cifar10")["lr_steps"]  # from the base's base
    assert method_yaml("cb_focal")["options"] == {"bn_groups": 1, "focal_gamma": 1.0}  # ce's and focal's


@pytest.mark.parametrize("files, message", [
    ({"ce_drw": "base: nosuch\n"}, r"ce_drw.yaml: base 'nosuch' is not a method recipe .*known: .*ce, "),
    ({"ce_drw": "base: ce_drw\n"}, r"ce_drw.yaml: base 'ce_drw' makes a cycle \(ce_drw -> ce_drw\)"),
    ({"ce_drw": "base: focal\n", "focal": "base: ce_drw\n"},
     r"focal.yaml: base 'ce_drw' makes a cycle \(ce_drw -> focal -> ce_drw\)"),
    ({"ce_drw": "base: [ce]\n"}, r"ce_drw.yaml: base must be a method name"),
    ({"ce_drw": "base: ce\nbases: x\n"}, r"ce_drw.yaml: unknown section\(s\) \['bases'\]"),
])
def test_bad_bases_are_clear_errors(configs, files, message):
    for name, text in files.items():
        (configs / "methods" / f"{name}.yaml").write_text(text)
    with pytest.raises(LTBenchError, match=message):
        resolve_config("ce_drw", "cifar10")
