"""Variants and sweeps: labels, folders, sweeps on the command line and in grid files, and the
folders an older version wrote (before variants existed) still skipped, resumed and reported."""

import json
import re

import pytest
import yaml

import run_benchmark
from benchmarks import LTBenchError
from benchmarks.config import resolve_config
from benchmarks.reporting.aggregate import aggregate, label_variants
from benchmarks.reporting.load import load_runs
from benchmarks.store.results import find_runs, read_status
from benchmarks.run.variants import (
    HASH_LENGTH, MAX_LABEL_LENGTH, check_variant_name, parse_sweep_arguments, sweep_points, variant_label,
    variant_name, with_variant,
)

SAFE_FOLDER_NAME = re.compile(r"[A-Za-z0-9._+=,~-]+")


def run_cli(args, capsys):
    code = run_benchmark.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# The grid these tests plan under, written into their tmp_path: known overrides (the smoke grid's
# before it was retuned), so the labels they spell out do not follow the default grid's contents.
PROMISING_GRID = {
    "datasets": ["digits"], "imb_factors": [100, 10], "methods": "all", "seeds": [0],
    "overrides": {"epochs": 3, "batch_size": 32, "warmup_epochs": 1, "test_cap_per_class": 25,
                  "memory_format": "channels_last"},
    "method_overrides": {"bccl": {"recluster_interval": 2}, "ce_drw": {"reweight_epoch": 2},
                         "ldam_drw": {"reweight_epoch": 2}},
}


def promising_grid(tmp_path) -> str:
    """The path of PROMISING_GRID as a grid file in tmp_path (for --grid or GridOptions(grid=...))."""
    path = tmp_path / "promising-grid.yaml"
    path.write_text(yaml.safe_dump(PROMISING_GRID))
    return str(path)


# -- labels ----------------------------------------------------------------------------------------
MAPPINGS = [
    {"eta": 0.0}, {"eta": 0.05}, {"eta": 0.2}, {"eta": 1e-05}, {"eta": -0.5},
    {"centroids_per_class": 1}, {"centroids_per_class": 10}, {"recluster_once_per_epoch": True},
    {"recluster_once_per_epoch": False}, {"eta": 0.0, "centroids_per_class": 3},
    {"lr_steps": [[160, 0.01], [180, 0.0001]]}, {"lr_steps": [[160, 0.01]]}, {"lr_steps": []},
    {"views": ["autoaug_cutout", "simclr"]}, {"views": ["simclr", "autoaug_cutout"]},
    {"lr_schedule": "warmup_cosine"}, {"lr_schedule": "a b"}, {"lr_schedule": "a,b=c"}, {"lr_schedule": "a/b"},
    {f"key_{i:02d}": i for i in range(20)}, {f"key_{i:02d}": i for i in range(21)},
    {f"key_{i:02d}": i + (i == 19) for i in range(20)},
]


def test_labels_are_sorted_key_value_pairs_stable_across_key_order():
    assert variant_label({"eta": 0.0}) == "eta=0.0"
    assert variant_label({"recluster_once_per_epoch": True}) == "recluster_once_per_epoch=true"
    assert variant_label({"eta": 0.05, "centroids_per_class": 3}) == "centroids_per_class=3,eta=0.05"
    for mapping in MAPPINGS:
        reordered = dict(reversed(list(mapping.items())))
        assert variant_label(reordered) == variant_label(mapping) == variant_label(json.loads(json.dumps(mapping)))


def test_labels_are_distinct_for_distinct_mappings_and_safe_as_folder_names():
    labels = [variant_label(m) for m in MAPPINGS]
    assert len(set(labels)) == len(MAPPINGS), labels
    for label in labels:
        assert SAFE_FOLDER_NAME.fullmatch(label) and label not in (".", "..") and len(label) <= MAX_LABEL_LENGTH


def test_long_or_inexact_labels_end_in_a_hash_of_the_full_mapping():
    long = {f"key_{i:02d}": i for i in range(20)}
    label = variant_label(long)
    assert re.fullmatch(rf"(key_\d\d=\d+,)+~[0-9a-f]{{{HASH_LENGTH}}}", label), label
    assert len(label) <= MAX_LABEL_LENGTH and label.startswith("key_00=0,key_01=1,")
    assert variant_label({**long, "key_19": 20}) != label  # a change the readable prefix does not show
    # values that cannot be written exactly in safe characters: their key is kept, the hash tells them apart
    lists = variant_label({"lr_steps": [[160, 0.01]], "eta": 0.2})
    assert re.fullmatch(rf"eta=0\.2,lr_steps=~,~[0-9a-f]{{{HASH_LENGTH}}}", lists), lists
    assert variant_label({"lr_steps": [[150, 0.01]], "eta": 0.2}) != lists
    with pytest.raises(ValueError):
        variant_label({})


def test_variant_of_a_resolved_config_comes_from_its_recipe_deviations_only():
    recipe = resolve_config("bccl", "cifar10", 100, 0)
    assert with_variant(recipe) == recipe and variant_name(recipe) == ""  # no key: old folders compare equal
    for execution in ({"amp": "off"}, {"pipeline": "reference"}, {"num_workers": 2}):
        assert variant_name(with_variant(resolve_config("bccl", "cifar10", 100, 0, overrides=execution))) == ""
    config = with_variant(resolve_config("bccl", "cifar10", 100, 0, overrides={"eta": 0, "amp": "off"}))
    assert config["variant"] == {"name": "eta=0.0", "deviations": {"eta": 0.0}}
    assert with_variant(config) == config  # idempotent
    # the same deviations give the same label on another seed or IF (it names a configuration, not a run)
    other = with_variant(resolve_config("bccl", "cifar100", 50, 3, overrides={"eta": 0.0}))
    assert variant_name(other) == "eta=0.0"
    named = with_variant(resolve_config("bccl", "cifar10", 100, 0, overrides={"eta": 0.0}), name="no-centroids")
    assert named["variant"] == {"name": "no-centroids", "deviations": {"eta": 0.0}}


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "with space", "x" * 81, "tilde~1",
                                  "lr=0.1", "a,b", "eta=0.0,lr=0.1"])
def test_bad_variant_names_are_refused(name):
    with pytest.raises(LTBenchError, match="a variant name is"):
        check_variant_name(name)
    assert check_variant_name("no-centroids_v2.1") == "no-centroids_v2.1"


def test_a_name_can_never_be_a_derived_label():
    """Issue 21 point 10: `--name lr=0.1` would take the folder of the genuine lr=0.1 run (with
    another configuration); names have their own namespace (no `=`, `,` or leading `~`), and
    every derived label has an `=` or starts with `~`."""
    for mapping in MAPPINGS:
        label = variant_label(mapping)
        assert "=" in label or label.startswith("~")
        with pytest.raises(LTBenchError, match="a variant name is"):
            check_variant_name(label)


# -- sweeps ----------------------------------------------------------------------------------------
def test_sweep_arguments_are_parsed_like_set_values():
    assert parse_sweep_arguments(["eta=0,0.05,0.2", "recluster_once_per_epoch=true,false"]) == {
        "eta": [0, 0.05, 0.2], "recluster_once_per_epoch": [True, False]}
    assert parse_sweep_arguments(["lr_steps=[[160,0.01]],[[100,0.1],[150,0.01]]"]) == {
        "lr_steps": [[[160, 0.01]], [[100, 0.1], [150, 0.01]]]}
    for bad in (["eta"], ["=1,2"], ["eta="], ["eta=[1,2"], ["eta=1", "eta=2"]):
        with pytest.raises(LTBenchError, match="--sweep"):
            parse_sweep_arguments(bad)


@pytest.mark.parametrize("text", ["1e-1", "5E+2", "-2e1", "1.0e-3", "0.05", "7", "0x10", ".inf", "true", "off",
                                  "1e", "abc", "[[160,0.01]]", "null", "'quoted'"])
def test_sweep_values_are_read_by_the_same_parser_as_set(text):
    """Issue 21 point 11: `--set lr=1e-1` was a float and `--sweep lr=1e-1,0.05` a string (YAML 1.1)."""
    from benchmarks.config import parse_set_arguments

    value = parse_set_arguments([f"k={text}"])["k"]
    assert parse_sweep_arguments([f"k={text}"]) == {"k": [value]}
    assert parse_sweep_arguments([f"k={text},{text}"]) == {"k": [value, value]}
    assert parse_sweep_arguments(["lr=1e-1,0.05"]) == {"lr": [0.1, 0.05]}


def test_sweep_of_exponent_floats_plans_two_variants(tmp_path, capsys):
    code, out, err = run_cli(["--grid", promising_grid(tmp_path), "--datasets", "digits", "--imb-factors", "10",
                              "--methods", "ce", "--seeds", "0", "--sweep", "lr=1e-2,0.05", "--dry-run",
                              "--results-dir", str(tmp_path / "results")], capsys)
    assert code == 0, err
    labels = [p.split("/")[-2] for p in folders_of(out)]  # the grid's overrides are the grid label's
    assert labels == ["ce@lr=0.01", "ce@lr=0.05"]


def test_sweep_points_are_products_of_each_block_in_order_without_repeats():
    assert sweep_points([{"a": [1, 2], "b": [True, False]}]) == [
        {"a": 1, "b": True}, {"a": 1, "b": False}, {"a": 2, "b": True}, {"a": 2, "b": False}]
    assert sweep_points([{"a": [1, 2]}, {"b": [3]}, {"a": [2]}]) == [{"a": 1}, {"a": 2}, {"b": 3}]


def folders_of(out):
    return [line.split()[-1] for line in out.splitlines()[:-1]]


def test_sweep_on_the_command_line_is_a_product_with_a_folder_per_variant(tmp_path, capsys):
    args = ["--grid", "cifar10", "--methods", "bccl", "--imb-factors", "100", "--seeds", "0", "1",
            "--sweep", "eta=0,0.1", "--sweep", "recluster_once_per_epoch=false,true", "--dry-run",
            "--results-dir", str(tmp_path)]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and "8 runs" in out
    root = tmp_path / "cifar10" / "if100"
    expected = {root / f"bccl{v}" / f"seed{s}" for s in (0, 1) for v in (
        "@eta=0.0", "@eta=0.0,recluster_once_per_epoch=true", "", "@recluster_once_per_epoch=true")}
    assert set(map(type(tmp_path), folders_of(out))) == expected  # eta 0.1 is the recipe: its own folder
    assert not any(tmp_path.iterdir())
    code, again, _ = run_cli(args, capsys)
    assert code == 0 and again == out  # the same command, the same folders
    swapped = args[:9] + ["--sweep", "recluster_once_per_epoch=true,false", "--sweep", "eta=0.1,0.0"] + args[13:]
    code, other_order, _ = run_cli(swapped, capsys)
    assert code == 0 and set(folders_of(other_order)) == set(folders_of(out))


def test_grid_sweeps_are_per_method_and_the_ablation_grid_is_one_key_at_a_time(tmp_path, capsys):
    code, out, _ = run_cli(["--grid", "bccl-ablation", "--dry-run", "--results-dir", str(tmp_path)], capsys)
    assert code == 0 and "48 runs" in out
    variants = {p.split("/")[-2] for p in folders_of(out)}
    assert variants == {"bccl", "bccl@eta=0.0", "bccl@eta=0.05", "bccl@eta=0.2", "bccl@centroids_per_class=1",
                        "bccl@centroids_per_class=3", "bccl@centroids_per_class=10",
                        "bccl@recluster_once_per_epoch=true"}
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"datasets": ["cifar10"], "imb_factors": [100], "methods": ["ce", "bccl"],
                                    "seeds": [0], "sweeps": {"bccl": {"eta": [0.0, 0.2]}}}))
    code, out, _ = run_cli(["--grid", str(grid), "--dry-run", "--results-dir", str(tmp_path)], capsys)
    assert code == 0 and [p.split("/")[-2] for p in folders_of(out)] == ["ce", "bccl@eta=0.0", "bccl@eta=0.2"]
    # --sweep replaces the grid's sweeps
    code, out, _ = run_cli(["--grid", str(grid), "--methods", "bccl", "--sweep", "centroids_per_class=3",
                            "--dry-run", "--results-dir", str(tmp_path)], capsys)
    assert code == 0 and [p.split("/")[-2] for p in folders_of(out)] == ["bccl@centroids_per_class=3"]


def test_tiny_ablation_grid_plans_eight_variants_of_digits(tmp_path, capsys):
    code, out, _ = run_cli(["--grid", "bccl-ablation-tiny", "--dry-run", "--results-dir", str(tmp_path)], capsys)
    assert code == 0 and "8 runs" in out
    assert all(re.search(r"/digits-tiny@[0-9a-f]{10}/if100/bccl(@|/)", p) for p in folders_of(out))
    labels = {p.split("/")[-2] for p in folders_of(out)}  # the grid's compression keys are in the folder above
    assert "bccl@eta=0.0" in labels and not any("epochs=" in label for label in labels)


def bad_grid(tmp_path, sweeps):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"datasets": ["digits"], "imb_factors": [10], "methods": ["ce", "bccl"],
                                    "seeds": [0], "sweeps": sweeps}))
    return ["--grid", str(grid)]


BAD = {
    "sweep of an unknown key": (lambda t: ["--methods", "bccl", "--sweep", "etta=0,1"],
                                r"--sweep \(method bccl\): unknown key 'etta' \(did you mean 'eta'\?\)"),
    "sweep of a wrong type": (lambda t: ["--methods", "bccl", "--sweep", "eta=0,high"], r"key 'eta' must be float"),
    "sweep of another method's key": (lambda t: ["--methods", "ce", "--sweep", "eta=0,1"],
                                      r"--sweep \(method ce\): unknown key 'eta'"),
    "sweep and --set of one key": (lambda t: ["--methods", "ce", "--sweep", "lr=0.1,0.2", "--set", "lr=0.3"],
                                   r"lr also given by --set/--epochs"),
    "sweep of an execution key": (lambda t: ["--methods", "ce", "--sweep", "amp=auto,bf16"],
                                  r"two configurations would share .*differ in: amp"),
    "--name with a sweep": (lambda t: ["--methods", "ce", "--sweep", "lr=0.1,0.2", "--name", "x"],
                            r"--name names one configuration, but --sweep \(method ce\) has 2 points"),
    "bad --name": (lambda t: ["--methods", "ce", "--name", "a/b"], r"--name 'a/b': a variant name is"),
    "--name that looks like a derived label": (lambda t: ["--methods", "ce", "--name", "lr=0.1"],
                                               r"--name 'lr=0.1': a variant name is .*no '=' or ','"),
    "grid sweeps not a mapping": (lambda t: bad_grid(t, [1]), r"'sweeps' must be a mapping"),
    "grid sweep without values": (lambda t: bad_grid(t, {"bccl": {"eta": []}}),
                                  r"sweeps.bccl: eta must list one or more values"),
    "grid sweep not key: list": (lambda t: bad_grid(t, {"bccl": [{"eta": 0.1}]}),
                                 r"sweeps.bccl: eta must list one or more values, got 0.1"),
    "grid sweep of an unknown method": (lambda t: bad_grid(t, {"mixup": {"lr": [0.1]}}), r"unknown method 'mixup'"),
    "grid sweep of an unknown key": (lambda t: bad_grid(t, {"ce": {"etta": [0.1]}}),
                                     r"sweeps.ce: unknown key 'etta'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweeps_are_one_line_errors_before_anything_is_written(case, tmp_path, capsys):
    extra, message = BAD[case]
    results = tmp_path / "results"
    base = ["--datasets", "digits", "--imb-factors", "10", "--seeds", "0", "--tiny", "--no-progress"]
    code, _, err = run_cli(base + extra(tmp_path) + ["--results-dir", str(results)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), err
    assert not results.exists()


# -- folders written before variants existed -------------------------------------------------------
CELL = ["--datasets", "digits", "--imb-factors", "10", "--methods", "ce", "--tiny", "--epochs", "1",
        "--set", "train_cap_per_class=8", "test_cap_per_class=4", "batch_size=16", "--no-progress"]




def test_folders_of_the_layout_before_variants_are_still_skipped_resumed_and_reported(
        tmp_path, capsys, monkeypatch, one_thread):
    results = tmp_path / "results"
    args = CELL + ["--grid", promising_grid(tmp_path), "--results-dir", str(results)]
    # The layout before variants: every configuration in <method>/seed<S>/, no `variant` key in its config.
    with monkeypatch.context() as before_variants:
        before_variants.setattr("benchmarks.run.grid.with_variant", lambda config, *args: config)
        assert run_cli(args + ["--seeds", "0", "1"], capsys)[0] == 0
    old = [results / "digits-tiny" / "if10" / "ce" / f"seed{s}" for s in (0, 1)]
    assert sorted(find_runs(results)) == old
    assert "variant" not in yaml.safe_load((old[0] / "config.yaml").read_text())
    rerun_skips_the_done_and_resumes_the_interrupted(args, old, results, capsys)  # nothing trained again in a variant folder
    assert json.loads((old[1] / "env.json").read_text())["resumed_from_epoch"] == 1

    # a new seed and another configuration of the same cell: variant folders beside the old ones
    assert run_cli(args + ["--seeds", "2"], capsys)[0] == 0
    with_lr = [a for arg in args for a in ([arg, "lr=0.05"] if arg == "batch_size=16" else [arg])]
    assert run_cli(with_lr + ["--seeds", "0"], capsys)[0] == 0
    new = sorted(set(find_runs(results)) - set(old))
    [grid_folder] = {p.parents[2] for p in new}  # under the grid label: --tiny's epochs and the grid's warmup_epochs
    assert re.fullmatch(r"digits-tiny@[0-9a-f]{10}", grid_folder.name) and [p.name for p in new] == ["seed0", "seed2"]
    lr, same = (p.parent.name for p in new)
    assert same == "ce@batch_size=16,test_cap_per_class=4,train_cap_per_class=8"  # what --set changed
    assert lr == "ce@batch_size=16,lr=0.05,test_cap_per_class=4,train_cap_per_class=8"
    # the report: old and new folders of one configuration are one variant; the other one its own row
    runs = load_runs(results)
    assert list(runs["state"]) == ["done"] * 4 and set(runs["method"]) == {"ce"}
    summary = aggregate(label_variants(runs), [])
    assert sorted(zip(summary["n"], summary["seeds"])) == [(1, "0"), (3, "0 1 2")]
    assert sorted(summary["variant"])[0].startswith("batch_size 16≠128; epochs 1≠200; lr 0.05≠0.1")


def test_lr_steps_in_another_order_is_the_same_schedule_and_the_same_folder(tmp_path):
    """The schedule sorts its [epoch, factor] pairs, so their order changes nothing: --set lr_steps
    in another order than the recipe's is the recipe (no new variant), and the config keeps them sorted."""
    from benchmarks.commands.run import grid_options, parse_args
    from benchmarks.run.grid import plan

    base = ["--grid", "cifar10", "--imb-factors", "100", "--methods", "focal", "--results-dir", str(tmp_path)]
    recipe, = plan(grid_options(parse_args(base)))
    reordered, = plan(grid_options(parse_args(base + ["--set", "lr_steps=[[180,0.0001],[160,0.01]]"])))
    assert reordered.folder == recipe.folder and "lr_steps" not in recipe.folder.parent.name
    assert reordered.config == recipe.config and reordered.config["lr_steps"] == [[160, 0.01], [180, 0.0001]]


# -- grid labels: what a grid promises every method names the dataset folder, not each label --------
def test_the_grid_promise_names_the_dataset_folder_and_labels_say_the_rest(tmp_path, capsys):
    base = ["--grid", promising_grid(tmp_path), "--datasets", "digits", "--imb-factors", "10", "--seeds", "0",
            "--dry-run", "--results-dir", str(tmp_path / "results")]
    code, out, _ = run_cli(["--methods", "ce", "la_posthoc", "ce_drw", *base], capsys)
    assert code == 0
    folders = [p.split("/")[-4:-1] for p in folders_of(out)]
    [grid_folder] = {f[0] for f in folders}
    assert re.fullmatch(r"digits-tiny@[0-9a-f]{10}", grid_folder)
    # the grid's epochs, batch size, warmup and test cap are the folder's; a post-hoc method's
    # recipe epochs (0) are not labelled; a method override is
    assert {f[2] for f in folders} == {"ce", "la_posthoc", "ce_drw@reweight_epoch=2"}
    code, out, _ = run_cli(["--methods", "ce", "--set", "lr=0.2", *base], capsys)
    assert [p.split("/")[-4:-1] for p in folders_of(out)] == [[grid_folder, "if10", "ce@lr=0.2"]]
    # another promise, another dataset folder: the same label never means two configurations
    for extra in (["--tiny"], ["--tiny", "--epochs", "1"], ["--set", "batch_size=16"]):
        code, out, _ = run_cli(["--methods", "ce", *extra, *base], capsys)
        [(label, _, method)] = [p.split("/")[-4:-1] for p in folders_of(out)]
        assert code == 0 and label != grid_folder and label.startswith("digits-tiny@")
        grid_folder_seen = label
    # --set of a promised key is the user's change: labelled, and the promise is the grid's without it
    assert method == "ce@batch_size=16" and grid_folder_seen != grid_folder


def test_the_grid_promise_is_recorded_and_plain_grids_keep_their_folders(tmp_path):
    from benchmarks.run.grid import GridOptions, plan

    runs = plan(GridOptions(grid=promising_grid(tmp_path), datasets=["digits"], methods=["ce", "ce_drw"],
                            imb_factors=[10], seeds=[0], overrides={"lr": 0.2}, results_dir=tmp_path))
    ce, ce_drw = (run.config["variant"] for run in runs)
    assert ce["grid"] == {"batch_size": 32, "epochs": 3, "test_cap_per_class": 25, "warmup_epochs": 1}
    assert ce["beyond_grid"] == {"lr": 0.2} and ce["name"] == "lr=0.2"
    assert ce["deviations"] == {"batch_size": 32, "epochs": 3, "lr": 0.2, "test_cap_per_class": 25, "warmup_epochs": 1}
    assert ce_drw["beyond_grid"] == {"lr": 0.2, "reweight_epoch": 2}
    # a grid without overrides and without --tiny: folders and configs exactly as before grid labels
    grid = tmp_path / "plain.yaml"
    grid.write_text(yaml.safe_dump({"datasets": ["digits"], "imb_factors": [10], "methods": ["ce"], "seeds": [0]}))
    [recipe] = plan(GridOptions(grid=str(grid), results_dir=tmp_path))
    [tuned] = plan(GridOptions(grid=str(grid), overrides={"lr": 0.2}, results_dir=tmp_path))
    assert recipe.folder == tmp_path / "digits" / "if10" / "ce" / "seed0" and "variant" not in recipe.config
    assert tuned.folder == tmp_path / "digits" / "if10" / "ce@lr=0.2" / "seed0"
    assert tuned.config["variant"] == {"name": "lr=0.2", "deviations": {"lr": 0.2}}


def test_a_method_override_back_to_the_recipe_value_is_labelled(tmp_path):
    """A promised key that a method sets back to its recipe value differs from the promise: its
    label says so, so it never shares a folder with the run at the promised value."""
    from benchmarks.run.grid import GridOptions, plan

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"datasets": ["digits"], "imb_factors": [10], "methods": ["ce", "focal"],
                                    "seeds": [0], "overrides": {"batch_size": 32},
                                    "method_overrides": {"focal": {"batch_size": 128}}}))
    ce, focal = plan(GridOptions(grid=str(grid), results_dir=tmp_path))
    assert ce.folder.parent.name == "ce" and focal.folder.parent.name == "focal@batch_size=128"
    assert focal.config["variant"]["deviations"] == {} and focal.config["variant"]["beyond_grid"] == {"batch_size": 128}


def test_folders_of_the_layout_before_grid_labels_are_still_skipped_resumed_and_reported(
        tmp_path, capsys, monkeypatch, one_thread):
    results = tmp_path / "results"
    args = ["--datasets", "digits", "--imb-factors", "10", "--methods", "ce", "--tiny", "--epochs", "1",
            "--set", "train_cap_per_class=8", "test_cap_per_class=4", "--no-progress", "--results-dir", str(results),
            "--grid", promising_grid(tmp_path)]
    with monkeypatch.context() as before_grid_labels:  # the version before: no grid promise, every key in the label
        before_grid_labels.setattr("benchmarks.run.grid.grid_promise", lambda grid, options: {})
        assert run_cli(args + ["--seeds", "0", "1"], capsys)[0] == 0
    old = sorted(find_runs(results))
    assert [p.parent.name for p in old] == ["ce@batch_size=32,epochs=1,test_cap_per_class=4,train_cap_per_class=8,"
                                            "warmup_epochs=1"] * 2
    assert old[0].parents[2].name == "digits-tiny"
    rerun_skips_the_done_and_resumes_the_interrupted(args, old, results, capsys)  # nothing trained again under the grid label
    assert "grid" not in yaml.safe_load((old[1] / "config.yaml").read_text())["variant"]  # kept as it was written

    assert run_cli(args + ["--seeds", "2"], capsys)[0] == 0  # a new seed: the new layout
    [new] = sorted(set(find_runs(results)) - set(old))
    assert re.fullmatch(r"digits-tiny@[0-9a-f]{10}", new.parents[2].name)
    assert new.parent.name == "ce@test_cap_per_class=4,train_cap_per_class=8"
    summary = aggregate(label_variants(load_runs(results)), [])  # one configuration, one report row
    assert list(zip(summary["n"], summary["seeds"])) == [(3, "0 1 2")]


def rerun_skips_the_done_and_resumes_the_interrupted(args, old, results, capsys):
    """Seed 1 of the old-layout folders `old` interrupted after its last checkpoint (status still
    running, no metrics yet); the same command plans both old folders, skips seed 0 (its
    metrics.json untouched) and finishes seed 1 in place, training nothing elsewhere."""
    (old[1] / "metrics.json").unlink()
    (old[1] / "status").write_text("running\n")
    finished = (old[0] / "metrics.json").read_bytes()
    code, out, _ = run_cli(args + ["--seeds", "0", "1", "--dry-run"], capsys)
    assert code == 0 and str(old[0]) in out and str(old[1]) in out
    code, out, err = run_cli(args + ["--seeds", "0", "1"], capsys)
    assert code == 0, out + err
    assert "trained 1, skipped (done) 1" in out and f"done already, skipped ({old[0]})" in out
    assert read_status(old[1]) == "done" and (old[0] / "metrics.json").read_bytes() == finished
    assert sorted(find_runs(results)) == old
