"""The ``ufm`` command.

``ufm predict``     closed-form predictions at the global minimiser (digest §3.2, §4, §5);
``ufm regenerate``  run every notebook under a parameter profile and build the book.

Invalid input exits with status 2 and one line naming the parameter.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Sequence

from .config import ConfigError, UFMConfig

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
    """Every closed-form prediction for ``cfg`` as plain Python (used by ``ufm predict``)."""
    from .optimum import dnc_optimum

    out = dnc_optimum(cfg).as_dict()
    out["d"] = cfg.d
    try:
        from .theory import predict_all
    except ImportError:  # pragma: no cover - theory module is part of the package
        return out
    if out["condition_holds"]:
        extra = predict_all(cfg)
        for key, value in extra.items():
            out.setdefault(key, value)
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
    try:
        from . import regenerate
    except ImportError:  # the notebook tooling is an optional extra
        regenerate = None
    if regenerate is not None and hasattr(regenerate, "register"):
        regenerate.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is not None:
        return int(args.handler(args) or 0)
    from . import regenerate

    return int(regenerate.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
