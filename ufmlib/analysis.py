"""Deep neural collapse and Hessian outliers in trained classifiers, predicted from class means.

The paper's v2/v3 claim (its abstracts) is that what the deep UFM proves at its
global minimiser (R2, v1 Thm 4.1; R4, v1 Thm 4.3; R5, v1 Thm 4.4) is also what one measures
in the last layers of a *real* trained classifier: the layer-wise Hessian of each of the last
``L`` layers has ``K²`` outliers whose eigenvectors are class-mean Kronecker products, the
fit gradient lives in that outlier space, and the weights have ``K`` dominant singular values.
:func:`analyze_classifier` measures all of it on **any** ``torch.nn.Module`` whose head layers
(``nn.Linear``-like modules with a 2-D ``weight``) can be named; :func:`analyze_checkpoints`
repeats it along training.

What is measured for head layer ``l`` (weight ``W_l``, ``d_out x d_in``), with ``X_l`` the
input features of the layer, captured by forward hooks, and ``N`` samples in class order:

* **Collapse** (:mod:`ufmlib.collapse`): NC1 ``tr(Σ_W Σ_B^†)/K`` and its
  relative variant of ``X_l``; NC2 against the simplex ETF and against the orthogonal frame of
  the bias-free MSE optimum; DNC3 ``||W_l(I - P_{M_l})||_F/||W_l||_F``; NC3 self-duality for
  the last layer; NC1 of the next features.
* **Layer Hessian** of the **fit term** ``ℓ`` only (not the regularised loss) with respect to
  ``vec(W_l)`` (row-major, ``vec(a b^T) = a ⊗ b``), dense and exact: ``torch.func`` jvp-of-grad
  through :func:`torch.func.functional_call` with only this weight replaced, applied to the
  identity basis with ``vmap``; then ``eigh``. Head layers are small (``d_out d_in`` up to a
  few thousand).
* **Outlier count** by :func:`ufmlib.alignment.count_outliers` (``rule="ratio_gap"``: the
  largest ratio ``λ_i/λ_{i+1}`` after clipping the spectrum at ``floor·λ_max``, default
  ``floor = 1e-3``; no knowledge of ``K`` is used), and ``λ_{K²}/λ_{K²+1}``.
* **Eigenvector test** ``f_{cc'} = (v^T H v)²/(||v||²||Hv||²)`` (the v1 metric) for two families
  of ``K²`` candidate vectors, and the overlap ``||U^T V||_F²/K²`` of the measured top-``K²``
  eigenspace ``U`` with their span ``V`` (:func:`ufmlib.alignment.subspace_overlap`):

  - ``means``: ``μ_c^{(l+1)} ⊗ μ_{c'}^{(l)}``, the paper's statement (R2). ``μ^{(l)}`` are the
    class means of the layer's input ``X_l``. **Choice for** ``μ^{(l+1)}``: the class means of
    the *next head layer's input* ``X_{l+1}`` (post-activation; ``next_features="post"``,
    default), and of the model output (the logits) for the last layer; ``"pre"`` uses the
    layer's own output ``W_l X_l``. The two coincide for a linear head and at the ReLU DNC
    optimum, whose activations are non-negative (R8); away from it the post-activation means
    are the better candidate, because the Hessian only sees the active coordinates (the
    downstream Jacobian has zero columns on inactive units).
  - ``downstream``: ``a_c ⊗ μ_{c'}^{(l)}`` with ``a_c`` the rows of the sample-averaged
    downstream Jacobian ``B̄ = Av_i ∂z_i/∂h^{(l+1)}_i`` (``K x d_out``; measured by autograd
    through a hook on the layer's output). For the linear head this is exactly
    ``A^{(l+1)} = W_L⋯W_{l+1}``, and the linear MSE layer Hessian is
    ``(A^{(l+1)T}A^{(l+1)}) ⊗ Σ^{(l)}`` at *every* point (R2), so these are its
    eigenvectors as soon as the features collapse (DNC1) onto orthogonal class means and the
    rows ``a_c`` are orthogonal (R2 in its class-mean form). At DNC (DNC3) ``a_c ∝ μ_c^{(l+1)}``,
    so both families span the same space.
* **Predicted eigenvalues** from the measured class means: ``‖a_c‖²‖μ_{c'}‖²/K`` (R2 at a
  general DNC point, MSE; sorted), and the top ``K²`` eigenvalues of the DNC1
  class-mean Hessian ``(1/K)Σ_c (B_c^T Q_c B_c) ⊗ μ_cμ_c^T``
  (:func:`ufmlib.theory.layer_hessian_from_means`; ``B_c`` class-averaged downstream Jacobians,
  ``Q_c = I`` for MSE, the softmax Hessian at the class-mean logits for CE), against the
  measured top ``K²``.
* **Gradient alignment** (Gur-Ari et al. 2018): the fit-term gradient ``g`` (not of the
  regularised loss) and ``||P_k g||²/||g||²`` for the top ``k = K²`` and ``k = K`` eigenvectors, and the
  ``K x K`` table ``c_{cc'}`` in the normalised ``means`` basis (``I_K/K`` at the UFM optimum).
* **Weights**: singular values of ``W_l`` (``K`` dominant ones, R5).
* **Whole head**: optionally (``lanczos_k``) the top eigenvalues of the fit-term Hessian over
  all head weights jointly (R7) by block Lanczos
  (:func:`ufmlib.lanczos.top_eigenpairs`) on Hessian-vector products; the result says whether
  the solve converged.

Everything is computed on a float64 deep copy of the model in ``eval()`` mode (so that
batch-norm uses its running statistics, dropout is off and samples do not interact), on the
model's device; the caller's model is not modified. Samples are reordered by label (stable),
classes must be balanced.

Example on a model built outside this project::

    import torch
    from torch import nn
    from ufmlib.analysis import analyze_classifier

    torch.manual_seed(0)
    K, n, d = 3, 20, 8
    x = torch.randn(K * n, 5) + 3 * torch.eye(K, 5).repeat_interleave(n, dim=0)
    labels = torch.arange(K).repeat_interleave(n)
    net = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, d),      # backbone
                        nn.Linear(d, d, bias=False), nn.Linear(d, K, bias=False))  # head
    opt = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-3)
    Y = nn.functional.one_hot(labels, K).float()
    for _ in range(2000):                                   # full-batch GD, MSE
        opt.zero_grad()
        (0.5 * ((net(x) - Y) ** 2).sum() / len(x)).backward()
        opt.step()
    res = analyze_classifier(net, x, labels, head_layers=["3", "4"], K=K, loss="mse")
    last = res.layer(2)                                     # or res.layer("4"), res.layer(-1)
    print(last.num_outliers, last.gap_at_K2, last.overlap_means, last.nc1)
    # 9 (= K²) outliers, λ_9/λ_10 ≈ 35, overlap 1.000, NC1 ≈ 0.01 (torch 2.14, CPU)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from .alignment import (
    class_mean_kronecker_basis,
    count_outliers,
    eigvec_test,
    gradient_coefficients,
    outlier_gap,
    subspace_overlap,
    top_overlap,
)
from .autodiff import dense_hessian
from .collapse import class_means, dnc3_alignment, nc1, nc1_relative, nc2_etf, nc2_orthogonal, nc3_self_duality
from .heads import capture_features, downstream_jacobians, head_top_eigenpairs, infer_activation, resolve_head
from .model import logit_hessians
from .networks import model_at, network_fit_loss
from .spectrum import Spectrum
from .theory import layer_hessian_from_means
from .validation import check_int, check_rtol

__all__ = [
    "HeadLayerAnalysis",
    "ClassifierAnalysis",
    "AnalysisSeries",
    "analyze_classifier",
    "analyze_checkpoints",
    "analyze_head_checkpoints",
]

F64 = torch.float64
_LOSSES = ("mse", "ce")
_ACTIVATIONS = ("linear", "relu")


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True, eq=False)
class HeadLayerAnalysis:
    """Everything measured for one head layer ``W_l`` (``index = l``, 1-based; see module doc).

    Tensors are float64 on the CPU. ``eigenvalues``: the whole fit-term layer Hessian spectrum,
    descending (length ``d_out d_in``). ``top_vectors``: its top ``K²`` eigenvectors (columns)
    when requested (``keep_vectors``), else ``None``. ``predicted_general``: the ``K²`` values
    ``‖a_c‖²‖μ_{c'}‖²/K`` sorted descending (``None`` for CE); ``predicted_class_means``: the
    top ``K²`` eigenvalues of the DNC1 class-mean Hessian. ``f_means`` / ``f_downstream``:
    ``K x K`` tables of the eigenvector test, entry ``[c, c']`` for ``μ_c^{(l+1)} ⊗ μ_{c'}^{(l)}``
    / ``a_c ⊗ μ_{c'}^{(l)}`` (``nan`` where ``Hv = 0``). ``gradient_coefficients``: ``K x K``.
    ``nc3`` is only defined for the last layer (``None`` otherwise). ``downstream_jacobian``:
    ``B̄ = Av_i ∂z_i/∂h_i^{(l+1)}`` (``K x d_out``), whose rows are the ``a_c``
    (``A^{(l+1)} = W_L⋯W_{l+1}`` for a linear head, ``I_K`` for the last layer).
    ``next_features`` records which features played ``μ^{(l+1)}``: ``"post"`` (the next head
    layer's input), ``"pre"`` (this layer's own output; chosen, or the fall-back when the next
    layer's input has another shape) or ``"logits"`` (the last layer, with ``"post"``).
    """

    name: str
    index: int
    shape: tuple[int, int]
    next_features: str
    nc1: float
    nc1_relative: float
    nc2_etf: float
    nc2_orthogonal: float
    dnc3: float
    nc3: float | None
    nc1_next: float
    eigenvalues: Tensor = field(repr=False)
    num_outliers: int
    gap_at_K2: float
    predicted_general: Tensor | None = field(repr=False)
    predicted_class_means: Tensor = field(repr=False)
    f_means: Tensor = field(repr=False)
    f_downstream: Tensor = field(repr=False)
    overlap_means: float
    overlap_downstream: float
    gradient_norm: float
    gradient_overlap: float
    gradient_overlap_K: float
    gradient_coefficients: Tensor = field(repr=False)
    singular_values: Tensor = field(repr=False)
    downstream_jacobian: Tensor = field(repr=False)
    top_vectors: Tensor | None = field(default=None, repr=False)

    @property
    def K(self) -> int:
        return int(self.f_means.shape[0])

    @property
    def measured_top(self) -> Tensor:
        """The measured top ``K²`` eigenvalues."""
        return self.eigenvalues[: self.K**2]

    @property
    def equalisation(self) -> float:
        """``max/min`` of the measured top ``K²`` eigenvalues (1 at the UFM optimum)."""
        top = self.measured_top
        return float(top[0] / top[-1]) if float(top[-1]) > 0 else math.inf

    def as_dict(self) -> dict:
        """JSON-friendly scalars and short lists (no eigenvectors)."""
        K2 = self.K**2
        out = {
            "name": self.name, "index": self.index, "shape": list(self.shape), "next_features": self.next_features,
            "nc1": self.nc1,
            "nc1_relative": self.nc1_relative, "nc2_etf": self.nc2_etf, "nc2_orthogonal": self.nc2_orthogonal,
            "dnc3": self.dnc3, "nc3": self.nc3, "nc1_next": self.nc1_next, "num_outliers": self.num_outliers,
            "gap_at_K2": self.gap_at_K2, "equalisation": self.equalisation,
            "overlap_means": self.overlap_means, "overlap_downstream": self.overlap_downstream,
            "mean_f_means": float(torch.nanmean(self.f_means)),
            "mean_f_downstream": float(torch.nanmean(self.f_downstream)),
            "gradient_overlap": self.gradient_overlap, "gradient_overlap_K": self.gradient_overlap_K,
            "gradient_norm": self.gradient_norm,
            "top_eigenvalues": self.eigenvalues[: K2 + 5].tolist(),
            "predicted_class_means": self.predicted_class_means.tolist(),
            "predicted_general": None if self.predicted_general is None else self.predicted_general.tolist(),
            "singular_values": self.singular_values.tolist(),
        }
        return out


@dataclass(frozen=True, eq=False)
class ClassifierAnalysis:
    """Result of :func:`analyze_classifier`.

    ``layers[l-1]`` analyses head layer ``l``. ``activation``: the activation between head layers
    used for the analysis (the one given, else the one found); ``activation_found``: what the
    captured features look like (``"linear"``, ``"relu"``; ``"n/a"`` for one layer; ``"other"``
    if neither fits). ``next_features``: the choice asked for (each layer records what it used).
    ``fit_loss``: ``ℓ`` on the given data; ``accuracy``: argmax agreement with the labels.
    ``floor``: the clipping level of the outlier count. ``head``: the Lanczos top eigenpairs of
    the fit-term Hessian over all head weights (a :class:`ufmlib.spectrum.Spectrum` with
    ``converged`` and residuals; ``None`` unless ``lanczos_k``); ``head_dim``: the number of head
    weights.
    """

    K: int
    N: int
    loss: str
    activation: str
    activation_found: str
    next_features: str
    layers: tuple[HeadLayerAnalysis, ...]
    fit_loss: float
    accuracy: float
    head_dim: int
    floor: float
    head: Spectrum | None = field(default=None, repr=False)

    @property
    def head_eigenvalues(self) -> Tensor | None:
        """The head's top eigenvalues (float64, CPU), or ``None``."""
        return None if self.head is None else _cpu(self.head.eigenvalues)

    @property
    def head_residual_norms(self) -> Tensor | None:
        """``||Hv - θv||`` of the head's top eigenpairs, or ``None``."""
        return None if self.head is None else _cpu(self.head.residual_norms)

    @property
    def head_converged(self) -> bool | None:
        """Whether the head's Lanczos solve converged (``None`` without one)."""
        return None if self.head is None else self.head.converged

    def layer(self, key: int | str) -> HeadLayerAnalysis:
        """Head layer by 1-based index ``l`` (negative counts from the end) or module name."""
        if isinstance(key, str):
            for a in self.layers:
                if a.name == key:
                    return a
            raise ValueError(f"key {key!r} is not a head layer name; have {[a.name for a in self.layers]}")
        if isinstance(key, bool) or not isinstance(key, Integral):
            raise ValueError(f"key must be a 1-based layer index or a name; got {key!r}")
        L = len(self.layers)
        if 1 <= key <= L:
            return self.layers[key - 1]
        if -L <= key <= -1:
            return self.layers[key]
        raise ValueError(f"key must be in 1..{L} or -{L}..-1; got {key}")

    def as_dict(self) -> dict:
        return {
            "K": self.K, "N": self.N, "loss": self.loss, "activation": self.activation,
            "activation_found": self.activation_found, "next_features": self.next_features,
            "fit_loss": self.fit_loss, "accuracy": self.accuracy, "head_dim": self.head_dim, "floor": self.floor,
            "head_eigenvalues": None if self.head_eigenvalues is None else self.head_eigenvalues.tolist(),
            "head_converged": self.head_converged,
            "layers": [a.as_dict() for a in self.layers],
        }


@dataclass(frozen=True, eq=False)
class AnalysisSeries:
    """Analyses at several checkpoints (:func:`analyze_checkpoints`), in epoch order."""

    epochs: tuple[int, ...]
    results: tuple[ClassifierAnalysis, ...]

    def track(self, attribute: str, layer: int | str = -1) -> np.ndarray:
        """``attribute`` of head layer ``layer`` at every checkpoint (e.g. ``"nc1"``).

        Scalars give a 1-D array; tensors (e.g. ``"eigenvalues"``, ``"singular_values"``) are
        stacked into ``(checkpoints, ...)``. ``attribute`` may also be a field of
        :class:`ClassifierAnalysis` (``"fit_loss"``, ``"accuracy"``), then ``layer`` is ignored.
        """
        if not self.results:
            return np.zeros(0)
        first = self.results[0]
        if hasattr(first, attribute) and attribute not in ("layers", "layer", "next_features"):
            vals = [getattr(r, attribute) for r in self.results]
        else:
            if not hasattr(first.layer(layer), attribute):
                raise ValueError(f"attribute {attribute!r} is neither a ClassifierAnalysis nor a HeadLayerAnalysis field")
            vals = [getattr(r.layer(layer), attribute) for r in self.results]
        if isinstance(vals[0], Tensor):
            return torch.stack([v.to(F64) for v in vals]).numpy()
        return np.asarray(vals, dtype=float)


# ----------------------------------------------------------------------------- helpers
def _cpu(t: Tensor) -> Tensor:
    return t.detach().to(dtype=F64, device="cpu")


# ----------------------------------------------------------------------------- main entry
def analyze_classifier(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    *,
    head_layers: Sequence[str | nn.Module],
    K: int | None = None,
    loss: str = "mse",
    activation: str | None = None,
    next_features: str = "post",
    lanczos_k: int | None = None,
    seed: int = 0,
    floor: float = 1e-3,
    keep_vectors: bool = False,
    chunk_size: int | None = None,
) -> ClassifierAnalysis:
    """Deep neural collapse and layer-Hessian outliers of a trained classifier (see module doc).

    Parameters
    ----------
    model : any ``nn.Module`` mapping ``x`` to ``(N, K)`` logits; not modified (a float64
        ``eval()`` copy is analysed).
    x, labels : inputs (``N`` rows, any trailing shape the model accepts) and class indices
        ``0..K-1``; balanced classes; any order (reordered by label internally).
    head_layers : the layers ``W_1..W_L`` in forward order, as module names (``"head.0"``,
        ``"3"``) or the modules themselves; each needs a 2-D ``weight`` and must be called once.
    K : number of classes (default ``labels.max() + 1``).
    loss : ``"mse"`` (``(1/2N)||Z - Y||_F²``) or ``"ce"`` (mean cross-entropy): the fit term
        whose Hessian and gradient are analysed.
    activation : ``"linear"`` or ``"relu"`` between head layers; ``None`` infers it from the
        captured features. A value that contradicts the features raises ``ValueError``.
    next_features : ``"post"`` (default) or ``"pre"``: which class means play ``μ^{(l+1)}``
        (see module doc).
    lanczos_k : if given, the top ``lanczos_k`` eigenvalues of the fit-term Hessian over all
        head weights by block Lanczos (seeded by ``seed``).
    floor : ``count_outliers`` clipping level relative to the largest eigenvalue.
    keep_vectors : also return each layer's top ``K²`` Hessian eigenvectors.
    chunk_size : columns per vmapped batch of Hessian-vector products (default: ~256 MB).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a tensor with one sample per row; got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.shape[0] != x.shape[0] or labels.is_floating_point():
        raise ValueError(f"labels must be a 1-D integer tensor with one entry per row of x ({x.shape[0]})")
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}; got {loss!r}")
    if activation is not None and activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {_ACTIVATIONS}; got {activation!r}")
    if next_features not in ("post", "pre"):
        raise ValueError(f"next_features must be 'post' or 'pre'; got {next_features!r}")
    if lanczos_k is not None:
        lanczos_k = check_int("lanczos_k", lanczos_k, 1)
    seed = check_int("seed", seed, 0)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, 1)
    floor = check_rtol(floor, name="floor")
    labels_cpu = labels.detach().to("cpu", dtype=torch.long)
    if int(labels_cpu.min()) < 0:
        raise ValueError("labels must be >= 0")
    K = int(labels_cpu.max()) + 1 if K is None else check_int("K", K, 2)
    if int(labels_cpu.max()) >= K:
        raise ValueError(f"labels must lie in 0..K-1 = 0..{K - 1}")
    counts = torch.bincount(labels_cpu, minlength=K)
    if int(counts.min()) == 0 or bool((counts != counts[0]).any()):
        raise ValueError(f"labels must be balanced over the K = {K} classes; got counts {counts.tolist()}")
    names = resolve_head(model, head_layers)
    named = dict(model.named_modules())
    head_dim = sum(named[n].weight.numel() for n in names)
    if lanczos_k is not None and lanczos_k > head_dim:
        raise ValueError(f"lanczos_k must be <= the number of head weights ({head_dim}); got {lanczos_k}")

    net = copy.deepcopy(model).eval()
    try:
        device = next(net.parameters()).device
    except StopIteration:
        raise ValueError("model has no parameters") from None
    net = net.to(dtype=F64)
    for p in net.parameters():
        p.requires_grad_(False)
    order = torch.argsort(labels_cpu, stable=True)
    x = x.detach()[order.to(x.device)].to(device=device, dtype=F64)
    y = labels_cpu[order].to(device)
    N = x.shape[0]

    ins, outs, logits = capture_features(net, names, x)
    if logits.shape != (N, K):
        raise ValueError(f"model(x) must return (N, K) = ({N}, {K}) logits; got {tuple(logits.shape)}")
    found = infer_activation(ins, outs)
    if activation is not None and found not in ("n/a", activation) and not (found == "linear" and activation == "relu"):
        raise ValueError(f"activation={activation!r} contradicts the captured head features (they look {found!r})")
    act = activation if activation is not None and found != "n/a" else found
    fit = float(network_fit_loss(logits, y, loss))
    accuracy = float((logits.argmax(dim=1) == y).double().mean())

    widths = sum(i.shape[1] + o.shape[1] for i, o in zip(ins, outs))
    chunk = chunk_size or max(1, (256 * 2**20 // 8) // max(1, 4 * N * (widths + K)))
    L = len(names)
    layers = []
    for l, name in enumerate(names, start=1):
        if l == L:
            used = "logits" if next_features == "post" else "pre"
            X_next = logits if next_features == "post" else outs[l - 1]
        else:
            # the next layer's input has another shape than this layer's output (something other
            # than an elementwise activation sits between them): fall back to the output itself
            post = next_features == "post" and ins[l].shape == outs[l - 1].shape
            used = "post" if post else "pre"
            X_next = ins[l] if post else outs[l - 1]
        layers.append(_analyze_layer(net, x, y, name=name, index=l, last=l == L, K=K, loss=loss, X_in=ins[l - 1],
                                     X_next=X_next, next_used=used, logits=logits, floor=floor,
                                     keep_vectors=keep_vectors, chunk=chunk))
    head = None
    if lanczos_k is not None:
        head = head_top_eigenpairs(net, names, x, y, loss=loss, k=lanczos_k, seed=seed)
    return ClassifierAnalysis(
        K=K, N=N, loss=loss, activation=act, activation_found=found, next_features=next_features,
        layers=tuple(layers), fit_loss=fit, accuracy=accuracy, head_dim=head_dim, floor=float(floor), head=head,
    )


def _analyze_layer(net: nn.Module, x: Tensor, y: Tensor, *, name: str, index: int, last: bool, K: int, loss: str,
                   X_in: Tensor, X_next: Tensor, next_used: str, logits: Tensor, floor: float, keep_vectors: bool,
                   chunk: int) -> HeadLayerAnalysis:
    """All measurements of one head layer (see the module doc); ``net`` is the float64 eval copy."""
    W = dict(net.named_modules())[name].weight.detach()
    d_out, d_in = W.shape
    N = x.shape[0]
    Xc, Xn = _cpu(X_in).T, _cpu(X_next).T  # features as columns, class-ordered
    M_in, M_next = class_means(Xc, K), class_means(Xn, K)
    Wc = _cpu(W)

    # exact fit-term Hessian and gradient w.r.t. vec(W_l) (row-major)
    pname = f"{name}.weight"

    def f(w: Tensor) -> Tensor:
        return network_fit_loss(functional_call(net, {pname: w.reshape(d_out, d_in)}, (x,)), y, loss)

    w0 = W.reshape(-1).clone()
    dim = w0.numel()
    Hc = _cpu(dense_hessian(f, w0, chunk_size=min(chunk, dim)))
    gc = _cpu(torch.func.grad(f)(w0))
    evals, evecs = torch.linalg.eigh(Hc)
    evals, evecs = evals.flip(0), evecs.flip(1)
    k2 = min(K * K, dim)

    # downstream Jacobians and the predictions from class means
    B = _cpu(downstream_jacobians(net, name, x, K, d_out))  # (N, K, d_out)
    Bc = B.reshape(K, N // K, K, d_out).mean(dim=1)  # class-averaged B_c, (K, K, d_out)
    Bbar = B.mean(dim=0)  # (K, d_out), rows a_c
    Q = list(logit_hessians(class_means(_cpu(logits).T, K), "ce")) if loss == "ce" else None
    predicted = layer_hessian_from_means(M_in, list(Bc), Q=Q).expanded(dim)[:k2]
    general = None
    if loss == "mse":
        general = (torch.outer(Bbar.pow(2).sum(1), M_in.pow(2).sum(0)) / K).reshape(-1)
        general = torch.sort(general, descending=True).values[:k2]

    # eigenvector tests and subspace overlaps
    def hv(v: Tensor) -> Tensor:
        return Hc @ v

    U = evecs[:, :k2]
    means = class_mean_kronecker_basis(M_next, M_in)
    down = torch.einsum("ci,jd->cdij", Bbar, M_in).reshape(K * K, dim).T  # columns a_c ⊗ μ_c'
    f_means = torch.tensor([eigvec_test(hv, v) for v in means.vectors.T], dtype=F64).reshape(K, K)
    f_down = torch.tensor([eigvec_test(hv, v) if float(v.norm()) > 0 else math.nan for v in down.T],
                          dtype=F64).reshape(K, K)
    full = k2 == K * K
    overlap_means = subspace_overlap(U, means.vectors) if full else math.nan
    overlap_down = subspace_overlap(U, down) if full and float(down.norm()) > 0 else math.nan

    gnorm = float(gc.norm())
    if gnorm > 0:
        g_over, g_over_K = top_overlap(gc, evecs, k2), top_overlap(gc, evecs, min(K, dim))
        coeffs = gradient_coefficients(gc, means)
    else:
        g_over = g_over_K = math.nan
        coeffs = torch.full((K, K), math.nan, dtype=F64)

    return HeadLayerAnalysis(
        name=name, index=index, shape=(d_out, d_in), next_features=next_used,
        nc1=nc1(Xc, K), nc1_relative=nc1_relative(Xc, K), nc2_etf=nc2_etf(M_in),
        nc2_orthogonal=nc2_orthogonal(M_in), dnc3=dnc3_alignment(Wc, M_in),
        nc3=nc3_self_duality(Wc, M_in) if last and d_out == K else None, nc1_next=nc1(Xn, K),
        eigenvalues=evals, num_outliers=count_outliers(evals, rule="ratio_gap", floor=floor),
        gap_at_K2=outlier_gap(evals, K) if dim > K * K else math.nan,
        predicted_general=general, predicted_class_means=predicted,
        f_means=f_means, f_downstream=f_down, overlap_means=overlap_means, overlap_downstream=overlap_down,
        gradient_norm=gnorm, gradient_overlap=g_over, gradient_overlap_K=g_over_K,
        gradient_coefficients=coeffs, singular_values=torch.linalg.svdvals(Wc), downstream_jacobian=Bbar,
        top_vectors=U.clone() if keep_vectors else None,
    )


def analyze_checkpoints(
    model: nn.Module,
    checkpoints: Iterable[Any],
    x: Tensor,
    labels: Tensor,
    **kwargs: Any,
) -> AnalysisSeries:
    """:func:`analyze_classifier` at every checkpoint, for figures over training.

    ``checkpoints`` holds :class:`ufmlib.train.Snapshot` objects whose ``value`` is a
    ``state_dict`` (what :func:`ufmlib.networks.train_network` keeps without a callback) or
    ``(epoch, state_dict)`` pairs; ``model`` supplies the architecture (its own weights are
    not used or changed). ``kwargs`` go to :func:`analyze_classifier` (``head_layers`` is
    required); module objects in ``head_layers`` are translated to their names.
    """
    if "head_layers" not in kwargs:
        raise ValueError("head_layers is required")
    kwargs = dict(kwargs)
    kwargs["head_layers"] = resolve_head(model, kwargs["head_layers"])
    epochs, results = [], []
    for i, cp in enumerate(checkpoints):
        if hasattr(cp, "epoch") and hasattr(cp, "value"):
            epoch, state = cp.epoch, cp.value
        elif isinstance(cp, (tuple, list)) and len(cp) == 2:
            epoch, state = cp
        else:
            raise ValueError(f"checkpoints[{i}] must be a Snapshot or an (epoch, state_dict) pair")
        if not isinstance(state, dict):
            raise ValueError(f"checkpoints[{i}] must carry a state_dict; got {type(state).__name__}")
        epochs.append(int(epoch))
        results.append(analyze_classifier(model_at(model, state), x, labels, **kwargs))
    order = np.argsort(epochs, kind="stable")
    return AnalysisSeries(tuple(epochs[i] for i in order), tuple(results[i] for i in order))


def analyze_head_checkpoints(model: nn.Module, checkpoints: Iterable[Any], x: Tensor, labels: Tensor, *,
                             eval_batch: int = 10000, **kwargs: Any) -> AnalysisSeries:
    """:func:`analyze_checkpoints` of a :class:`ufmlib.networks.HeadedNetwork`, on its backbone's features.

    The fit term and its derivatives in the head weights see the backbone only through ``h(x)``:
    at each checkpoint the backbone runs once (float64, ``eval()``, ``eval_batch`` samples per
    pass, no gradients) and only the head is analysed, with the same results (R2, v1 Thm 4.1;
    R4, v1 Thm 4.3) at the cost of the head. ``kwargs`` go to :func:`analyze_classifier`.
    """
    from .networks import HeadedNetwork

    if not isinstance(model, HeadedNetwork) or "head_layers" in kwargs:
        raise ValueError("model must be a ufmlib.networks.HeadedNetwork, whose head_layers are its own (not given)")
    eval_batch = check_int("eval_batch", eval_batch, 1)
    epochs, results = [], []
    for cp in checkpoints:
        epoch, state = (cp.epoch, cp.value) if hasattr(cp, "value") else cp
        net = model_at(model, state).to(F64).eval()
        with torch.no_grad():
            h = torch.cat([net.backbone(xb) for xb in x.to(F64).split(eval_batch)])
        head = HeadedNetwork(nn.Identity(), list(net.head), net.activation)
        epochs.append(int(epoch))
        results.append(analyze_classifier(head, h, labels, head_layers=model.head_layer_names, **kwargs))
    order = np.argsort(epochs, kind="stable")
    return AnalysisSeries(tuple(epochs[i] for i in order), tuple(results[i] for i in order))
