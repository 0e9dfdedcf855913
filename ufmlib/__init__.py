"""ufmlib: the deep unconstrained feature model of Garrod & Keating (arXiv 2404.06106).

The science, one job per module: ``config`` and ``validation`` (the validated model description
and every argument check), ``model`` (parameters, forward pass, losses), ``state`` (one point
with its forward pass and class means, computed once), ``spectrum`` (the one spectrum type),
``optimum`` (closed-form global minimiser, condition (2), CE critical point), ``train``
(full-batch gradient descent), ``collapse`` (neural-collapse metrics), ``autodiff``, ``hessian``,
``full_hessian``, ``decompose`` and ``matrices`` (measured matrices), ``lanczos`` and ``slq``
(iterative eigensolvers, spectral densities), ``theory`` (predicted spectra by result family),
``levels`` and ``alignment`` (comparing spectra and eigenvectors), ``dynamics`` (spectra along a
training run), ``screening`` (ReLU seed screening), ``validity`` (the closed forms against
gradient descent over grids of parameters), ``data``, ``networks``, ``heads`` and
``analysis`` (real networks), ``plotting`` (one figure style), ``runtime`` (thread counts) and
``cli`` (``ufm predict``). ``notebook`` is what a chapter imports besides the science (glue,
checks, agreement tables). The book machinery is the subpackage ``ufmlib.book``, which no
science module imports.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ufmlib")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"
