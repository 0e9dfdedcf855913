"""Seed screening for the ReLU deep UFM: which kind of solution did gradient descent reach? (R8)

In the ReLU deep UFM the global optima *among deep-neural-collapse (DNC) solutions* have
non-negative activations and coincide with the global minimiser of the linear model (R8,
v2 Thm 8 as described by the ICLR-2025 reviews; book appendix *How each statement was rebuilt*,
sources-r8). Gradient descent from a random start does not always go there: for ``K = 3`` it
often ends at a **non-DNC low-rank point** whose hidden class means span only ``K - 1``
dimensions and whose loss is *below* the linear optimum (the companion's runs, book chapter
``relu``; consistent with Súkeník et al. 2024, who show that low-rank solutions can beat DNC in
deep UFMs), or at a poor point where two classes share one feature.
Figures of the ReLU spectrum (v1 Fig 9, Table 2) must therefore be drawn from a run that was
checked to be DNC-like (book appendix *How each statement was rebuilt*, sources-conventions).

* :func:`solution_metrics` measures, at one parameter point, what the test needs, per layer
  ``l = 1..L`` (features ``X_l``, the input of ``W_l``): the within-class share of the features,
  the largest cosine between two class means, the rank of the class means and the share of
  the pre-activation class means that the ReLU clips away.
* :class:`DNCTest` turns these into one of five kinds (:data:`SOLUTION_KINDS`):

  - ``"dnc"``: in every layer the features are collapsed to their class means (relative
    within-class share ``<= nc1``), the class means are nearly orthogonal (every
    ``|cos| <= cosine``) and their pre-activations nearly non-negative (clipped share
    ``<= clipped``) - the structure of the non-negative optimum of R8, where every ReLU acts
    as the identity;
  - ``"clipped-dnc"``: the same, except in the free features ``H_1`` and the first ReLU: the
    class means of ``H_1`` are not orthogonal and the first ReLU clips a part of the
    pre-activations ``W_1 H_1``, while every post-activation layer is collapsed to an
    orthogonal frame. Such points reach the loss of the linear optimum as well: the penalty
    of the pair ``(H_1, W_1)`` depends on the nuclear norm of ``W_1 H_1``, which clipping
    cannot lower below that of the clipped, orthogonal features (the notebook ``relu`` proves
    it), and equals it along a flat family;
  - ``"merged"``: in some layer two class means point the same way (``cos >= merged``), so
    two classes share one feature;
  - ``"low-rank"``: otherwise, in some layer the class means have rank below ``K``
    (``σ_K/σ_1 <= rank``): the low-rank solution of the book chapter ``relu``;
  - ``"other"``: none of these - typically a run that has not converged yet.

  The test uses the structure only, never the loss, so that the loss can be compared with the
  linear optimum afterwards: by R8 a collapsed point cannot go below it.

* :func:`classify_solution` = both steps at once.
* :func:`screen_seeds` trains one model per seed - all seeds at once, by batched full-batch
  gradient descent that repeats :func:`ufmlib.train.train` up to round-off (same initialisation
  :func:`ufmlib.model.init_params`, same update, ``ReLU'(0) = 0``) - and classifies each end
  point (:class:`SeedOutcome`); :func:`count_kinds` tallies the kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm  # the text bar: tqdm.auto warns in kernels without ipywidgets

from .collapse import class_means, nc1_relative
from .config import UFMConfig
from .model import UFMParams, forward, init_params, labels, regularised_loss
from .optimum import dnc_optimum
from .train import TrainingDivergedError, log_epochs, loss_and_grad
from .validation import check_fraction, check_int, check_positive

__all__ = [
    "SOLUTION_KINDS",
    "SolutionMetrics",
    "DNCTest",
    "solution_metrics",
    "classify_solution",
    "SeedOutcome",
    "screen_seeds",
    "count_kinds",
    "flat_family_clipping",
]

SOLUTION_KINDS = ("dnc", "clipped-dnc", "merged", "low-rank", "other")
"""The kinds of end point told apart by :class:`DNCTest`, in the order they are tested."""

F64 = torch.float64


# ----------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class SolutionMetrics:
    """What the DNC test measures at one parameter point (tuples run over layers ``l = 1..L``).

    ``within[l-1]``: ``||X_l - M_l ⊗ 1_n^T||_F / ||X_l||_F`` (0 under DNC1);
    ``max_cosine[l-1]``: largest ``|cos|`` between two class means of ``X_l`` (0 for an
    orthogonal frame; 1 if a class mean is zero); ``rank_ratio[l-1]``: ``σ_K/σ_1`` of the class
    means ``M_l`` (0 when they span fewer than ``K`` dimensions); ``clipped[l-1]``:
    ``||min(M^H_l, 0)||_F / ||M^H_l||_F`` for the class means ``M^H_l`` of the pre-activation
    ``H_l`` (0 for ``l = 1`` and for the linear model, where nothing is clipped).
    ``loss`` is the regularised loss and ``linear_bound`` the optimal loss of the *linear*
    model with the same sizes (R1, v1 Eq. (2); 1/2 when condition (2) fails).
    """

    loss: float
    linear_bound: float
    within: tuple[float, ...]
    max_cosine: tuple[float, ...]
    rank_ratio: tuple[float, ...]
    clipped: tuple[float, ...]

    @property
    def below_linear_bound(self) -> float:
        """``(linear_bound - loss)/linear_bound``: positive when the point beats the linear optimum."""
        return (self.linear_bound - self.loss) / self.linear_bound

    def as_dict(self) -> dict:
        return {
            "loss": self.loss,
            "linear_bound": self.linear_bound,
            "within": max(self.within),
            "max_cosine": max(self.max_cosine),
            "min_rank_ratio": min(self.rank_ratio),
            "clipped": max(self.clipped),
        }


def _max_cosine(M: Tensor) -> float:
    norms = torch.linalg.vector_norm(M, dim=0)
    if bool((norms == 0).any()):
        return 1.0
    C = (M.T @ M) / (norms[:, None] * norms[None, :])
    C = C - torch.diag(torch.diagonal(C))
    return float(C.abs().max())


def _rank_ratio(M: Tensor) -> float:
    s = torch.linalg.svdvals(M)
    return float(s[-1] / s[0]) if float(s[0]) > 0 else 0.0


def _clipped(Mh: Tensor) -> float:
    total = float(torch.linalg.matrix_norm(Mh))
    return float(torch.linalg.matrix_norm(Mh.clamp_max(0.0))) / total if total > 0 else 0.0


def _check_cfg(cfg) -> UFMConfig:
    if not isinstance(cfg, UFMConfig):
        raise ValueError(f"cfg must be a UFMConfig; got {type(cfg).__name__}")
    return cfg


def solution_metrics(params: UFMParams, cfg: UFMConfig) -> SolutionMetrics:
    """Measure :class:`SolutionMetrics` at ``params`` (float64 copy on the CPU)."""
    cfg = _check_cfg(cfg)
    if not isinstance(params, UFMParams) or params.L != cfg.L:
        raise ValueError(f"params must be UFMParams with L = {cfg.L} weight matrices")
    c64 = cfg.replace(dtype="float64", device="cpu")
    p = params.to(dtype=F64, device="cpu")
    fw = forward(p, c64.activation)
    K = cfg.K
    within, cosines, ranks, clipped = [], [], [], []
    for l in range(1, cfg.L + 1):
        X = fw.inputs[l - 1]
        M = class_means(X, K)
        within.append(nc1_relative(X, K))
        cosines.append(_max_cosine(M))
        ranks.append(_rank_ratio(M))
        relu = c64.activation == "relu" and l >= 2
        clipped.append(_clipped(class_means(fw.preacts[l - 1], K)) if relu else 0.0)
    return SolutionMetrics(
        loss=float(regularised_loss(p, c64)),
        linear_bound=float(dnc_optimum(c64).optimal_loss),
        within=tuple(within),
        max_cosine=tuple(cosines),
        rank_ratio=tuple(ranks),
        clipped=tuple(clipped),
    )


# ----------------------------------------------------------------------------- the test
@dataclass(frozen=True)
class DNCTest:
    """Thresholds of the DNC test (see the module docstring for the rule).

    ``nc1``: largest within-class share ``||X_l - M_l ⊗ 1^T||/||X_l||``; ``cosine``: largest
    ``|cos|`` between two class means; ``clipped``: largest clipped share of the pre-activation
    class means; ``merged``: cosine from which two classes count as merged; ``rank``: largest
    ``σ_K/σ_1`` of the class means that counts as rank-deficient. The defaults separate the
    end points seen in the companion's runs of the ReLU model (book chapter ``relu``): collapsed
    runs have cosines of a few 10⁻² to 0.15 and ``σ_K/σ_1`` near 0.9, and their ReLUs clip less than 10⁻³ of the class means,
    except the first ReLU of a ``"clipped-dnc"`` run, which clips a share from 0 up to about
    0.5 (a continuous family, so the boundary between the two kinds is a choice); the low-rank
    solution has a pair of class means at about 45° (cosine ≈ 0.71), ``σ_K/σ_1`` below 0.02 and
    a last ReLU that clips about half; merged classes have cosine 1.
    """

    nc1: float = 0.05
    cosine: float = 0.2
    clipped: float = 0.02
    merged: float = 0.99
    rank: float = 0.05

    def __post_init__(self) -> None:
        for name in ("nc1", "cosine", "clipped", "merged", "rank"):
            check_fraction(name, getattr(self, name))
        if self.cosine >= self.merged:
            raise ValueError(f"cosine must be below merged ({self.merged}); got {self.cosine!r}")

    def _collapsed(self, m: SolutionMetrics, first: int) -> bool:
        """DNC1 in every layer, orthogonal class means from layer ``first`` on, no clipping after layer ``first``.

        ``clipped[l-1]`` belongs to the ReLU that produces ``X_l``, i.e. the one after ``W_{l-1}``.
        """
        return (
            max(m.within) <= self.nc1
            and max(m.max_cosine[first - 1 :]) <= self.cosine
            and max(m.clipped[first:], default=0.0) <= self.clipped
        )

    def classify(self, m: SolutionMetrics) -> str:
        """One of :data:`SOLUTION_KINDS` for the measured point ``m``."""
        if not isinstance(m, SolutionMetrics):
            raise ValueError(f"m must be SolutionMetrics; got {type(m).__name__}")
        if self._collapsed(m, 1):
            return "dnc"
        if len(m.within) > 1 and self._collapsed(m, 2):
            return "clipped-dnc"
        if max(m.max_cosine) >= self.merged:
            return "merged"
        if min(m.rank_ratio) <= self.rank:
            return "low-rank"
        return "other"

    def describe(self) -> str:
        """The rule as markdown (for a notebook)."""
        return (
            f"**dnc** if in every layer the within-class share of the features is at most {self.nc1:g}, "
            f"every cosine between two class means at most {self.cosine:g} in absolute value and the "
            f"ReLU clips at most a share {self.clipped:g} of the pre-activation class means; "
            f"otherwise **clipped-dnc** if the same holds except for the class means of $H_1$ and the "
            f"first ReLU; otherwise **merged** if two class means of some layer have cosine at least "
            f"{self.merged:g}; otherwise **low-rank** if the class means of some layer have "
            f"$\\sigma_K/\\sigma_1$ at most {self.rank:g}; otherwise **other** (usually not converged)."
        )


def classify_solution(params: UFMParams, cfg: UFMConfig, *, test: DNCTest | None = None) -> str:
    """The kind (:data:`SOLUTION_KINDS`) of the point ``params`` under ``test`` (default :class:`DNCTest`)."""
    test = DNCTest() if test is None else test
    if not isinstance(test, DNCTest):
        raise ValueError(f"test must be a DNCTest; got {type(test).__name__}")
    return test.classify(solution_metrics(params, cfg))


# ----------------------------------------------------------------------------- screening
@dataclass(frozen=True)
class SeedOutcome:
    """End point of gradient descent from ``init_params(cfg.replace(seed=seed))``.

    ``loss_epochs``/``losses``: the regularised loss at log-spaced epochs (the last one is the
    final loss); ``params``: the final parameters (on the configuration's device).
    """

    seed: int
    kind: str
    metrics: SolutionMetrics
    loss_epochs: np.ndarray
    losses: np.ndarray
    params: UFMParams

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1])


def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
        raise ValueError(f"seeds must be a non-empty list of integers; got {seeds!r}")
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, Integral) or s < 0:
            raise ValueError(f"seeds must hold integers >= 0; got {s!r}")
        out.append(int(s))
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must be distinct; got {seeds!r}")
    return out


def screen_seeds(
    cfg: UFMConfig,
    seeds: Sequence[int],
    *,
    lr: float,
    epochs: int,
    history: int = 60,
    test: DNCTest | None = None,
    progress: bool = True,
) -> list[SeedOutcome]:
    """Train from every seed with full-batch gradient descent and classify each end point (R8).

    All seeds run together as one batched computation (leading dimension = seed), with the
    initialisation, the update ``θ ← θ - lr ∇𝓛(θ)`` and the ReLU convention of
    :func:`ufmlib.train.train`, so that seed ``s`` follows the run ``train(cfg.replace(seed=s))``
    up to floating-point round-off. ``history``: number of log-spaced epochs at which the
    losses are kept. Raises :class:`ufmlib.train.TrainingDivergedError` (naming ``lr``) when
    some loss becomes non-finite or grows far above its start. Returns the outcomes in the
    order of ``seeds``.
    """
    cfg = _check_cfg(cfg)
    seeds = _check_seeds(seeds)
    lr = check_positive("lr", lr)
    epochs = check_int("epochs", epochs, 0)
    if isinstance(history, bool) or not isinstance(history, Integral) or history < 1:
        raise ValueError(f"history must be an integer >= 1; got {history!r}")
    test = DNCTest() if test is None else test
    if not isinstance(test, DNCTest):
        raise ValueError(f"test must be a DNCTest; got {type(test).__name__}")
    epochs, lr = int(epochs), float(lr)

    starts = [init_params(cfg.replace(seed=s)).tensors() for s in seeds]
    T = [torch.stack([st[i] for st in starts]) for i in range(cfg.L + 1)]
    Y = labels(cfg)
    record = log_epochs(epochs, int(history))
    recorded = torch.empty(len(record), len(seeds), dtype=F64, device=cfg.torch_device)
    nxt, limit = 0, None
    bar = tqdm(total=epochs, disable=not progress, desc=f"screening {len(seeds)} seeds", unit="epoch", mininterval=0.5)
    try:
        for epoch in range(epochs + 1):
            loss, grads = loss_and_grad(T, cfg, Y)
            if epoch == 0:
                first = loss.detach().cpu()
                limit = 1e3 * torch.clamp(first, min=1.0)
            if nxt < len(record) and record[nxt] == epoch:
                recorded[nxt] = loss
                nxt += 1
            if epoch % 100 == 0 or epoch == epochs:
                value = loss.detach().cpu()
                bad = ~torch.isfinite(value) | (value > limit)
                if bool(bad.any()):
                    which = [seeds[i] for i in torch.nonzero(bad).flatten().tolist()]
                    raise TrainingDivergedError(
                        f"gradient descent diverged at epoch {epoch} for seeds {which} with learning rate "
                        f"lr={lr}; try a smaller lr"
                    )
            if epoch == epochs:
                break
            for t, g in zip(T, grads):
                t.sub_(g, alpha=lr)
            bar.update(1)
    finally:
        bar.close()
    losses = recorded.cpu().numpy()
    out = []
    for i, seed in enumerate(seeds):
        params = UFMParams.from_tensors([t[i].clone() for t in T])
        m = solution_metrics(params, cfg)
        out.append(SeedOutcome(seed, test.classify(m), m, np.array(record), losses[:, i].copy(), params))
    return out


def count_kinds(outcomes: Sequence[SeedOutcome]) -> dict[str, int]:
    """Number of outcomes of each kind, in the order of :data:`SOLUTION_KINDS`."""
    return {k: sum(o.kind == k for o in outcomes) for k in SOLUTION_KINDS}


def flat_family_clipping(params: UFMParams, K: int) -> float:
    """The share of the pre-activation class means that the first ReLU clips on the flat family.

    On the flat family of ReLU optima found by the notebook ``relu`` (its remark "A flat family at
    the first ReLU"; book label ``sources-r8``) the class means ``M_1`` of ``H_1`` are balanced with
    ``W_1`` and ``W_1 M_1 = U_2 C`` with ``C ∝ G = M_1^T M_1``, so the first ReLU clips exactly the
    off-diagonal part of ``C``: the predicted clipped share is ``||offdiag(G)||_F / ||G||_F``. Compare
    it with the measured :attr:`SolutionMetrics.clipped` ``[1]`` of a ``"clipped-dnc"`` end point.
    """
    M = class_means(params.H1.detach().to(dtype=F64, device="cpu"), check_int("K", K, 1))
    G = M.T @ M
    return ((G - torch.diag(torch.diagonal(G))).norm() / G.norm()).item()
