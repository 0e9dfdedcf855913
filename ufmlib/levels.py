"""Measured eigenvalues matched to predicted levels: a comparison of two spectra.

The chapters on the other deep-learning matrices (R6), the full Hessian (R7) and the
cross-entropy layer Hessian (R9) compare whole measured spectra with predicted *levels with
multiplicities*. :func:`match_levels` / :func:`match_spectrum` assign every measured eigenvalue
to the nearest predicted level (within an explicit absolute tolerance) and count the
eigenvalues per level; :class:`LevelTable` holds the comparison and renders it as Markdown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import Sequence

import torch
from torch import Tensor

from .spectrum import Spectrum
from .validation import check_tol, f64_vector

__all__ = ["LevelRow", "LevelTable", "match_levels", "match_spectrum"]


@dataclass(frozen=True)
class LevelRow:
    """One predicted level and what was measured there.

    ``count`` is the number of measured eigenvalues within the tolerance of ``predicted``;
    ``measured_mean`` their mean (``nan`` if none) and ``max_error`` the largest
    ``|measured - predicted|`` among them (``0`` if none).
    """

    label: str
    predicted: float
    multiplicity: int
    count: int
    measured_mean: float
    max_error: float

    @property
    def count_agrees(self) -> bool:
        return self.count == self.multiplicity


@dataclass(frozen=True, eq=False)
class LevelTable:
    """Measured eigenvalues matched to predicted levels (see :func:`match_levels`).

    ``rows`` follow the order of the levels given; ``assignment[j]`` is the row index of
    measured value ``j`` (in the order given) or ``-1`` when no level is within ``atol``;
    ``unmatched`` counts those values, ``atol`` is the matching tolerance.
    """

    rows: tuple[LevelRow, ...]
    assignment: Tensor
    unmatched: int
    atol: float

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(r.count for r in self.rows)

    @property
    def multiplicities(self) -> tuple[int, ...]:
        return tuple(r.multiplicity for r in self.rows)

    @property
    def agrees(self) -> bool:
        """Every level holds exactly its multiplicity and no measured value is left over."""
        return self.unmatched == 0 and all(r.count_agrees for r in self.rows)

    @property
    def max_error(self) -> float:
        """Largest ``|measured - predicted|`` over all matched values."""
        return max((r.max_error for r in self.rows), default=0.0)

    def indices(self, i: int) -> Tensor:
        """Positions (in the measured input) of the values matched to row ``i``."""
        if isinstance(i, bool) or not isinstance(i, Integral) or not 0 <= i < len(self.rows):
            raise ValueError(f"i must be an integer in 0..{len(self.rows) - 1}; got {i!r}")
        return torch.nonzero(self.assignment == int(i)).reshape(-1)

    def markdown(self, *, digits: int = 8) -> str:
        """The table as Markdown: level, predicted value, multiplicity, count, mean, error."""
        if isinstance(digits, bool) or not isinstance(digits, Integral) or not 1 <= digits <= 17:
            raise ValueError(f"digits must be an integer in 1..17; got {digits!r}")
        head = ("| level | predicted | multiplicity | measured count | measured mean | max abs. error |\n"
                "|---|---|---|---|---|---|\n")
        body = "\n".join(
            f"| {r.label} | {r.predicted:.{digits}g} | {r.multiplicity} | {r.count} | "
            f"{r.measured_mean:.{digits}g} | {r.max_error:.1e} |"
            for r in self.rows
        )
        tail = f"\n| unmatched | | 0 | {self.unmatched} | | |" if self.unmatched else ""
        return head + body + tail


def match_levels(
    measured,
    values: Sequence[float],
    multiplicities: Sequence[int],
    *,
    atol: float,
    labels: Sequence[str] | None = None,
) -> LevelTable:
    """Match measured eigenvalues to predicted levels and count them per level.

    Each measured value is assigned to the nearest predicted value when the distance is at
    most ``atol`` (an absolute tolerance, in the units of the eigenvalues), otherwise it is
    "unmatched". ``atol`` must be smaller than half the smallest gap between two levels, so
    that the assignment is unambiguous (else :class:`ValueError`). The result agrees with the
    prediction (:attr:`LevelTable.agrees`) when every level holds exactly its multiplicity.
    """
    if isinstance(measured, Spectrum):
        measured = measured.eigenvalues
    x = f64_vector("measured", measured)
    v = f64_vector("values", values)
    atol = check_tol("atol", atol)
    mults = list(multiplicities)
    if len(mults) != v.numel() or v.numel() == 0:
        raise ValueError(f"multiplicities must give one entry per value ({v.numel()}, at least one); got {len(mults)}")
    for m in mults:
        if isinstance(m, bool) or not isinstance(m, Integral) or m < 0:
            raise ValueError(f"multiplicities must be integers >= 0; got {m!r}")
    if labels is None:
        labels = [f"{i + 1}" for i in range(v.numel())]
    labels = [str(s) for s in labels]
    if len(labels) != v.numel():
        raise ValueError(f"labels must give one entry per value ({v.numel()}); got {len(labels)}")
    if v.numel() > 1:
        gaps = (v[:, None] - v[None, :]).abs().masked_fill(torch.eye(v.numel(), dtype=torch.bool), math.inf)
        if float(gaps.min()) <= 2 * atol:
            raise ValueError(f"atol must be smaller than half the smallest gap between levels "
                             f"({float(gaps.min()) / 2:.3g}); got {atol:.3g}")
    if x.numel() == 0:
        assign = torch.zeros(0, dtype=torch.long)
    else:
        dist = (x[:, None] - v[None, :]).abs()
        best = dist.min(dim=1)
        assign = torch.where(best.values <= atol, best.indices, torch.full_like(best.indices, -1))
    rows = []
    for i, (val, m, lab) in enumerate(zip(v.tolist(), mults, labels)):
        got = x[assign == i]
        rows.append(LevelRow(
            label=lab, predicted=val, multiplicity=int(m), count=int(got.numel()),
            measured_mean=float(got.mean()) if got.numel() else math.nan,
            max_error=float((got - val).abs().max()) if got.numel() else 0.0,
        ))
    return LevelTable(rows=tuple(rows), assignment=assign, unmatched=int((assign < 0).sum()), atol=atol)


def match_spectrum(measured, predicted: Spectrum, *, atol: float, labels: Sequence[str] | None = None) -> LevelTable:
    """:func:`match_levels` against the levels of a predicted :class:`ufmlib.spectrum.Spectrum`.

    When ``measured`` holds the whole spectrum (``predicted.dim`` values) the bulk value is
    added as a last level with multiplicity ``dim - rank`` (label ``"bulk"``) unless it
    coincides with a listed level, in which case that level's multiplicity is increased.
    When it holds fewer values (the top of the spectrum), only the listed levels are used.
    """
    if not isinstance(predicted, Spectrum):
        raise ValueError(f"predicted must be a Spectrum; got {type(predicted).__name__}")
    if isinstance(measured, Spectrum):
        measured = measured.eigenvalues
    x = f64_vector("measured", measured)
    values = [float(t) for t in predicted.values.tolist()]
    mults = [int(m) for m in predicted.multiplicities]
    labs = list(labels) if labels is not None else [f"{i + 1}" for i in range(len(values))]
    if len(labs) != len(values):
        raise ValueError(f"labels must give one entry per level of predicted ({len(values)}); got {len(labs)}")
    if predicted.dim is not None and x.numel() == predicted.dim:
        rest = predicted.dim - sum(mults)
        if rest > 0:
            bulk = float(predicted.bulk_value or 0.0)
            same = [i for i, val in enumerate(values) if abs(val - bulk) <= atol]
            if same:
                mults[same[0]] += rest
            else:
                values.append(bulk)
                mults.append(rest)
                labs.append("bulk")
    return match_levels(x, values, mults, atol=atol, labels=labs)
