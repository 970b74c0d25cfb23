"""The fast path (bf16 autocast, channels-last; on CUDA and on CPUs with native bf16)
keeps the hypergradient: checked on the CPU, where autocast runs bf16 on any CPU
(emulated where it is not native), and on CUDA when there is one."""
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

from custom_common.settings import get_settings
from custom_models.hyper_models import AugmentModel, LossModel
from custom_models.hypergradient import hypergradient
from custom_models.networks import build_network
from custom_models.training import Network, evaluate, frozen, valid_gradient

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def trained_statistics(encoder):
    """Batch-norm statistics and affine parameters away from their initial identity."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2)):
                    tensor.copy_(torch.empty(tensor.shape).uniform_(low, high, generator=generator))


def hypergradients(amp: bool, device: str, channels_last: bool = False, fold: Optional[bool] = None):
    """Hypergradients of every learned table for one fixed train/valid batch; `fold` (not None):
    with batch-norm statistics of a trained network, folded into the convolutions (True) as in
    a hyper epoch, or not (False)."""
    settings = get_settings("DIGITS")
    torch.manual_seed(0)
    encoder, decoder = build_network("resnet18", settings)
    encoder, decoder = encoder.to(device).eval(), decoder.to(device)
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    if fold is not None:
        trained_statistics(encoder)
    network = Network(encoder, decoder, amp=amp, fold_batch_norm=bool(fold)).for_inference()
    generator = torch.Generator().manual_seed(1)
    count, size = 64, settings.image_size
    images = torch.randn(count, 1, size, size, generator=generator).to(device)
    labels = torch.randint(0, 10, (count,), generator=generator).to(device)
    valid_images = torch.randn(count, 1, size, size, generator=generator).to(device)
    valid_labels = torch.randint(0, 10, (count,), generator=generator).to(device)
    indices = torch.arange(count, device=device)
    loss_model = LossModel(count, 10, "BOTH", labels, distorted=True).to(device)
    augment_model = AugmentModel(count, "SEP").to(device)

    with frozen(network.encoder):
        v = valid_gradient(network, valid_images, valid_labels, resample=True)
        torch.manual_seed(2)  # the same augmentation draw in every call
        augment_rows = augment_model.rows(indices, requires_grad=True)
        warped = augment_model.augment(images, augment_rows)
        loss_rows = loss_model.rows(indices, requires_grad=True)
        features = network.features(warped)
        bias = decoder.bias.detach()
        leaves = [*augment_rows.values(), *loss_rows.values()]
        result = hypergradient(lambda theta: loss_model.train_loss(F.linear(features, theta, bias), loss_rows),
                               v, decoder.weight, leaves)
    return [grad.double().cpu().flatten() for grad in result.grads]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_hypergradient_matches_fp32(device, channels_last):
    reference = hypergradients(amp=False, device=device)
    fast = hypergradients(amp=True, device=device, channels_last=channels_last)
    for exact, approximate in zip(reference, fast):
        assert torch.isfinite(approximate).all()
        assert F.cosine_similarity(exact, approximate, dim=0) > 0.99
        assert (approximate.norm() / exact.norm() - 1).abs() < 0.05


def test_autocast_keeps_features_losses_and_tables_in_fp32():
    settings = get_settings("DIGITS")
    encoder, decoder = build_network("resnet18", settings)
    network = Network(encoder.eval(), decoder, amp=True)
    features = network.features(torch.randn(4, 1, 8, 8))
    assert features.dtype == torch.float32
    assert decoder(features).dtype == torch.float32
    loss_model = LossModel(4, 10, "BOTH", torch.arange(4), distorted=True)
    assert loss_model.weight_logits.dtype == loss_model.soft_logits.dtype == torch.float32


@pytest.mark.parametrize("amp", [False, True])
def test_folded_batch_norm_gives_the_same_hypergradient(amp):
    reference = hypergradients(amp=amp, device="cpu", channels_last=True, fold=False)
    folded = hypergradients(amp=amp, device="cpu", channels_last=True, fold=True)
    for exact, approximate in zip(reference, folded):
        if amp:  # the folded weights are rounded to bf16 once, the unfolded ones twice
            assert F.cosine_similarity(exact, approximate, dim=0) > 0.99
        else:
            assert torch.allclose(exact, approximate, rtol=1e-3, atol=1e-6)


def test_for_inference_folds_every_batch_norm_of_the_small_resnet_and_evaluates_alike():
    settings = get_settings("DIGITS")
    torch.manual_seed(0)
    encoder, decoder = build_network("resnet18", settings)
    trained_statistics(encoder.eval())
    folded = Network(encoder, decoder, fold_batch_norm=True)
    plain = Network(encoder, decoder)
    inference = folded.for_inference()
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules()) == 15
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in inference.encoder.modules())
    assert plain.for_inference() is plain and inference.decoder is decoder
    generator = torch.Generator().manual_seed(4)
    images = torch.randn(300, 1, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (300,), generator=generator)
    batches = [(images[start:start + 128], labels[start:start + 128], None) for start in (0, 128, 256)]
    a, b = evaluate(plain, batches, 10), evaluate(folded, batches, 10)
    assert a["acc"] == b["acc"] and a["per_class_acc"] == b["per_class_acc"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_channels_last_gives_the_same_hypergradient():
    reference = hypergradients(amp=False, device="cpu")
    channels_last = hypergradients(amp=False, device="cpu", channels_last=True)
    for a, b in zip(reference, channels_last):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)


def test_frozen_restores_requires_grad():
    encoder, _ = build_network("resnet18", get_settings("DIGITS"))
    first = next(encoder.parameters())
    first.requires_grad_(False)
    with frozen(encoder):
        assert not any(p.requires_grad for p in encoder.parameters())
    assert not first.requires_grad
    assert all(p.requires_grad for p in list(encoder.parameters())[1:])


def test_table_memory_is_what_the_models_allocate():
    from custom_models.hyper_models import RowRMSprop, table_bytes
    loss_model = LossModel(100, 7, "BOTH", torch.zeros(100, dtype=torch.long), True)
    augment_model = AugmentModel(100, "SEP")
    tables = {**loss_model.learned_tables(), **augment_model.learned_tables()}
    optimizer = RowRMSprop(tables, lr=0.1)
    expected_tables = (100 + 100 * 7 + 2 * 7 * 100) * 4
    expected_state = expected_tables + 4 * 100 * 8  # running averages + last step per row
    assert table_bytes(100, 7, "BOTH", "SEP") == {"tables": expected_tables,
                                                  "optimizer_state": expected_state}
    assert sum(t.numel() * t.element_size() for t in tables.values()) == expected_tables
    assert sum(t.numel() * t.element_size() for t in
               [*optimizer.square_avg.values(), *optimizer.last_step.values()]) == expected_state


def test_imagenet_soft_labels_and_their_optimiser_fit_beside_resnet18_on_80gb():
    from custom_models.hyper_models import table_bytes
    memory = table_bytes(1281167, 1000, "BOTH", "SEP")
    total_gib = (memory["tables"] + memory["optimizer_state"]) / 2 ** 30
    assert 9.5 < total_gib < 10.5  # 1.28 M x 1000 floats, twice, plus the small tables
