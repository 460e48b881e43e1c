"""The one place that validates a config (`benchmarks.config.validate_config`), the project's YAML
loader (`yaml_load`: YAML 1.2 floats, duplicate keys refused) and repeatable command-line lists.

The end-to-end "one line, exit 2, nothing written" cases are in tests/test_bad_input.py; these are
the unit-level checks behind them.
"""

import math

import pytest

from benchmarks import CONFIG_DIR, LTBenchError
from benchmarks.commands import report
from benchmarks.commands import run as run_command
from benchmarks.config import check_ranges, has_recipe, parse_set_arguments, resolve_config, validate_config, yaml_load
from benchmarks.run.grid import GridOptions, plan
from benchmarks.train.methods import METHODS


def test_yaml_floats_with_an_exponent_and_no_dot_are_floats():
    data = yaml_load("a: 1e-3\nb: 1.0e-3\nc: 5E+2\nd: -2e1\ne: 7\nf: 1e\ng: .inf\nh: 0x10\n")
    assert data == {"a": 0.001, "b": 0.001, "c": 500.0, "d": -20.0, "e": 7, "f": "1e", "g": math.inf, "h": 16}
    assert isinstance(data["e"], int)


def test_yaml_duplicate_keys_are_refused_but_merges_are_not_duplicates():
    with pytest.raises(Exception, match="found duplicate key 'lr'"):
        yaml_load("lr: 0.1\nepochs: 3\nlr: 0.2\n")
    with pytest.raises(Exception, match="found duplicate key 'a'"):
        yaml_load("outer:\n  inner: {a: 1, a: 2}\n")
    merged = yaml_load("base: &b {lr: 0.1, epochs: 3}\nrun:\n  <<: *b\n  epochs: 5\n")
    assert merged["run"] == {"lr": 0.1, "epochs": 5}


def test_every_shipped_yaml_file_loads_with_the_project_loader():
    files = sorted(CONFIG_DIR.rglob("*.yaml"))
    assert len(files) > 5
    for path in files:
        yaml_load(path.read_text())  # no duplicate keys, nothing the loader refuses


def test_set_reads_exponent_floats_and_a_repeated_key_takes_its_last_value():
    assert parse_set_arguments(["lr=1e-3", "weight_decay=5e-4", "lr=2e-3"]) == {"lr": 0.002, "weight_decay": 0.0005}
    config = resolve_config("ce", "digits", 10, overrides=parse_set_arguments(["lr=1e-3"]))
    assert config["lr"] == 0.001 and isinstance(config["lr"], float)


def test_exponent_float_in_a_grid_file_is_a_float(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("datasets: [digits]\nimb_factors: [1e2]\nmethods: [ce]\nseeds: [0]\noverrides: {lr: 1e-3}\n")
    runs = plan(GridOptions(grid=str(grid), results_dir=tmp_path / "r"))
    assert runs[0].config["lr"] == 0.001 and runs[0].config["imb_factor"] == 100.0
    assert runs[0].folder.parts[-3] == "if100"


def test_repeated_list_options_accumulate():
    args = run_command.parse_args(["--set", "lr=0.2", "--set", "batch_size=64", "--seeds", "0", "--seeds", "1",
                                     "--methods", "ce", "--methods", "bcl", "--imb-factors", "10",
                                     "--imb-factors", "100", "--datasets", "digits", "--datasets", "synthetic"])
    assert args.overrides == ["lr=0.2", "batch_size=64"]
    assert args.seeds == [0, 1] and args.methods == ["ce", "bcl"]
    assert args.imb_factors == [10.0, 100.0] and args.datasets == ["digits", "synthetic"]
    assert report.parse_args(["--formats", "md", "--formats", "csv"]).formats == ["md", "csv"]
    assert report.parse_args([]).formats is None  # main() takes that as every format


def test_repeated_set_reaches_the_runs(tmp_path):
    argv = ["--datasets", "digits", "--imb-factors", "10", "--methods", "ce", "--seeds", "0",
            "--set", "lr=0.2", "--set", "batch_size=64", "--results-dir", str(tmp_path)]
    args = run_command.parse_args(argv)
    runs = plan(GridOptions(datasets=args.datasets, methods=args.methods, imb_factors=args.imb_factors,
                            seeds=args.seeds, overrides=parse_set_arguments(args.overrides), results_dir=tmp_path))
    assert (runs[0].config["lr"], runs[0].config["batch_size"]) == (0.2, 64)


@pytest.mark.parametrize("key", ["lr", "momentum", "weight_decay", "cosine_scale", "cosine_init_max_norm"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_float_shared_key_must_be_finite(key, bad):
    with pytest.raises(LTBenchError, match=f"{key} must be finite"):
        resolve_config("ce", "digits", 10, overrides={key: bad})


@pytest.mark.parametrize("method", ["bccl", "bcl", "paco"])
def test_every_float_method_option_must_be_finite(method):
    recipe = resolve_config(method, "digits", 10)
    shared = resolve_config("ce", "digits", 10)
    options = [k for k, v in recipe.items() if k not in shared and isinstance(v, float)]
    assert options
    for key in options:
        with pytest.raises(LTBenchError, match=f"{key} must be finite"):
            resolve_config(method, "digits", 10, overrides={key: math.nan})


@pytest.mark.parametrize("method, key, value, message", [
    ("bccl", "queue_size", 0, "queue_size must be >= 1, got 0"),
    ("bccl", "centroids_per_class", 0, "centroids_per_class must be >= 1"),
    ("bccl", "temperature", 0.0, "temperature must be > 0"),
    ("bccl", "kmeans_tol", -1.0, "kmeans_tol must be >= 0"),
    ("bcl", "temperature", -0.1, "temperature must be > 0"),
    ("bcl", "proj_dim", 0, "proj_dim must be >= 1"),
    ("paco", "queue_size", -5, "queue_size must be >= 1"),
    ("paco", "moco_m", 1.5, "moco_m must be <= 1"),
    ("paco", "supt", 0.0, "supt must be > 0"),
    ("paco", "shuffle_bn_groups", 0, "shuffle_bn_groups must be >= 1"),
])
def test_method_options_are_checked_by_the_method(method, key, value, message):
    with pytest.raises(LTBenchError, match=message):
        resolve_config(method, "digits", 10, overrides={key: value})


def test_validate_config_calls_the_method_hook(monkeypatch):
    """A method brings its own checks: validate_config asks the registered class."""
    cls = METHODS.get("ce")
    seen = []

    def check(config):
        seen.append(config["method"])
        raise LTBenchError("ce says no")

    monkeypatch.setattr(cls, "check_config", staticmethod(check))
    with pytest.raises(LTBenchError, match="ce says no"):
        resolve_config("ce", "digits", 10)
    assert seen == ["ce"]


def test_check_ranges_conditions():
    config = {"a": 0.5, "b": 3, "c": True}
    check_ranges(config, {"a": "> 0 < 1", "b": ">= 3 <= 3"})
    with pytest.raises(LTBenchError, match="a must be < 0.2, got 0.5"):
        check_ranges(config, {"a": ">= 0 < 0.2"})
    with pytest.raises(LTBenchError, match="c must be a number"):
        check_ranges(config, {"c": ">= 0"})


def test_lr_step_factor_and_epoch_checks():
    with pytest.raises(LTBenchError, match="factor > 0"):
        resolve_config("ce", "digits", 10, overrides={"lr_steps": [[160, 0.0]]})
    with pytest.raises(LTBenchError, match="epoch >= 0"):
        resolve_config("ce", "digits", 10, overrides={"lr_steps": [[-1, 0.1]]})
    with pytest.raises(LTBenchError, match=r"lr_steps must be a list of \[epoch, factor\] pairs"):
        resolve_config("ce", "digits", 10, overrides={"lr_steps": [[True, 0.1]]})


def test_validate_config_accepts_every_shipped_recipe():
    for method in METHODS.names():
        for dataset, imb in (("cifar10", 100), ("cifar100", 10), ("digits", 100), ("imagenet_lt", 256),
                             ("inat2018", 500)):
            if has_recipe(method, dataset):  # the others refuse, one line (test below)
                validate_config(resolve_config(method, dataset, imb))


# -- config files accept no silent mistakes (issue 21 point 12) -------------------------------------
@pytest.fixture
def config_copy(tmp_path, monkeypatch):
    """A copy of configs/ that the config module reads instead; returns a function that rewrites
    one method's YAML (dict -> YAML text) in it."""
    import shutil

    import yaml

    import benchmarks.config as config_module

    root = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, root)
    monkeypatch.setattr(config_module, "CONFIG_DIR", root)

    def edit(method, change):
        path = root / "methods" / f"{method}.yaml"
        data = yaml_load(path.read_text())
        change(data)
        path.write_text(yaml.safe_dump(data))
        return path

    return edit


def _set(section, key, value):
    def change(data):
        data.setdefault(section, {})
        data[section] = {**(data[section] or {}), key: value}
    return change


@pytest.mark.parametrize("method, section, key, value, message", [
    ("bccl", "datasets", "cifar1O", {"lr": 0.1}, r"datasets: unknown dataset 'cifar1O' \(did you mean 'cifar10'\?\);"
                                                  r" known: .*cifar10"),
    ("ce", "recipe_status", "cifar100", "guessed",
     r"recipe_status.cifar100 must be one of release, reconstructed, none, got 'guessed'"),
    ("ce", "recipe_status", "cifar-100", "reconstructed", r"recipe_status: unknown dataset 'cifar-100'"),
    ("ce_drw", "options", "mixup_alpha", 0.2, r"options: mixup_alpha is read by no code of method ce_drw \(it reads: bn_groups;"),
    ("bccl", "options", "etta", 0.1, r"options: etta is read by no code of method bccl \(it reads: alpha, beta,"),
])
def test_mistakes_in_a_method_yaml_are_refused_naming_the_file(config_copy, method, section, key, value, message):
    """Each of these was accepted silently (a typo under `datasets:` dropped that dataset's recipe;
    a bad status of another dataset than the one run; an option no code reads), whatever dataset runs."""
    path = config_copy(method, _set(section, key, value))
    with pytest.raises(LTBenchError, match=message) as error:
        resolve_config(method, "digits", 10)
    assert str(path) in str(error.value)


def test_an_option_a_method_reads_cannot_be_missing_from_its_yaml(config_copy):
    path = config_copy("focal", lambda data: data.update(options={}))
    with pytest.raises(LTBenchError, match=r"options: lacks bn_groups, focal_gamma, which method focal reads") as error:
        resolve_config("focal", "digits", 10)
    assert str(path) in str(error.value)


def test_every_declared_option_is_read_by_its_method_and_every_yaml_option_is_declared():
    """`Method.option_keys` is what the YAML's `options:` must hold; each of them appears (quoted) in
    the source of the method's class or one of its bases, so a declared key is one the code reads."""
    import inspect

    for name in METHODS.names():
        cls = METHODS.get(name)
        source = "".join(inspect.getsource(inspect.getmodule(c)) for c in cls.__mro__
                         if c.__module__.startswith(("bccl", "baselines")))
        for key in cls.option_keys:
            assert f'"{key}"' in source or f"'{key}'" in source, (name, key)
        assert set(yaml_load((CONFIG_DIR / "methods" / f"{name}.yaml").read_text()).get("options") or {}) == set(
            cls.option_keys), name


def test_grid_sweeps_must_name_methods_of_the_grid_and_known_keys_whatever_runs(tmp_path):
    import yaml

    def grid(sweeps, methods=("ce", "bccl")):
        path = tmp_path / "g.yaml"
        path.write_text(yaml.safe_dump({"datasets": ["digits"], "imb_factors": [10], "methods": methods if methods == "all" else list(methods),
                                        "seeds": [0], "sweeps": sweeps}))
        return str(path)

    with pytest.raises(LTBenchError, match=r"sweeps.bcl: method bcl is not in the grid's methods \(ce, bccl\)"):
        plan(GridOptions(grid=grid({"bcl": {"lr": [0.1]}}), results_dir=tmp_path / "r"))
    # an unknown key in the sweeps of a method the command line leaves out
    with pytest.raises(LTBenchError, match=r"sweeps.bccl: unknown key 'etta' \(did you mean 'eta'\?\)"):
        plan(GridOptions(grid=grid({"bccl": {"etta": [0.1]}}), methods=["ce"], results_dir=tmp_path / "r"))
    with pytest.raises(LTBenchError, match=r"sweeps.bccl.*key 'eta' must be float"):
        plan(GridOptions(grid=grid({"bccl": {"eta": ["high"]}}), methods=["ce"], results_dir=tmp_path / "r"))
    assert len(plan(GridOptions(grid=grid({"bccl": {"eta": [0.0, 0.2]}}), results_dir=tmp_path / "r"))) == 3
    # methods: all takes sweeps of any known method
    assert plan(GridOptions(grid=grid({"bcl": {"lr": [0.2]}}, methods="all"), methods=["ce"],
                            results_dir=tmp_path / "r"))


@pytest.mark.parametrize("grid", ["cifar", "cifar10", "cifar100", "imagenet", "inat"])
def test_every_paper_grid_runs_every_method_with_a_recipe_and_names_the_others(grid, tmp_path):
    """Issue 22 point 9: one command gives the whole comparison table; a method without a recipe
    for a dataset is named in the grid's description and reported as "no recipe", never absent."""
    from benchmarks.config import no_recipe_methods
    from benchmarks.run.grid import GridOptions, load_grid, no_recipe_in_grid, plan
    from benchmarks.train.methods import METHODS

    options = GridOptions(grid=grid, results_dir=tmp_path)
    runs = plan(options)
    skipped = no_recipe_in_grid(options)
    description = load_grid(grid)["description"]
    for dataset in load_grid(grid)["datasets"]:
        ran = {r.config["method"] for r in runs if r.config["dataset"] == dataset}
        missing = {m for m, d in skipped if d == dataset}
        assert ran | missing == set(METHODS.names()) and not ran & missing, dataset
        assert missing == set(no_recipe_methods(dataset))
        assert all(m in description for m in missing), (dataset, missing)
    if grid.startswith("cifar"):
        assert not skipped
    else:
        assert {m for m, _ in skipped} == {"ce_drw", "ldam_drw", "focal", "cb_focal", "logit_adjust",
                                           "balanced_softmax"}


def test_a_method_without_a_recipe_named_on_the_command_line_is_a_one_line_error():
    with pytest.raises(LTBenchError, match="method ldam_drw has no recipe for imagenet_lt"):
        resolve_config("ldam_drw", "imagenet_lt", 256)
