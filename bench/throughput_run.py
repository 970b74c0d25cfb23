"""The run that bench/throughput.py times: random uint8 images of a dataset's shape, and the
run's plan, prepared data and parts built by the run's own builders."""
import dataclasses
import tempfile
from typing import Tuple

import torch

from custom_common.collectives import SINGLE_PROCESS
from custom_datasets.containers import InMemoryData
from custom_runs.builders import build_parts
from custom_runs.run_values import PreparedData, RunParts, RunPlan
from custom_runs.set_up import check_world_size, plan_run, prepare_data

# the official test sets' sizes; the train size is the settings table's
TEST_SIZES = {"MNIST": 10000, "FashionMNIST": 10000, "DIGITS": 360, "SVHN": 26032,
              "SVHN_extra": 26032, "CIFAR10": 10000, "CIFAR100": 10000}


def synthetic_data(settings, seed=0) -> InMemoryData:
    generator = torch.Generator().manual_seed(seed)
    shape = (settings.channels, settings.image_size, settings.image_size)
    test_size = TEST_SIZES.get(settings.name, 10000)

    def images(count):
        return torch.randint(0, 256, (count, *shape), dtype=torch.uint8, generator=generator)

    def labels(count):
        return torch.randint(0, settings.num_classes, (count,), generator=generator)
    return InMemoryData(images(settings.train_size), labels(settings.train_size),
                        images(test_size), labels(test_size))


def build_run(args, data, compute_path=None, collectives=SINGLE_PROCESS
              ) -> Tuple[RunPlan, PreparedData, RunParts]:
    """A run's plan (on `compute_path` if given), data and parts, built as the run builds
    them; its split is written to a temporary folder unless --real-data."""
    with tempfile.TemporaryDirectory() as folder:
        if not args.real_data:
            args.data = folder
        plan = plan_run(args, collectives)
        check_world_size(plan)
        if compute_path is not None:
            plan = dataclasses.replace(plan, compute_path=compute_path)
        prepared = prepare_data(plan, data)
        parts = build_parts(plan, prepared)
    return plan, prepared, parts
