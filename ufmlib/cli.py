"""The ``ufm`` command.

``ufm predict``     closed-form predictions at the global minimiser (v1 Eq. (2), v1 Thms 4.1-4.4,
                    the full Hessian; see :mod:`ufmlib.theory`);
``ufm regenerate``  run every notebook under a parameter profile and build the book (added by
                    :mod:`ufmlib.book` through the ``ufmlib.commands`` entry points).

Invalid input exits with status 2 and one line naming the parameter.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from importlib.metadata import entry_points
from typing import Sequence

from . import theory
from .config import ConfigError, UFMConfig
from .optimum import ce_critical_point, dnc_optimum

COMMANDS = "ufmlib.commands"
"""Entry-point group of further ``ufm`` subcommands: each entry is a function
``register(subparsers)`` that adds one subcommand and sets its ``handler``. The book machinery
registers ``ufm regenerate`` this way (``pyproject.toml``), so that this science-side command
line never imports it."""

_FLAGS = {"K": "--K", "n": "--n", "L": "--L", "d": "--d", "lambda_W": "--lambda-W", "lambda_H": "--lambda-H"}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _lambda_list(text: str) -> float | tuple[float, ...]:
    parts = [p for p in text.split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list of numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values[0] if len(values) == 1 else values


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _jsonable(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def predictions(cfg: UFMConfig) -> dict:
    """Every closed-form prediction for ``cfg`` as plain Python (what ``ufm predict --json`` prints).

    The summary of :meth:`ufmlib.optimum.DNCOptimum.as_dict` (both sides of condition (2), ``γ``,
    the optimal loss, singular values, layer-Hessian outliers; ``None`` for every DNC quantity
    when condition (2) fails), ``d``, the two outlier levels of the full Hessian
    (``full_hessian_levels``, :func:`ufmlib.theory.full_hessian_outliers`) and, when condition (2)
    holds, per layer: the layer Hessian (regularised too), the Gauss-Newton split, the fit
    gradient (β, norm, coefficient table), the weight Gram matrix, the feature and back-propagated
    error singular values, the per-sample gradient moments and the ReLU-kink levels at
    ``c0 ∈ {0, ½, 1}``; the ``H_1``-Hessian, the whole full-Hessian spectrum (weights only and all
    parameters) with its Gauss-Newton levels and, for one common λ, the cross-entropy DNC critical
    point when it exists.
    """
    opt = dnc_optimum(cfg)
    out = opt.as_dict()
    out["d"] = cfg.d
    if not opt.is_global:
        out["full_hessian_levels"] = None
        return out
    out["full_hessian_levels"] = theory.full_hessian_outliers(cfg)
    K = cfg.K
    layers = []
    for l in range(1, cfg.L + 1):
        lam = cfg.lambda_Ws[l - 1]
        hess = opt.layer_hessian_outlier[l - 1]
        second, cov = theory.optimum_gradient_moments(cfg, l, frames=None)
        layers.append({
            "layer": l,
            "layer_hessian": {"outlier": hess, "multiplicity": K * K, "bulk": 0.0, "dim": cfg.layer_shapes()[l - 1][0] * cfg.d,
                              "regularised_outlier": hess + lam, "regularised_bulk": lam},
            "gauss_newton": {"class": {"value": hess, "multiplicity": K},
                             "cross": {"value": hess, "multiplicity": K * (K - 1)},
                             "within": {"value": 0.0, "multiplicity": 0}},
            "fit_gradient": {"beta": theory.optimum_fit_gradient(cfg, l).beta,
                             "norm": opt.gamma * opt.one_minus_gamma / (math.sqrt(K) * opt.weight_singular_values[l - 1]),  # = λ_l ||W_l||_F
                             "coefficients_diagonal": 1.0 / K, "coefficients_off_diagonal": 0.0},
            "weight_gram": {"value": opt.gram_eigenvalue[l - 1], "multiplicity": K},
            "weight_singular_value": opt.weight_singular_values[l - 1],
            "feature_singular_value": math.sqrt(cfg.n) * opt.feature_norms[l - 1],
            "backprop_singular_value": float(theory.optimum_backprop_singular_values(cfg, l, frames=None).values[0]),
            "gradient_second_moment": {"value": float(second.values[0]), "multiplicity": K},
            "gradient_covariance": {"value": float(cov.values[0]), "multiplicity": K - 1},
            "relu_kink": {"relus_after": cfg.L - l, "class_value": hess,
                          "cross_value": {f"c0={c0:g}": theory.relu_kink_levels(cfg, l, c0=c0)[1] for c0 in (0.0, 0.5, 1.0)},
                          "cross_multiplicity": K * (K - 1)},
        })
    out["layers"] = layers
    out["feature_hessian"] = {"value": opt.feature_hessian_outlier, "multiplicity": K * cfg.N}
    for key, inc in (("full_hessian_weights", False), ("full_hessian_all_params", True)):
        spec = theory.optimum_full_hessian(cfg, include_H=inc)
        out[key] = {"levels": spec.as_dict()["levels"], "n_outliers": spec.n_outliers, "dim": spec.dim,
                    "gauss_newton_levels": theory.optimum_full_gauss_newton(cfg, include_H=inc).as_dict()["levels"]}
    if len(set(cfg.lambda_Ws) | {cfg.lambda_H}) == 1:
        cp = ce_critical_point(cfg.K, cfg.n, cfg.L, cfg.lambda_H)
        if cp is not None:
            out["ce_critical_point"] = {"alpha": cp.alpha,
                                        "layer_hessian": theory.ce_critical_layer_hessian(cfg, 1).as_dict()["levels"]}
    return out


def _predict(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        cfg = UFMConfig(K=args.K, n=args.n, L=args.L, d=args.d, lambda_W=args.lambda_W, lambda_H=args.lambda_H)
    except ConfigError as err:
        flag = _FLAGS.get(err.parameter.split("[")[0], err.parameter)
        parser.exit(2, f"{parser.prog}: error: {flag} must be {err.allowed}; got {err.got!r}\n")
    result = predictions(cfg)
    if args.json:
        print(json.dumps(_jsonable(result), indent=2, allow_nan=False))
        return 0
    lines = [
        f"deep linear UFM, MSE, bias-free: K={cfg.K} n={cfg.n} L={cfg.L} d={cfg.d} "
        f"lambda_W={list(cfg.lambda_Ws)} lambda_H={cfg.lambda_H}",
        f"condition (2): lhs {result['condition_lhs']:.10g} {'<' if result['condition_holds'] else '>='} "
        f"rhs {result['condition_rhs']:.10g}",
    ]
    if not result["condition_holds"]:
        lines.append("the global minimiser is zero (loss 1/2): no neural collapse")
    else:
        lines += [
            f"gamma                      {result['gamma']:.12f}",
            f"optimal loss               {result['optimal_loss']:.14f}",
            "weight singular values     " + ", ".join(f"{v:.8g}" for v in result["weight_singular_values"]),
            "layer Hessian outlier (K^2) " + ", ".join(f"{v:.11g}" for v in result["layer_hessian_outlier"]),
            "full Hessian levels        "
            + ", ".join(f"{lev['level']:.8g} x{lev['multiplicity']}" for lev in result["full_hessian_levels"]),
        ]
    print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ufm", description="Deep unconstrained feature model companion (arXiv 2404.06106).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("predict", help="closed-form predictions at the global minimiser")
    p.add_argument("--K", type=_int, default=3, help="number of classes (>= 2)")
    p.add_argument("--n", type=_int, default=40, help="samples per class (>= 1)")
    p.add_argument("--L", type=_int, default=5, help="number of weight matrices (>= 1)")
    p.add_argument("--d", type=_int, default=60, help="width (>= K)")
    p.add_argument("--lambda-W", dest="lambda_W", type=_lambda_list, default=0.01,
                   help="weight decay of the weights: one number or L comma-separated numbers")
    p.add_argument("--lambda-H", dest="lambda_H", type=_float, default=0.01, help="weight decay of H_1")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=lambda a: _predict(a, p))
    for entry in sorted(entry_points(group=COMMANDS), key=lambda e: e.name):
        entry.load()(sub)  # e.g. ufmlib.book.cli:register adds ``ufm regenerate``
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
