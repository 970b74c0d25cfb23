"""What names a configuration: the options a resume must agree on and the options that
name a run's files (Configuration), and the paper's methods and tables (paper_results.json,
a copy of the paper's tables kept in the package so nothing reads outside the project).
Shared by running (table/sweep.py, run_state.py) and reporting (custom_reports)."""
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from custom_datasets.folder import FOLDER_DATASET
from custom_runs import run_files

PAPER_RESULTS_PATH = Path(__file__).with_name("paper_results.json")

# options that define a configuration; a resume must agree on all of them but --lr, which
# may be lowered to get past a non-finite loss (the change is recorded in lr_changes)
IDENTITY_OPTIONS = ("dataset", "data_dir", "model", "imbalance_ratio", "subsample_ratio", "noise_ratio",
                    "aug_model", "los_model", "hyper_opt", "overfit", "oversplit", "epochs",
                    "lr_decay_rate", "lr_decay_epochs", "lr_warm_epochs", "hyper_start",
                    "hyper_steps", "hyper_iters", "hyper_alpha", "hyper_beta", "hyper_gamma", "seed",
                    "paper_text", "policy_variant")


def command_line(script: str, arguments: Sequence) -> str:
    """A command the user can paste into a shell: an argument that needs quoting (a --data
    path with a space) is quoted, every other one prints as it is."""
    return " ".join(["python", script] + [shlex.quote(str(argument)) for argument in arguments])


def load_paper_results() -> dict:
    return json.loads(PAPER_RESULTS_PATH.read_text())


def paper_methods() -> Dict[str, Tuple[str, str, str]]:
    """Paper row name -> (aug_model, los_model, hyper_opt), in the paper's row order."""
    return {name: (c["aug_model"], c["los_model"], c["hyper_opt"])
            for name, c in load_paper_results()["configs"].items()}


@dataclass(frozen=True)
class Configuration:
    """Everything that names a run's files: the options that go into run_files.run_name."""
    model: str
    aug_model: str
    los_model: str
    hyper_opt: str
    imbalance_ratio: int
    subsample_ratio: float
    noise_ratio: float
    overfit: bool = False
    oversplit: bool = False
    paper_text: Tuple[str, ...] = ()  # --paper-text items, in options.PAPER_TEXT_ITEMS order
    policy_variant: Tuple[str, ...] = ()  # --policy-variant items, in options.POLICY_VARIANT_ITEMS order

    @property
    def name(self) -> str:
        return run_files.run_name(self.model, self.hyper_opt, self.aug_model, self.los_model,
                                  self.imbalance_ratio, self.subsample_ratio, self.noise_ratio,
                                  overfit=self.overfit, oversplit=self.oversplit,
                                  paper_text=self.paper_text, policy_variant=self.policy_variant)

    @property
    def ablation(self) -> str:
        return "overfit" if self.overfit else "oversplit" if self.oversplit else ""

    @property
    def method(self) -> Tuple[str, str, str]:
        return self.aug_model, self.los_model, self.hyper_opt

    @property
    def setting(self) -> str:
        """The paper's column name, IR-NR (e.g. 100-0.1); the SR is added when it is not 1."""
        label = f"{self.imbalance_ratio}-{run_files.number_text(self.noise_ratio)}"
        if float(self.subsample_ratio) != 1.0:
            label += f" sr {run_files.number_text(self.subsample_ratio)}"
        return label

    def train_command(self, data_root, dataset: str, run_folder: str,
                      data_dir: Optional[str] = None) -> str:
        """The implicit-augment.py command that (re)creates this configuration's files;
        `data_dir`: the images of a folder dataset (whose runs are under `dataset`)."""
        source = ["--dataset", FOLDER_DATASET, "--data-dir", data_dir] if data_dir else \
            ["--dataset", dataset]
        arguments = ["--data", data_root, *source, "-r", run_folder,
                     "-ir", self.imbalance_ratio, "-sr", run_files.number_text(self.subsample_ratio),
                     "-nr", run_files.number_text(self.noise_ratio), "--aug-model", self.aug_model,
                     "--los-model", self.los_model, "--hyper-opt", self.hyper_opt,
                     "--model", self.model]
        if self.ablation:
            arguments.append(f"--{self.ablation}")
        if self.paper_text:
            arguments += ["--paper-text", *self.paper_text]
        if self.policy_variant:
            arguments += ["--policy-variant", *self.policy_variant]
        return command_line("implicit-augment.py", arguments)

    @classmethod
    def from_results(cls, results: dict, path: Path) -> "Configuration":
        """The configuration a results file describes, checked against its file name."""
        config = results.get("config")
        keys = ("model", "aug_model", "los_model", "hyper_opt", "imbalance_ratio",
                "subsample_ratio", "noise_ratio")
        if not isinstance(config, dict) or any(key not in config for key in keys):
            raise run_files.UnreadableFile(
                f"{path} has no complete 'config' ({', '.join(keys)}); it was not written by "
                f"implicit-augment.py: move it out of the run folder")
        try:
            found = cls(str(config["model"]), str(config["aug_model"]), str(config["los_model"]),
                        str(config["hyper_opt"]), int(config["imbalance_ratio"]),
                        float(config["subsample_ratio"]), float(config["noise_ratio"]),
                        bool(config.get("overfit", False)), bool(config.get("oversplit", False)),
                        tuple(str(item) for item in config.get("paper_text", [])),
                        tuple(str(item) for item in config.get("policy_variant", [])))
        except (TypeError, ValueError) as error:
            raise run_files.UnreadableFile(f"{path} has a malformed 'config' ({error}); "
                                           f"move it out of the run folder") from None
        if found.name != run_files.config_name_from_results(path):
            raise run_files.UnreadableFile(
                f"{path}: its config describes {found.name}, not the configuration in its file "
                f"name; a renamed or copied file? move it out of the run folder")
        return found
