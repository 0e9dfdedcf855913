"""Benchmark: routes to deep-UFM Hessian spectra (R2, v1 Thm 4.1; R7, v2 Thm 6; ufmlib.hessian).

Every timing is compared with a baseline measured in the same run, on the same machine and
thread count (``--threads``, default 2), so the ratios - not the absolute seconds - are the
result. Parts:

  (a) layer Hessian of the linear MSE model (K=3, n=40, L=5, layer 3, d=60: 3600 x 3600):
      Kronecker factors + ``kronecker_eigh`` and the per-sample Kronecker sum + ``eigh``
      against the autodiff Hessian + ``eigh``; all eigenvalues must agree to 1e-10.
  (b) ReLU models with MSE and CE loss (d=65, layer 4, 4225 x 4225) after some gradient
      descent: ``layer_hvp`` + block Lanczos (``ufmlib.lanczos.top_eigenpairs``) for the top
      K²+10 eigenvalues against autodiff + ``eigh``.
  (c) top-K² eigenpairs of a full weight Hessian too large to form (K=10, L=4, d=128:
      50432 parameters, a 20 GB dense matrix): block Lanczos vs SciPy ``eigsh`` (ARPACK) on
      the same ``full_hvp`` operator vs power iteration with deflation (top K only - it needs a
      spectral gap and O(k) separate runs); matvecs and accuracy against the ``eigsh`` answer
      run to machine precision.
  (d) cost of one Hessian-vector product relative to one fit-term gradient.

``--quick`` uses smaller sizes (about 12 s on an idle 2-core machine; the full mode needs
several minutes, dominated by (c)). On a machine shared with other jobs, two OpenMP threads
per process oversubscribe the cores and many small operations slow down by 10-100x; pass
``--threads 1`` there. The header prints the load average. Run from the repository root:

    python benchmarks/spectra.py --quick
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ufmlib.config import UFMConfig  # noqa: E402
from ufmlib.full_hessian import fit_gradient, full_hvp  # noqa: E402
from ufmlib.hessian import (  # noqa: E402
    kronecker_eigh,
    layer_hessian_autodiff,
    layer_hessian_dense,
    layer_hessian_factors,
    layer_hvp,
)
from ufmlib.lanczos import eigsh_reference, power_iteration_deflation, top_eigenpairs  # noqa: E402
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
    print(f"  {part:<3} {method:<46} {size:<12} {seconds:>9.3f} s  x{ratio:>8.3f}  {mv:>7}  {err:>8}  {note}", flush=True)


def header():
    print(f"  {'':<3} {'method':<46} {'size':<12} {'time':>11}  {'vs base':>9}  {'matvecs':>7}  {'error':>8}")


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
        matvec, _ = layer_hvp(params, cfg, layer)
        t_lz, res = timed(top_eigenpairs, matvec, dim=dim, k=k, seed=0)
        rel = ((res.eigenvalues - ev).abs() / ev.abs().clamp(min=1e-300))
        header()
        row("b", "autodiff Hessian + eigh (baseline)", f"{dim}^2", base, base, dim, None, f"(autodiff {t_ad:.2f} s, eigh {t_eig:.2f} s)")
        row("b", "layer_hvp + block Lanczos", f"{dim}^2", t_lz, base, res.num_matvecs, rel[: K * K].max().item(),
            f"rel. err top {K * K}; all {k}: {rel.max().item():.1e}; gap λ{K*K}/λ{K*K+1} = {(ev[K*K-1]/ev[K*K]).item():.2f}")


def part_c(K: int, n: int, L: int, d: int, epochs: int, k_power: int, max_iter: int):
    cfg = UFMConfig(K=K, n=n, d=d, L=L, lambda_W=1e-3, lambda_H=1e-3, seed=3)
    params = trained(cfg, epochs=epochs, lr=0.2)
    matvec, dim = full_hvp(params, cfg)
    k = K * K
    gb = dim * dim * 8 / 2**30
    print(f"(c) full weight Hessian, linear MSE, K={K} n={n} L={L} d={d} ({epochs} GD epochs): "
          f"dim {dim} (dense: {gb:.1f} GiB), top {k}")
    t_ref, ref = timed(eigsh_reference, matvec, dim=dim, k=k, which="LA", tol=0.0, seed=0)
    scale = ref.eigenvalues.abs().max().item()
    header()
    row("c", "scipy eigsh tol=0 (baseline, ref.)", str(dim), t_ref, t_ref, ref.num_matvecs,
        ref.residual_norms.max().item() / scale, "error = max residual / |λ1|")
    t_lz, lz = timed(top_eigenpairs, matvec, dim=dim, k=k, seed=0)
    err = (lz.eigenvalues - ref.eigenvalues).abs().max().item() / scale
    row("c", "block Lanczos (ufmlib.lanczos)", str(dim), t_lz, t_ref, lz.num_matvecs, err,
        f"max|Δλ|/|λ1|; residual {lz.residual_norms.max().item() / scale:.1e}")
    t_e6, e6 = timed(eigsh_reference, matvec, dim=dim, k=k, which="LA", tol=1e-10, seed=0)
    row("c", "scipy eigsh tol=1e-10", str(dim), t_e6, t_ref, e6.num_matvecs,
        (e6.eigenvalues - ref.eigenvalues).abs().max().item() / scale)
    t_pw, pw = timed(power_iteration_deflation, matvec, dim=dim, k=k_power, tol=1e-8, max_iter=max_iter, seed=0)
    err = (pw.eigenvalues - ref.eigenvalues[:k_power]).abs().max().item() / scale
    row("c", f"power iteration + deflation (k={k_power})", str(dim), t_pw, t_ref, pw.num_matvecs, err,
        f"converged={pw.converged}; gap λ{k_power}/λ{k_power+1} = "
        f"{(ref.eigenvalues[k_power-1] / ref.eigenvalues[k_power]).item():.3f}")
    t_lk, lk = timed(top_eigenpairs, matvec, dim=dim, k=k_power, seed=0)
    row("c", f"block Lanczos (k={k_power})", str(dim), t_lk, t_ref, lk.num_matvecs,
        (lk.eigenvalues - ref.eigenvalues[:k_power]).abs().max().item() / scale)
    return cfg, params


def part_d(cases):
    print("(d) one Hessian-vector product vs one fit-term gradient (best of 20)")
    header()
    for name, cfg, params in cases:
        g = torch.Generator().manual_seed(0)
        mv, dim = full_hvp(params, cfg)
        v = torch.randn(dim, generator=g, dtype=torch.float64)
        mv(v)
        t_g, _ = timed(fit_gradient, params, cfg, repeat=20)
        t_h, _ = timed(mv, v, repeat=20)
        row("d", f"full_hvp / fit_gradient [{name}]", str(dim), t_h, t_g, 1, None, f"(gradient {t_g * 1e3:.2f} ms)")
        layer = 2
        lmv, ldim = layer_hvp(params, cfg, layer)
        w = torch.randn(ldim, generator=g, dtype=torch.float64)
        t_gl, _ = timed(fit_gradient, params, cfg, layer, repeat=20)
        t_hl, _ = timed(lmv, w, repeat=20)
        row("d", f"layer_hvp / layer gradient [{name}]", str(ldim), t_hl, t_gl, 1, None, f"(gradient {t_gl * 1e3:.2f} ms)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 30 s on 2 cores)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
          f"{args.threads} torch threads; Python {platform.python_version()}, torch {torch.__version__}; "
          f"float64; mode {'quick' if args.quick else 'full'}; load average {os.getloadavg()[0]:.2f} "
          "(timings assume an otherwise idle machine)")
    warm = UFMConfig(K=2, n=1, d=2, L=2)
    layer_hessian_autodiff(init_params(warm), warm, 1)  # PyTorch's one-time forward-AD set-up
    t0 = time.perf_counter()
    if args.quick:
        part_a(d=20)
        part_b(d=20, n=10, epochs=500)
        cfg_c, p_c = part_c(K=10, n=5, L=3, d=32, epochs=200, k_power=5, max_iter=1000)
    else:
        part_a(d=60)
        part_b(d=65, n=40, epochs=3000)
        cfg_c, p_c = part_c(K=10, n=10, L=4, d=128, epochs=300, k_power=10, max_iter=500)
    cfg_s = UFMConfig(K=3, n=40, d=60, L=5)
    part_d([("K=3 n=40 L=5 d=60", cfg_s, init_params(cfg_s)), (f"K={cfg_c.K} L={cfg_c.L} d={cfg_c.d}", cfg_c, p_c)])
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
