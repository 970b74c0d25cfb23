"""The test-set features of a checkpoint's network, its predictions and their 2-D t-SNE.

t-SNE is the slow part, so each checkpoint's test predictions and 2-D embeddings are
cached under the output folder, keyed by the checkpoint file's size and modification
time: a re-plot (new layout, other --configs) is instant."""
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Tuple

import numpy as np
import torch

from custom_runs import run_files

EMBEDDING_CACHE_FORMAT = 1


def iterate_test_images(data, batch_size: int, workers: int = 4) -> Iterable[torch.Tensor]:
    """uint8 test images in order, batch by batch (in memory, or read by DataLoader workers)."""
    if hasattr(data, "test_images"):
        for start in range(0, len(data.test_images), batch_size):
            yield data.test_images[start:start + batch_size]
    else:
        loader = torch.utils.data.DataLoader(data.test, batch_size=batch_size, num_workers=workers)
        for images, _, _ in loader:
            yield images


@torch.no_grad()
def extract_test_features(encoder, decoder, batches: Iterable[torch.Tensor], settings,
                  device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    """Encoder features (N, F) and predicted classes (N,) of the plain test images."""
    from custom_transforms.base import normalize
    features, predictions = [], []
    for images in batches:
        batch_features = encoder(normalize(images.to(device), settings))
        features.append(batch_features.float().cpu())
        predictions.append(decoder(batch_features).argmax(1).cpu())
    return torch.cat(features).numpy(), torch.cat(predictions).numpy()


def choose_points(num_points: int, max_points: int, seed: int) -> np.ndarray:
    """The same random subset (sorted) for every configuration of a figure; all if max_points <= 0."""
    if max_points <= 0 or num_points <= max_points:
        return np.arange(num_points)
    return np.sort(np.random.default_rng(seed).choice(num_points, max_points, replace=False))


SMALL_TSNE = 1000  # points below which t-SNE runs on one thread


def tsne_2d(features: np.ndarray, perplexity: float, seed: int, threads: int = 0) -> np.ndarray:
    """2-D t-SNE. `threads` caps the OpenMP/BLAS threads (0: one thread for small inputs, the
    libraries' default otherwise): on a busy machine, idle-spinning OpenMP threads made a
    150-point t-SNE 20x slower than a single thread."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits
    # t-SNE needs perplexity < number of points; tiny subsets get the largest sensible one
    perplexity = min(perplexity, max(1.0, (len(features) - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed)
    limit = threads if threads > 0 else (1 if len(features) < SMALL_TSNE else None)
    with threadpool_limits(limits=limit):
        return tsne.fit_transform(features.astype(np.float32)).astype(np.float32)


def checkpoint_stamp(path: Path) -> Dict[str, int]:
    stat = Path(path).stat()
    return {"size": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns)}


def load_cache(cache_path: Path, checkpoint_path: Path) -> dict:
    """The cache of this checkpoint file; a fresh one if absent, unreadable or made from an older file."""
    fresh = {"format": EMBEDDING_CACHE_FORMAT, "checkpoint": checkpoint_stamp(checkpoint_path),
             "tsne": {}}
    if not Path(cache_path).is_file():
        return fresh
    try:
        cache = run_files.load_torch(cache_path)
    except run_files.UnreadableFile:
        return fresh  # a cache is never worth an error: recompute it
    if (not isinstance(cache, dict) or cache.get("format") != EMBEDDING_CACHE_FORMAT
            or cache.get("checkpoint") != fresh["checkpoint"]):
        return fresh
    return cache


def tsne_key(perplexity: float, max_points: int, seed: int) -> str:
    return f"perplexity={float(perplexity)}_points={int(max_points)}_seed={int(seed)}"


@dataclass
class Embedding:
    labels: np.ndarray  # (N,) official test labels
    predictions: np.ndarray  # (N,) predicted classes
    indices: Optional[np.ndarray] = None  # test images shown in the t-SNE
    points: Optional[np.ndarray] = None  # (len(indices), 2)
    from_cache: bool = False

    @property
    def error(self) -> float:
        """Test error (%) over the whole test set."""
        return 100.0 * float(np.mean(self.predictions != self.labels))


# (features (N, F), official labels (N,), predictions (N,)) of one checkpoint
FeatureSource = Callable[[], Tuple[np.ndarray, np.ndarray, np.ndarray]]


def checkpoint_embedding(checkpoint_path: Path, cache_path: Path, compute: FeatureSource,
                         with_tsne: bool, perplexity: float = 30.0, max_points: int = 5000,
                         seed: int = 0, log: Callable[[str], None] = print,
                         threads: int = 0) -> Embedding:
    """Test predictions (and, with_tsne, the 2-D t-SNE of a subset of the test features)
    of one checkpoint: from the cache when it holds them, else computed and cached."""
    cache = load_cache(cache_path, checkpoint_path)
    key = tsne_key(perplexity, max_points, seed)
    cached = "predictions" in cache and (not with_tsne or key in cache["tsne"])
    if cached:
        embedding = Embedding(cache["labels"].numpy(), cache["predictions"].numpy(), from_cache=True)
        if not with_tsne:
            log(f"{Path(checkpoint_path).name}: test predictions cached ({cache_path})")
    else:
        features, labels, predictions = compute()
        embedding = Embedding(labels, predictions)
        cache["labels"] = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        cache["predictions"] = torch.from_numpy(np.asarray(predictions, dtype=np.int64))
    if with_tsne:
        if cached:
            log(f"{Path(checkpoint_path).name}: t-SNE cached ({cache_path})")
        else:
            indices = choose_points(len(labels), max_points, seed)
            log(f"{Path(checkpoint_path).name}: computing t-SNE of {len(indices)} test features "
                f"(perplexity {perplexity}) ...")
            started = time.perf_counter()
            points = tsne_2d(features[indices], perplexity, seed, threads)
            log(f"  done in {time.perf_counter() - started:.1f} s")
            cache["tsne"][key] = {"indices": torch.from_numpy(indices.astype(np.int64)),
                                  "points": torch.from_numpy(points)}
        embedding.indices = cache["tsne"][key]["indices"].numpy()
        embedding.points = cache["tsne"][key]["points"].numpy()
    if not cached:
        run_files.save_torch(cache, cache_path)
    return embedding
