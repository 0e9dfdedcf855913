"""Benchmark: routes to deep-UFM Hessian spectra (R2, v1 Thm 4.1; R7, v2 Thm 6; ufmlib.hessian).

Every timing is compared with a baseline measured in the same run, on the same machine and
thread count (``--threads``, default 2), so the ratios - not the absolute seconds - are the
result. Parts:

  (a) layer Hessian of the linear MSE model (K=3, n=40, L=5, layer 3, d=60: 3600 x 3600):
      Kronecker factors + ``kronecker_eigh`` and the per-sample Kronecker sum + ``eigh``
      against the autodiff Hessian + ``eigh``; all eigenvalues must agree to 1e-10.
  (b) ReLU models with MSE and CE loss (d=65, layer 4, 4225 x 4225) after some gradient
      descent: the layer Hessian as an operator (``ufmlib.hessian.layer_operator``, block
      products in one batched call) + the default eigensolver (``ufmlib.lanczos.top_eigenpairs``)
      for the top K²+10 eigenvalues against autodiff + ``eigh``; relative error on the top K².
  (d) cost of one Hessian-vector product relative to one fit-term gradient
      (``ufmlib.full_hessian.fit_gradient``, autograd) at K=3, n=40, L=5, d=60 and at K=10,
      n=5, L=3, d=32: the product of ``full_hvp`` (the R-operator written out; its forward
      and backward pass at the point are made once, when the operator is built, and timed
      separately), per column in a block of 16, and the autodiff product (jvp of grad).

The eigensolver against SciPy ``eigsh`` and hessian-eigenthings on full Hessians is in
``benchmarks/peers.py``. ``--quick`` uses smaller sizes (about 12 s on an idle 2-core
machine; the full mode about a minute). On a machine shared with other jobs, two OpenMP threads
per process oversubscribe the cores and many small operations slow down by 10-100x; pass
``--threads 1`` there. The header prints the load average. Run from the repository root:

    python benchmarks/spectra.py --quick
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import options  # noqa: E402  (benchmarks/machine.py)

from ufmlib.config import UFMConfig  # noqa: E402
from ufmlib.full_hessian import fit_gradient, full_hvp, full_hvp_autodiff  # noqa: E402
from ufmlib.hessian import (  # noqa: E402
    kronecker_eigh,
    layer_hessian_autodiff,
    layer_hessian_dense,
    layer_hessian_factors,
    layer_hvp,
    layer_operator,
)
from ufmlib.lanczos import top_eigenpairs  # noqa: E402
from ufmlib.model import init_params  # noqa: E402
from ufmlib.train import train  # noqa: E402

ROWS: list[tuple] = []


def timed(fn, *args, repeat: int = 1, **kw):
    """Best wall time of ``repeat`` calls and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        best = min(best, time.perf_counter() - t0)
    return best, out


def row(part, method, size, seconds, baseline, matvecs, error, note=""):
    ratio = seconds / baseline if baseline else float("nan")
    ROWS.append((part, method, size, seconds, ratio, matvecs, error, note))
    mv = "-" if matvecs is None else str(matvecs)
    err = "-" if error is None else f"{error:.1e}"
    print(f"  {part:<3} {method:<54} {size:<8} {seconds * 1e3:>10.3f} ms  x{ratio:>8.3f}  {mv:>7}  {err:>8}  {note}", flush=True)


def header():
    print(f"  {'':<3} {'method':<54} {'size':<8} {'time':>13}  {'vs base':>9}  {'matvecs':>7}  {'error':>8}")


def trained(cfg: UFMConfig, epochs: int, lr: float):
    return train(cfg, lr=lr, epochs=epochs, snapshot_epochs=[], progress=False).params


def dense_top(H: torch.Tensor, k: int) -> torch.Tensor:
    return torch.linalg.eigvalsh(H).flip(0)[:k]


# ----------------------------------------------------------------------------- parts
def part_a(d: int):
    cfg = UFMConfig(K=3, n=40, d=d, L=5, lambda_W=0.01, lambda_H=0.01, seed=0)
    params = trained(cfg, epochs=300, lr=0.1)
    layer, dim = 3, d * d
    print(f"(a) linear MSE layer-{layer} Hessian, K=3 n=40 L=5 d={d}: all {dim} eigenvalues")
    t_ad, H = timed(layer_hessian_autodiff, params, cfg, layer)
    t_eig, ev_ad = timed(lambda: torch.linalg.eigvalsh(H).flip(0))
    base = t_ad + t_eig
    t_kr, spec = timed(lambda: kronecker_eigh(*layer_hessian_factors(params, cfg, layer)), repeat=3)
    t_ks, ev_ks = timed(lambda: torch.linalg.eigvalsh(layer_hessian_dense(params, cfg, layer)).flip(0))
    header()
    row("a", "autodiff Hessian + eigh (baseline)", f"{dim}^2", base, base, dim, None, f"(autodiff {t_ad:.2f} s, eigh {t_eig:.2f} s)")
    row("a", "Kronecker sum (dense) + eigh", f"{dim}^2", t_ks, base, None, (ev_ks - ev_ad).abs().max().item())
    err = (spec.eigenvalues - ev_ad).abs().max().item()
    row("a", "factors P, Q + kronecker_eigh", f"{dim}^2", t_kr, base, None, err, f"top {ev_ad[0].item():.6f}")
    assert err <= 1e-10, err


def part_b(d: int, n: int, epochs: int):
    K, L, layer = 3, 5, 4
    k = K * K + 10
    dim = d * d
    for loss in ("mse", "ce"):
        cfg = UFMConfig(K=K, n=n, d=d, L=L, activation="relu", loss=loss, lambda_W=0.01, lambda_H=0.01, seed=2)
        params = trained(cfg, epochs=epochs, lr=0.1)
        print(f"(b) ReLU {loss.upper()} layer-{layer} Hessian, K={K} n={n} L={L} d={d} ({epochs} GD epochs): top {k}")
        t_ad, H = timed(layer_hessian_autodiff, params, cfg, layer)
        t_eig, ev = timed(dense_top, H, k)
        base = t_ad + t_eig
        op = layer_operator(params, cfg, layer)
        t_lz, res = timed(top_eigenpairs, op, k=k, seed=0)
        rel = ((res.eigenvalues - ev).abs() / ev.abs().clamp(min=1e-300))
        header()
        row("b", "autodiff Hessian + eigh (baseline)", f"{dim}^2", base, base, dim, None, f"(autodiff {t_ad:.2f} s, eigh {t_eig:.2f} s)")
        row("b", "layer_operator + top_eigenpairs", f"{dim}^2", t_lz, base, res.num_matvecs, rel[: K * K].max().item(),
            f"rel. err top {K * K}; all {k}: {rel.max().item():.1e}; gap λ{K*K}/λ{K*K+1} = {(ev[K*K-1]/ev[K*K]).item():.2f}")


def part_d(cases):
    print("(d) one Hessian-vector product vs one fit-term gradient (best of 20)")
    header()
    for name, cfg, params in cases:
        g = torch.Generator().manual_seed(0)
        t_setup, (mv, dim) = timed(full_hvp, params, cfg, repeat=5)
        ad, _ = full_hvp_autodiff(params, cfg)
        v = torch.randn(dim, generator=g, dtype=torch.float64)
        V = torch.randn(dim, 16, generator=g, dtype=torch.float64)
        mv(v), ad(v)
        t_g, _ = timed(fit_gradient, params, cfg, repeat=20)
        t_h, _ = timed(mv, v, repeat=20)
        t_b, _ = timed(mv, V, repeat=20)
        t_a, _ = timed(ad, v, repeat=20)
        err = (mv(V) - ad(V)).abs().max().item()
        row("d", f"full_hvp / fit_gradient [{name}]", str(dim), t_h, t_g, 1, err,
            f"(gradient {t_g * 1e3:.2f} ms; operator set-up {t_setup * 1e3:.2f} ms, once per point)")
        row("d", f"full_hvp, block of 16, per column [{name}]", str(dim), t_b / 16, t_g, 16, None)
        row("d", f"full_hvp_autodiff (jvp of grad) [{name}]", str(dim), t_a, t_g, 1, None)
        layer = 2
        lmv, ldim = layer_hvp(params, cfg, layer)
        w = torch.randn(ldim, generator=g, dtype=torch.float64)
        t_gl, _ = timed(fit_gradient, params, cfg, layer, repeat=20)
        t_hl, _ = timed(lmv, w, repeat=20)
        row("d", f"layer_hvp / layer gradient [{name}]", str(ldim), t_hl, t_gl, 1, None, f"(gradient {t_gl * 1e3:.2f} ms)")


def main(argv=None) -> int:
    args = options(argv, description=__doc__.split("\n\n")[0], quick="small sizes (< 30 s on 2 cores)")
    warm = UFMConfig(K=2, n=1, d=2, L=2)
    layer_hessian_autodiff(init_params(warm), warm, 1)  # PyTorch's one-time forward-AD set-up
    t0 = time.perf_counter()
    if args.quick:
        part_a(d=20)
        part_b(d=20, n=10, epochs=500)
    else:
        part_a(d=60)
        part_b(d=65, n=40, epochs=3000)
    cases = []
    for cfg, epochs in ((UFMConfig(K=3, n=40, d=60, L=5, lambda_W=0.01, lambda_H=0.01, seed=0), 300),
                        (UFMConfig(K=10, n=5, d=32, L=3, lambda_W=1e-3, lambda_H=1e-3, seed=3), 200)):
        cases.append((f"K={cfg.K} n={cfg.n} L={cfg.L} d={cfg.d}", cfg, trained(cfg, epochs=epochs, lr=0.1)))
    part_d(cases)
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
