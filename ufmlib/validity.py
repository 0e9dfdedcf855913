"""Where the theory holds: the closed forms against gradient descent over parameter space.

The book chapter ``validity`` maps three results over a grid of parameters, one point at a time,
with the training and the measurements of the chapters that state them:

* :func:`mse_point` / :func:`mse_map` - the MSE deep linear UFM with one common weight decay
  ``λ = λ_{W_l} = λ_H`` (R1, R2): full-batch gradient descent (:func:`ufmlib.train.train`, the
  training of the layer-Hessian chapter) run in chunks until the gradient of the regularised loss
  is below ``grad_tol`` (the point counts as *converged*) or ``max_epochs`` are spent; then
  the end point is classified by its structure (:data:`MSE_OUTCOMES`) and, for every layer, its
  Hessian outliers (:func:`ufmlib.hessian.layer_spectrum`) are compared with the closed form
  ``λ_W γ/(1-γ)`` (:attr:`ufmlib.optimum.DNCOptimum.layer_hessian_outlier`, v1 Thm 4.1) and the
  share of the layer Hessian's trace outside the class-mean Kronecker space is measured (0 at the
  minimiser). Beyond the boundary of condition (2) (v1 Eq. (2)) the global minimiser is zero.
* :func:`relu_map` - the share of ReLU seeds whose end point is deep neural collapse
  (:func:`ufmlib.screening.screen_seeds`, R8) for every width ``d`` and depth ``L``.
* :func:`ce_level_map` - the three levels of the cross-entropy layer Hessian at the DNC
  critical point (:func:`ufmlib.theory.ce_critical_layer_hessian`, R9) against ``K``, measured by
  automatic differentiation at the constructed point and at the end of gradient descent
  (:func:`ufmlib.dynamics.ce_descent_run`) where a run reaches it.

Every measurement is in float64 on the CPU; every random draw is seeded explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .alignment import orthonormal_basis
from .config import UFMConfig
from .hessian import layer_hessian_factors, layer_spectrum
from .model import UFMParams, init_params, labels
from .optimum import common_lambda_threshold, dnc_optimum, phase_curves
from .state import UFMState
from .train import loss_and_grad, train
from .validation import check_int, check_positive

__all__ = [
    "CHECK_EVERY",
    "ZERO_TOL",
    "CE_RTOL",
    "MSE_OUTCOMES",
    "Descent",
    "descend",
    "class_mean_share",
    "lower_rank_loss",
    "lower_rank_outliers",
    "MSEPoint",
    "mse_point",
    "MSEMap",
    "mse_map",
    "ReLUCell",
    "ReLUMap",
    "relu_map",
    "CE_LEVELS",
    "CELevels",
    "ce_levels",
    "ce_level_map",
]

F64 = torch.float64

CHECK_EVERY = 500
"""Default number of gradient-descent steps between two convergence tests of :func:`descend`."""

ZERO_TOL = 1e-8
"""Default largest parameter entry of an end point that :func:`mse_point` calls ``"zero"``."""

CE_RTOL = 1e-7
"""Default tolerance of :func:`ce_levels`: an eigenvalue belongs to a level within this times the top one."""

MSE_OUTCOMES = ("collapsed", "lower rank", "zero", "not converged")
"""Where gradient descent on the MSE model ends (:attr:`MSEPoint.outcome`): converged at a point whose
class-mean logits have rank ``K`` (``"collapsed"``), rank between 1 and ``K-1`` (``"lower rank"``:
a critical point on which the class means of some classes are zero), at the zero point (``"zero"``), or not
converged within the budget."""


def _grid(name: str, values, *, minimum: float | None = None, integer: bool = False) -> tuple:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list; got {values!r}")
    out = []
    for v in values:
        if integer:
            out.append(check_int(name, v, int(minimum)))
        else:
            out.append(check_positive(name, v))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must hold distinct values; got {values!r}")
    return tuple(sorted(out))


# ----------------------------------------------------------------------------- gradient descent
@dataclass(frozen=True)
class Descent:
    """The end of :func:`descend`: parameters, epochs run, final regularised loss, largest
    gradient entry ``grad_max`` and whether it is at most ``grad_tol`` (``converged``)."""

    params: UFMParams
    epochs: int
    loss: float
    grad_max: float
    grad_tol: float
    converged: bool


def _gradient(params: UFMParams, cfg: UFMConfig) -> tuple[float, float]:
    loss, grads = loss_and_grad(list(params.tensors()), cfg, labels(cfg))
    return float(loss), max(float(g.abs().max()) for g in grads)


def descend(cfg: UFMConfig, *, lr: float, max_epochs: int, grad_tol: float, chunk: int = CHECK_EVERY) -> Descent:
    """Full-batch gradient descent from ``init_params(cfg)`` until converged (book chapter ``validity``).

    Runs :func:`ufmlib.train.train` for ``chunk`` epochs at a time (gradient descent has no state
    but the parameters, so the chunks make exactly one run) and stops as soon as every entry of
    the gradient of the regularised loss (v1 Eq. (1)) is at most ``grad_tol`` or after
    ``max_epochs`` epochs. Raises :class:`ufmlib.train.TrainingDivergedError` naming ``lr``.
    """
    if not isinstance(cfg, UFMConfig):
        raise ValueError(f"cfg must be a UFMConfig; got {type(cfg).__name__}")
    lr = check_positive("lr", lr)
    max_epochs = check_int("max_epochs", max_epochs, 0)
    grad_tol = check_positive("grad_tol", grad_tol)
    chunk = check_int("chunk", chunk, 1)
    params, done = init_params(cfg), 0
    loss, gmax = _gradient(params, cfg)
    while gmax > grad_tol and done < max_epochs:
        steps = min(chunk, max_epochs - done)
        params = train(cfg, params, lr=lr, epochs=steps, snapshot_epochs=[], progress=False).params
        done += steps
        loss, gmax = _gradient(params, cfg)
    return Descent(params, done, loss, gmax, float(grad_tol), gmax <= grad_tol)


# ----------------------------------------------------------------------------- MSE: one point
def class_mean_share(params: UFMParams | UFMState, cfg: UFMConfig, layer: int, *, rtol: float = 1e-8) -> float:
    """Share of the trace of ``Hess_l = P ⊗ Q`` outside the class-mean space ``span(μ^{(l+1)}) ⊗ span(μ^{(l)})``.

    ``1 - tr(Π_out P) tr(Π_in Q) / (tr P tr Q)`` with ``Π_out``, ``Π_in`` the orthogonal projectors
    on the spans of the class means of the output and the input of ``W_l`` (singular values below
    ``rtol`` times the largest dropped); ``0`` at the global minimiser, where all of the spectrum
    lies in the ``K²`` outliers whose eigenvectors are ``μ_c^{(l+1)} ⊗ μ_{c'}^{(l)}`` (R2, v1 Thm 4.1);
    NaN where the Hessian is zero. Linear MSE model only (:func:`ufmlib.hessian.layer_hessian_factors`).
    """
    st = params if isinstance(params, UFMState) else UFMState(params, cfg)
    P, Q = layer_hessian_factors(st, cfg, layer)
    total = float(torch.trace(P)) * float(torch.trace(Q))
    if not total > 0:
        return math.nan
    Uo, Ui = orthonormal_basis(st.output_means(layer), rtol=rtol), orthonormal_basis(st.M(layer), rtol=rtol)
    inside = float(torch.trace(Uo.T @ P @ Uo)) * float(torch.trace(Ui.T @ Q @ Ui))
    return max(0.0, 1.0 - inside / total)


def lower_rank_loss(K: int, rank: int, dnc_loss: float) -> float:
    """Loss ``(r L_DNC + (K-r)/2)/K`` of the critical point on which ``r = rank`` classes are collapsed.

    The derivation is the companion's (book chapter ``validity``): the target ``Y = I_K ⊗ 1_n^T``
    has ``K`` equal singular values, and along each of them the loss of v1 Eq. (1) is the same
    one-dimensional problem, so a critical point may use ``r`` of the ``K`` directions at the
    collapsed value (loss ``L_DNC`` per class, the largest root of (★)) and leave ``K-r`` at zero
    (loss ``1/2`` per class); its layer Hessians have :func:`lower_rank_outliers` outliers ``λ_W γ/(1-γ)``.
    """
    K, rank = check_int("K", K, 2), check_int("rank", rank, 0, K)
    return (rank * float(dnc_loss) + (K - rank) * 0.5) / K


def lower_rank_outliers(K: int, rank: int, L: int, layer: int) -> int:
    """Number of outliers ``λ_W γ/(1-γ)`` of ``Hess_layer`` at the rank-``r`` critical point of :func:`lower_rank_loss`.

    ``r²`` for ``l < L`` (both Kronecker factors of v1 Thm 4.1 have rank ``r``) and ``K r`` for the
    last layer, whose Hessian is ``I_K ⊗ Σ^{(L)}``; ``K²`` at the global minimiser (``r = K``).
    """
    K, rank, L = check_int("K", K, 2), check_int("rank", rank, 0, K), check_int("L", L, 1)
    layer = check_int("layer", layer, 1, L)
    return rank * (K if layer == L else rank)


@dataclass(frozen=True)
class MSEPoint:
    """One point ``(K, L, λ)`` of the MSE map (:func:`mse_point`).

    ``is_global``: condition (2) holds (the global minimiser is collapsed, else zero);
    ``optimal_loss``: the global minimum (1/2 beyond the boundary); ``dnc_loss``: the loss
    ``(1-γ)(1+Lγ)/2`` of the collapsed critical point (largest root of (★)): the global minimum
    inside the region, the point of the branch continued beyond it
    (:func:`ufmlib.optimum.phase_curves`; NaN where (★) has no root); ``outcome``: one of
    :data:`MSE_OUTCOMES`; ``rank``: the rank ``r`` of the final class-mean logits (0 at the zero
    point); ``param_max``: the largest parameter entry; per layer, ``outlier_errors`` (largest
    relative error of the :func:`lower_rank_outliers` largest eigenvalues of ``Hess_l`` against ``λ_W γ/(1-γ)``;
    measured inside the region at converged non-zero end points) and ``shares``
    (:func:`class_mean_share`, at converged non-zero end points).
    """

    K: int
    n: int
    d: int
    L: int
    lam: float
    seed: int
    is_global: bool
    optimal_loss: float
    dnc_loss: float
    final_loss: float
    epochs: int
    grad_max: float
    converged: bool
    param_max: float
    rank: int
    outcome: str
    outlier_errors: tuple[float, ...]
    shares: tuple[float, ...]

    @property
    def outlier_error(self) -> float:
        """Largest relative outlier error over the layers (NaN where not measured)."""
        return max(self.outlier_errors) if self.outlier_errors else math.nan

    @property
    def share(self) -> float:
        """Largest share outside the class-mean space over the layers (NaN where not measured)."""
        return max(self.shares) if self.shares else math.nan

    @property
    def predicted_loss(self) -> float:
        """The loss of the critical point of this outcome: ``1/2`` at zero, :func:`lower_rank_loss`
        with ``r = rank`` otherwise (``L_DNC`` for ``r = K``); NaN when not converged."""
        if self.outcome == "not converged":
            return math.nan
        return 0.5 if self.outcome == "zero" else lower_rank_loss(self.K, self.rank, self.dnc_loss)


def mse_point(K: int, n: int, d: int, L: int, lam: float, *, seed: int, lr: float, max_epochs: int,
              grad_tol: float = 1e-10, zero_tol: float = ZERO_TOL, rank_rtol: float = 1e-6,
              device: str = "cpu") -> MSEPoint:
    """Train the MSE deep linear UFM with ``λ_{W_l} = λ_H = lam`` from seed ``seed`` and measure its end (:class:`MSEPoint`).

    :func:`descend` with ``lr``, ``max_epochs`` and ``grad_tol`` on ``device``; the end point
    is ``"zero"`` when every parameter entry is at most ``zero_tol``, else ``"collapsed"`` or
    ``"lower rank"`` by the rank of its class-mean logits (singular values above ``rank_rtol``
    times the largest). Everything is measured in float64 on the CPU.
    """
    cfg = UFMConfig(K=K, n=n, d=d, L=L, lambda_W=lam, lambda_H=lam, seed=seed, dtype="float64", device=device)
    zero_tol, rank_rtol = check_positive("zero_tol", zero_tol), check_positive("rank_rtol", rank_rtol)
    opt = dnc_optimum(cfg)
    run = descend(cfg, lr=lr, max_epochs=max_epochs, grad_tol=grad_tol)
    c64 = cfg.replace(device="cpu")
    st = UFMState(run.params.to(dtype=F64, device="cpu"), c64)
    param_max = max(float(t.abs().max()) for t in st.tensors())
    sv = torch.linalg.svdvals(st.logit_means)
    rank = int((sv > rank_rtol * sv[0]).sum()) if param_max > zero_tol else 0
    if not run.converged:
        outcome = "not converged"
    elif rank == 0:
        outcome = "zero"
    else:
        outcome = "collapsed" if rank == K else "lower rank"
    errors: list[float] = []
    shares: list[float] = []
    if run.converged and rank > 0:
        shares = [class_mean_share(st, c64, l) for l in range(1, L + 1)]
        if opt.is_global:
            for l, level in enumerate(opt.layer_hessian_outlier, start=1):
                top = layer_spectrum(st, c64, l, k=lower_rank_outliers(K, rank, L, l)).eigenvalues
                errors.append(float((top / level - 1).abs().max()))
    dnc_loss = opt.optimal_loss if opt.is_global else float(phase_curves(K, n, L, [lam])["loss_branch"][0])
    return MSEPoint(K=cfg.K, n=cfg.n, d=cfg.d, L=cfg.L, lam=float(lam), seed=cfg.seed, is_global=opt.is_global,
                    optimal_loss=opt.optimal_loss, dnc_loss=dnc_loss, final_loss=run.loss, epochs=run.epochs,
                    grad_max=run.grad_max, converged=run.converged, param_max=param_max, rank=rank, outcome=outcome,
                    outlier_errors=tuple(errors), shares=tuple(shares))


# ----------------------------------------------------------------------------- MSE: the map
@dataclass(frozen=True)
class MSEMap:
    """:func:`mse_map` over ``Ks`` x ``lambdas`` for every depth in ``Ls``.

    ``points[(L, K, lam)]`` is the :class:`MSEPoint`; ``thresholds[(L, K)]`` the weight decay
    ``λ*`` at which condition (2) becomes an equality (:func:`ufmlib.optimum.common_lambda_threshold`).
    """

    n: int
    d: int
    Ls: tuple[int, ...]
    Ks: tuple[int, ...]
    lambdas: tuple[float, ...]
    points: dict
    thresholds: dict

    def panel(self, L: int) -> list[MSEPoint]:
        """The points of depth ``L``, ``K`` varying fastest within each ``λ``."""
        return [self.points[(L, K, lam)] for lam in self.lambdas for K in self.Ks]

    def grid(self, L: int, field: str) -> np.ndarray:
        """``len(lambdas) x len(Ks)`` array of the attribute ``field`` of the points of depth ``L``."""
        return np.array([[float(getattr(self.points[(L, K, lam)], field)) for K in self.Ks] for lam in self.lambdas])

    def labels(self, L: int) -> list[list[str]]:
        """``len(lambdas) x len(Ks)`` cell labels of the outcomes at depth ``L`` for a map: ``""`` at
        the collapsed global minimiser, ``"K"`` at the collapsed point beyond the boundary,
        ``"r=<rank>"`` at a point of lower rank, ``"0"`` at zero, ``"n.c."`` where not converged."""
        short = {"zero": "0", "not converged": "n.c."}

        def label(p: MSEPoint) -> str:
            if p.outcome == "collapsed":
                return "" if p.is_global else "K"
            return short.get(p.outcome, f"r={p.rank}")

        return [[label(self.points[(L, K, lam)]) for K in self.Ks] for lam in self.lambdas]

    def select(self, *, L: int | None = None, outcome: str | None = None, inside: bool | None = None) -> list[MSEPoint]:
        """The points with the given depth, outcome and side of the boundary (``None``: any)."""
        return [p for p in self.points.values() if (L is None or p.L == L) and (outcome is None or p.outcome == outcome)
                and (inside is None or p.is_global == inside)]


def mse_map(*, Ks: Sequence[int], Ls: Sequence[int], lambdas: Sequence[float], n: int, d: int, seed: int,
            lr: float, max_epochs: int, grad_tol: float = 1e-10, device: str = "cpu") -> MSEMap:
    """:func:`mse_point` at every ``(K, L, λ)`` of the grid (every point from the same ``seed``, R1 and R2)."""
    Ks = _grid("Ks", Ks, minimum=2, integer=True)
    Ls = _grid("Ls", Ls, minimum=1, integer=True)
    lambdas = _grid("lambdas", lambdas)
    n, d = check_int("n", n, 1), check_int("d", d, 1)
    if d < max(Ks):
        raise ValueError(f"d must be at least the largest K = {max(Ks)}; got {d}")
    points = {(L, K, lam): mse_point(K, n, d, L, lam, seed=seed, lr=lr, max_epochs=max_epochs, grad_tol=grad_tol,
                                     device=device)
              for L in Ls for K in Ks for lam in lambdas}
    thresholds = {(L, K): common_lambda_threshold(K, n, L) for L in Ls for K in Ks}
    return MSEMap(n, d, Ls, Ks, lambdas, points, thresholds)


# ----------------------------------------------------------------------------- ReLU: share of DNC seeds
@dataclass(frozen=True)
class ReLUCell:
    """The screened seeds of one ``(d, L)`` of the ReLU map (:func:`relu_map`, R8).

    Per seed, in the order of ``seeds``: ``kinds`` (:data:`ufmlib.screening.SOLUTION_KINDS`),
    ``losses`` (final regularised loss) and ``grad_max`` (largest entry of the gradient of the
    regularised loss at the end, ``ReLU'(0) = 0``), with ``converged`` = ``grad_max <= grad_tol``;
    ``bound``: the optimal loss ``L*_lin`` of the linear model of the same size.
    """

    d: int
    L: int
    seeds: tuple[int, ...]
    kinds: tuple[str, ...]
    losses: tuple[float, ...]
    grad_max: tuple[float, ...]
    grad_tol: float
    bound: float

    @property
    def converged(self) -> tuple[bool, ...]:
        return tuple(g <= self.grad_tol for g in self.grad_max)

    def count(self, *kinds: str) -> int:
        """Number of seeds whose end point is of one of ``kinds``."""
        return sum(k in kinds for k in self.kinds)

    def share(self, *kinds: str) -> float:
        """Share of the seeds whose end point is of one of ``kinds``."""
        return self.count(*kinds) / len(self.kinds)

    def gaps(self, *kinds: str) -> list[float]:
        """``(loss - L*_lin)/L*_lin`` of the seeds of the given kinds."""
        return [(x - self.bound) / self.bound for x, k in zip(self.losses, self.kinds) if k in kinds]


@dataclass(frozen=True)
class ReLUMap:
    """:func:`relu_map`: ``cells[(L, d)]`` for every depth ``L`` in ``Ls`` and width ``d`` in ``ds``."""

    K: int
    n: int
    lam: float
    ds: tuple[int, ...]
    Ls: tuple[int, ...]
    cells: dict

    def grid(self, *kinds: str) -> np.ndarray:
        """``len(Ls) x len(ds)`` array of the share of seeds of the given kinds."""
        return np.array([[self.cells[(L, d)].share(*kinds) for d in self.ds] for L in self.Ls])


def relu_map(*, K: int, n: int, ds: Sequence[int], Ls: Sequence[int], lam: float, seeds: Sequence[int], lr: float,
             epochs: int, grad_tol: float = 1e-8, device: str = "cpu") -> ReLUMap:
    """Screen ``seeds`` (:func:`ufmlib.screening.screen_seeds`) for every width ``d`` and depth ``L`` of the ReLU model (R8).

    ``λ_{W_l} = λ_H = lam``; every run is full-batch gradient descent with ``lr`` for ``epochs``
    steps and its end point is classified by structure alone (:class:`ufmlib.screening.DNCTest`).
    """
    from .screening import screen_seeds

    ds = _grid("ds", ds, minimum=1, integer=True)
    Ls = _grid("Ls", Ls, minimum=2, integer=True)
    K = check_int("K", K, 2)
    if min(ds) < K:
        raise ValueError(f"ds must all be at least K = {K}; got {list(ds)}")
    grad_tol = check_positive("grad_tol", grad_tol)
    cells = {}
    for L in Ls:
        for d in ds:
            cfg = UFMConfig(K=K, n=n, d=d, L=L, activation="relu", lambda_W=lam, lambda_H=lam, dtype="float64",
                            device=device, seed=0)
            outcomes = screen_seeds(cfg, seeds, lr=lr, epochs=epochs, progress=False)
            grads = [_gradient(o.params, cfg)[1] for o in outcomes]
            cells[(L, d)] = ReLUCell(d, L, tuple(o.seed for o in outcomes), tuple(o.kind for o in outcomes),
                                     tuple(o.final_loss for o in outcomes), tuple(grads), float(grad_tol),
                                     outcomes[0].metrics.linear_bound)
    return ReLUMap(K, int(n), float(lam), ds, Ls, cells)


# ----------------------------------------------------------------------------- CE: three levels against K
CE_LEVELS = ("top", "K-1 level", "mini-bulk")
"""Labels of the three non-zero levels of the CE layer Hessian at the DNC critical point (R9)."""


@dataclass(frozen=True)
class CELevels:
    """The CE layer Hessian of ``W_layer`` at the DNC critical point for one ``(K, L)`` (:func:`ce_levels`, R9).

    ``predicted``/``multiplicities``: the three levels of
    :func:`ufmlib.theory.ce_critical_layer_hessian`; ``measured``/``counts``: the mean and the
    number of the autodiff eigenvalues at the constructed point matched to each level, ``error``
    the largest distance of an eigenvalue from its level (the zero bulk included) relative to the
    top one, ``unmatched`` the eigenvalues near no level. ``runs``: gradient descent from the
    seeds (:func:`ufmlib.dynamics.ce_descent_run`); for the runs that reach the DNC point
    (``at_dnc``, the convergence test of that function) ``run_measured``/``run_errors`` hold the
    same comparison for the final Hessian (``None``/NaN for the others).
    """

    K: int
    L: int
    n: int
    d: int
    lam: float
    layer: int
    alpha: float
    predicted: tuple[float, ...]
    multiplicities: tuple[int, ...]
    measured: tuple[float, ...]
    counts: tuple[int, ...]
    unmatched: int
    error: float
    runs: tuple
    run_measured: tuple
    run_errors: tuple[float, ...]
    run_counts: tuple

    @property
    def at_dnc(self) -> tuple[bool, ...]:
        return tuple(r.at_dnc for r in self.runs)


def _level_match(eigenvalues: torch.Tensor, predicted, rtol: float):
    from .levels import match_spectrum

    top = float(eigenvalues[0])
    table = match_spectrum(eigenvalues, predicted, atol=rtol * top, labels=CE_LEVELS)
    rows = table.rows[: len(predicted.multiplicities)]
    return (tuple(r.measured_mean for r in rows), tuple(r.count for r in table.rows), table.unmatched,
            table.max_error / top)


def ce_levels(K: int, *, n: int, d: int, L: int, lam: float, layer: int, seed: int, run_seeds: Sequence[int] = (),
              lr: float = 1.0, epochs: int = 5000, rtol: float = CE_RTOL, device: str = "cpu") -> CELevels:
    """The three CE levels of ``Hess_layer`` predicted and measured for one ``K`` (:class:`CELevels`, R9).

    The autodiff layer Hessian (:func:`ufmlib.hessian.layer_hessian_autodiff`) at
    :func:`ufmlib.optimum.construct_ce_critical_point` with random frames drawn from ``seed``, and at
    the end of one gradient-descent run per seed of ``run_seeds`` (learning rate ``lr``, ``epochs``
    steps); eigenvalues are matched to the levels within ``rtol`` times the top eigenvalue.
    """
    from .dynamics import ce_descent_run
    from .hessian import layer_hessian_autodiff
    from .optimum import ce_critical_point, construct_ce_critical_point
    from .theory import ce_critical_layer_hessian

    K = check_int("K", K, 3)
    rtol = check_positive("rtol", rtol)
    cfg = UFMConfig(K=K, n=n, d=d, L=L, lambda_W=lam, lambda_H=lam, loss="ce", dtype="float64", device="cpu", seed=seed)
    pred = ce_critical_layer_hessian(cfg, layer)
    point = construct_ce_critical_point(cfg, frames="random")
    w = torch.linalg.eigvalsh(layer_hessian_autodiff(point, cfg, layer)).flip(0)
    measured, counts, unmatched, error = _level_match(w, pred, rtol)
    runs, run_measured, run_errors, run_counts = [], [], [], []
    for s in run_seeds:
        r = ce_descent_run(cfg.replace(seed=check_int("run_seeds", s, 0), device=device), lr=lr, epochs=epochs,
                           layer=layer, snapshots=2)
        runs.append(r)
        got = _level_match(r.eigenvalues, pred, rtol) if r.at_dnc else (None, None, 0, math.nan)
        run_measured.append(got[0])
        run_counts.append(got[1])
        run_errors.append(got[3])
    return CELevels(K, cfg.L, cfg.n, cfg.d, cfg.lambda_H, layer,
                    ce_critical_point(K, n, L, lam).alpha, tuple(float(v) for v in pred.values),
                    tuple(pred.multiplicities), measured, counts, unmatched, error, tuple(runs), tuple(run_measured),
                    tuple(run_errors), tuple(run_counts))


def ce_level_map(*, Ks: Sequence[int], Ls: Sequence[int], n: int, d: int, lam: float, layer: int, seed: int,
                 run_seeds: Sequence[int] = (), lr: float = 1.0, epochs: int = 5000, rtol: float = CE_RTOL,
                 device: str = "cpu") -> dict:
    """:func:`ce_levels` for every ``K`` in ``Ks`` and ``L`` in ``Ls``: ``{(L, K): CELevels}`` (R9)."""
    Ks = _grid("Ks", Ks, minimum=3, integer=True)
    Ls = _grid("Ls", Ls, minimum=2, integer=True)
    if d < max(Ks):
        raise ValueError(f"d must be at least the largest K = {max(Ks)}; got {d}")
    layer = check_int("layer", layer, 1, min(Ls))
    return {(L, K): ce_levels(K, n=n, d=d, L=L, lam=lam, layer=layer, seed=seed, run_seeds=run_seeds, lr=lr,
                              epochs=epochs, rtol=rtol, device=device) for L in Ls for K in Ks}
