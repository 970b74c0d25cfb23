"""One configuration on several processes (torchrun, gloo on the CPU): the shards of
every batch, the hypergradient summed over ranks against one process on the
concatenated batch, identical tables on every rank, and the run's files, errors,
stops and resumes under torchrun."""
import json
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from custom_datasets.batches import EpochBatches
from custom_common.collectives import SINGLE_PROCESS, Collectives
from custom_models.hyper_models import LossModel, RowRMSprop
from custom_models.training import HyperState, Network, gather_rows, hyper_step
from custom_runs import run_files
from custom_runs.distributed import TablesDiverged, check_identical
from custom_runs.run_state import seed_epoch

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- batches and seeds
@pytest.mark.parametrize("count, batch_size, drop_last", [(100, 32, True), (100, 7, False), (5, 4, False)])
def test_the_ranks_shards_of_each_global_batch_concatenate_to_the_one_process_batch(count, batch_size,
                                                                                    drop_last):
    one = EpochBatches(count, batch_size, True, drop_last, torch.Generator().manual_seed(5))
    ranks = [EpochBatches(count, batch_size, True, drop_last, torch.Generator().manual_seed(5),
                          Collectives(rank, 2)) for rank in range(2)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == (count // batch_size if drop_last
                                                           else -(-count // batch_size))
    batches = list(zip(one, *ranks))
    assert len(batches) == len(one)
    for whole, first, second in batches:
        assert whole == first + second and abs(len(first) - len(second)) <= 1
    seen = sorted(position for whole, _, _ in batches for position in whole)
    if drop_last:
        assert len(set(seen)) == len(seen) == len(one) * batch_size
    else:
        assert seen == list(range(count))


def test_ranks_share_the_epoch_permutation_but_not_the_augmentation_stream():
    draws = []
    for rank in (0, 1):
        permutations = torch.Generator()
        seed_epoch(3, 2, permutations, rank)
        draws.append((torch.randperm(50, generator=permutations), torch.rand(4)))
    assert torch.equal(draws[0][0], draws[1][0])
    assert not torch.allclose(draws[0][1], draws[1][1])
    seed_epoch(3, 2)  # a one-process run draws what rank 0 draws
    assert torch.equal(torch.rand(4), draws[0][1])


# ----------------------------------------------------------------------------- the hypergradient
NUM_TRAIN, NUM_CLASSES = 24, 5


def tiny_problem(collectives: Collectives):
    """A small conv net in eval mode with non-trivial batch-norm statistics, BOTH loss
    tables away from their initial values, an 11-image train batch and a 7-image valid
    batch (shards of unequal sizes on two ranks)."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.CELU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten())
    encoder[1].running_mean.uniform_(-0.5, 0.5)
    encoder[1].running_var.uniform_(0.5, 2.0)
    network = Network(encoder, nn.Linear(4, NUM_CLASSES))
    network.train(False)
    targets = torch.randint(0, NUM_CLASSES, (NUM_TRAIN,), generator=generator)
    loss_model = LossModel(NUM_TRAIN, NUM_CLASSES, "BOTH", targets, distorted=True)
    loss_model.weight_logits.normal_(generator=generator)
    loss_model.soft_logits.add_(torch.randn(NUM_TRAIN, NUM_CLASSES, generator=generator))
    optimizer = RowRMSprop(dict(loss_model.learned_tables()), lr=0.05)
    hyper = HyperState(loss_model, None, optimizer, iterations=3, alpha=0.1, collectives=collectives)
    indices = torch.randperm(NUM_TRAIN, generator=generator)[:11]
    train = (torch.randn(11, 1, 6, 6, generator=generator), targets[indices], indices)
    valid = (torch.randn(7, 1, 6, 6, generator=generator),
             torch.randint(0, NUM_CLASSES, (7,), generator=generator), torch.arange(7))
    return network, hyper, train, valid


def shard(batch, collectives):
    positions = collectives.shard(torch.arange(len(batch[0])))
    return tuple(part[positions] for part in batch)


def hyper_step_on_two_ranks(rank, world_size, init_method, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    collectives = Collectives(rank, world_size)
    network, hyper, train, valid = tiny_problem(collectives)
    result, finite = hyper_step(network, hyper, shard(train, collectives), shard(valid, collectives))
    outcome = {"grads": [collectives.gather(grad) for grad in result.grads],
               "diagnostics": [float(result.g_norm_sq), float(result.v_norm_sq), float(result.g_dot_v)],
               "finite": bool(finite), "tables": {name: table.clone() for name, table
                                                  in hyper.loss_model.learned_tables().items()}}
    tables = dict(hyper.loss_model.learned_tables())
    check_identical(collectives, tables, "after one step")  # raises if they differ
    if rank == 1:
        hyper.loss_model.weight_logits[3] += 1e-6
    try:
        check_identical(collectives, tables, "after a nudge")
        outcome["diverged"] = None
    except TablesDiverged as error:
        outcome["diverged"] = str(error)
    # a shared (SHA) row gets one gradient per rank: the step sees their sum once
    outcome["shared_row"] = gather_rows(collectives, torch.tensor([0]),
                                        torch.full((1, 3), float(rank + 1)))
    outcome["gathered_rows"] = gather_rows(collectives, torch.tensor([4 + rank, 9 - rank]),
                                           torch.full((2, 1), float(rank)))
    torch.save(outcome, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_hyper_step(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spawn")
    mp.spawn(hyper_step_on_two_ranks, args=(2, f"file://{folder / 'rendezvous'}", str(folder)),
             nprocs=2, join=True)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


def test_two_rank_hypergradient_equals_the_one_process_one_on_the_concatenated_batch(two_rank_hyper_step):
    network, hyper, train, valid = tiny_problem(SINGLE_PROCESS)
    result, finite = hyper_step(network, hyper, train, valid)
    assert bool(finite)
    for outcome in two_rank_hyper_step:
        assert outcome["finite"]
        assert len(outcome["grads"]) == len(result.grads) == 2
        for gathered, expected in zip(outcome["grads"], result.grads):
            assert gathered.shape == expected.shape and expected.abs().max() > 1e-4
            torch.testing.assert_close(gathered, expected, rtol=1e-4, atol=1e-7)
        expected = [float(result.g_norm_sq), float(result.v_norm_sq), float(result.g_dot_v)]
        assert outcome["diagnostics"] == pytest.approx(expected, rel=1e-5)
        # each rank stepped the rows of the whole global batch with the gathered gradients.
        # (Not compared with the one-process tables: RMSprop's first step, lr·g/(0.1|g| + eps),
        # turns a float32 rounding difference in a gradient of ~1e-7 into a large one.)
        fresh = tiny_problem(SINGLE_PROCESS)[1]
        names = list(fresh.loss_model.learned_tables())
        fresh.optimizer.step({name: train[2] for name in names}, dict(zip(names, outcome["grads"])))
        for name, table in fresh.loss_model.learned_tables().items():
            torch.testing.assert_close(outcome["tables"][name], table, rtol=1e-6, atol=1e-6)
            changed = (outcome["tables"][name] != tiny_problem(SINGLE_PROCESS)[1]
                       .loss_model.learned_tables()[name]).reshape(NUM_TRAIN, -1).any(-1)
            assert torch.equal(changed.nonzero().flatten().sort().values, train[2].sort().values)
    first, second = two_rank_hyper_step
    for name in first["tables"]:
        assert torch.equal(first["tables"][name], second["tables"][name])


def test_table_check_fails_loudly_when_one_rank_differs_and_shared_rows_are_summed(two_rank_hyper_step):
    for outcome in two_rank_hyper_step:
        assert outcome["diverged"] == ("after a nudge: weight_logits differ across the 2 ranks "
                                       "(a bug: please report it with the command)")
        rows, grads = outcome["shared_row"]
        assert torch.equal(rows, torch.tensor([0])) and torch.equal(grads, torch.full((1, 3), 3.0))
        rows, grads = outcome["gathered_rows"]
        assert torch.equal(rows, torch.tensor([4, 5, 8, 9]))
        assert torch.equal(grads.flatten(), torch.tensor([0.0, 1.0, 1.0, 0.0]))


# ----------------------------------------------------------------------------- runs under torchrun
# DIGITS with half the labels re-drawn and no imbalance: in 6 epochs the learned weights
# already rank noisy labels below clean ones (one process: AUROC 0.70 on run0, 2 ranks 0.71)
CONFIG = ["--dataset", "DIGITS", "-ir", "1", "-nr", "0.5", "--aug-model", "SEP", "--los-model",
          "BOTH", "--hyper-opt", "HES", "--hyper-start", "1", "--no-cuda", "-r", "run0"]
NAME = run_files.run_name("resnet18", "HES", "SEP", "BOTH", 1, 1.0, 0.5)


def torchrun(processes: int, *flags) -> list:
    """The interpreter's arguments that start implicit-augment.py on `processes` ranks."""
    return ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            str(ROOT / "implicit-augment.py"), *flags]


def our_error_lines(finished) -> list:
    return [line for line in (finished.stdout + finished.stderr).splitlines()
            if line.startswith("implicit-augment.py: error")]


def test_two_ranks_train_one_configuration_that_learns_like_one_process(tmp_path, run_python, run_script):
    epochs = ["--epochs", "6"]
    two = run_python(*torchrun(2, *CONFIG, *epochs, "--data", str(tmp_path / "two")),
                     env={"CHECK_RANK_TABLES": "1"}, timeout=300)  # every epoch: tables equal on both ranks
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    one = run_script("implicit-augment.py", *CONFIG, *epochs, "--data", str(tmp_path / "one"),
                     timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]

    folder = run_files.run_dir(tmp_path / "two", "DIGITS", "run0")
    split = run_files.split_file_name(1, 1.0, 0.5)
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [split, "tensorboard", run_files.best_checkpoint_path(folder, NAME).name,
         run_files.best_valid_checkpoint_path(folder, NAME).name,
         run_files.last_checkpoint_path(folder, NAME).name, run_files.results_path(folder, NAME).name])
    event_files = list(run_files.tensorboard_dir(folder, NAME).iterdir())
    assert len(event_files) == 1
    assert [two.stdout.count(f"epoch {epoch}/6 ") for epoch in range(1, 7)] == [1] * 6  # rank 0 only

    one_folder = run_files.run_dir(tmp_path / "one", "DIGITS", "run0")
    for one_part, two_part in zip(torch.load(one_folder / split), torch.load(folder / split)):
        assert torch.equal(one_part, two_part)  # the same split
    results = {name: json.loads(run_files.results_path(path, NAME).read_text())
               for name, path in (("one", one_folder), ("two", folder))}
    assert results["two"]["world_size"] == results["two"]["config"]["world_size"] == 2
    assert results["one"]["world_size"] == 1
    assert results["two"]["status"] == "finished" and results["two"]["epochs_done"] == 6
    assert results["two"]["learned"]["skipped_hyper_steps"] == 0
    assert len(results["two"]["hyper_diagnostics"]) == 4
    # Not bit-equal to one process (per-rank batch norm on 16-image shards, other random
    # augmentation draws on rank 1, float sums in another order); seeds of one process
    # spread the AUROC by about ±0.03, so 0.1 is a difference no correct run shows, and
    # 0.6 is far above chance (0.5).
    auroc = {name: result["learned"]["noisy_weight_auroc"] for name, result in results.items()}
    assert min(auroc.values()) >= 0.6 and abs(auroc["one"] - auroc["two"]) <= 0.1, auroc
    assert min(result["final"]["acc"] for result in results.values()) >= 50


def test_a_killed_rank_stops_the_run_cleanly_and_resume_finishes_it_on_another_number_of_ranks(
        tmp_path, run_python):
    flags = [*CONFIG, "--epochs", "3", "--data", str(tmp_path)]
    folder = run_files.run_dir(tmp_path, "DIGITS", "run0")
    last = run_files.last_checkpoint_path(folder, NAME)
    # rank 1 sends itself SIGTERM before batch 1 of epoch 2 (custom_runs/stop_points.py): its
    # batch 0 needed rank 0's, which comes after rank 0 saved epoch 1
    stopped_run = run_python(*torchrun(2, *flags), env={"STOP_RUN_AT": "1:1@1"}, timeout=300)
    assert stopped_run.returncode != 0
    assert "continue with the same command and --resume" in stopped_run.stdout + stopped_run.stderr

    stopped = torch.load(last, weights_only=False)
    results = json.loads(run_files.results_path(folder, NAME).read_text())
    assert results["status"] == "interrupted" and results["world_size"] == 2
    assert results["epochs_done"] == stopped["epoch"] + 1 < 3
    assert [record["epoch"] for record in results["history"]] == list(range(stopped["epoch"] + 1))

    resumed = run_python(*torchrun(1, *flags, "--resume"), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads(run_files.results_path(folder, NAME).read_text())
    assert results["status"] == "finished" and results["world_size"] == 1
    assert [record["epoch"] for record in results["history"]] == [0, 1, 2]
    assert f"epoch {stopped['epoch'] + 2}/3 " in resumed.stdout
    assert f"epoch {stopped['epoch'] + 1}/3 " not in resumed.stdout

    # the lock and the outputs are rank 0's to check; its refusal stops both ranks
    again = run_python(*torchrun(2, *flags), timeout=300)
    assert again.returncode != 0
    assert our_error_lines(again) == [
        f"implicit-augment.py: error: a finished result of this configuration exists in {folder}; "
        f"add --resume to continue it or --force to start over"]


def test_bad_flag_or_a_world_size_that_does_not_divide_the_batch_is_one_line_under_torchrun(
        tmp_path, run_python):
    bad_flag = run_python(*torchrun(2, "--dataset", "DIGITS", "-nr", "1.5", "--no-cuda"), timeout=300)
    assert bad_flag.returncode != 0
    assert our_error_lines(bad_flag) == [
        "implicit-augment.py: error: -nr must be in [0, 1), got 1.5 (see implicit-augment.py --help)"]
    assert "[rank" not in bad_flag.stdout + bad_flag.stderr  # no rank's traceback

    three = run_python(*torchrun(3, *CONFIG, "--data", str(tmp_path)), timeout=300)
    assert three.returncode != 0
    assert our_error_lines(three) == [
        "implicit-augment.py: error: 3 processes: the train batch of DIGITS (32) does not divide "
        "among them; use a number of processes that divides 32"]
    assert not (tmp_path / "DIGITS").exists()


# ----------------------------------------------------------------------------- a stop during set-up

class StoppedDuringSetUp(KeyboardInterrupt):
    """What implicit-augment.py's SIGTERM handler raises (custom_common.signals.Terminated), as the test's own."""


def stop_rank_0_during_claim(rank, world_size, init_method, out):
    import datetime
    from custom_runs.distributed import main_first
    torch.set_num_threads(1)
    # a rank left waiting gives up after 60 s instead of gloo's 30 minutes
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))
    claimed = []

    def claim():
        claimed.append(rank)
        raise StoppedDuringSetUp()
    started = time.monotonic()
    try:
        main_first(Collectives(rank, world_size), claim)
        outcome = "went on"
    except BaseException as stopped:  # noqa: B036 (the stop itself is the result)
        outcome = type(stopped).__name__
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(
        {"outcome": outcome, "claimed": claimed, "seconds": time.monotonic() - started}))
    dist.destroy_process_group()


def test_a_stop_of_rank_0_during_set_up_stops_every_rank_alike(tmp_path):
    mp.spawn(stop_rank_0_during_claim, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)),
             nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [rank["outcome"] for rank in ranks] == ["StoppedDuringSetUp"] * 2
    assert [rank["claimed"] for rank in ranks] == [[0], []]  # only rank 0 claims
    assert ranks[1]["seconds"] < 30  # told at once, not after a timeout
