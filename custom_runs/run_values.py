"""The four values a run is made of (docs/design.md §2-§8), each returned by one function and
passed to the loop of custom_runs/experiment.py:

    RunPlan       what the run is to do: set_up.plan_run(args, collectives)
    PreparedData  the data and its split: set_up.prepare_data(plan, data)
    RunParts      what it trains with: builders.build_parts(plan, prepared)
    RunRecord     what its epochs accumulate: run_state.start_record(run_config(plan))"""
import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

from custom_common.collectives import Collectives
from custom_common.settings import DatasetSettings
from custom_datasets.batches import DeviceBatches, FolderBatches
from custom_datasets.containers import FolderData, InMemoryData
from custom_datasets.split import Split
from custom_models.hyper_models import AugmentModel, LossModel
from custom_models.training import HyperState, Network
from custom_runs.compute_path import ComputePath
from custom_runs.stop_points import StopPoint
from custom_transforms.base import TrainTransform

Batches = Union[DeviceBatches, FolderBatches]


@dataclass(frozen=True)
class RunPlan:
    """Decided from the options before any data is read."""
    args: argparse.Namespace
    settings: DatasetSettings
    device: torch.device
    compute_path: ComputePath
    collectives: Collectives  # this process's rank among the processes of a torchrun launch
    stop_at: Optional[StopPoint]  # the tests' stop point (custom_runs/stop_points.py)
    # a folder dataset's runs go under {data}/folder_{DIR's name}_{hash of its path}/
    folder: Path
    name: str
    best_path: Path
    best_valid_path: Path
    last_path: Path
    results_path: Path

    @property
    def is_main(self) -> bool:
        return self.collectives.is_main


@dataclass(frozen=True)
class PreparedData:
    data: Union[InMemoryData, FolderData]
    split: Split
    split_seed: Optional[int]  # None: the run folder's split file is not the one --seed makes
    train_class_counts: List[int]  # images of each true class in the train subset


@dataclass(frozen=True)
class RunBatches:
    """The epoch batches of this rank, and the transform the train and hyper batches share."""
    train: Batches
    hyper: Batches
    valid: Batches  # the hyper steps' valid batches
    test: Batches
    # model selection's pass over the clean valid split; None where the valid data is the
    # test set (--overfit, a folder without test/): the test pass's numbers are the valid ones
    selection: Optional[Batches]
    train_transform: TrainTransform


@dataclass(frozen=True)
class RunModels:
    encoder: torch.nn.Module
    decoder: torch.nn.Module
    network: Network
    optimizer: torch.optim.Optimizer
    loss_model: LossModel
    augment_model: Optional[AugmentModel]  # SHA/SEP only
    hyper: HyperState


@dataclass(frozen=True)
class RunParts:
    batches: RunBatches
    models: RunModels
    # the batches' epoch permutations (seeded by run_state.seed_epoch, alike on every rank)
    permutations: torch.Generator


@dataclass
class RunRecord:
    """What the epochs accumulate, saved in last_ and the results file and restored on --resume."""
    config: Dict  # the options the files record (run_state.run_config)
    best: Dict
    best_valid: Dict
    history: List[Dict]
    diagnostics: List[Dict]  # the hyper epochs' hypergradient statistics
    lr_changes: List[Dict]
    attempts: List[Dict]
    timings: Dict[str, float]
