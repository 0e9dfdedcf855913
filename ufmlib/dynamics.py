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
:func:`gradient_snapshot` for R4, :func:`weight_snapshot` for R5); notebooks plot fields of the
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
from .model import UFMParams
from .state import UFMState, state_of
from .theory import layer_hessian_at, weight_gram_from_means
from .train import TrainResult, train
from .validation import check_int, check_layer

__all__ = [
    "SpectralSnapshot",
    "Dynamics",
    "measure_layer",
    "record_dynamics",
    "snapshot_checkpoints",
    "split_snapshot",
    "gradient_snapshot",
    "weight_snapshot",
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
def split_snapshot(params: Point, cfg: UFMConfig, layer: int, *, top: int | None = None) -> dict[str, Any]:
    """The Gauss-Newton split of ``Hess_l`` at one point, summarised (R3, v1 Thm 4.2).

    Keys: ``"class"``, ``"cross"``, ``"within"``, ``"hessian"`` (the ``top`` largest
    eigenvalues of each, default ``K² + 3``), ``"without_class"``, ``"without_cross"`` (the
    same for ``Hess_l - G_class`` and ``Hess_l - G_cross``: Papyan's knock-out view, where
    removing one part removes its outliers), ``"ranks"`` (:meth:`GNSplit.ranks`),
    ``"orthogonality"`` (``||P_class P_cross||_2``), ``"identity"`` (max entry of
    ``G_class + G_cross + G_within - G``) and ``"residual"`` (max entry of ``Hess_l - G``).
    Dense ``d_out d_in``-square matrices: for small widths.
    """
    layer = check_layer(layer, cfg.L)
    st = state_of(params, cfg).cpu64()
    split = gauss_newton_split(st, st.cfg, layer)
    k = st.cfg.K ** 2 + 3 if top is None else check_int("top", top, 1)
    out: dict[str, Any] = {name: split.eigenvalues(name)[:k].numpy() for name in ("class", "cross", "within", "hessian")}
    for name, part in (("without_class", split.G_class), ("without_cross", split.G_cross)):
        out[name] = torch.linalg.eigvalsh(split.hessian - part).flip(0)[:k].numpy()
    out["ranks"] = split.ranks()
    out["orthogonality"] = split.range_orthogonality()
    out["identity"] = split.identity_error
    out["residual"] = split.residual.abs().max().item()
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
