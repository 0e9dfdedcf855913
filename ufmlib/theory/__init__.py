"""Predicted spectra of the deep UFM: eigenvalues, multiplicities and eigenvectors, by result family.

Results are numbered R1-R9 as in the book (v1 numbering of the theorems where the paper states
them): R2 = v1 Thm 4.1 (layer Hessian), R3 = v1 Thm 4.2 (Gauss-Newton split), R4 = v1 Thm 4.3
(fit gradient), R5 = v1 Thm 4.4 (weights), R6 (the other deep-learning matrices), R7 (the full
Hessian), R8 (ReLU) and R9 (cross-entropy). Every prediction is a
:class:`ufmlib.spectrum.Spectrum` built from exact levels and multiplicities.

Modules, one per family of predictions:

* :mod:`~ufmlib.theory.class_means` -- from the class means measured at any point close to
  deep neural collapse (:func:`layer_hessian_at`, :func:`layer_hessian_from_means`,
  :func:`weight_gram_from_means`);
* :mod:`~ufmlib.theory.closed_form` -- closed forms at the global minimiser of the linear MSE
  model (R2-R6, ``optimum_*``);
* :mod:`~ufmlib.theory.full_hessian` -- the full Hessian at the minimiser (R7);
* :mod:`~ufmlib.theory.relu` -- the ReLU model at its non-negative DNC optimum (R8);
* :mod:`~ufmlib.theory.cross_entropy` -- the cross-entropy DNC critical point (R9).

Conventions. Layers are numbered ``1..L``; ``W_l`` has shape ``d_out x d_in`` (``d_out = K``
for ``l = L``); vectors are **row-major** vecs, ``vec(a b^T) = a ⊗ b``. All matrices are of
the **fit term** of v1 Eq. (1); :meth:`ufmlib.spectrum.Spectrum.shifted` adds the penalty.
Everything is computed in float64 on the CPU. When condition (2) fails the global minimiser is
zero and the closed forms raise :class:`ufmlib.optimum.NoDNCMinimiserError`.
"""

from ..optimum import NoDNCMinimiserError
from .class_means import layer_hessian_at, layer_hessian_from_means, weight_gram_from_means
from .closed_form import (
    GNSplitPrediction,
    GradientPrediction,
    optimum_backprop_singular_values,
    optimum_feature_hessian,
    optimum_feature_singular_values,
    optimum_fit_gradient,
    optimum_gauss_newton_split,
    optimum_gradient_moments,
    optimum_layer_hessian,
    optimum_weight_gram,
)
from .cross_entropy import ce_critical_layer_hessian
from .full_hessian import (
    full_hessian_bulk_multiplicities,
    full_hessian_outliers,
    optimum_full_gauss_newton,
    optimum_full_hessian,
)
from .relu import relu_kink_levels, relu_optimum_layer_hessian

from . import class_means, closed_form, cross_entropy, full_hessian, relu  # noqa: E402  (their __all__)

__all__ = [
    "NoDNCMinimiserError",
    *class_means.__all__,
    *closed_form.__all__,
    *full_hessian.__all__,
    *relu.__all__,
    *cross_entropy.__all__,
]
