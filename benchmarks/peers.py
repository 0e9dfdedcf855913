"""Benchmark: ufmlib's top-k eigensolver against its peers on the same full-Hessian operators.

Two operators, both the full weight Hessian of the linear MSE deep UFM after some gradient
descent (R7, v2 Thm 6; ``ufmlib.full_hessian.full_operator``), top 100 eigenpairs, float64:

  (A) K=10, n=5, L=3, d=32, 200 epochs: dim 2368; reference: dense autodiff Hessian + ``eigh``.
  (B) K=10, n=10, L=4, d=128, 300 epochs: dim 50432 (a 20 GB dense matrix); reference: SciPy
      ``eigsh`` with ``tol=0`` (machine precision), itself checked by its residuals.

Every method sees the same :class:`ufmlib.operators.LinearOperator`, whose counter gives the
number of Hessian-vector products (columns) and of calls (a block is one call); none of them
verifies its residuals with extra products (``verify=False``), so the count is what the method
needed. Columns: products, calls, wall time, the largest relative eigenvalue error against the
reference over the eigenvalues the method returns, and whether the method said it converged.

  * ufmlib ``top_eigenpairs`` (default: block Lanczos from 2 random directions, block grown by
    clusters of equal eigenvalues, thick restarts, batched products), ``tol=1e-10``;
  * the same with ``block_size=1`` (fewest products; no multiplicity certificate) and 8;
  * SciPy ``eigsh`` (ARPACK; the route curvlinops recommends for its operators), ``tol=1e-10``;
  * hessian-eigenthings 1.0 ``lanczos`` (fixed step budget, full re-orthogonalisation);
  * hessian-eigenthings ``deflated_power_iteration`` (PyHessian's method), top 20 only.

The peers come from the ``peers`` extra (``pip install -e '.[peers]' -c constraints.txt``);
a missing one is reported and skipped. ``--quick`` runs (A) only (under a minute on 2 cores).
Every timing is relative to ``eigsh`` measured in the same run (``--threads``, default 2). Run
from the repository root:

    python benchmarks/peers.py --quick
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import options  # noqa: E402  (benchmarks/machine.py)

from ufmlib.config import UFMConfig  # noqa: E402
from ufmlib.full_hessian import full_hessian_autodiff, full_operator  # noqa: E402
from ufmlib.lanczos import eigsh_reference, top_eigenpairs  # noqa: E402
from ufmlib.spectrum import NotConvergedWarning  # noqa: E402
from ufmlib.train import train  # noqa: E402

CONFIGS = {
    "A": dict(cfg=UFMConfig(K=10, n=5, d=32, L=3, lambda_W=1e-3, lambda_H=1e-3, seed=3), epochs=200),
    "B": dict(cfg=UFMConfig(K=10, n=10, d=128, L=4, lambda_W=1e-3, lambda_H=1e-3, seed=3), epochs=300),
}
K_TOP, K_POWER, TOL = 100, 20, 1e-10


def rel_error(vals: torch.Tensor, ref: torch.Tensor) -> float:
    vals = vals.sort(descending=True).values
    ref = ref[: vals.numel()]
    return ((vals - ref).abs() / ref.abs()).max().item()


def run(op, fn):
    """Products, calls, seconds and the result of ``fn()`` on the operator ``op``."""
    op.reset_count()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        out = fn()
    return op.num_products, op.num_calls, time.perf_counter() - t0, out


def eigenthings_operator(op):
    from hessian_eigenthings import LambdaOperator

    return LambdaOperator(op.matvec, op.dim, device=op.device, dtype=op.dtype)


def methods(op, budget: int):
    """(name, function returning (eigenvalues, converged)) for every method; peers may be absent."""
    out = [
        ("ufmlib top_eigenpairs (default)", lambda: _ours(op)),
        ("ufmlib top_eigenpairs block_size=1", lambda: _ours(op, block_size=1)),
        ("ufmlib top_eigenpairs block_size=8", lambda: _ours(op, block_size=8)),
        ("scipy eigsh (ARPACK)", lambda: _spectrum(eigsh_reference(op, k=K_TOP, tol=TOL, verify=False))),
    ]
    try:
        import hessian_eigenthings as he
    except ImportError:
        print("  hessian-eigenthings is not installed (pip install -e '.[peers]'): its rows are skipped")
        return out
    he_op = eigenthings_operator(op)

    def he_lanczos():
        r = he.lanczos(he_op, k=K_TOP, max_iter=budget, tol=TOL, reorthogonalize=True, which="LA", seed=0)
        return r.eigenvalues, bool(r.converged.all())

    def he_power():
        r = he.deflated_power_iteration(he_op, k=K_POWER, max_iter=200, tol=TOL, seed=0)
        return r.eigenvalues, bool(r.converged.all())

    out.append((f"hessian-eigenthings lanczos ({budget} steps)", he_lanczos))
    out.append((f"hessian-eigenthings deflated power (top {K_POWER})", he_power))
    return out


def _spectrum(s):
    return s.eigenvalues, s.converged


def _ours(op, **kw):
    return _spectrum(top_eigenpairs(op, k=K_TOP, tol=TOL, verify=False, seed=0, **kw))


def bench(name: str):
    spec = CONFIGS[name]
    cfg = spec["cfg"]
    params = train(cfg, lr=0.2, epochs=spec["epochs"], snapshot_epochs=[], progress=False).params
    op = full_operator(params, cfg)
    print(f"({name}) full weight Hessian, linear MSE, K={cfg.K} n={cfg.n} L={cfg.L} d={cfg.d} after "
          f"{spec['epochs']} GD epochs: dim {op.dim}, top {K_TOP}, tol {TOL:g}")
    if op.dim <= 5000:
        t0 = time.perf_counter()
        ref = torch.linalg.eigvalsh(full_hessian_autodiff(params, cfg)).flip(0)
        print(f"  reference: dense autodiff Hessian + eigh ({time.perf_counter() - t0:.1f} s)")
    else:
        n, c, t, r = run(op, lambda: eigsh_reference(op, k=K_TOP, tol=0.0, verify=True))
        ref = r.eigenvalues
        print(f"  reference: eigsh tol=0, {n} products, {t:.1f} s, largest residual / |λ1| "
              f"{(r.residual_norms.max() / ref.abs().max()).item():.1e}")
    rows = []
    for label, fn in methods(op, budget=600):
        n, c, t, (vals, conv) = run(op, fn)
        rows.append((label, n, c, t, rel_error(vals, ref), conv))
    base = next(r for r in rows if r[0].startswith("scipy"))
    print(f"  {'method':<48} {'products':>8} {'calls':>6} {'time':>9} {'vs eigsh':>9} {'rel. error':>10}  converged")
    for label, n, c, t, err, conv in rows:
        print(f"  {label:<48} {n:>8} {c:>6} {t:>8.2f}s {t / base[3]:>8.2f}x {err:>10.1e}  {conv}", flush=True)
    ours = rows[0]
    print(f"  default vs eigsh: {ours[1]} vs {base[1]} products ({ours[1] / base[1]:.2f}x), "
          f"{ours[3]:.2f} vs {base[3]:.2f} s ({ours[3] / base[3]:.2f}x)")
    return rows


def main(argv=None) -> int:
    args = options(argv, description=__doc__.split("\n\n")[0], quick="configuration (A) only (under a minute on 2 cores)")
    t0 = time.perf_counter()
    bench("A")
    if not args.quick:
        bench("B")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
