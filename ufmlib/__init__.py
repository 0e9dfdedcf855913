"""ufmlib: the deep unconstrained feature model of Garrod & Keating (arXiv 2404.06106).

Modules (one job each): ``config`` (validated model description), ``model`` (parameters,
forward pass, losses), ``optimum`` (closed-form global minimiser, condition (2), CE critical
point), ``train`` (full-batch gradient descent), ``collapse`` (neural-collapse metrics),
``hessian``/``decompose``/``matrices`` (measured spectra), ``theory`` (predicted spectra),
``alignment`` (eigenvector and gradient-alignment metrics), ``lanczos`` (iterative
eigensolvers), ``dynamics`` (spectra along a training run), ``screening`` (ReLU seed
screening), ``data``/``networks``/``analysis`` (real networks), ``plotting``, ``figures`` and
``spectra_tables`` (figure and table assembly), ``provenance``, ``runtime`` (thread counts),
``regenerate`` and ``cli`` (notebooks and the ``ufm`` command).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ufmlib")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"
