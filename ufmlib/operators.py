"""Linear operators: one type for every Hessian-like matrix of the package.

A :class:`LinearOperator` is a square linear map of ``R^dim`` known only through its products.
It has a ``shape``, ``dtype`` and ``device``; ``A @ v`` takes a vector ``(dim,)`` and
``A @ V`` a block ``(dim, m)``, the block issued as **one** batched call of the function that
defines it (a layer HVP, a full-Hessian HVP, a Kronecker product ``P V Q``, a low-rank
Gram matrix); it counts the columns it has multiplied (:attr:`LinearOperator.num_products`)
and the calls (:attr:`LinearOperator.num_calls`), so that solvers can be compared by cost;
and :meth:`LinearOperator.to_scipy` hands it to SciPy (``eigsh``, ``lobpcg``) with the same
counter. Every eigensolver of :mod:`ufmlib.lanczos` and :mod:`ufmlib.slq` takes one.

Operators combine: ``A + B``, ``A - B``, ``c * A`` and ``-A`` are operators whose products
call ``A`` and ``B`` once per block (each keeps its own counter). :meth:`LinearOperator.dense`
materialises the matrix for tests (``dim`` columns, in blocks).

The constructors here cover the structured matrices: :func:`dense_operator`,
:func:`kronecker_operator` (``P ⊗ Q`` in the row-major ``vec`` of the book's notation page,
the layer Hessian of the linear MSE model, R2 / v1 Thm 4.1) and :func:`gram_operator`
(``c R^T R``, the Gauss-Newton parts of R3). The Hessian routes build theirs in
:mod:`ufmlib.hessian` (``layer_operator``) and :mod:`ufmlib.full_hessian` (``full_operator``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .validation import check_int

__all__ = ["LinearOperator", "as_operator", "dense_operator", "kronecker_operator", "gram_operator"]

F64 = torch.float64
MatMat = Callable[[Tensor], Tensor]


class LinearOperator:
    """A square linear map of ``R^dim`` given by its block product.

    ``matmat`` maps a ``(dim, m)`` tensor to the ``(dim, m)`` product in one call (with
    ``block=False`` it maps one ``(dim,)`` vector, and blocks are multiplied column by column).
    Inputs are cast to the operator's ``dtype`` and ``device``. ``symmetric`` records whether
    the matrix is symmetric (every Hessian here is); the eigensolvers require it.
    """

    def __init__(self, matmat: MatMat, dim: int, *, dtype=F64, device="cpu", name: str = "operator",
                 block: bool = True, symmetric: bool = True):
        if not callable(matmat):
            raise ValueError(f"matmat must be callable; got {type(matmat).__name__}")
        self._matmat = matmat
        self.dim = check_int("dim", dim, 1)
        self.dtype = dtype
        self.device = torch.device(device)
        self.name = str(name)
        self.block = bool(block)
        self.symmetric = bool(symmetric)
        self.num_products = 0
        self.num_calls = 0

    # ------------------------------------------------------------------ description
    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    def __repr__(self) -> str:
        return (f"LinearOperator({self.name!r}, shape={self.shape}, dtype={self.dtype}, device={self.device}, "
                f"products={self.num_products})")

    def reset_count(self) -> None:
        """Set the product and call counters to zero."""
        self.num_products = self.num_calls = 0

    # ------------------------------------------------------------------ products
    def _check_out(self, out, shape) -> Tensor:
        if not isinstance(out, Tensor) or tuple(out.shape) != tuple(shape):
            got = getattr(out, "shape", type(out).__name__)
            raise ValueError(f"{self.name}: the product must map shape {tuple(shape)} to {tuple(shape)}; "
                             f"got {tuple(got) if isinstance(got, torch.Size) else got}")
        return out

    def matmat(self, V: Tensor) -> Tensor:
        """``A @ V`` for a block ``V`` of shape ``(dim, m)``: one call of the defining function."""
        if not isinstance(V, Tensor) or V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"V must have shape ({self.dim}, m); got {tuple(getattr(V, 'shape', ()))}")
        V = V.to(dtype=self.dtype, device=self.device)
        m = V.shape[1]
        if m == 0:
            return torch.zeros_like(V)
        if self.block:
            out = self._check_out(self._matmat(V), V.shape)
        else:
            out = torch.stack([self._check_out(self._matmat(V[:, i]), (self.dim,)) for i in range(m)], dim=1)
        self.num_products += m
        self.num_calls += 1 if self.block else m
        return out.to(dtype=self.dtype, device=self.device)

    def matvec(self, v: Tensor) -> Tensor:
        """``A @ v`` for one vector ``v`` of shape ``(dim,)``."""
        if not isinstance(v, Tensor) or v.ndim != 1 or v.shape[0] != self.dim:
            raise ValueError(f"v must have shape ({self.dim},); got {tuple(getattr(v, 'shape', ()))}")
        if self.block:
            return self.matmat(v[:, None])[:, 0]
        v = v.to(dtype=self.dtype, device=self.device)
        out = self._check_out(self._matmat(v), (self.dim,))
        self.num_products += 1
        self.num_calls += 1
        return out.to(dtype=self.dtype, device=self.device)

    def __matmul__(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.ndim == 1:
            return self.matvec(x)
        return self.matmat(x)

    def __call__(self, x: Tensor) -> Tensor:
        return self @ x

    # ------------------------------------------------------------------ algebra
    def _combine(self, other: "LinearOperator", sign: float, symbol: str) -> "LinearOperator":
        other = as_operator(other)
        if other.dim != self.dim:
            raise ValueError(f"operators of different sizes: {self.dim} and {other.dim}")
        return LinearOperator(lambda V: self.matmat(V) + sign * other.matmat(V), self.dim, dtype=self.dtype,
                              device=self.device, name=f"({self.name} {symbol} {other.name})",
                              symmetric=self.symmetric and other.symmetric)

    def __add__(self, other) -> "LinearOperator":
        return self._combine(other, 1.0, "+")

    def __sub__(self, other) -> "LinearOperator":
        return self._combine(other, -1.0, "-")

    def __mul__(self, c) -> "LinearOperator":
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            return NotImplemented
        c = float(c)
        return LinearOperator(lambda V: c * self.matmat(V), self.dim, dtype=self.dtype, device=self.device,
                              name=f"{c:g} {self.name}", symmetric=self.symmetric)

    __rmul__ = __mul__

    def __neg__(self) -> "LinearOperator":
        return self * -1.0

    # ------------------------------------------------------------------ conversions
    def dense(self, *, chunk: int = 256) -> Tensor:
        """The ``dim x dim`` matrix, from products with blocks of the identity (for tests)."""
        chunk = check_int("chunk", chunk, 1)
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.cat([self.matmat(eye[:, i: i + chunk]) for i in range(0, self.dim, chunk)], dim=1)

    def to_scipy(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (float64 NumPy) with the same products and counter."""
        import numpy as np
        from scipy.sparse.linalg import LinearOperator as ScipyOperator

        def mm(X):
            X = np.asarray(X, dtype=np.float64)
            vec = X.ndim == 1
            T = torch.as_tensor(X.reshape(self.dim, -1))
            out = self.matmat(T).detach().to(dtype=F64, device="cpu").numpy()
            return out.reshape(-1) if vec else out

        return ScipyOperator((self.dim, self.dim), matvec=mm, matmat=mm, rmatvec=mm if self.symmetric else None,
                             dtype=np.float64)


def as_operator(A, *, dim: int | None = None, dtype=None, device=None) -> LinearOperator:
    """``A`` as a :class:`LinearOperator`.

    An operator is returned as it is; a square 2-D tensor becomes :func:`dense_operator`; a
    function ``v -> A v`` on ``(dim,)`` vectors (the older matrix-free convention) needs
    ``dim`` and is applied column by column. ``dim``, when given, must be a positive integer
    (and the operator's size).
    """
    if dim is not None:
        dim = check_int("dim", dim, 1)
    if isinstance(A, LinearOperator):
        if dim is not None and dim != A.dim:
            raise ValueError(f"dim must be the operator's size {A.dim}; got {dim}")
        return A
    if isinstance(A, Tensor):
        return dense_operator(A)
    if callable(A):
        if dim is None:
            raise ValueError("dim must be given with a matvec function")
        return LinearOperator(A, dim, dtype=dtype or F64, device=device or "cpu", name="matvec", block=False)
    raise ValueError(f"expected a LinearOperator, a square tensor or a matvec function; got {type(A).__name__}")


def dense_operator(A: Tensor, *, name: str = "dense", check_symmetric: bool = True) -> LinearOperator:
    """The operator ``V -> A V`` of a dense square matrix (checked symmetric to rounding level)."""
    if not isinstance(A, Tensor) or A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square 2-D tensor; got {getattr(A, 'shape', A)!r}")
    if check_symmetric:
        scale = A.abs().max().item() if A.numel() else 0.0
        if (A - A.mT).abs().max().item() > 100 * torch.finfo(A.dtype).eps * max(scale, 1e-300):
            raise ValueError("A must be symmetric")
    return LinearOperator(lambda V: A @ V, A.shape[0], dtype=A.dtype, device=A.device, name=name)


def kronecker_operator(P: Tensor, Q: Tensor, *, name: str = "kronecker") -> LinearOperator:
    """``P ⊗ Q`` acting on row-major ``vec``: ``vec(V) -> vec(P V Q^T)``, never formed.

    With the book's convention ``vec(a b^T) = a ⊗ b``; for the linear MSE layer Hessian
    ``P = A^{(l+1)T} A^{(l+1)}``, ``Q = Σ^{(l)}`` (R2, v1 Thm 4.1;
    :func:`ufmlib.hessian.layer_hessian_factors`). A block costs two batched matrix products.
    """
    for label, M in (("P", P), ("Q", Q)):
        if not isinstance(M, Tensor) or M.ndim != 2 or M.shape[0] != M.shape[1]:
            raise ValueError(f"{label} must be a square 2-D tensor; got {getattr(M, 'shape', M)!r}")
    p, q = P.shape[0], Q.shape[0]

    def matmat(V: Tensor) -> Tensor:
        X = V.mT.reshape(-1, p, q)
        return (P @ X @ Q.mT).reshape(-1, p * q).mT

    return LinearOperator(matmat, p * q, dtype=P.dtype, device=P.device, name=name)


def gram_operator(R: Tensor, *, scale: float = 1.0, name: str = "gram") -> LinearOperator:
    """``scale R^T R`` for rows ``R`` (``r x dim``): a Gauss-Newton part as a product of factors.

    Costs ``2 r dim`` per column; the rank is at most ``r``.
    """
    if not isinstance(R, Tensor) or R.ndim != 2:
        raise ValueError(f"R must be a 2-D tensor; got {getattr(R, 'shape', R)!r}")
    c = float(scale)
    return LinearOperator(lambda V: c * (R.mT @ (R @ V)), R.shape[1], dtype=R.dtype, device=R.device, name=name)
