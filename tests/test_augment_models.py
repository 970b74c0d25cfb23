"""The one table of augmentation models (custom_transforms.augment_models): every name the
CLI accepts is in it and nothing else, a learned name builds an AugmentModel of its rows,
a fixed one the policy the table names, and a name missing from it is refused."""
import pytest

from custom_common.settings import get_settings
from custom_models.hyper_models import AugmentModel
from custom_runs.options import (OneLineErrorParser, add_training_arguments, policy_variant_items,
                                 saved_option)
from custom_transforms import affine
from custom_transforms.augment_models import (AUGMENT_MODELS, LEARNED_AUGMENT_MODELS, WITHOUT_POLICY,
                                              augment_choice)
from custom_transforms.policies import (COLOUR_RANGES, RAND_RANGES, RandAugment, SubPolicyAugment,
                                        make_policy_augment)

NAMES = ("NONE", "RAND", "AUTO", "DADA", "SHA", "SEP")


def parser():
    return add_training_arguments(OneLineErrorParser(prog="implicit-augment.py"))


def aug_model_action():
    return next(action for action in parser()._actions if "--aug-model" in action.option_strings)


def test_the_cli_accepts_exactly_the_names_of_the_table():
    assert tuple(AUGMENT_MODELS) == NAMES
    assert tuple(aug_model_action().choices) == NAMES
    assert [parser().parse_args(["--aug-model", name]).aug_model for name in NAMES] == list(NAMES)
    assert LEARNED_AUGMENT_MODELS == ("SHA", "SEP") and WITHOUT_POLICY == ("NONE",)


def test_what_each_name_is():
    assert {name: (choice.policy, choice.learned) for name, choice in AUGMENT_MODELS.items()} == {
        "NONE": (None, None), "RAND": ("rand", None), "AUTO": ("fast_autoaugment", None),
        "DADA": ("dada", None), "SHA": ("colour", "shared"), "SEP": ("colour", "separate")}


def test_the_help_says_what_each_name_is():
    assert aug_model_action().help == (
        "augmentation: NONE (nothing), RAND (RandAugment), AUTO (Fast AutoAugment's searched "
        "policy), DADA (DADA's searched policy), SHA (learned affine, shared by all images), "
        "SEP (learned affine, one per image) (default: NONE)")


@pytest.mark.parametrize("name, rows", [("SHA", 1), ("SEP", 37)])
def test_a_learned_name_builds_an_augment_model_and_the_colour_sub_policy(name, rows):
    model = AugmentModel(37, name)
    assert model.probability_logits.shape == (rows, affine.NUM_PARAMETERS)
    assert model.magnitude_logits.shape == (rows, affine.NUM_PARAMETERS)
    assert model.per_image == (name == "SEP")
    colour = make_policy_augment(name, get_settings("CIFAR10"))
    assert isinstance(colour, RandAugment) and (colour.num_ops, colour.magnitude) == (1, 15)
    assert colour.operation_names == tuple(COLOUR_RANGES)


@pytest.mark.parametrize("name", ["NONE", "RAND", "AUTO", "DADA"])
def test_a_fixed_name_builds_its_policy_and_no_augment_model(name):
    with pytest.raises(ValueError, match=f"^AugmentModel is for SHA or SEP, not '{name}'$"):
        AugmentModel(37, name)
    policy = make_policy_augment(name, get_settings("CIFAR100"))
    if name == "NONE":
        assert policy is None
    elif name == "RAND":
        assert isinstance(policy, RandAugment) and (policy.num_ops, policy.magnitude) == (3, 15)
        assert policy.operation_names == tuple(RAND_RANGES)
    else:
        assert isinstance(policy, SubPolicyAugment)
        assert policy.name == {"AUTO": "fast_autoaugment/cifar10", "DADA": "dada/cifar100"}[name]


def test_only_a_name_with_a_fixed_policy_keeps_its_policy_variant():
    assert policy_variant_items(["all"], "NONE") == []
    assert policy_variant_items(["all"], "SEP") == ["after-crop", "bilinear-grey"]
    assert saved_option({"aug_model": "NONE"}, "policy_variant") == []
    assert saved_option({"aug_model": "RAND"}, "policy_variant") is None


def test_a_name_missing_from_the_table_is_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(["--aug-model", "FLIP"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "implicit-augment.py: error: argument --aug-model: invalid choice: 'FLIP' (choose from "
        "'NONE', 'RAND', 'AUTO', 'DADA', 'SHA', 'SEP') (see implicit-augment.py --help)\n")
    message = "^unknown augmentation model 'FLIP'; choose one of: NONE, RAND, AUTO, DADA, SHA, SEP$"
    with pytest.raises(ValueError, match=message):
        augment_choice("FLIP")
    with pytest.raises(ValueError, match=message):
        make_policy_augment("FLIP", get_settings("MNIST"))
    with pytest.raises(ValueError, match="^AugmentModel is for SHA or SEP, not 'FLIP'$"):
        AugmentModel(37, "FLIP")
