"""The measures of bench/label_errors.py: how well a score ranks the truly flipped labels
(precision and recall at K, the AUROC), the scores it derives from a network's
probabilities and AutoDO's trust, the stratified folds, the paired bootstrap of two
rankings on the same labels and the Student-t interval over seeds."""
from typing import Dict, List, Optional, Sequence

import numpy as np

TOP_KS = (50, 100)
# bestvalid_ (the epoch of best accuracy on the clean valid/ images) and last_: neither choice
# looks at the test labels, so both arms rank as a user without clean test labels would
CHECKPOINT_KINDS = ("valid", "last")


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


def auroc(suspicion: np.ndarray, flipped: np.ndarray) -> Optional[float]:
    """The Mann-Whitney form of the AUROC (ties count half): sklearn's roc_auc_score, fast
    enough to repeat for every bootstrap resample."""
    from scipy.stats import rankdata
    positives = int(flipped.sum())
    negatives = len(flipped) - positives
    if not positives or not negatives:
        return None
    ranks = rankdata(suspicion)
    return float((ranks[flipped].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def ranking_metrics(suspicion: np.ndarray, flipped: np.ndarray, ks: Sequence[int] = TOP_KS) -> Dict:
    """precision@K / recall@K (K = number flipped, and each of ks) of the ranking by
    `suspicion` (highest first, ties in index order) and its AUROC."""
    suspicion = np.asarray(suspicion, dtype=np.float64)
    flipped = np.asarray(flipped, dtype=bool)
    if suspicion.shape != flipped.shape:
        raise BenchError(f"{len(suspicion)} scores for {len(flipped)} labels")
    order = np.argsort(-suspicion, kind="stable")
    positives = int(flipped.sum())
    result = {"flipped": positives}
    for name, k in [("n", positives)] + [(str(k), k) for k in ks]:
        k = min(k, len(order))
        hits = int(flipped[order[:k]].sum()) if k else 0
        result[f"precision@{name}"] = hits / k if k else None
        result[f"recall@{name}"] = hits / positives if positives else None
    result["auroc"] = auroc(suspicion, flipped)
    return result


def set_metrics(flagged: np.ndarray, flipped: np.ndarray) -> Dict:
    """Precision and recall of a flagged set (boolean mask)."""
    flagged, flipped = np.asarray(flagged, dtype=bool), np.asarray(flipped, dtype=bool)
    hits = int((flagged & flipped).sum())
    return {"flagged": int(flagged.sum()), "precision": hits / flagged.sum() if flagged.any() else None,
            "recall": hits / flipped.sum() if flipped.any() else None}


def self_confidence(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    return probabilities[np.arange(len(given)), given]


def normalised_margin(probabilities: np.ndarray, given: np.ndarray) -> np.ndarray:
    """p[y] - max over the other classes (cleanlab's normalized_margin up to (x+1)/2)."""
    rows = np.arange(len(given))
    others = probabilities.copy()
    others[rows, given] = -np.inf
    return probabilities[rows, given] - others.max(1)


def per_class_normalised(trust: np.ndarray, given: np.ndarray) -> np.ndarray:
    """trust / the median trust of the images with the same given label (the learned weights
    also rise for rare classes; this removes the class-level scale)."""
    out = np.empty_like(trust, dtype=np.float64)
    for label in np.unique(given):
        members = given == label
        median = float(np.median(trust[members]))
        out[members] = trust[members] / median if median > 0 else trust[members]
    return out


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number of each position: within each label, a seeded permutation dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[rng.permutation(len(members))]
        fold[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return fold


def precision_at_flipped(suspicion: np.ndarray, flipped: np.ndarray) -> Optional[float]:
    k = int(flipped.sum())
    if not k:
        return None
    order = np.argsort(-suspicion, kind="stable")
    return float(flipped[order[:k]].sum() / k)


PAIRED_METRICS = {"auroc": auroc, "precision@n": precision_at_flipped}


def paired_bootstrap(first: np.ndarray, second: np.ndarray, flipped: np.ndarray, metric: str,
                     resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> Dict:
    """metric(first) - metric(second) on the same labels, and its percentile interval over
    `resamples` draws of the images with replacement; both rankings see the same draw, so
    what makes an image easy or hard for both cancels."""
    measure = PAIRED_METRICS[metric]
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    flipped = np.asarray(flipped, dtype=bool)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        pick = rng.integers(0, len(flipped), len(flipped))
        a, b = measure(first[pick], flipped[pick]), measure(second[pick], flipped[pick])
        if a is not None and b is not None:  # a draw without a flipped label measures nothing
            differences.append(a - b)
    tail = 50 * (1 - confidence)
    low, high = np.percentile(differences, [tail, 100 - tail])
    return {"difference": measure(first, flipped) - measure(second, flipped),
            "low": float(low), "high": float(high), "resamples": resamples}


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Dict:
    """Mean, sample sd and the Student-t interval of the mean (null bounds below 2 values)."""
    from scipy.stats import t
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    result = {"n": n, "mean": float(values.mean()) if n else None, "sd": None, "low": None, "high": None}
    if n >= 2:
        sd = float(values.std(ddof=1))
        half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / np.sqrt(n)
        result.update(sd=sd, low=result["mean"] - half, high=result["mean"] + half)
    return result


def reading(interval: Dict) -> Optional[str]:
    """The word an interval of (default - cleanlab) supports."""
    if interval["low"] is None:
        return None
    if interval["low"] > 0:
        return "better"
    return "worse" if interval["high"] < 0 else "comparable"


def summarise(levels: List[Dict]) -> Dict[str, Dict]:
    """Per noise level, over its seeds: each ranking's mean and sd, the paired intervals of
    the default ranking against cleanlab's, the arms' mean cost, find_label_issues' mean."""
    summary = {}
    for noise in sorted({level["noise_ratio"] for level in levels}):
        group = [level for level in levels if level["noise_ratio"] == noise]
        names = list(dict.fromkeys(m["name"] for level in group for m in level["methods"]))
        rankings = []
        for name in names:
            found = [m for level in group for m in level["methods"] if m["name"] == name]
            entry = {"name": name, "runs": found[0]["runs"], "seeds": len(found)}
            for metric in ("precision@n", "precision@50", "precision@100", "auroc"):
                entry[metric] = t_interval([m["metrics"][metric] for m in found
                                            if m["metrics"][metric] is not None])
            rankings.append(entry)
        paired = {}
        for kind in CHECKPOINT_KINDS:
            per_seed = [(level["seed"], level["paired"][kind]) for level in group if kind in level["paired"]]
            if per_seed:
                paired[kind] = {metric: dict(t_interval([p[metric]["difference"] for _, p in per_seed]),
                                             per_seed=[dict(p[metric], seed=seed) for seed, p in per_seed])
                                for metric in PAIRED_METRICS}
                for metric in PAIRED_METRICS:
                    paired[kind][metric]["reading"] = reading(paired[kind][metric])
        costs = {}
        for arm in ("BOTH", "WGHT", "Baseline", "folds"):
            found = [level["costs"][arm] for level in group if arm in level["costs"]]
            if found:
                costs[arm] = {"runs": found[0]["runs"], "seeds": len(found),
                              "train_minutes": float(np.mean([c["train_minutes"] for c in found])),
                              "scoring_s": float(np.mean([c["scoring_s"] for c in found]))}
        # the ratio seed by seed too: a seed's two arms trained back to back, under the same load
        ratios = [level["costs"]["folds"]["train_minutes"] / level["costs"]["BOTH"]["train_minutes"]
                  for level in group if "folds" in level["costs"] and "BOTH" in level["costs"]]
        sets = [level["find_label_issues"] for level in group if level.get("find_label_issues")]
        summary[f"{noise:.0%}"] = {
            "noise_ratio": noise, "seeds": [level["seed"] for level in group],
            "flipped": [level["flipped"] for level in group], "train": group[0]["train"],
            "rankings": rankings, "paired": paired, "costs": costs, "folds_to_both_minutes": ratios,
            "find_label_issues": {key: float(np.mean([entry[key] for entry in sets]))
                                  for key in ("flagged", "precision", "recall")} if sets else None}
    return summary


def self_confidence_ranking(run: str, kind: str) -> str:
    """The name of a network's self-confidence ranking; BOTH's is get-results.py --suspects'
    default order."""
    return f"self-confidence, {run} network ({kind})"


def cleanlab_ranking(folds: int, kind: str, method: str = "self_confidence") -> str:
    return f"cleanlab {method}, {folds}-fold Baselines ({kind})"
