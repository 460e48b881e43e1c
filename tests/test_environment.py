"""env.json's provenance: every package that can change a number, threads, CPU and CUDA records."""

from __future__ import annotations

import json

import numpy as np
import PIL
import scipy
import sklearn
import torch

from benchmarks.environment import RECORDED_PACKAGES, environment_record


def test_env_record_names_every_package_that_can_change_a_number():
    record = json.loads(json.dumps(environment_record(torch.device("cpu"), {"pipeline": "reference"})))
    packages = record["packages"]
    assert set(packages) == set(RECORDED_PACKAGES)
    assert {"torch", "torchvision", "numpy", "Pillow", "numba", "scikit-learn", "pandas", "scipy"} <= set(packages)
    assert packages["torch"] == torch.__version__.split("+")[0] or packages["torch"] == torch.__version__
    assert packages["numpy"] == np.__version__ and packages["Pillow"] == PIL.__version__
    assert packages["scikit-learn"] == sklearn.__version__ and packages["scipy"] == scipy.__version__
    try:
        import numba
    except ImportError:  # an optional extra: recorded as absent
        assert packages["numba"] is None
    else:
        assert packages["numba"] == numba.__version__
    assert record["torch"] == torch.__version__ and record["numpy"] == np.__version__  # the old keys stay
    assert record["threads"]["torch_intra_op"] == torch.get_num_threads() >= 1
    assert "OMP_NUM_THREADS" in record["threads"]
    assert record["cpu"] and record["cpu"] in record["device_name"]
    cuda = record["cuda_details"]
    assert cuda["runtime"] == torch.version.cuda and cuda["available"] == torch.cuda.is_available()
    assert len(cuda["gpus"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert record["pipeline"] == "reference"
