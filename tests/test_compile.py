"""--compile on the CPU: torch.compile (inductor, which builds C++ kernels) of the
encoder for the train step and of its batch-norm-folded copy for the test pass and hyper
epochs, with the classifier head, the losses and the Neumann series left eager in fp32.

The compiled tests use a two-convolution encoder, the smallest that has what the path
compiles (convolutions with batch norm to fold, an activation, a pooled feature), so that
compilation takes seconds rather than the minutes of a ResNet on two cores."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from custom_models.hyper_models import AugmentModel, LossModel, RowRMSprop
from custom_models.training import FoldedEncoder, HyperState, Network, evaluate, hyper_step

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device"))]
COUNT, SIZE, CLASSES = 16, 8, 10


def tiny_encoder():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.CELU(),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.CELU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def move_weights_and_statistics(encoder, seed):
    """What an epoch of training does to the encoder between two passes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2)):
                    tensor.copy_(torch.empty(tensor.shape).uniform_(low, high, generator=generator))
            elif isinstance(module, nn.Conv2d):
                module.weight.mul_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))


def network(compile: bool, device: str) -> Network:
    torch.manual_seed(0)
    encoder = tiny_encoder().to(device).to(memory_format=torch.channels_last)
    move_weights_and_statistics(encoder, seed=1)
    return Network(encoder, nn.Linear(8, CLASSES).to(device), fold_batch_norm=True, compile=compile)


def hyper_state(device):
    labels = torch.arange(COUNT) % CLASSES
    loss_model = LossModel(COUNT, CLASSES, "BOTH", labels, distorted=True, device=device)
    augment_model = AugmentModel(COUNT, "SEP", device)
    tables = {**loss_model.learned_tables(), **augment_model.learned_tables()}
    return HyperState(loss_model, augment_model, RowRMSprop(tables, lr=0.01))


def batches(device, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, COUNT, 1, SIZE, SIZE, generator=generator).to(device)
    labels = torch.randint(0, CLASSES, (2, COUNT), generator=generator).to(device)
    indices = torch.arange(COUNT, device=device)
    return (images[0], labels[0], indices), (images[1], labels[1], indices)


def hypergradients(net: Network, device, seed):
    """The hypergradient of every learned table of one hyper step, as a hyper epoch takes it."""
    net.train(False)
    inference = net.for_inference()
    train_batch, valid_batch = batches(device, seed)
    torch.manual_seed(seed)  # the same augmentation draw for both networks
    result, finite = hyper_step(inference, hyper_state(device), train_batch, valid_batch)
    assert bool(finite)
    return [grad.double().cpu().flatten() for grad in result.grads]


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


@pytest.mark.compile
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_hypergradient_matches_the_eager_one_and_compiles_once(device):
    torch._dynamo.reset()
    eager, compiled = network(False, device), network(True, device)
    assert isinstance(compiled.encoder, torch._dynamo.eval_frame.OptimizedModule)
    for step in range(2):  # the second pass after "training" moved weights and statistics
        reference, fast = hypergradients(eager, device, step), hypergradients(compiled, device, step)
        assert len(reference) == len(fast) == 4  # weights, soft labels, SEP probabilities, magnitudes
        for exact, approximate in zip(reference, fast):
            assert torch.isfinite(approximate).all() and exact.norm() > 0
            assert F.cosine_similarity(exact, approximate, dim=0) > 0.99
            assert (approximate.norm() / exact.norm() - 1).abs() < 0.01
        if step == 0:
            after_first_pass = graphs_compiled()
            assert after_first_pass >= 2  # the valid forward (no grad) and the train forward
        move_weights_and_statistics(eager.encoder, seed=5)
        move_weights_and_statistics(compiled.encoder._orig_mod, seed=5)
    # the folded copy took the new weights in place: its graphs were not compiled again
    assert graphs_compiled() == after_first_pass
    assert compiled.for_inference().encoder is compiled.for_inference().encoder


@pytest.mark.compile
def test_compiled_train_step_and_test_pass_match_the_eager_ones():
    torch._dynamo.reset()
    eager, compiled = network(False, "cpu"), network(True, "cpu")
    images, labels, _ = batches("cpu", 3)[0]
    for net in (eager, compiled):
        net.train(True)
        F.cross_entropy(net.train_logits(images), labels).backward()
    for a, b in zip(eager.parameters(), compiled.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    # batch norm in train mode updated the running statistics alike
    for a, b in zip(eager.encoder.buffers(), compiled.encoder.buffers()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6)
    test = [(images, labels, None), (images[:5], labels[:5], None)]  # a shorter last batch
    a, b = evaluate(eager, test, CLASSES), evaluate(compiled, test, CLASSES)
    assert a["acc"] == b["acc"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_folded_copy_refreshes_in_place_to_what_a_new_fold_gives():
    torch.manual_seed(0)
    encoder = tiny_encoder().eval()
    folded = FoldedEncoder(encoder, compile=False)
    assert folded.pairs == [("0", "1"), ("3", "4")]
    assert not any(isinstance(module, nn.BatchNorm2d) for module in folded.module.modules())
    assert not any(parameter.requires_grad for parameter in folded.module.parameters())
    tensors = [tensor.data_ptr() for tensor in folded.module.state_dict().values()]
    move_weights_and_statistics(encoder, seed=2)
    folded.refresh(encoder)
    fresh = FoldedEncoder(encoder, compile=False).module.state_dict()
    assert [tensor.data_ptr() for tensor in folded.module.state_dict().values()] == tensors
    for name, tensor in folded.module.state_dict().items():
        assert torch.equal(tensor, fresh[name]), name
    images = torch.randn(4, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(folded.module(images), encoder(images), atol=1e-5)
