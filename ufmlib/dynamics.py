"""Spectra along a gradient-descent run: the data behind the training-dynamics figures.

One run of :func:`ufmlib.train.train` with a snapshot callback that measures, at log-spaced
epochs, everything the figures of digest §7.4 plot for one layer ``l`` (F1-F5, F7, F8):

* the layer-wise Hessian spectrum of the fit term (all eigenvalues for the linear MSE model,
  by the Kronecker route; the top ``top`` by block Lanczos otherwise) - R2, v1 Thm 4.1;
* the eigenvalues predicted from the measured class means (digest §4.1, general DNC version);
* the eigenvector test ``f_{cc'}`` of the ``K²`` class-mean Kronecker vectors (v1 Figs 3-4);
* the fit-gradient coefficient table ``c_{cc'}`` and the overlaps of the fit and of the total
  gradient with the top-``K²`` eigenspace (R4, v1 Thm 4.3; digest §6 pitfall 3);
* the singular values of every weight matrix (R5, v1 Thm 4.4) and the collapse metrics.

Notebooks call :func:`record_dynamics` and plot fields of the returned :class:`Dynamics`; no
notebook recomputes these quantities itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .alignment import class_mean_kronecker_basis, eigvec_test, gradient_coefficients, top_overlap
from .collapse import LayerCollapse, class_means, collapse_metrics
from .config import UFMConfig
from .hessian import fit_gradient, layer_hvp, layer_spectrum
from .model import UFMParams, forward
from .theory import layer_hessian_at
from .train import TrainResult, train

__all__ = ["SpectralSnapshot", "Dynamics", "measure_layer", "record_dynamics"]


@dataclass(frozen=True)
class SpectralSnapshot:
    """Everything measured for one layer at one epoch (see the module docstring)."""

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


@dataclass(frozen=True)
class Dynamics:
    """A training run with its snapshots; ``array(name)`` stacks one field over epochs."""

    cfg: UFMConfig
    layer: int
    lr: float
    run: TrainResult
    snapshots: tuple[SpectralSnapshot, ...]

    @property
    def epochs(self) -> np.ndarray:
        return np.array([s.epoch for s in self.snapshots])

    def array(self, name: str) -> np.ndarray:
        return np.stack([np.asarray(getattr(s, name)) for s in self.snapshots])

    def top_eigenvalues(self, m: int) -> np.ndarray:
        """``(snapshots, m)`` array of the ``m`` largest layer-Hessian eigenvalues."""
        return np.stack([s.eigenvalues[:m] for s in self.snapshots])

    def nc1(self, layer: int | None = None) -> np.ndarray:
        layer = self.layer if layer is None else layer
        return np.array([s.collapse[layer - 1].nc1 for s in self.snapshots])


def _output_means(params: UFMParams, cfg: UFMConfig, layer: int) -> torch.Tensor:
    """Class means of the output of ``W_l`` (logit directions ``I_K`` for ``l = L``)."""
    if layer == cfg.L:
        return torch.eye(cfg.K, dtype=torch.float64)
    return class_means(forward(params, cfg.activation).preacts[layer], cfg.K)


def measure_layer(params: UFMParams, cfg: UFMConfig, layer: int, *, top: int | None = None, seed: int = 0,
                  epoch: int = 0, loss: float = float("nan")) -> SpectralSnapshot:
    """One :class:`SpectralSnapshot` of layer ``layer`` at ``params`` (float64 on the CPU).

    ``top``: number of eigenpairs for the non-Kronecker models (default ``K² + 6``); the
    linear MSE model always yields the whole spectrum.
    """
    K = cfg.K
    p64 = params.to(dtype=torch.float64, device="cpu")
    c64 = cfg.replace(dtype="float64", device="cpu")
    kron = c64.activation == "linear" and c64.loss == "mse"
    k = None if kron else (top or K * K + 6)
    spec = layer_spectrum(p64, c64, layer, k=k, seed=seed)
    vecs = spec.vectors(K * K)
    matvec, _ = layer_hvp(p64, c64, layer)
    basis = class_mean_kronecker_basis(_output_means(p64, c64, layer), class_means(forward(p64, c64.activation).inputs[layer - 1], K))
    f = torch.tensor([eigvec_test(matvec, basis.vectors[:, j]) for j in range(K * K)], dtype=torch.float64).reshape(K, K)
    g_fit = fit_gradient(p64, c64, layer)
    g_total = g_fit + c64.lambda_Ws[layer - 1] * p64.Ws[layer - 1].reshape(-1)
    predicted = layer_hessian_at(p64, c64, layer, rtol=1e-14).expanded()
    return SpectralSnapshot(
        epoch=epoch,
        loss=loss,
        eigenvalues=spec.eigenvalues.numpy(),
        predicted=predicted[: K * K].numpy(),
        f_table=f.numpy(),
        grad_coefficients=gradient_coefficients(g_fit, basis).numpy(),
        fit_grad_overlap=top_overlap(g_fit, vecs, K * K),
        total_grad_overlap=top_overlap(g_total, vecs, K * K),
        weight_singular_values=tuple(torch.linalg.svdvals(W).numpy() for W in p64.Ws),
        collapse=tuple(collapse_metrics(p64, K, c64.activation)),
    )


def record_dynamics(cfg: UFMConfig, *, lr: float, epochs: int, layer: int, snapshots: int = 25,
                    top: int | None = None, params: UFMParams | None = None, progress: bool = True) -> Dynamics:
    """Train with gradient descent and measure layer ``layer`` at ``snapshots`` log-spaced epochs."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= cfg.L:
        raise ValueError(f"layer must be an integer in 1..{cfg.L}; got {layer!r}")
    run = train(cfg, params, lr=lr, epochs=epochs, snapshot_epochs=snapshots, progress=progress,
                callback=lambda e, p: p)
    snaps = tuple(measure_layer(s.value, cfg, layer, top=top, seed=cfg.seed, epoch=s.epoch, loss=s.loss)
                  for s in run.snapshots)
    # keep only the final parameters; the per-snapshot copies are no longer needed
    run = TrainResult(run.params, run.losses, tuple(), run.lr, run.epochs)
    return Dynamics(cfg, layer, float(lr), run, snaps)
