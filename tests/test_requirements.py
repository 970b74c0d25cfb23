"""requirements.txt's floors are at least the versions that bring the features the code
uses: each floor beside the code that needs it, so that removing the
feature or lowering the floor is a decision this test makes visible."""
import re
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package: (the first version with the feature, the file that uses it, the code that needs it)
NEEDED = {
    # device_id= of init_process_group: added in torch 2.3 (binds NCCL to the rank's GPU)
    "torch": ((2, 3), "custom_runs/distributed.py", 'init_process_group("nccl", device_id='),
    # the torchvision released with torch 2.3
    "torchvision": ((0, 18), None, None),
    # "outside" legend locations of constrained-layout figures: added in matplotlib 3.7
    "matplotlib": ((3, 7), "custom_reports/drawing.py", 'loc="outside lower center"'),
}


def floors() -> dict:
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", line.split("#")[0].strip())
        if match:
            found[match.group(1).lower()] = tuple(int(part) for part in match.group(2).split("."))
    return found


def release(text: str) -> tuple:
    return tuple(int(part) for part in re.match(r"(\d+)\.(\d+)", text).groups())


@pytest.mark.parametrize("package", list(NEEDED))
def test_the_floor_is_at_least_the_version_with_the_feature_used(package):
    needed, path, code = NEEDED[package]
    floor = floors()[package]
    assert floor[:2] >= needed, f"requirements.txt: {package}>={'.'.join(map(str, floor))}"
    if path is not None:
        assert code in (ROOT / path).read_text(), f"{path} no longer uses it: revisit the floor"
    assert release(version(package)) >= floor[:2]  # the environment that runs the tests meets it


def test_the_installed_torch_takes_device_id():
    import inspect
    import torch.distributed as dist
    assert "device_id" in inspect.signature(dist.init_process_group).parameters
