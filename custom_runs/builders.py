"""What a run trains with (docs/design.md §4-§6): the device, the batches of its data on that device,
the network, its optimiser and the hyperparameter models (compiled where the compute path
says so), built into the run's parts (custom_runs/run_values.py)."""
import torch

from custom_datasets.batches import DeviceBatches, FolderBatches
from custom_datasets.containers import InMemoryData
from custom_models.hyper_models import AugmentModel, LossModel, RowRMSprop
from custom_models.networks import build_network
from custom_models.training import Classifier, HyperState, Network
from custom_common.errors import UsageError
from custom_runs import stop_points
from custom_runs.run_state import seed_epoch
from custom_runs.run_values import PreparedData, RunBatches, RunModels, RunParts, RunPlan
from custom_transforms.affine import Resampling
from custom_transforms.augment_models import LEARNED_AUGMENT_MODELS
from custom_transforms.base import EvalTransform, TrainTransform


def select_device(args) -> torch.device:
    if args.no_cuda:
        return torch.device("cpu")
    if torch.cuda.is_available():
        if args.gpu >= torch.cuda.device_count():
            raise UsageError(f"--gpu {args.gpu}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", args.gpu)
    return torch.device("cpu")


def cpu_fallback_note(args) -> str:
    """Said out loud when training starts: a broken CUDA install must not turn a GPU job into
    a silent CPU one."""
    ignored = " (--gpu ignored)" if args.gpu != 0 else ""
    return f"note: CUDA is not available, training on the CPU{ignored}; --no-cuda silences this"


def build_parts(plan: RunPlan, prepared: PreparedData) -> RunParts:
    """The batches, then the models with the initial weights of the seed's epoch -1."""
    permutations = torch.Generator()
    batches = build_batches(plan, prepared, permutations)
    seed_epoch(plan.args.seed, -1)
    return RunParts(batches=batches, models=build_models(plan, prepared),
                    permutations=permutations)


def build_batches(plan: RunPlan, prepared: PreparedData,
                  permutations: torch.Generator) -> RunBatches:
    stop_points.stop_if_asked(plan.stop_at, ("setup", "build_batches"), plan.collectives.rank)
    args, settings, device = plan.args, plan.settings, plan.device
    data, split, collectives = prepared.data, prepared.split, plan.collectives
    from custom_transforms.policies import make_policy_augment
    policy = make_policy_augment(args.aug_model, settings,
                                 bilinear_grey="bilinear-grey" in args.policy_variant)
    train_transform = TrainTransform(settings, policy,
                                     policy_after_crop="after-crop" in args.policy_variant)
    eval_transform = EvalTransform(settings)
    train_indices, valid_indices = split.train_indices, split.valid_indices
    if args.oversplit:
        train_indices = valid_indices = torch.arange(data.num_train)
    noisy_labels, official_labels = split.train_targets, data.train_targets

    if isinstance(data, InMemoryData):
        train_images = data.train_images.to(device)
        test_images = data.test_images.to(device)
        test_labels = data.test_targets.to(device)
        noisy_labels, official_labels = noisy_labels.to(device), official_labels.to(device)

        def batches(images, labels, indices, size, shuffle, transform, drop_last=False):
            return DeviceBatches(images, labels, indices, size, shuffle, transform, drop_last,
                                 permutations, collectives)
        train_source, test_source = train_images, test_images
        valid_source = train_source
    else:
        test_labels = data.test_targets

        def batches(dataset, labels, indices, size, shuffle, transform, drop_last=False):
            return FolderBatches(dataset, labels, indices, size, shuffle, transform, device,
                                 args.workers, drop_last, permutations, collectives)
        train_source, test_source = data.train, data.test
        valid_source = data.train_plain if "valid" in args.paper_text else train_source

    # the released code draws the valid batches of hyper steps from the train dataset
    # object, so they carry the train transforms (labels stay the official ones)
    valid_transform = eval_transform if "valid" in args.paper_text else train_transform
    # and its valid and hyper loaders drop a short last batch, as the train loader does
    drop_short = "last-batch" not in args.paper_text
    test_indices = torch.arange(len(data.test_targets))
    train_batches = batches(train_source, noisy_labels, train_indices, settings.batch_size,
                            True, train_transform, drop_last=True)
    hyper_batches = batches(train_source, noisy_labels, train_indices,
                            settings.hyper_batch_size, True, train_transform, drop_short)
    if args.overfit:
        valid_batches = batches(test_source, test_labels, test_indices,
                                settings.hyper_batch_size, True, eval_transform, drop_short)
    else:
        valid_batches = batches(valid_source, official_labels, valid_indices,
                                settings.hyper_batch_size, True, valid_transform, drop_short)
    test_batches = batches(test_source, test_labels, test_indices,
                           plan.compute_path.test_batch_size, False, eval_transform)
    # model selection evaluates the clean valid split as the test set is evaluated: plain
    # images, no identity resample
    selection_batches = None
    if not args.overfit and not getattr(data, "test_is_valid", False):
        plain_source = train_source if isinstance(data, InMemoryData) else data.train_plain
        selection_batches = batches(plain_source, official_labels, valid_indices,
                                    plan.compute_path.test_batch_size, False, eval_transform)
    return RunBatches(train=train_batches, hyper=hyper_batches, valid=valid_batches,
                      test=test_batches, selection=selection_batches,
                      train_transform=train_transform)


def build_models(plan: RunPlan, prepared: PreparedData) -> RunModels:
    stop_points.stop_if_asked(plan.stop_at, ("setup", "build_models"), plan.collectives.rank)
    args, settings, device = plan.args, plan.settings, plan.device
    compute_path, collectives = plan.compute_path, plan.collectives
    encoder, decoder = build_network(args.model, settings, "wrn-block" in args.paper_text)
    encoder, decoder = encoder.to(device), decoder.to(device)
    if compute_path.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    network = Network(encoder, decoder, amp=compute_path.amp,
                      fold_batch_norm=compute_path.fold_batch_norm, compile=compute_path.compile)
    if collectives.world_size > 1:
        # batch norm stays per rank (see average_buffers; SyncBatchNorm needs GPUs)
        network.distributed = torch.nn.parallel.DistributedDataParallel(
            Classifier(network), device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False)
    optimizer = torch.optim.SGD(network.parameters(), lr=args.lr, momentum=0.9,
                                nesterov=True, weight_decay=1e-4)
    # a user's own folder is taken to be noisy and imbalanced already (docs/design.md §3.1)
    distorted = args.imbalance_ratio != 1 or args.noise_ratio != 0 or settings.folder is not None
    num_train = prepared.data.num_train
    loss_model = LossModel(num_train, settings.num_classes, args.los_model,
                           prepared.split.train_targets, distorted, device)
    augment_model = None
    if args.aug_model in LEARNED_AUGMENT_MODELS:
        augment_model = AugmentModel(num_train, args.aug_model, device)
    hyper_optimizer = None
    if args.hyper_opt == "HES":
        tables = dict(loss_model.learned_tables())
        if augment_model is not None:
            tables.update(augment_model.learned_tables())
        hyper_optimizer = RowRMSprop(tables, lr=args.hyper_beta, alpha=args.hyper_gamma)
    resampling = Resampling(matrix_at_warp_size="geometry" in args.paper_text,
                            consistent_grid="geometry" in args.paper_text,
                            average_pool_back="downsample" in args.paper_text)
    hyper = HyperState(loss_model, augment_model, hyper_optimizer, args.hyper_iters,
                       args.hyper_alpha, resampling=resampling,
                       resample_every_configuration="baselines" not in args.paper_text,
                       collectives=collectives)
    return RunModels(encoder=encoder, decoder=decoder, network=network, optimizer=optimizer,
                     loss_model=loss_model, augment_model=augment_model, hyper=hyper)
