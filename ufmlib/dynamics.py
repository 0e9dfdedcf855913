"""Spectra along a gradient-descent run: the data behind the training-dynamics figures.

One run of :func:`ufmlib.train.train` whose snapshots, at log-spaced epochs, are measured for one
layer ``l`` by :func:`measure_layer`: everything the training-dynamics figures of the R2-R5
chapters plot, from **one** :class:`ufmlib.state.UFMState` per snapshot (one forward pass and one
set of class means handed to every measurement):

* the layer-wise Hessian spectrum of the fit term (all eigenvalues for the linear MSE model,
  by the Kronecker route; the top ``top`` by block Lanczos otherwise, with its ``converged``
  flag) - R2, v1 Thm 4.1;
* the eigenvalues predicted from the measured class means (:func:`ufmlib.theory.layer_hessian_at`);
* the eigenvector test ``f_{cc'}`` of the ``K²`` class-mean Kronecker vectors (v1 Figs 3-4);
* the fit-gradient coefficient table ``c_{cc'}`` and the overlaps of the fit and of the total
  gradient with the top-``K²`` eigenspace (R4, v1 Thm 4.3);
* the singular values of every weight matrix (R5, v1 Thm 4.4) and the collapse metrics.

:func:`record_dynamics` takes an optional ``measure(state, cfg)`` called at the same snapshots of
the same run, for what a chapter needs beyond that (:func:`split_snapshot` for R3,
:func:`gradient_snapshot` for R4, :func:`weight_snapshot` for R5, :func:`matrices_snapshot` for
R6; :func:`late_decay_rate` reads a late-time rate off the snapshots); notebooks plot fields of the
returned :class:`Dynamics` and recompute none of these quantities themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .alignment import class_mean_kronecker_basis, eigvec_test, gradient_coefficients, top_overlap
from .collapse import LayerCollapse, collapse_metrics
from .config import UFMConfig
from .decompose import gauss_newton_split
from .full_hessian import fit_gradient
from .hessian import layer_hvp, layer_spectrum
from .matrices import balancedness, singular_subspace_overlaps
from .matrices import (backprop_errors, feature_hessian_factor, gradient_covariance, gradient_second_moment,
                       per_sample_gradients, per_sample_gradients_autograd)
from .model import UFMParams
from .state import UFMState, state_of
from .theory import layer_hessian_at, weight_gram_from_means
from .train import TrainResult, train
from .validation import check_int, check_layer, epoch_series

__all__ = [
    "SpectralSnapshot",
    "Dynamics",
    "measure_layer",
    "record_dynamics",
    "snapshot_checkpoints",
    "split_snapshot",
    "gradient_snapshot",
    "weight_snapshot",
    "late_decay_rate",
    "matrices_snapshot",
    "CEDescentRun",
    "ce_descent_run",
    "convergence_snapshot",
]

Point = UFMState | UFMParams | Sequence[torch.Tensor]


@dataclass(frozen=True)
class SpectralSnapshot:
    """Everything measured for one layer at one epoch (see the module docstring).

    ``converged`` and ``method`` are those of the layer-Hessian solve (always converged for the
    exact Kronecker and dense routes).
    """

    epoch: int
    loss: float
    eigenvalues: np.ndarray  # layer Hessian of the fit term, descending (all, or the top ones)
    predicted: np.ndarray  # top K² eigenvalues predicted from the measured class means
    f_table: np.ndarray  # K x K eigenvector test f_{cc'} of μ_c^{(l+1)} ⊗ μ_{c'}^{(l)}
    grad_coefficients: np.ndarray  # K x K table c_{cc'} of the fit gradient
    fit_grad_overlap: float  # ||P_{K²} g_fit||²/||g_fit||²
    total_grad_overlap: float  # the same for the gradient of the regularised loss
    weight_singular_values: tuple[np.ndarray, ...]  # per layer, descending
    collapse: tuple[LayerCollapse, ...]
    converged: bool = True
    method: str = ""


@dataclass(frozen=True)
class Dynamics:
    """A training run with its snapshots; ``array(name)`` stacks one field over epochs.

    ``extra[j]`` is what ``measure`` returned at ``snapshots[j]`` (empty without ``measure``).
    """

    cfg: UFMConfig
    layer: int
    lr: float
    run: TrainResult
    snapshots: tuple[SpectralSnapshot, ...]
    extra: tuple[Any, ...] = ()

    @property
    def epochs(self) -> np.ndarray:
        return np.array([s.epoch for s in self.snapshots])

    @property
    def converged(self) -> bool:
        """Whether every snapshot's layer-Hessian solve converged."""
        return all(s.converged for s in self.snapshots)

    def array(self, name: str) -> np.ndarray:
        return np.stack([np.asarray(getattr(s, name)) for s in self.snapshots])

    def series(self, key: str) -> np.ndarray:
        """``np.stack`` of ``extra[j][key]`` over the snapshots (the measurements must be mappings)."""
        try:
            return np.stack([np.asarray(e[key]) for e in self.extra])
        except (KeyError, TypeError, IndexError) as err:
            raise ValueError(f"key must name an entry of every extra measurement; got {key!r}") from err

    def top_eigenvalues(self, m: int) -> np.ndarray:
        """``(snapshots, m)`` array of the ``m`` largest layer-Hessian eigenvalues."""
        return np.stack([s.eigenvalues[:m] for s in self.snapshots])

    def nc1(self, layer: int | None = None) -> np.ndarray:
        layer = self.layer if layer is None else layer
        return np.array([s.collapse[layer - 1].nc1 for s in self.snapshots])


def measure_layer(params: Point, cfg: UFMConfig, layer: int, *, top: int | None = None, seed: int = 0,
                  epoch: int = 0, loss: float = float("nan")) -> SpectralSnapshot:
    """One :class:`SpectralSnapshot` of layer ``layer`` at ``params`` (float64 on the CPU).

    ``params`` may be a :class:`ufmlib.state.UFMState`; every measurement below shares its forward
    pass and class means. ``top``: number of eigenpairs for the non-Kronecker models (default
    ``K² + 6``); the linear MSE model always yields the whole spectrum.
    """
    st = state_of(params, cfg).cpu64()
    c64, K = st.cfg, st.cfg.K
    kron = c64.activation == "linear" and c64.loss == "mse"
    k = None if kron else (top or K * K + 6)
    spec = layer_spectrum(st, c64, layer, k=k, seed=seed)
    vecs = spec.vectors(K * K)
    matvec, _ = layer_hvp(st, c64, layer)
    basis = class_mean_kronecker_basis(st.output_means(layer), st.M(layer))
    f = torch.tensor([eigvec_test(matvec, basis.vectors[:, j]) for j in range(K * K)], dtype=torch.float64).reshape(K, K)
    g_fit = fit_gradient(st, c64, layer)
    g_total = g_fit + c64.lambda_Ws[layer - 1] * st.Ws[layer - 1].reshape(-1)
    predicted = layer_hessian_at(st, c64, layer, rtol=1e-14).expanded()
    return SpectralSnapshot(
        epoch=epoch,
        loss=loss,
        eigenvalues=spec.eigenvalues.numpy(),
        predicted=predicted[: K * K].numpy(),
        f_table=f.numpy(),
        grad_coefficients=gradient_coefficients(g_fit, basis).numpy(),
        fit_grad_overlap=top_overlap(g_fit, vecs, K * K),
        total_grad_overlap=top_overlap(g_total, vecs, K * K),
        weight_singular_values=tuple(torch.linalg.svdvals(W).numpy() for W in st.Ws),
        collapse=tuple(collapse_metrics(st, c64)),
        converged=spec.converged,
        method=spec.method,
    )


def record_dynamics(cfg: UFMConfig, *, lr: float, epochs: int, layer: int, snapshots: int = 25,
                    top: int | None = None, params: UFMParams | None = None, progress: bool = True,
                    measure: Callable[[UFMState, UFMConfig], Any] | None = None) -> Dynamics:
    """Train with gradient descent and measure layer ``layer`` at ``snapshots`` log-spaced epochs.

    ``measure(state, cfg)``, when given, is called at every snapshot with the snapshot's
    :class:`ufmlib.state.UFMState` (float64 on the CPU, the one :func:`measure_layer` used) and its
    configuration; its values are kept in :attr:`Dynamics.extra`.
    """
    layer = check_layer(layer, cfg.L)
    if measure is not None and not callable(measure):
        raise ValueError(f"measure must be None or a callable (state, cfg) -> value; got {measure!r}")
    run = train(cfg, params, lr=lr, epochs=epochs, snapshot_epochs=snapshots, progress=progress,
                callback=lambda e, p: p)
    c64 = cfg.replace(dtype="float64", device="cpu")
    snaps, extra = [], []
    for s in run.snapshots:
        st = UFMState(s.value.to(dtype=torch.float64, device="cpu"), c64)
        snaps.append(measure_layer(st, c64, layer, top=top, seed=cfg.seed, epoch=s.epoch, loss=s.loss))
        if measure is not None:
            extra.append(measure(st, c64))
    # keep only the final parameters; the per-snapshot copies are no longer needed
    run = replace(run, snapshots=())
    return Dynamics(cfg, layer, float(lr), run, tuple(snaps), tuple(extra))


def snapshot_checkpoints(epochs: Sequence[int], count: int) -> list[int]:
    """Indices of about ``count`` snapshots spread log-uniformly in epoch, first and last included.

    ``epochs`` are the (increasing) snapshot epochs, e.g. :attr:`Dynamics.epochs`; epoch 0 is
    placed one log-step before epoch 1. Used for the spectrum histograms of the layer-Hessian chapter.
    """
    e = np.asarray(epochs, dtype=float).ravel()
    if e.size == 0 or np.any(np.diff(e) <= 0) or e[0] < 0:
        raise ValueError("epochs must be a non-empty increasing sequence of non-negative integers")
    count = check_int("count", count, 1)
    if count == 1:
        return [e.size - 1]
    x = np.log10(np.maximum(e, 0.1))
    targets = np.linspace(x[0], x[-1], count)
    out = sorted({int(np.argmin(np.abs(x - t))) for t in targets})
    return out


# ----------------------------------------------------------------------------- per-snapshot measurements
def split_snapshot(params: Point, cfg: UFMConfig, layer: int, *, top: int | None = None, probes: int = 16,
                   seed: int = 0) -> dict[str, Any]:
    """The Gauss-Newton split of ``Hess_l`` at one point, summarised (R3, v1 Thm 4.2).

    Keys: ``"class"``, ``"cross"``, ``"within"`` (the ``top`` largest eigenvalues of each part,
    default ``K² + 3``, from its factors), ``"hessian"`` (the same for the autodiff ``Hess_l``,
    Rayleigh-Ritz values on the span of the Jacobian rows and random directions),
    ``"without_class"``, ``"without_cross"`` (the same for ``Hess_l - G_class`` and
    ``Hess_l - G_cross``: Papyan's knock-out view, where removing one part removes its
    outliers), ``"ranks"`` (:meth:`GNSplit.ranks`), ``"orthogonality"``
    (``||P_class P_cross||_2``), ``"identity"`` (:attr:`GNSplit.identity_error`, largest entry of
    ``(G_class + G_cross + G_within - G) Q``) and ``"residual"`` (:attr:`GNSplit.residual_error`,
    largest entry of ``(Hess_l - G) Q`` with the autodiff Hessian); ``Q`` is the orthonormal
    basis of that span, with ``probes`` random directions drawn with ``seed``
    (:func:`ufmlib.decompose.gauss_newton_split`). No ``d_out d_in``-square matrix is formed.
    """
    layer = check_layer(layer, cfg.L)
    st = state_of(params, cfg).cpu64()
    split = gauss_newton_split(st, st.cfg, layer, probes=probes, seed=seed)
    k = st.cfg.K ** 2 + 3 if top is None else check_int("top", top, 1)
    out: dict[str, Any] = {name: split.eigenvalues(name, k).numpy() for name in ("class", "cross", "within", "hessian")}
    for name in ("class", "cross"):
        out[f"without_{name}"] = split.without(name, k).numpy()
    out["ranks"] = split.ranks()
    out["orthogonality"] = split.range_orthogonality()
    out["identity"] = split.identity_error
    out["residual"] = split.residual_error
    return out


def gradient_snapshot(params: Point, cfg: UFMConfig, layer: int) -> dict[str, float]:
    """Gradient measurements of the gradient chapter beyond :class:`SpectralSnapshot` (R4, v1 Thm 4.3).

    ``"f_top_K"``: Gur-Ari overlap of the fit gradient with the top-``K`` eigenvectors of
    ``Hess_l`` (basis-dependent once the ``K²`` outliers are degenerate);
    ``"total_over_fit"``: ``||∇𝓛_{W_l}|| / ||∇ℓ_{W_l}||``, the size of the gradient of the
    regularised loss relative to the fit gradient (0 at a critical point, where
    ``∇ℓ = -λ_{W_l} W_l``); ``"fit_norm"``: ``||∇ℓ_{W_l}||_F``.
    """
    layer = check_layer(layer, cfg.L)
    st = state_of(params, cfg).cpu64()
    c = st.cfg
    g = fit_gradient(st, c, layer)
    total = g + c.lambda_Ws[layer - 1] * st.Ws[layer - 1].reshape(-1)
    vecs = layer_spectrum(st, c, layer).vectors(c.K)
    gn = float(torch.linalg.vector_norm(g))
    return {
        "f_top_K": top_overlap(g, vecs, c.K),
        "total_over_fit": float(torch.linalg.vector_norm(total)) / gn,
        "fit_norm": gn,
    }


def matrices_snapshot(params: Point, cfg: UFMConfig, layer: int) -> dict[str, np.ndarray]:
    """The "other deep-learning matrices" of layer ``layer`` at one point (R6; R5 for the weights).

    Keys (descending values): ``"features"`` -- the ``K+1`` largest singular values of ``H_layer``;
    ``"errors"`` -- the ``K`` singular values of the back-propagated errors at ``H_layer``
    (autodiff, :func:`ufmlib.matrices.backprop_errors`); ``"covariance"`` -- the ``K`` largest
    eigenvalues of the centred covariance of the per-sample gradients of ``W_layer``;
    ``"second_moment"`` -- the ``K+1`` largest eigenvalues of their uncentred second moment, from
    gradients taken per sample by ``torch.func.jacrev``
    (:func:`ufmlib.matrices.per_sample_gradients_autograd`); ``"hess_H"`` -- the ``K`` largest
    eigenvalues of the factor ``F`` of the ``H_1``-Hessian ``F ⊗ I_N`` (linear MSE model);
    ``"gram"`` -- the ``K+1`` largest eigenvalues of ``W_layer^T W_layer``. At the minimiser the
    top ``K`` (``K-1`` for the covariance) of each are the closed forms of the other-matrices
    chapter and the next one is 0.
    """
    layer = check_layer(layer, cfg.L)
    st = state_of(params, cfg).cpu64()
    c, K = st.cfg, st.cfg.K
    W = st.Ws[layer - 1]
    return {
        "features": torch.linalg.svdvals(st.forward.inputs[layer - 1])[: K + 1].numpy(),
        "errors": backprop_errors(st, c, layer).singular_values[:K].numpy(),
        "covariance": gradient_covariance(per_sample_gradients(st, c, layer)).eigenvalues[:K].numpy(),
        "second_moment": gradient_second_moment(per_sample_gradients_autograd(st, c, layer)).eigenvalues[: K + 1].numpy(),
        "hess_H": torch.linalg.eigvalsh(feature_hessian_factor(st, c)).flip(0)[:K].numpy(),
        "gram": torch.linalg.eigvalsh(W.mT @ W).flip(0)[: K + 1].numpy(),
    }


def late_decay_rate(epochs: Sequence[int], values, *, floor: float) -> np.ndarray:
    """Per-step logarithmic decay rate of each column of ``values`` at late times.

    ``values[t, j]`` is a positive quantity measured at ``epochs[t]`` (increasing), for example
    the relative imbalance of every layer (:func:`weight_snapshot`, ``"balancedness"``) or the
    ``(K+1)``-th singular value of every weight matrix. For each column the rate is
    ``(log v_b - log v_a) / (epoch_b - epoch_a)`` over the last two snapshots ``a < b`` at which the
    value is above ``floor`` (chosen well above round-off, so that the rate is that of the
    dynamics, not of rounding errors); ``nan`` where fewer than two are. Along gradient descent with
    step ``η`` and a common weight decay ``λ`` the companion's first-order estimates are
    ``2 log(1 - ηλ)`` for the imbalance of the weights chapter (R5, balancedness of v1 Thm 4.4) and
    ``log(1 - ηλ)`` for the singular values outside the class-mean frames.
    """
    e, v = epoch_series(epochs, values)
    if e.size and np.any(np.diff(e) <= 0):
        raise ValueError("epochs must be increasing")
    if not (isinstance(floor, (int, float)) and np.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be a finite number > 0; got {floor!r}")
    rates = np.full(v.shape[1], np.nan)
    for j in range(v.shape[1]):
        ok = np.flatnonzero(v[:, j] > floor)
        if ok.size >= 2:
            a, b = ok[-2], ok[-1]
            rates[j] = (np.log(v[b, j]) - np.log(v[a, j])) / (e[b] - e[a])
    return rates


def weight_snapshot(params: Point, cfg: UFMConfig) -> dict[str, np.ndarray]:
    """Weight measurements of the weights chapter at one point (R5, v1 Thm 4.4).

    Keys (one row per layer ``l = 1..L``): ``"gram"`` -- the ``K`` largest eigenvalues of
    ``W_l^T W_l``; ``"gram_from_means"`` -- the ``K`` eigenvalues predicted from the measured
    class means (:func:`ufmlib.theory.weight_gram_from_means`, ``||μ_c^{(l+1)}||²/||μ_c^{(l)}||²``
    for orthogonal frames); ``"balancedness"`` (:func:`balancedness`); ``"right_overlap"``,
    ``"left_overlap"`` (:func:`singular_subspace_overlaps`).
    """
    st = state_of(params, cfg).cpu64()
    c, K = st.cfg, st.cfg.K
    gram = np.stack([torch.linalg.svdvals(W)[:K].pow(2).numpy() for W in st.Ws])
    # rtol far below the spread of the measured values: no near-equal eigenvalues are merged into one level
    pred = np.stack([weight_gram_from_means(st.M(l), st.M(l + 1), rtol=1e-14).expanded()[:K].numpy()
                     for l in range(1, c.L + 1)])
    right, left = singular_subspace_overlaps(st, c)
    return {"gram": gram, "gram_from_means": pred, "balancedness": balancedness(st, c),
            "right_overlap": right, "left_overlap": left}


# ----------------------------------------------------------------------------- cross-entropy runs (R9)
@dataclass(frozen=True, eq=False)
class CEDescentRun:
    """Where one gradient-descent run of the cross-entropy deep linear UFM ends (R9).

    ``dnc_loss``: the regularised loss of the DNC critical point
    (:func:`ufmlib.optimum.construct_ce_critical_point`); ``logit_rank``: the rank of the final
    class-mean logits after removing their mean over the logit coordinates (softmax is shift
    invariant; ``K-1`` at DNC); ``at_dnc``: the final loss equals ``dnc_loss`` within ``rtol`` and
    ``logit_rank = K-1``; ``below``: not at DNC and the final loss is lower than ``dnc_loss`` by
    more than ``rtol`` (relative; kept as ``rtol``). ``eigenvalues``: the final fit-term Hessian of ``W_layer``,
    descending; ``nonzero``: how many exceed ``1e-8`` times the largest; ``track``: the top
    ``(K-1)² + 1`` eigenvalues at every snapshot (``epochs``); ``levels``: the closed-form
    three-level spectrum at DNC (:func:`ufmlib.theory.ce_critical_layer_hessian`).
    """

    K: int
    seed: int
    layer: int
    final_loss: float
    dnc_loss: float
    logit_rank: int
    at_dnc: bool
    below: bool
    nonzero: int
    eigenvalues: torch.Tensor
    track: np.ndarray
    epochs: np.ndarray
    levels: Any
    rtol: float

    @property
    def outcome(self) -> str:
        """``"at DNC"``, ``"lower loss"`` or ``"elsewhere"``."""
        return "at DNC" if self.at_dnc else "lower loss" if self.below else "elsewhere"


def ce_descent_run(cfg: UFMConfig, *, lr: float, epochs: int, layer: int, snapshots: int = 20,
                   rtol: float = 1e-9, progress: bool = False) -> CEDescentRun:
    """Train the cross-entropy model of ``cfg`` from its seed's random start and compare the end
    with the DNC critical point (R9; :class:`CEDescentRun`).

    Full-batch gradient descent (:func:`ufmlib.train.train`); the Hessian of ``W_layer`` is
    assembled per sample (:func:`ufmlib.hessian.layer_hessian_dense`, float64 on the CPU) at
    ``snapshots`` log-spaced epochs. Needs ``cfg.loss = "ce"``, a linear model and one common
    ``λ = λ_W = λ_H``. For ``K >= 4`` and ``L >= 3`` the DNC point is not the global minimum
    (Garrod & Keating, arXiv 2410.23169), so a run may end ``below`` it.
    """
    from .hessian import layer_hessian_dense
    from .model import regularised_loss
    from .optimum import construct_ce_critical_point
    from .theory import ce_critical_layer_hessian

    if cfg.loss != "ce" or cfg.activation != "linear":
        raise ValueError(f"cfg must be the linear cross-entropy model; got loss={cfg.loss!r}, activation={cfg.activation!r}")
    layer = check_layer(layer, cfg.L)
    c64 = cfg.replace(dtype="float64", device="cpu")
    K = cfg.K
    dnc_loss = float(regularised_loss(construct_ce_critical_point(c64).tensors(), c64))
    levels = ce_critical_layer_hessian(c64, layer)

    def spectrum(epoch: int, p: UFMParams) -> torch.Tensor:
        return torch.linalg.eigvalsh(layer_hessian_dense(p.to(dtype=torch.float64, device="cpu"), c64, layer)).flip(0)

    run = train(cfg, lr=lr, epochs=epochs, snapshot_epochs=snapshots, callback=spectrum, progress=progress)
    Z = UFMState(run.params.to(dtype=torch.float64, device="cpu"), c64).logit_means
    sv = torch.linalg.svdvals(Z - Z.mean(dim=0, keepdim=True))
    rank = int((sv > 1e-6 * sv[0]).sum())
    final = run.snapshots[-1].value
    loss = float(run.final_loss)
    at_dnc = abs(loss - dnc_loss) <= rtol * dnc_loss and rank == K - 1
    return CEDescentRun(
        K=K, seed=cfg.seed, layer=layer, final_loss=loss, dnc_loss=dnc_loss, logit_rank=rank, at_dnc=at_dnc,
        below=not at_dnc and loss < dnc_loss * (1 - rtol), nonzero=int((final > 1e-8 * final[0]).sum()),
        eigenvalues=final, track=torch.stack([s.value[: (K - 1) ** 2 + 1] for s in run.snapshots]).numpy(),
        epochs=run.snapshot_epochs(), levels=levels, rtol=float(rtol),
    )


def convergence_snapshot(params: Point, cfg: UFMConfig) -> dict[str, Any]:
    """What the R1 chapter follows along gradient descent towards the global minimiser (v1 Eq. (2)).

    Keys: ``"top"`` -- the ``K`` largest singular values of every ``W_l`` (``L x K``, they converge
    to ``s_{W_l}``); ``"rest"`` -- the largest singular value beyond the ``K``-th over all layers
    (``0.0`` when no layer has more than ``K``; it decays to 0: every ``W_l`` becomes rank ``K``);
    ``"gamma"`` -- the mean over classes of the class-mean logit on the own class (it converges
    to ``γ``). Fit for a :func:`ufmlib.train.train` callback: ``lambda epoch, p: convergence_snapshot(p, cfg)``.
    """
    st = state_of(params, cfg).cpu64()
    K = st.cfg.K
    svals = [torch.linalg.svdvals(W).numpy() for W in st.Ws]
    return {"top": np.stack([s[:K] for s in svals]),
            "rest": max((float(s[K]) for s in svals if s.size > K), default=0.0),
            "gamma": st.logit_means.diagonal().mean().item()}
