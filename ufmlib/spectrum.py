"""One result type for every spectrum: measured, predicted in closed form, and solver output.

A :class:`Spectrum` lists eigenvalues (or singular values) in **descending** order, with
optional eigenvectors (columns, row-major ``vec``), their grouping into *levels* with
multiplicities, and what the method that made it reports: ``converged``, residual norms and
the number of operator products. The same type comes out of

* the measurements of :mod:`ufmlib.hessian`, :mod:`ufmlib.matrices` (dense ``eigh``, the
  Kronecker route, block Lanczos);
* the solvers of :mod:`ufmlib.lanczos` (``converged`` and ``residual_norms`` filled in);
* the predictions of :mod:`ufmlib.theory`, built with :meth:`Spectrum.from_levels` from exact
  levels and multiplicities, with the value of the unlisted rest (``bulk_value``).

Levels. A prediction knows its levels exactly (``from_levels``). A measured spectrum has none
until asked: :attr:`Spectrum.values` / :attr:`Spectrum.multiplicities` then merge eigenvalues
that agree to ``level_rtol`` of the largest magnitude.

Convergence. A solver that stops before its convergence test passed returns
``converged=False`` and warns (:class:`NotConvergedWarning`); every function that returns a
spectrum made by a solver passes the flag on, and :meth:`Spectrum.require_converged` raises
:class:`NotConvergedError` for a caller that cannot use an unconverged result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from numbers import Integral

import torch
from torch import Tensor

from .validation import check_layer

__all__ = ["KroneckerFactors", "Spectrum", "NotConvergedError", "NotConvergedWarning", "merge_levels"]

F64 = torch.float64


class NotConvergedError(RuntimeError):
    """An iterative eigensolver stopped before its convergence test passed."""


class NotConvergedWarning(RuntimeWarning):
    """Issued by a solver that returns a result with ``converged=False``."""


@dataclass(frozen=True, eq=False)
class KroneckerFactors:
    """Eigenpairs of the two factors of ``P ⊗ Q`` and which pair makes each eigenvalue.

    ``pairs[j] = (a, b)`` means eigenvalue ``j`` of the Kronecker product is
    ``P_eigenvalues[a] * Q_eigenvalues[b]`` with eigenvector ``u_a ⊗ v_b`` (the row-major vec of
    the rank-one matrix ``u_a v_b^T``).
    """

    P_eigenvalues: Tensor
    P_eigenvectors: Tensor
    Q_eigenvalues: Tensor
    Q_eigenvectors: Tensor
    pairs: Tensor

    def vectors(self, k: int | None = None) -> Tensor:
        """The first ``k`` (default: all listed) eigenvectors as columns, ``p q x k``."""
        pairs = self.pairs if k is None else self.pairs[:k]
        U = self.P_eigenvectors[:, pairs[:, 0]]
        V = self.Q_eigenvectors[:, pairs[:, 1]]
        return torch.einsum("aj,bj->abj", U, V).reshape(U.shape[0] * V.shape[0], -1)


def merge_levels(values: Tensor, *, rtol: float, scale: float) -> tuple[list[float], list[int]]:
    """Merge descending ``values`` into levels: a new level starts where a value differs from the
    first of the current level by more than ``rtol * scale``; each level is the mean of its values."""
    levels, mults, start = [], [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or abs(float(values[i]) - float(values[start])) > rtol * scale:
            levels.append(float(values[start:i].mean()))
            mults.append(i - start)
            start = i
    return levels, mults


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Eigenvalues (descending), optional eigenvectors and levels of a symmetric matrix.

    Fields
    ------
    eigenvalues : the listed values, descending (all ``dim`` of them, or the top ``k``).
    dim : size of the matrix (``None`` when unknown).
    method : how the values were obtained (``"kronecker"``, ``"dense"``, ``"block Lanczos
        ..."``, ``"closed form"``, ``"class means"``, ...).
    name, kind : what the matrix is; ``kind`` is ``"eigenvalues"`` or ``"singular values"``.
    explicit_vectors / kronecker : eigenvectors as ``dim x k`` columns, or as the factors of a
        Kronecker product, built on first access (:meth:`vectors`).
    labels : one label per listed value, e.g. ``(c, c')`` for ``a_c ⊗ μ_{c'}``.
    level_values, level_multiplicities : the exact levels of a prediction
        (:meth:`from_levels`); ``None`` for a measurement (then levels are found by merging).
    bulk_value : the value of the ``dim - k`` unlisted eigenvalues when it is known (``0`` for the
        predicted fit-term spectra), else ``None``.
    n_outliers : how many of the top values count as outliers (default: all listed).
    converged, residual_norms, num_matvecs : what an iterative solver reports
        (``||A v_i - θ_i v_i||`` and the number of operator products).
    level_rtol : relative tolerance for merging measured eigenvalues into levels.
    """

    eigenvalues: Tensor
    dim: int | None = None
    method: str = ""
    name: str = ""
    kind: str = "eigenvalues"
    explicit_vectors: Tensor | None = field(default=None, repr=False)
    kronecker: KroneckerFactors | None = field(default=None, repr=False)
    labels: tuple | None = field(default=None, repr=False)
    level_values: Tensor | None = field(default=None, repr=False)
    level_multiplicities: tuple[int, ...] | None = None
    bulk_value: float | None = None
    n_outliers: int | None = None
    converged: bool = True
    residual_norms: Tensor | None = field(default=None, repr=False)
    num_matvecs: int | None = None
    level_rtol: float = 1e-8

    def __post_init__(self) -> None:
        if (self.level_values is None) != (self.level_multiplicities is None):
            raise ValueError("level_values and level_multiplicities must be given together")
        if self.level_multiplicities is not None:
            if len(self.level_multiplicities) != self.level_values.shape[0]:
                raise ValueError("level_multiplicities must have one entry per level value")
            if sum(self.level_multiplicities) != self.k:
                raise ValueError(f"the levels hold {sum(self.level_multiplicities)} values but {self.k} are listed")
        if self.n_outliers is None:
            object.__setattr__(self, "n_outliers", self.k)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_levels(
        cls,
        values,
        multiplicities,
        *,
        vectors: Tensor | None = None,
        labels: tuple | None = None,
        bulk_value: float | None = 0.0,
        dim: int | None = None,
        name: str = "",
        kind: str = "eigenvalues",
        n_outliers: int | None = None,
        method: str = "closed form",
    ) -> "Spectrum":
        """A spectrum given by its distinct levels (descending) and their multiplicities.

        ``vectors`` (``dim x sum(multiplicities)``) are grouped level by level in the order of
        ``values``; the unlisted ``dim - sum(multiplicities)`` eigenvalues are ``bulk_value``.
        """
        values = torch.as_tensor(values, dtype=F64).reshape(-1)
        mults = tuple(int(m) for m in multiplicities)
        if len(mults) != values.shape[0]:
            raise ValueError("multiplicities must have one entry per value")
        eig = torch.repeat_interleave(values, torch.tensor(mults, dtype=torch.long)) if mults else values[:0]
        return cls(
            eigenvalues=eig, dim=dim, method=method, name=name, kind=kind, explicit_vectors=vectors,
            labels=labels, level_values=values, level_multiplicities=mults, bulk_value=bulk_value,
            n_outliers=n_outliers,
        )

    # ------------------------------------------------------------------ values and levels
    @property
    def k(self) -> int:
        """Number of listed values."""
        return int(self.eigenvalues.shape[0])

    @property
    def rank(self) -> int:
        """Number of listed values (for a prediction: ``sum(multiplicities)``, its non-bulk rank)."""
        return self.k

    @cached_property
    def _levels(self) -> tuple[Tensor, tuple[int, ...]]:
        if self.level_values is not None:
            return self.level_values, self.level_multiplicities
        vals = self.eigenvalues.detach().to(dtype=F64, device="cpu")
        if vals.numel() == 0:
            return vals, ()
        levels, mults = merge_levels(vals, rtol=self.level_rtol, scale=float(vals.abs().max()))
        return torch.tensor(levels, dtype=F64), tuple(mults)

    @property
    def values(self) -> Tensor:
        """The distinct levels, descending (float64)."""
        return self._levels[0]

    @property
    def multiplicities(self) -> tuple[int, ...]:
        """One multiplicity per level of :attr:`values`."""
        return self._levels[1]

    def levels(self) -> list[tuple[float, int]]:
        """``[(value, multiplicity), ...]``, descending."""
        return [(float(v), int(m)) for v, m in zip(self.values.tolist(), self.multiplicities)]

    def expanded(self, dim: int | None = None) -> Tensor:
        """The whole spectrum (length ``dim``, default :attr:`dim`), descending, bulk included."""
        dim = self.dim if dim is None else dim
        if dim is None:
            raise ValueError("dim is unknown: pass dim=")
        rest = dim - self.k
        if rest < 0:
            raise ValueError(f"dim must be >= {self.k}; got {dim}")
        listed = self.eigenvalues.detach().to(dtype=F64, device="cpu")
        if rest == 0:
            return listed.clone()
        if self.bulk_value is None:
            raise ValueError("this spectrum has no bulk value")
        parts = [listed, torch.full((rest,), float(self.bulk_value), dtype=F64)]
        return torch.sort(torch.cat(parts), descending=True).values

    def shifted(self, delta: float) -> "Spectrum":
        """The spectrum of the matrix plus ``delta I`` (same vectors): e.g. the regularised Hessian."""
        return replace(
            self,
            eigenvalues=self.eigenvalues + delta,
            level_values=None if self.level_values is None else self.level_values + delta,
            bulk_value=None if self.bulk_value is None else self.bulk_value + delta,
        )

    # ------------------------------------------------------------------ vectors
    @cached_property
    def eigenvectors(self) -> Tensor:
        """All listed eigenvectors as columns (``dim x k``); materialised once."""
        return self.vectors()

    def vectors(self, k: int | None = None) -> Tensor:
        """The eigenvectors of the ``k`` largest listed values (columns), built only as needed."""
        if k is not None:
            k = check_layer(k, self.k, name="k")
        if self.explicit_vectors is not None:
            return self.explicit_vectors if k is None else self.explicit_vectors[:, :k]
        if self.kronecker is not None:
            return self.kronecker.vectors(k)
        raise ValueError("this spectrum was computed without eigenvectors")

    def level_vectors(self, i: int) -> Tensor:
        """The eigenvector columns of level ``i`` (``dim x multiplicities[i]``)."""
        mults = self.multiplicities
        if isinstance(i, bool) or not isinstance(i, Integral) or not 0 <= i < len(mults):
            raise ValueError(f"i must be an integer in 0..{len(mults) - 1}; got {i!r}")
        start = sum(mults[:i])
        V = self.vectors()
        if start + mults[i] > V.shape[1]:
            raise ValueError(f"no vectors are given for level {i}")
        return V[:, start : start + mults[i]]

    # ------------------------------------------------------------------ reporting
    def require_converged(self) -> "Spectrum":
        """``self`` if the method converged, else :class:`NotConvergedError` naming the method."""
        if not self.converged:
            worst = "" if self.residual_norms is None else f", largest residual {float(self.residual_norms.max()):.3g}"
            raise NotConvergedError(f"{self.method or 'the eigensolver'} did not converge{worst}")
        return self

    def as_dict(self) -> dict:
        """JSON-friendly summary (no vectors)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "method": self.method,
            "levels": [{"value": v, "multiplicity": m} for v, m in self.levels()],
            "bulk_value": None if self.bulk_value is None else float(self.bulk_value),
            "dim": self.dim,
            "n_outliers": self.n_outliers,
            "converged": self.converged,
        }
