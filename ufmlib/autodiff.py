"""Dense Hessians by automatic differentiation: the references every other route is tested against.

:func:`dense_hessian` applies forward-over-reverse Hessian-vector products (``torch.func.jvp`` of
``torch.func.grad``) to the identity basis with ``vmap``, in chunks that keep memory near a
budget (:func:`auto_chunk`). :func:`load_forward_ad` quietens PyTorch's one-time set-up of
forward-mode decompositions.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor

__all__ = ["load_forward_ad", "dense_hessian", "auto_chunk"]

_forward_ad_loaded = False


def load_forward_ad() -> None:
    """Trigger PyTorch's one-time loading of forward-mode decompositions quietly.

    The first ``torch.func.jvp`` of a process scripts a few decompositions and emits
    PyTorch's own ``torch.jit.script`` deprecation warning; it concerns PyTorch, not the caller.
    """
    global _forward_ad_loaded
    if _forward_ad_loaded:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        x = torch.zeros(1, dtype=torch.float64)
        torch.func.jvp(torch.sin, (x,), (torch.ones_like(x),))
    _forward_ad_loaded = True


def dense_hessian(func: Callable[[Tensor], Tensor], x: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Dense Hessian of a scalar ``func`` at the flat point ``x``: ``vmap`` of jvp-of-grad, symmetrised."""
    load_forward_ad()
    grad = torch.func.grad(func)

    def hvp(v: Tensor) -> Tensor:
        return torch.func.jvp(grad, (x,), (v,))[1]

    eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
    H = torch.func.vmap(hvp, chunk_size=chunk_size)(eye)
    return (H + H.mT) / 2


def auto_chunk(dim: int, per_column: int) -> int:
    """Chunk of basis vectors so that one chunk's intermediates stay near 256 MB (float64)."""
    budget = 256 * 2**20 // 8
    return max(1, min(dim, budget // max(per_column, 1)))
