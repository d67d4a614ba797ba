"""Bootstrap 95% intervals over people for accuracies and for the gap between two models.

Accuracies are over questions (or facts), but questions of one person are not independent, so people are the unit
resampled: each draw takes as many people as there are, with replacement, and the accuracy is the draw's exact
matches over its questions. The gap between two models resamples the same people for both (paired). Inputs are the
``per_person`` tables of :func:`recall_circuits.training.evaluation.evaluate` (person id -> [exact matches, questions]).

Example::

    rc.accuracy_interval({"0": [5, 6], "1": [1, 6]})          # Interval(value=0.5, low=..., high=...)
    rc.gap_interval(mixed_per_person, stage_per_person)        # mixed - two-stage, paired over people
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recall_circuits.errors import RecallCircuitsError

PerPerson = dict[str, list[int]]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile-bootstrap interval (``level``, e.g. 0.95)."""

    value: float
    low: float
    high: float
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "level": self.level}


def _counts(table: PerPerson, people: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    missing = [p for p in people if p not in table]
    if missing:
        raise RecallCircuitsError(f"no scores for people {missing[:5]}")
    rows = torch.tensor([table[p] for p in people], dtype=torch.float64)
    return rows[:, 0], rows[:, 1]


def _draws(n_people: int, n_draws: int, seed: int) -> torch.Tensor:
    if n_people < 1:
        raise RecallCircuitsError("no people to resample")
    if n_draws < 100:
        raise RecallCircuitsError(f"n_draws must be >= 100, got {n_draws}")
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_people, (n_draws, n_people), generator=g)


def _interval(value: float, stats: torch.Tensor, level: float) -> Interval:
    lo, hi = torch.quantile(stats, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=stats.dtype)).tolist()
    return Interval(value, lo, hi, level)


def accuracy_interval(table: PerPerson, *, n_draws: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Accuracy (exact matches over questions) with a bootstrap interval over people."""
    people = sorted(table)
    hit, n = _counts(table, people)
    idx = _draws(len(people), n_draws, seed)
    return _interval(float(hit.sum() / n.sum()), hit[idx].sum(1) / n[idx].sum(1), level)


def gap_interval(a: PerPerson, b: PerPerson, *, n_draws: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> Interval:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same people, with a paired bootstrap interval."""
    if set(a) != set(b):
        raise RecallCircuitsError("the two score tables cover different people")
    people = sorted(a)
    ha, na = _counts(a, people)
    hb, nb = _counts(b, people)
    idx = _draws(len(people), n_draws, seed)
    stats = ha[idx].sum(1) / na[idx].sum(1) - hb[idx].sum(1) / nb[idx].sum(1)
    return _interval(float(ha.sum() / na.sum() - hb.sum() / nb.sum()), stats, level)
