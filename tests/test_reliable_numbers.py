"""Numbers a report must not get wrong: classes without test images, runs resumed on other
code or another compute path, runs of different lengths, the commands that repair a run,
and results files that say finished without a number."""
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from custom_models.training import Network, evaluate
from custom_reports import reporting
from custom_runs import run_files
from custom_runs.experiment import Experiment
from custom_runs.metrics import minority_accuracy
from custom_runs.options import OneLineErrorParser, add_training_arguments, resolve
from test_folder import make_folder
from test_get_results import BASELINE, configuration, get_results, write_run


def options(*argv):
    return resolve(add_training_arguments(OneLineErrorParser()).parse_args(list(map(str, argv))))


def rewrite(path, **changes):
    """A results file with some of its top-level entries replaced."""
    results = json.loads(path.read_text())
    results.update(changes)
    run_files.save_json(results, path)


# ----------------------------------------------------------------------------- empty test classes

def argmax_network(num_classes: int) -> Network:
    """A network whose prediction is the argmax of its input vector."""
    decoder = nn.Linear(num_classes, num_classes)
    with torch.no_grad():
        decoder.weight.copy_(torch.eye(num_classes))
        decoder.bias.zero_()
    return Network(nn.Flatten(), decoder)


def test_a_class_without_test_images_has_no_accuracy_and_stays_out_of_the_minority():
    # classes 0 and 1 predicted right, class 2 never in the test set
    images = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0]])
    test = evaluate(argmax_network(3), [(images, torch.tensor([0, 1, 1]), torch.arange(3))], 3)
    assert test["acc"] == 100.0
    assert test["per_class_acc"] == [100.0, 100.0, None]
    upper = SimpleNamespace(upper_classes=range(1, 3))
    assert minority_accuracy(test["per_class_acc"], upper) == 100.0
    assert minority_accuracy([50.0, None, None], upper) is None
    assert minority_accuracy([50.0, 20.0, 70.0], upper) == 45.0


def test_a_folder_run_with_an_empty_test_class_reports_its_minority_without_it(tmp_path, capsys):
    root = make_folder(tmp_path / "shapes")
    shutil.rmtree(root / "test" / "vbar")  # label 2, an upper-half (minority) class
    (root / "test" / "vbar").mkdir()
    data = tmp_path / "runs"
    experiment = Experiment(options("--dataset", "folder", "--data-dir", root, "--no-cuda",
                                    "--epochs", 1, "--data", data))
    results = experiment.run()
    assert "class 2 has no test image" in capsys.readouterr().err
    saved = run_files.load_results(experiment.results_path)
    for entry in (saved["best"], saved["final"]):
        per_class = entry["per_class_acc"]
        assert per_class[2] is None and per_class[1] is not None
        assert entry["minority_acc"] == pytest.approx(per_class[1])
    assert saved["history"][0]["per_class_acc"][2] is None
    assert results["best"]["minority_acc"] == saved["best"]["minority_acc"]

    done = get_results(data, "--dataset", "folder", "--data-dir", str(root), "--minority")
    assert done.returncode == 0, done.stderr
    assert "note: run0: class 2 has no test image: left out of its per-class and minority " \
           "accuracy" in done.stdout
    table = get_results(data, "--dataset", "folder", "--data-dir", str(root), "--table", "--minority")
    assert table.returncode == 0, table.stderr
    assert "note: class 2 has no test image in 1 run counted: left out of its per-class and " \
           "minority accuracy" in table.stdout
