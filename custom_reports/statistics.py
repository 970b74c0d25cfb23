"""The statistics of the reports: mean and sample standard deviation over runs, and the paired
difference of two rows run folder by run folder with its 95 % t interval (the claim a table
makes is "better" only where that interval excludes zero)."""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

MISSING = "—"


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); nan for fewer than two runs

    def text(self, digits: int = 2) -> str:
        if self.n == 0:
            return MISSING
        if self.n == 1:  # a spread needs two runs; "± nan" would only look like an error
            return f"{self.mean:.{digits}f} ({self.n})"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n})"


def summarize(values: Sequence[float]) -> Summary:
    values = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    if len(values) == 0:
        return Summary(0, math.nan, math.nan)
    # ddof=1 of a single value is undefined; say so with nan instead of numpy's warning
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return Summary(len(values), float(np.mean(values)), std)


@dataclass(frozen=True)
class PairedDifference:
    """Error of a row minus error of its reference row (percentage points; negative: fewer
    errors), over the run folders finished in both: mean and its 95 % t interval."""
    against: str  # the reference row's name
    runs: List[str]
    differences: List[float]

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def mean(self) -> float:
        return float(np.mean(self.differences)) if self.differences else math.nan

    @property
    def interval(self) -> Tuple[float, float]:
        """mean ± t(0.975, n-1) · s/√n; nan for fewer than two runs (no spread to measure)."""
        if self.n < 2:
            return math.nan, math.nan
        from scipy import stats
        half = float(stats.t.ppf(0.975, self.n - 1)) * float(np.std(self.differences, ddof=1)) \
            / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    @property
    def wins(self) -> int:
        """Run folders where the row made fewer errors than its reference."""
        return sum(difference < 0 for difference in self.differences)

    @property
    def verdict(self) -> str:
        """"better" / "worse" where the interval excludes zero, else "comparable"."""
        low, high = self.interval
        return "better" if high < 0 else "worse" if low > 0 else "comparable"

    def text(self) -> str:
        if self.n == 0:
            return MISSING
        low, high = self.interval
        spread = "(n = 1: no interval)" if self.n == 1 else f"[{low:+.2f}, {high:+.2f}]"
        return f"{self.mean:+.2f} {spread} {self.wins}/{self.n}"


def paired_difference(runs: Sequence[str], errors: Sequence[Optional[float]], reference_runs: Sequence[str],
                      reference_errors: Sequence[Optional[float]], against: str) -> PairedDifference:
    """Differences run folder by run folder; a folder missing a number on either side is left out."""
    reference = {run: error for run, error in zip(reference_runs, reference_errors) if error is not None}
    pairs = [(run, error - reference[run]) for run, error in zip(runs, errors)
             if error is not None and run in reference]
    return PairedDifference(against, [run for run, _ in pairs], [difference for _, difference in pairs])


def json_number(value) -> Optional[float]:
    """JSON has no NaN: undefined numbers are written as null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def decimal_text(value: Optional[float], digits: int = 2) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.{digits}f}"
