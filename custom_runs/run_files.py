"""The one place that knows where runs put their files and what is in them (docs/design.md §8).

    {data}/{dataset}/                    raw dataset files (torchvision layout)
    {data}/{dataset}/runN/data_ir_{IR}_sr_{SR}_nr_{NR}.pt   split of the run
    {data}/{dataset}/runN/best_{run_name}.pt                 epoch of best test accuracy (test-selected)
    {data}/{dataset}/runN/bestvalid_{run_name}.pt            epoch of best validation accuracy
    {data}/{dataset}/runN/last_{run_name}.pt                 end of the latest epoch (resume)
    {data}/{dataset}/runN/results_{run_name}.json            machine-readable results
    {data}/{dataset}/runN/tensorboard/{run_name}/            learning curves
    {data}/{dataset}/runN/debug_{run_name}.png               --plot-debug grid
    {data}/{dataset}/runN/.lock_{run_name}                   held while a process trains it
    {data}/{dataset}/runN/suspects_{run_name}[_valid|_last].csv|png|pdf
                                         get-results.py --suspects (or in --out)
    {data}/folder_{name}_{hash}/runN/... --dataset folder --data-dir .../{name} (same files;
                                         hash: 8 hex digits of the folder's absolute path)
    {DIR}/.autodo_stats.json             a folder dataset's classes, size, mean/std, file stamp
    {data}/{dataset}/runN/logs/{run_name}.log                run-table.py: the run's output, every attempt
    {data}/{dataset}/submitit/{job id}/                      run-table.py --launcher slurm: submitit's files
    {visualizations}/{kind}_{dataset}_..._{labels}.png|pdf   figures of visualize-density.py
    {visualizations}/cache/{dataset}_{run}_{checkpoint}.pt   cached features and t-SNE

Every file is written to a temporary name in its own folder and renamed into
place, so a killed process never leaves a truncated file under a final name.
get-results.py and visualize-density.py find files only through this module.

Split file: a tuple (valid indices, train indices, train targets), int64; the
targets have one entry per official train image: the noisy label at train
indices, the official label elsewhere.

Checkpoints (best_/bestvalid_/last_): a dict with
    encoder_state_dict, decoder_state_dict   the network (decoder = final linear layer)
    reweight_state_dict   {"weight_logits": (T,), "soft_logits": (T, C)}; weight = softplus(w)/ln 2
    augment_state_dict    {"probability_logits": (R, 7), "magnitude_logits": (R, 7)}, R = T (SEP)
                          or 1 (SHA); empty for the fixed methods
    acc (best test accuracy, %), epoch
bestvalid_ holds the epoch of best_valid (see below): its acc is that epoch's test accuracy,
and it adds valid_acc. last_ adds what a resume needs (optimiser states, best and best_valid,
history, compute path, attempts).

Results file (JSON, one per run folder and configuration):
    format, run_name, dataset, run_folder, seed,
    split_seed        the seed the split file was made with (null: made elsewhere)
    status            "running" (also after kill -9), "finished", "interrupted" (Ctrl-C,
                      SIGTERM, a save that failed: a full disk) or "failed" (non-finite
                      training loss); "finished" with a null best or final accuracy counts
                      as unfinished (finished())
    lr_changes        [{"epoch", "from", "to"}]: --lr changed on --resume from that epoch
    attempts          [{"first_epoch", "commit", "uncommitted_changes", "compute_path", "started"}]:
                      each process that trained epochs of the run, from epoch first_epoch
                      (counted from 0) to the next attempt's: the project's commit and
                      whether tracked files differed from it (as in versions), the compute
                      path's description, the ISO time it started. A checkpoint written
                      before attempts were recorded resumes as a first attempt of "unknown"
                      code (started null); a results file without attempts is one attempt
                      of its versions and compute_path
    config            every option of the run (model, aug_model, los_model, hyper_opt,
                      imbalance_ratio, subsample_ratio, noise_ratio, epochs, hyper_start,
                      paper_text: the items that follow the paper's text, [] for none,
                      policy_variant: the --policy-variant items, [] for none, ...)
    epochs, epochs_done
    best  / final     {"epoch", "acc", "loss", "per_class_acc": [C], "minority_acc"}
                      (accuracies in %, minority = mean accuracy of the upper-half classes;
                      a class with no test image has null, and the minority mean leaves it
                      out: null where no upper-half class has a test image); best is
                      test-selected (the epoch of highest test accuracy, the paper's protocol),
                      final the last epoch
    best_valid        the same keys plus "valid_acc", "valid_loss": the epoch of highest
                      validation accuracy (ties: lower validation loss, then the earlier
                      epoch); acc, loss, per_class_acc, minority_acc are that epoch's TEST
                      numbers. Format 2 on; older files have none
    history           [{"epoch", "test_acc", "test_loss", "valid_acc", "valid_loss",
                        "train_loss", "lr", "hyper_lr"}] (valid_*: format 2 on)
    hyper_diagnostics [{"epoch", "g_norm_sq", "v_norm_sq", "g_dot_v", "divergence"}]
    learned           {"noisy_weight_auroc", "soft_label_correction_rate",
                       "aug_probability_lower", "aug_probability_upper",
                       "aug_magnitude_lower", "aug_magnitude_upper", "skipped_hyper_steps"}
                      (null where the configuration does not learn that table)
    split             {"train_size", "valid_size", "noisy_labels", "train_class_counts"}
    test_set          "test", or "valid" for a folder dataset without test/ (accuracies on valid/)
    timings_s         {"hyper", "train", "test", "valid", "total"} seconds; valid: the
                      validation pass of model selection (format 2 on)
    compute_path      {"device", "precision" ("bf16" autocast or "fp32"), "reason", "channels_last",
                       "test_batch_size", "fold_batch_norm", "compile", "description"} of the latest
                       process (custom_runs.compute_path)
    versions          {"python", "torch", "torchvision", "kornia", "numpy", "cuda", "device",
                       "commit" (the project's git commit), "uncommitted_changes" (true when
                       tracked files differed from it)}; both "unknown" outside a git checkout
"""
import json
import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

# atomic writing and safe reading live in the bottom layer, the split file's name beside the
# split (the data layer writes both); the layers above still go through this module alone
from custom_common.atomic_files import (SaveFailed, UnreadableFile, atomic_path,  # noqa: F401
                                        atomic_paths, create_once, load_torch, save_json,
                                        save_torch, stale_temporaries)
from custom_datasets.split import number_text, split_file_name  # noqa: F401

# 2: per-epoch validation accuracy, best_valid and timings_s.valid
RESULTS_FORMAT_VERSION = 2


def dataset_dir(data_root, dataset: str) -> Path:
    return Path(data_root) / dataset


def run_dir(data_root, dataset: str, run_folder: str) -> Path:
    return dataset_dir(data_root, dataset) / run_folder


def run_name(model: str, hyper_opt: str, aug_model: str, los_model: str, imbalance_ratio: int,
             subsample_ratio: float, noise_ratio: float, overfit: bool = False,
             oversplit: bool = False, paper_text: Sequence[str] = (),
             policy_variant: Sequence[str] = ()) -> str:
    """docs/design.md §8's name; runs that follow the paper's text somewhere (--paper-text, items in
    their fixed order) add `_text_{item-item...}`, and runs that apply the fixed policies as
    this project did before (--policy-variant) add `_policy_{item-item...}`, so they never
    share files or a table cell with runs of the released data path."""
    prefix = "overfit_" if overfit else "oversplit_" if oversplit else ""
    suffix = f"_text_{'-'.join(paper_text)}" if paper_text else ""
    suffix += f"_policy_{'-'.join(policy_variant)}" if policy_variant else ""
    return (f"{prefix}{model}_opt_{hyper_opt}_est_True_aug_model_{aug_model}_los_model_{los_model}"
            f"_ir_{int(imbalance_ratio)}_sr_{number_text(subsample_ratio)}_nr_{number_text(noise_ratio)}"
            f"{suffix}")


def best_checkpoint_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"best_{name}.pt"


def best_valid_checkpoint_path(folder: Path, name: str) -> Path:
    """bestvalid_, not best_valid_: a glob of best_* must not find it."""
    return Path(folder) / f"bestvalid_{name}.pt"


def last_checkpoint_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"last_{name}.pt"


# which epoch's network a report or figure uses: validation-selected, test-selected (the
# paper's protocol), or the last epoch
CHECKPOINTS = {"valid": best_valid_checkpoint_path, "best": best_checkpoint_path,
               "last": last_checkpoint_path}


def checkpoint_path(folder: Path, name: str, kind: str) -> Path:
    return CHECKPOINTS[kind](folder, name)


# what the names of reports and figures of a checkpoint add (best_ ones keep their old names)
CHECKPOINT_SUFFIXES = {"valid": "_valid", "best": "", "last": "_last"}


def missing_checkpoint_advice(kind: str) -> str:
    """What to do about a missing checkpoint of `kind` where the run itself exists."""
    if kind == "valid":
        return ("runs from before validation selection have no bestvalid_ checkpoint: use "
                "--checkpoint best (test-selected, the paper's protocol) or --checkpoint last")
    return "train the configuration first with implicit-augment.py and the same options"


def lock_path(folder: Path, name: str) -> Path:
    return Path(folder) / f".lock_{name}"


class ConfigurationBusy(RuntimeError):
    """Another live process holds the configuration's lock; the message names it."""


def lock_holder(folder: Path, name: str) -> Optional[str]:
    """Who holds configuration `name`'s lock ("pid … on host"), or None if no live process
    does. Looks without taking the lock for longer than the look, and writes nothing.
    Never call it while this process holds the lock: POSIX locks belong to the process,
    so the look would succeed and its unlock release the lock."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        handle = open(lock_path(folder, name), "r+")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return handle.read().strip() or "another process"
        fcntl.lockf(handle, fcntl.LOCK_UN)
        return None


@contextmanager
def configuration_lock(folder: Path, name: str) -> Iterator[None]:
    """Held while this process trains configuration `name` in `folder`, so that a second
    process (the same job submitted twice, a --resume while the first still runs) stops
    instead of overwriting the first one's files.

    A POSIX record lock on .lock_{name}, which names its holder. The operating system
    drops the lock when the process ends in any way, kill -9 included, so a lock file
    left by a killed process is free to take. The holder removes the file before it
    lets go; a process that locked a file just removed so (its name now missing or
    another file's) tries again with a new one.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no locking
        yield
        return
    path = lock_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigurationBusy(f"{holder} is training this configuration in {path.parent}") from None
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


def results_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"results_{name}.json"


def suspects_base_path(folder: Path, name: str, checkpoint: str = "valid") -> Path:
    """suspects_{run_name}[_valid|_last]: .csv (every train image, most suspect first),
    .png/.pdf (the top-K grid) of get-results.py --suspects with the network of bestvalid_,
    best_ (no suffix) or last_."""
    return Path(folder) / f"suspects_{name}{CHECKPOINT_SUFFIXES[checkpoint]}"


def run_log_path(folder: Path, name: str) -> Path:
    """run-table.py appends each attempt's stdout and stderr of the configuration here."""
    return Path(folder) / "logs" / f"{name}.log"


def submitit_dir(data_root, dataset: str) -> Path:
    """Where submitit keeps a table's submission scripts, pickles and Slurm logs; %j is the
    job id submitit fills in (array jobs: {array id}_{task})."""
    return dataset_dir(data_root, dataset) / "submitit" / "%j"


def debug_grid_path(folder: Path, name: str) -> Path:
    """--plot-debug: original vs augmented images of the first train batch."""
    return Path(folder) / f"debug_{name}.png"


def tensorboard_dir(folder: Path, name: str) -> Path:
    return Path(folder) / "tensorboard" / name


def figure_base_path(out_dir, kind: str, dataset: str, model: str, run_folder: str,
                     imbalance_ratio: int, subsample_ratio: float, noise_ratio: float,
                     labels: Sequence[str]) -> Path:
    """{out}/{kind}_{dataset}_{model}_{run}_ir_{IR}_sr_{SR}_nr_{NR}_{labels}; save_figure adds .png/.pdf."""
    setting = (f"ir_{int(imbalance_ratio)}_sr_{number_text(subsample_ratio)}"
               f"_nr_{number_text(noise_ratio)}")
    return Path(out_dir) / f"{kind}_{dataset}_{model}_{run_folder}_{setting}_{'-'.join(labels)}"


def embedding_cache_path(out_dir, dataset: str, run_folder: str, checkpoint: Path) -> Path:
    """{out}/cache/{dataset}_{run}_{checkpoint stem}.pt: predictions and t-SNE of one checkpoint."""
    return Path(out_dir) / "cache" / f"{dataset}_{run_folder}_{Path(checkpoint).stem}.pt"


def _run_number(path: Path) -> tuple:
    match = re.fullmatch(r"run(\d+)", path.name)
    return (0, int(match.group(1)), "") if match else (1, 0, path.name)


def find_run_folders(data_root, dataset: str) -> List[Path]:
    """Every runN folder of a dataset, in numeric order (run2 before run10)."""
    folder = dataset_dir(data_root, dataset)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"run\d+", p.name)),
                  key=_run_number)


def seed_from_run_folder(run_folder: str) -> int:
    """run0 -> 0, run7 -> 7; any other name -> a stable number derived from it."""
    match = re.fullmatch(r"run(\d+)", run_folder)
    if match:
        return int(match.group(1))
    import zlib
    return zlib.crc32(run_folder.encode()) % (2 ** 31)


def load_results(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UnreadableFile(f"{path} does not exist")
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UnreadableFile(f"{path} cannot be read ({error})") from None
    if not isinstance(results, dict) or "best" not in results:
        raise UnreadableFile(f"{path} is not a results file of implicit-augment.py")
    return results


def missing_numbers(results: dict) -> List[str]:
    """The accuracies a finished run must have that a results file lacks ("best.acc",
    "final.acc")."""
    return [f"{section}.acc" for section in ("best", "final")
            if not isinstance(results.get(section), dict)
            or not isinstance(results[section].get("acc"), (int, float))]


def finished(results: dict) -> bool:
    """A run that finished: its status says so and it has its best and final accuracy. A file
    that says finished without them is not, for every report and for run-table.py (which
    runs it again: --resume rewrites it from the last_ checkpoint)."""
    return results.get("status") == "finished" and not missing_numbers(results)


def list_results(data_root, dataset: str) -> List[Path]:
    """Every results file of every run folder of a dataset."""
    return [path for folder in find_run_folders(data_root, dataset)
            for path in sorted(folder.glob("results_*.json"))]


def config_name_from_results(path: Path) -> Optional[str]:
    match = re.fullmatch(r"results_(.+)\.json", Path(path).name)
    return match.group(1) if match else None
