"""Data and axes for the result chapters on R2-R5 (digest §7.4, figures F1-F5).

The training-dynamics chapters (layer Hessian R2 = v1 Thm 4.1, Gauss-Newton split R3 = v1
Thm 4.2, gradient R4 = v1 Thm 4.3, weights R5 = v1 Thm 4.4) share one run of gradient descent
each, measured by :func:`ufmlib.dynamics.measure_layer` at log-spaced epochs. Some figures
need more per snapshot than a :class:`~ufmlib.dynamics.SpectralSnapshot` holds (the
Gauss-Newton split, the top-``K`` gradient overlap, balancedness of the weights), so:

* :func:`record_dynamics_with` -- :func:`ufmlib.dynamics.record_dynamics` plus a user
  measurement at the same snapshots of the same run (one training run);
* :func:`split_snapshot`, :func:`gradient_snapshot`, :func:`weight_snapshot` -- the
  per-snapshot measurements of the R3, R4 and R5 chapters;
* :func:`balancedness`, :func:`singular_subspace_overlaps` -- R5's two structural claims at a
  parameter point;
* :func:`snapshot_checkpoints` -- a few log-spaced snapshots (histograms of F1);
* :func:`add_theory_trajectories`, :func:`plot_coefficient_table` -- axes helpers in the
  style of :mod:`ufmlib.plotting` (theory in black dashed lines);
* :func:`agreement_table` -- the Markdown table "predicted / measured / error / tolerance"
  of a list of :class:`ufmlib.provenance.Check` records, shown at the end of every chapter.

Layers are numbered ``1..L``; all spectra are of the **fit term** (digest pitfall 2) and are
computed in float64 on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .alignment import subspace_overlap, top_overlap
from .config import UFMConfig
from .decompose import gauss_newton_split
from .dynamics import Dynamics, measure_layer
from .hessian import fit_gradient, layer_spectrum
from .model import UFMParams
from .plotting import THEORY
from .theory import class_mean_state, weight_gram_from_means
from .train import TrainResult, train

__all__ = [
    "TrackedDynamics",
    "record_dynamics_with",
    "snapshot_checkpoints",
    "balancedness",
    "singular_subspace_overlaps",
    "split_snapshot",
    "gradient_snapshot",
    "weight_snapshot",
    "add_theory_trajectories",
    "plot_coefficient_table",
    "agreement_table",
]

F64 = torch.float64


def _check_layer(cfg: UFMConfig, layer) -> int:
    if isinstance(layer, bool) or not isinstance(layer, Integral) or not 1 <= layer <= cfg.L:
        raise ValueError(f"layer must be an integer in 1..{cfg.L}; got {layer!r}")
    return int(layer)


def _cpu64(params: UFMParams, cfg: UFMConfig) -> tuple[UFMParams, UFMConfig]:
    return params.to(dtype=F64, device="cpu"), cfg.replace(dtype="float64", device="cpu")


# ----------------------------------------------------------------------------- one run, more data
@dataclass(frozen=True)
class TrackedDynamics:
    """A :class:`~ufmlib.dynamics.Dynamics` and one extra measurement per snapshot.

    ``extra[j]`` was measured at ``dynamics.snapshots[j]`` (same epoch, same parameters).
    """

    dynamics: Dynamics
    extra: tuple[Any, ...]

    def series(self, key: str) -> np.ndarray:
        """``np.stack`` of ``extra[j][key]`` over the snapshots (extras must be mappings)."""
        try:
            return np.stack([np.asarray(e[key]) for e in self.extra])
        except (KeyError, TypeError) as err:
            raise ValueError(f"key must name an entry of every extra measurement; got {key!r}") from err


def record_dynamics_with(
    cfg: UFMConfig,
    *,
    lr: float,
    epochs: int,
    layer: int,
    measure: Callable[[UFMParams, UFMConfig], Any],
    snapshots: int = 25,
    top: int | None = None,
    params: UFMParams | None = None,
    progress: bool = True,
) -> TrackedDynamics:
    """:func:`ufmlib.dynamics.record_dynamics` plus ``measure(params, cfg)`` at every snapshot.

    One gradient-descent run; the snapshots (epochs, losses, :class:`SpectralSnapshot`) are the
    ones :func:`~ufmlib.dynamics.record_dynamics` would return for the same arguments.
    ``measure`` receives a detached copy of the parameters at each snapshot.
    """
    layer = _check_layer(cfg, layer)
    if not callable(measure):
        raise ValueError(f"measure must be a callable (params, cfg) -> value; got {measure!r}")
    run = train(cfg, params, lr=lr, epochs=epochs, snapshot_epochs=snapshots, progress=progress,
                callback=lambda e, p: p)
    snaps, extra = [], []
    for s in run.snapshots:
        snaps.append(measure_layer(s.value, cfg, layer, top=top, seed=cfg.seed, epoch=s.epoch, loss=s.loss))
        extra.append(measure(s.value, cfg))
    run = TrainResult(run.params, run.losses, tuple(), run.lr, run.epochs)
    return TrackedDynamics(Dynamics(cfg, layer, float(lr), run, tuple(snaps)), tuple(extra))


def snapshot_checkpoints(epochs: Sequence[int], count: int) -> list[int]:
    """Indices of about ``count`` snapshots spread log-uniformly in epoch, first and last included.

    ``epochs`` are the (increasing) snapshot epochs, e.g. :attr:`Dynamics.epochs`; epoch 0 is
    placed one log-step before epoch 1. Used for the histograms of figure F1.
    """
    e = np.asarray(epochs, dtype=float).ravel()
    if e.size == 0 or np.any(np.diff(e) <= 0) or e[0] < 0:
        raise ValueError("epochs must be a non-empty increasing sequence of non-negative integers")
    if isinstance(count, bool) or not isinstance(count, Integral) or count < 1:
        raise ValueError(f"count must be an integer >= 1; got {count!r}")
    if count == 1:
        return [e.size - 1]
    x = np.log10(np.maximum(e, 0.1))
    targets = np.linspace(x[0], x[-1], count)
    out = sorted({int(np.argmin(np.abs(x - t))) for t in targets})
    return out


# ----------------------------------------------------------------------------- R5 structure
def balancedness(params: UFMParams, cfg: UFMConfig) -> np.ndarray:
    """Relative balancedness errors of the ``L`` weight matrices (R5, v1 Thm 4.4; digest §3.2).

    Entry ``l-1`` is ``||λ_{W_l} W_l^T W_l - λ_{W_{l-1}} W_{l-1} W_{l-1}^T||_F /
    ||λ_{W_l} W_l^T W_l||_F`` with ``λ_{W_0} W_0 W_0^T := λ_H H_1 H_1^T`` for ``l = 1``;
    0 at every critical point of the regularised linear loss, in particular at the minimiser.
    """
    p, c = _cpu64(params, cfg)
    prev = c.lambda_H * p.H1 @ p.H1.T
    out = []
    for W, lam in zip(p.Ws, c.lambda_Ws):
        right = lam * W.T @ W
        out.append(float(torch.linalg.matrix_norm(right - prev) / torch.linalg.matrix_norm(right)))
        prev = lam * W @ W.T
    return np.array(out)


def singular_subspace_overlaps(params: UFMParams, cfg: UFMConfig) -> tuple[np.ndarray, np.ndarray]:
    """Overlaps of the top-``K`` singular subspaces of every ``W_l`` with the class means (R5).

    Returns ``(right, left)``: entry ``l-1`` of ``right`` is the subspace overlap
    (:func:`ufmlib.alignment.subspace_overlap`, 1 = equal spans) of the top-``K`` right singular
    vectors of ``W_l`` with the class means ``μ_c^{(l)}`` of its input; ``left`` compares the
    top-``K`` left singular vectors with the class means ``μ_c^{(l+1)}`` of its output (the
    class-mean logits for ``W_L``). Spans, not vectors: the ``K`` singular values are equal at
    the minimiser (digest pitfall 4).
    """
    p, c = _cpu64(params, cfg)
    st = class_mean_state(p, c)
    K = c.K
    right, left = [], []
    for l, W in enumerate(p.Ws, start=1):
        U, _, Vh = torch.linalg.svd(W, full_matrices=False)
        right.append(subspace_overlap(Vh[:K].T, st.M(l)))
        left.append(subspace_overlap(U[:, :K], st.M(l + 1)))
    return np.array(right), np.array(left)


# ----------------------------------------------------------------------------- per-snapshot measurements
def split_snapshot(params: UFMParams, cfg: UFMConfig, layer: int, *, top: int | None = None) -> dict[str, Any]:
    """The Gauss-Newton split of ``Hess_l`` at one point, summarised (R3, v1 Thm 4.2).

    Keys: ``"class"``, ``"cross"``, ``"within"``, ``"hessian"`` (the ``top`` largest
    eigenvalues of each, default ``K² + 3``), ``"without_class"``, ``"without_cross"`` (the
    same for ``Hess_l - G_class`` and ``Hess_l - G_cross``: Papyan's knock-out view, where
    removing one part removes its outliers), ``"ranks"`` (:meth:`GNSplit.ranks`),
    ``"orthogonality"`` (``||P_class P_cross||_2``), ``"identity"`` (max entry of
    ``G_class + G_cross + G_within - G``) and ``"residual"`` (max entry of ``Hess_l - G``).
    Dense ``d_out d_in``-square matrices: for small widths.
    """
    layer = _check_layer(cfg, layer)
    p, c = _cpu64(params, cfg)
    split = gauss_newton_split(p, c, layer)
    k = c.K * c.K + 3 if top is None else top
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"top must be an integer >= 1; got {top!r}")
    out: dict[str, Any] = {name: split.eigenvalues(name)[:k].numpy() for name in ("class", "cross", "within", "hessian")}
    for name, part in (("without_class", split.G_class), ("without_cross", split.G_cross)):
        out[name] = torch.linalg.eigvalsh(split.hessian - part).flip(0)[:k].numpy()
    out["ranks"] = split.ranks()
    out["orthogonality"] = split.range_orthogonality()
    out["identity"] = split.identity_error
    out["residual"] = split.residual.abs().max().item()
    return out


def gradient_snapshot(params: UFMParams, cfg: UFMConfig, layer: int) -> dict[str, float]:
    """Gradient measurements of figure F4 beyond :class:`SpectralSnapshot` (R4, v1 Thm 4.3).

    ``"f_top_K"``: Gur-Ari overlap of the fit gradient with the top-``K`` eigenvectors of
    ``Hess_l`` (basis-dependent once the ``K²`` outliers are degenerate, digest §6);
    ``"total_over_fit"``: ``||∇𝓛_{W_l}|| / ||∇ℓ_{W_l}||``, the size of the gradient of the
    regularised loss relative to the fit gradient (0 at a critical point, where
    ``∇ℓ = -λ_{W_l} W_l``); ``"fit_norm"``: ``||∇ℓ_{W_l}||_F``.
    """
    layer = _check_layer(cfg, layer)
    p, c = _cpu64(params, cfg)
    g = fit_gradient(p, c, layer)
    total = g + c.lambda_Ws[layer - 1] * p.Ws[layer - 1].reshape(-1)
    vecs = layer_spectrum(p, c, layer).vectors(c.K)
    gn = float(torch.linalg.vector_norm(g))
    return {
        "f_top_K": top_overlap(g, vecs, c.K),
        "total_over_fit": float(torch.linalg.vector_norm(total)) / gn,
        "fit_norm": gn,
    }


def weight_snapshot(params: UFMParams, cfg: UFMConfig) -> dict[str, np.ndarray]:
    """Weight measurements of figure F5 at one point (R5, v1 Thm 4.4).

    Keys (one row per layer ``l = 1..L``): ``"gram"`` -- the ``K`` largest eigenvalues of
    ``W_l^T W_l``; ``"gram_from_means"`` -- the ``K`` eigenvalues predicted from the measured
    class means (:func:`ufmlib.theory.weight_gram_from_means`, ``||μ_c^{(l+1)}||²/||μ_c^{(l)}||²``
    for orthogonal frames); ``"balancedness"`` (:func:`balancedness`); ``"right_overlap"``,
    ``"left_overlap"`` (:func:`singular_subspace_overlaps`).
    """
    p, c = _cpu64(params, cfg)
    st = class_mean_state(p, c)
    K = c.K
    gram = np.stack([torch.linalg.svdvals(W)[:K].pow(2).numpy() for W in p.Ws])
    # rtol far below the spread of the measured values: no near-equal eigenvalues are merged into one level
    pred = np.stack([weight_gram_from_means(st.M(l), st.M(l + 1), rtol=1e-14).expanded()[:K].numpy()
                     for l in range(1, c.L + 1)])
    right, left = singular_subspace_overlaps(p, c)
    return {"gram": gram, "gram_from_means": pred, "balancedness": balancedness(p, c),
            "right_overlap": right, "left_overlap": left}


# ----------------------------------------------------------------------------- axes
def add_theory_trajectories(ax, epochs, values, *, label: str | None = "theory", linestyle: str = "--") -> None:
    """Draw predicted trajectories ``values[t, j]`` against ``epochs[t]`` as black (dashed) lines.

    For predictions that change along training (e.g. eigenvalues predicted from the measured
    class means); one legend entry ``label`` for all columns. ``linestyle`` (e.g. ``":"``)
    tells such a prediction apart from a fixed closed-form level drawn on the same axes.
    """
    x = np.asarray(epochs, dtype=float).ravel()
    y = np.asarray(values, dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != x.size:
        raise ValueError(f"values must have one row per epoch ({x.size}); got shape {y.shape}")
    for j in range(y.shape[1]):
        ax.plot(x, y[:, j], label=label if j == 0 else None, **{**THEORY, "linestyle": linestyle})
    if label and ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_coefficient_table(table, *, ax, title: str | None = None, fmt: str = "{:.3f}",
                           xlabel: str = r"$c'$", ylabel: str = r"$c$"):
    """Heatmap of a ``K x K`` table (e.g. ``c_{cc'}`` or ``f_{cc'}``) with the values written in.

    Rows are ``c``, columns ``c'`` (1-based tick labels).
    """
    T = np.asarray(table.detach().cpu().numpy() if hasattr(table, "detach") else table, dtype=float)
    if T.ndim != 2 or T.shape[0] != T.shape[1]:
        raise ValueError(f"table must be a square matrix; got shape {T.shape}")
    K = T.shape[0]
    im = ax.imshow(T, cmap="Blues", vmin=0.0, vmax=max(float(np.nanmax(T)), 1e-300))
    for i in range(K):
        for j in range(K):
            colour = "white" if T[i, j] > 0.6 * np.nanmax(T) else "black"
            ax.text(j, i, fmt.format(T[i, j]), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(K), [str(j + 1) for j in range(K)])
    ax.set_yticks(range(K), [str(i + 1) for i in range(K)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    if title:
        ax.set_title(title)
    return im


def agreement_table(checks: Sequence[Any], *, digits: int = 10) -> str:
    """Markdown table of :class:`ufmlib.provenance.Check` records: what agreed, and how well.

    Columns: check (its description), predicted, measured (the worst entry of an array check),
    error (relative or absolute, as checked), tolerance, outcome.
    """
    if isinstance(digits, bool) or not isinstance(digits, Integral) or digits < 1:
        raise ValueError(f"digits must be an integer >= 1; got {digits!r}")
    rows = ["| check | predicted | measured | error | tolerance | |", "|---|---|---|---|---|---|"]
    for c in checks:
        for attr in ("description", "theory", "measured", "error", "tolerance", "kind", "passed"):
            if not hasattr(c, attr):
                raise ValueError(f"checks must be ufmlib.provenance.Check records; got {c!r}")
        kind = "rel." if c.kind == "rel" else "abs."
        rows.append(
            f"| {c.description} | {c.theory:.{digits}g} | {c.measured:.{digits}g} | {c.error:.1e} ({kind}) "
            f"| {c.tolerance:.0e} | {'✓' if c.passed else '✗'} |"
        )
    return "\n".join(rows)
