"""The compute path of a run: bf16 autocast on CUDA and on CPUs with native
bf16 (AMX, AVX512-BF16), fp32 elsewhere or with --no-amp; channels-last; a test batch
sized for the CPU's caches; one line at the start and a record in the results file."""
import pytest
import torch

from custom_runs import compute_path, run_files
from custom_runs.compute_path import (CPU_TEST_BATCH_SIZE, CUDA_TEST_BATCH_SIZE,
                                      choose_compute_path, native_cpu_bf16)
from custom_runs.builders import build_parts
from custom_runs.experiment import Experiment
from custom_runs.set_up import plan_run, prepare_data
from custom_common.errors import UsageError
from custom_runs.options import OneLineErrorParser, add_training_arguments, resolve

CPU = torch.device("cpu")


def options(*argv):
    return resolve(add_training_arguments(OneLineErrorParser()).parse_args(list(map(str, argv))))


@pytest.mark.parametrize("amx, avx512_bf16, feature", [
    (True, True, "AMX"), (False, True, "avx512_bf16"), (True, False, "AMX"), (False, False, None)])
def test_native_bf16_probe_names_the_cpu_feature(monkeypatch, amx, avx512_bf16, feature):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert native_cpu_bf16() == feature


def test_native_bf16_probe_without_the_private_probes_says_none(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert native_cpu_bf16() is None


@pytest.mark.parametrize("feature, no_amp, precision, description", [
    ("avx512_bf16", False, "bf16", "CPU: bf16 autocast (avx512_bf16), channels-last, test batch 128"),
    ("AMX", False, "bf16", "CPU: bf16 autocast (AMX), channels-last, test batch 128"),
    (None, False, "fp32", "CPU: fp32 (no native bf16), channels-last, test batch 128"),
    ("AMX", True, "fp32", "CPU: fp32 (--no-amp), channels-last, test batch 128"),
])
def test_cpu_uses_bf16_only_where_it_is_native_and_not_with_no_amp(monkeypatch, feature, no_amp,
                                                                     precision, description):
    monkeypatch.setattr(compute_path, "native_cpu_bf16", lambda: feature)
    path = choose_compute_path(CPU, no_amp)
    assert (path.precision, path.amp) == (precision, precision == "bf16")
    assert path.describe() == description
    assert path.record() == {"device": "cpu", "precision": precision, "reason": path.reason,
                             "channels_last": True, "test_batch_size": 128, "fold_batch_norm": True,
                             "compile": False, "description": description}


@pytest.mark.parametrize("no_amp, precision", [(False, "bf16"), (True, "fp32")])
def test_cuda_path_ignores_the_cpu_probe(monkeypatch, no_amp, precision):
    monkeypatch.setattr(compute_path, "native_cpu_bf16", lambda: None)
    path = choose_compute_path(torch.device("cuda", 0), no_amp)
    assert (path.precision, path.channels_last, path.test_batch_size, path.fold_batch_norm) == \
        (precision, True, 1024, False)


def test_test_batch_is_smaller_on_the_cpu_and_the_run_uses_it(tmp_path):
    assert (CPU_TEST_BATCH_SIZE, CUDA_TEST_BATCH_SIZE) == (128, 1024)
    plan = plan_run(options("--dataset", "DIGITS", "--no-cuda", "--data", tmp_path))
    batches = build_parts(plan, prepare_data(plan)).batches.test
    assert batches.batch_size == 128 and len(batches) == 3  # 360 DIGITS test images
    assert [len(labels) for _, labels, _ in batches] == [128, 128, 104]


@pytest.mark.parametrize("feature, precision", [("avx512_bf16", "bf16"), (None, "fp32")])
def test_a_run_says_its_path_and_records_it(monkeypatch, capsys, tmp_path, feature, precision):
    monkeypatch.setattr(compute_path, "native_cpu_bf16", lambda: feature)
    args = options("--dataset", "DIGITS", "--no-cuda", "--epochs", 1, "--data", tmp_path)
    experiment = Experiment(args)
    results = experiment.run()
    description = experiment.plan.compute_path.describe()
    assert capsys.readouterr().out.splitlines()[0] == description
    models = experiment.parts.models
    assert models.network.amp == (precision == "bf16") and models.network.fold_batch_norm
    first = next(models.encoder.parameters())
    assert first.is_contiguous(memory_format=torch.channels_last)
    assert results["compute_path"]["precision"] == precision
    saved = run_files.load_results(experiment.plan.results_path)
    assert saved["compute_path"] == {"device": "cpu", "precision": precision,
                                     "reason": feature or "no native bf16", "channels_last": True,
                                     "test_batch_size": 128, "fold_batch_norm": True,
                                     "compile": False, "description": description}
    assert run_files.load_torch(experiment.plan.last_path)["compute_path"]["description"] == description
    assert "compute_path" not in saved["config"]  # not part of the configuration's identity


def run_until(experiment: Experiment, epoch: int) -> None:
    """The run, stopped as by Ctrl-C when epoch `epoch` (counted from 0) is about to start."""
    original_run_epoch = experiment.run_epoch

    def stop_at_the_epoch(at, writer):
        if at == epoch:
            raise KeyboardInterrupt
        return original_run_epoch(at, writer)
    experiment.run_epoch = stop_at_the_epoch
    with pytest.raises(KeyboardInterrupt):
        experiment.run()


def test_resume_on_another_path_says_so_and_continues(monkeypatch, capsys, tmp_path):
    argv = ["--dataset", "DIGITS", "--no-cuda", "--epochs", 2, "--data", tmp_path]
    monkeypatch.setattr(compute_path, "native_cpu_bf16", lambda: None)
    run_until(Experiment(options(*argv)), 1)
    capsys.readouterr()

    monkeypatch.setattr(compute_path, "native_cpu_bf16", lambda: "AMX")
    resumed = Experiment(options(*argv, "--resume"))
    results = resumed.run()
    assert ("--resume: the checkpoint was trained with CPU: fp32 (no native bf16), channels-last, "
            "test batch 128; epochs from 2 use CPU: bf16 autocast (AMX), channels-last, test batch 128"
            ) in capsys.readouterr().err
    assert results["status"] == "finished" and results["epochs_done"] == 2
    assert results["compute_path"]["precision"] == "bf16"


def test_compile_on_the_cpu_is_part_of_the_path_and_keeps_checkpoints_plain(monkeypatch, tmp_path):
    monkeypatch.setattr(compute_path, "native_cpu_bf16", lambda: None)
    plan = plan_run(options("--dataset", "DIGITS", "--no-cuda", "--compile", "--data", tmp_path))
    path = plan.compute_path
    assert path.compile and path.record()["compile"] is True
    assert path.describe() == "CPU: fp32 (no native bf16), channels-last, test batch 128, torch.compile"
    # torch.compile is lazy: nothing is compiled before the first step
    models = build_parts(plan, prepare_data(plan)).models
    assert models.network.compile
    assert isinstance(models.network.encoder, torch._dynamo.eval_frame.OptimizedModule)
    assert models.network.encoder._orig_mod is models.encoder
    assert not any(key.startswith("_orig_mod.") for key in models.encoder.state_dict())


def test_compile_on_a_cpu_without_a_cpp_compiler_is_refused_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(compute_path, "cpp_compiler", lambda: None)
    with pytest.raises(UsageError, match=r"^--compile on the CPU needs a C\+\+ compiler .*drop --compile$"):
        Experiment(options("--dataset", "DIGITS", "--no-cuda", "--compile", "--data", tmp_path))
    assert not choose_compute_path(CPU, no_amp=False).compile  # without --compile none is needed


def test_the_cpu_fallback_note_names_only_what_it_ignores():
    from custom_runs.builders import cpu_fallback_note
    args = options("--dataset", "DIGITS", "--gpu", "2", "--compile")
    assert cpu_fallback_note(args) == ("note: CUDA is not available, training on the CPU "
                                       "(--gpu ignored); --no-cuda silences this")
    args.gpu = 0
    assert "ignored" not in cpu_fallback_note(args)
