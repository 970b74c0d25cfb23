"""Networks of docs/design.md §5 (custom_models.networks.build_network): an encoder giving
a feature vector and a separate nn.Linear classifier on top of it."""
import math

import pytest
import torch
from torch import nn

from custom_common.settings import get_settings
from custom_models.networks import build_network, check_model_name


def convs(module):
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def parameter_count(*modules):
    return sum(p.numel() for module in modules for p in module.parameters())


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.mark.parametrize("dataset, side", [("DIGITS", 8), ("MNIST", 28), ("FashionMNIST", 28)])
def test_resnet18_for_small_images_is_the_cifar_style_16_32_64_variant(dataset, side):
    settings = get_settings(dataset)
    encoder, decoder = build_network("resnet18", settings)
    assert encoder.num_features == 64
    assert sorted({conv.out_channels for conv in convs(encoder)}) == [16, 32, 64]
    stem = convs(encoder)[0]
    assert (stem.in_channels, stem.kernel_size, stem.stride) == (1, (3, 3), (1, 1))
    # 3 stages x 2 basic blocks x 2 convs + stem + 2 projections
    assert len([c for c in convs(encoder) if c.kernel_size == (3, 3)]) == 13
    assert len([c for c in convs(encoder) if c.kernel_size == (1, 1)]) == 2
    assert isinstance(decoder, nn.Linear)
    assert (decoder.in_features, decoder.out_features) == (64, 10)
    encoder.eval()
    with torch.no_grad():
        features = encoder(torch.randn(3, 1, side, side))
    assert features.shape == (3, 64)
    assert decoder(features).shape == (3, 10)


def test_resnet18_for_imagenet_is_the_standard_512_feature_layout():
    settings = get_settings("ImageNet")
    encoder, decoder = build_network("resnet18", settings)
    assert encoder.num_features == 512
    stem = convs(encoder)[0]
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride) == (3, 64, (7, 7), (2, 2))
    assert sorted({conv.out_channels for conv in convs(encoder)}) == [64, 128, 256, 512]
    assert any(isinstance(m, nn.MaxPool2d) for m in encoder.modules())
    # torchvision's resnet18 has 11,689,512 parameters with its 1000-way classifier
    assert parameter_count(encoder, decoder) == 11_689_512
    assert (decoder.in_features, decoder.out_features) == (512, 1000)
    encoder.eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 224, 224))
    assert features.shape == (1, 512)
    assert decoder(features).shape == (1, 1000)


def test_wresnet28_10_has_widths_16_160_320_640_and_640_features():
    encoder, decoder = build_network("wresnet28_10", get_settings("CIFAR10"))
    assert encoder.num_features == 640
    three = [c for c in convs(encoder) if c.kernel_size == (3, 3)]
    ones = [c for c in convs(encoder) if c.kernel_size == (1, 1)]
    assert sorted({c.out_channels for c in three}) == [16, 160, 320, 640]
    # stem + 3 stages x 4 blocks x 2 convs; a 1x1 projection where the shape changes
    assert len(three) == 25
    assert [(c.in_channels, c.out_channels, c.stride) for c in ones] == [
        (16, 160, (1, 1)), (160, 320, (2, 2)), (320, 640, (2, 2))]
    assert [c.out_channels for c in three].count(640) == 8
    assert all(c.bias is not None for c in three)  # 3x3 convolutions with bias
    assert all(m.momentum == 0.1 for m in encoder.modules() if isinstance(m, nn.BatchNorm2d))
    assert not any(isinstance(m, nn.Dropout) for m in encoder.modules())
    # the usual 36.5M parameters of WRN-28-10 on CIFAR-10
    assert 36_400_000 < parameter_count(encoder, decoder) < 36_600_000
    assert (decoder.in_features, decoder.out_features) == (640, 10)
    encoder.eval()
    with torch.no_grad():
        features = encoder(torch.randn(2, 3, 16, 16))
    assert features.shape == (2, 640)
    assert decoder(features).shape == (2, 10)


def test_wresnet16_4_has_256_features():
    encoder, decoder = build_network("wresnet16_4", get_settings("CIFAR100"))
    assert encoder.num_features == 256
    assert sorted({c.out_channels for c in convs(encoder)}) == [16, 64, 128, 256]
    assert len([c for c in convs(encoder) if c.kernel_size == (3, 3)]) == 1 + 3 * 2 * 2
    assert (decoder.in_features, decoder.out_features) == (256, 100)
    encoder.eval()
    with torch.no_grad():
        features = encoder(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 256)
    assert decoder(features).shape == (2, 100)


@pytest.mark.parametrize("dataset, classes", [("SVHN", 10), ("CIFAR100", 100), ("DIGITS", 10)])
def test_decoder_is_a_linear_layer_with_one_output_per_class(dataset, classes):
    encoder, decoder = build_network("wresnet10_1", get_settings(dataset))
    assert type(decoder) is nn.Linear
    assert decoder.out_features == classes
    assert decoder.in_features == encoder.num_features == 64
    assert decoder.weight.shape == (classes, 64)
    # the decoder is not part of the encoder (its weight is θ of the hypergradient)
    assert all(p is not decoder.weight for p in encoder.parameters())


def test_training_mode_forward_gives_gradients_to_encoder_and_decoder():
    encoder, decoder = build_network("resnet18", get_settings("DIGITS"))
    logits = decoder(encoder(torch.randn(4, 1, 8, 8)))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert decoder.weight.grad is not None and float(decoder.weight.grad.abs().sum()) > 0
    assert float(convs(encoder)[0].weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("name", ["resnet50", "wresnet27_10", "wresnet28", "WRN-28-10", "", "resnet18x"])
def test_unknown_model_names_raise_value_error(name):
    with pytest.raises(ValueError, match="model"):
        check_model_name(name)
    with pytest.raises(ValueError):
        build_network(name, get_settings("CIFAR10"))


@pytest.mark.parametrize("name", ["resnet18", "wresnet28_10", "wresnet16_4", "wresnet28_2", "wresnet10_1"])
def test_known_model_names_pass_the_check(name):
    assert check_model_name(name) is None


def block_inputs(block, x):
    """What the block's 1x1 projection and convolutions receive for input x."""
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = (inputs[0], output)  # a hook that returns nothing leaves the output alone
        return hook
    hooks = [module.register_forward_hook(record(name))
             for name, module in (("shortcut", block.shortcut), ("conv1", block.conv1),
                                  ("conv2", block.conv2))]
    block.eval()
    with torch.no_grad():
        out = block(x)
    for hook in hooks:
        hook.remove()
    return seen, out


@pytest.mark.parametrize("text_layout", [False, True])
def test_wide_block_strides_in_the_second_conv_and_projects_the_raw_input_unless_the_text_is_asked(
        text_layout):
    """Released layout: conv1 3x3 stride 1, conv2 3x3 stride 2, projection of the raw input x.
    Text (`--paper-text wrn-block`): conv1 stride 2, projection of CELU(BN(x))."""
    encoder, _ = build_network("wresnet16_4", get_settings("CIFAR10"), text_wide_block=text_layout)
    block = encoder.blocks[2]  # first block of the second stage: 64 -> 128 channels, stride 2
    assert (block.conv1.in_channels, block.conv1.out_channels) == (64, 128)
    assert (block.conv1.stride, block.conv2.stride) == (((2, 2), (1, 1)) if text_layout else ((1, 1), (2, 2)))
    assert (block.shortcut.kernel_size, block.shortcut.stride) == ((1, 1), (2, 2))
    x = torch.randn(2, 64, 16, 16)
    seen, out = block_inputs(block, x)
    assert seen["conv1"][1].shape == ((2, 128, 8, 8) if text_layout else (2, 128, 16, 16))
    assert out.shape == seen["shortcut"][1].shape == (2, 128, 8, 8)
    activated = torch.nn.functional.celu(block.bn1(x))
    assert torch.equal(seen["shortcut"][0], activated if text_layout else x)
    assert torch.equal(seen["conv1"][0], activated)


def test_wide_resnet_keeps_pytorchs_default_init_unless_the_text_is_asked():
    """PyTorch's default Conv2d init is uniform within ±1/sqrt(fan_in) for weight and bias;
    the text's Kaiming fan-out has std sqrt(2 / fan_out) (here 3x3x640: 0.0186, beyond the
    default bound 1/sqrt(3x3x640) = 0.0132 often) and zero biases."""
    settings = get_settings("CIFAR10")
    released, _ = build_network("wresnet16_4", settings)
    text, _ = build_network("wresnet16_4", settings, text_wide_block=True)
    for conv in convs(released):
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert float(conv.weight.detach().abs().max()) <= 1 / math.sqrt(fan_in) + 1e-7
        assert float(conv.bias.detach().abs().max()) > 0
    for conv in convs(text):
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)
        assert float(conv.bias.detach().abs().max()) == 0
    # the small ResNet-18 is Kaiming fan-out either way
    resnet, _ = build_network("resnet18", get_settings("DIGITS"))
    stem = convs(resnet)[0]
    assert float(stem.weight.detach().std()) == pytest.approx(math.sqrt(2 / (16 * 9)), rel=0.25)
