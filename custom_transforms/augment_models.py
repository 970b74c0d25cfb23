"""The augmentation models that `--aug-model` names, in one table (docs/design.md §3.2, §6).

Each name says what a run applies to its train images: a fixed policy (which one), a
learned model (its affine logits shared by all images or one row per image, plus the
colour sub-policy), or nothing. The options' choices and help, the policy builder
(custom_transforms.policies.make_policy_augment), the augmentation model
(custom_models.hyper_models.AugmentModel) and the run names all read it here.
"""
from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class AugmentChoice:
    name: str
    # the fixed policy applied to every image: "rand" (RandAugment at the dataset's N, M),
    # "fast_autoaugment" or "dada" (a searched policy of custom_transforms/policies/), "colour"
    # (the colour sub-policy beside a learned model), or None
    policy: Optional[str]
    # what is learned: None, "shared" (one row of affine logits) or "separate" (a row per
    # train image)
    learned: Optional[str]
    summary: str  # what --help says of it


AUGMENT_MODELS: Dict[str, AugmentChoice] = {choice.name: choice for choice in (
    AugmentChoice("NONE", None, None, "nothing"),
    AugmentChoice("RAND", "rand", None, "RandAugment"),
    AugmentChoice("AUTO", "fast_autoaugment", None, "Fast AutoAugment's searched policy"),
    AugmentChoice("DADA", "dada", None, "DADA's searched policy"),
    AugmentChoice("SHA", "colour", "shared", "learned affine, shared by all images"),
    AugmentChoice("SEP", "colour", "separate", "learned affine, one per image"),
)}
LEARNED_AUGMENT_MODELS = tuple(name for name, choice in AUGMENT_MODELS.items() if choice.learned)
# no fixed policy, so --policy-variant has nothing to change and leaves the run name alone
WITHOUT_POLICY = tuple(name for name, choice in AUGMENT_MODELS.items() if choice.policy is None)


def augment_choice(name: str) -> AugmentChoice:
    try:
        return AUGMENT_MODELS[name]
    except KeyError:
        raise ValueError(f"unknown augmentation model '{name}'; "
                         f"choose one of: {', '.join(AUGMENT_MODELS)}") from None


def augment_models_help() -> str:
    """Each name and what it is, for --aug-model's help."""
    return ", ".join(f"{name} ({choice.summary})" for name, choice in AUGMENT_MODELS.items())
