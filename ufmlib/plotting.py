"""The one figure style of the companion: measured values in colour, theory in black.

Every figure of the book is drawn with the helpers below so that all chapters look alike:
measured quantities (spectra, trajectories, histograms) are coloured markers or lines, the
closed-form predictions are black dashed lines on top of them
(:func:`add_levels`), thresholds are dotted vertical lines.

* :func:`figure` - a styled figure with a grid of axes;
* :func:`plot_spectrum_with_levels` - sorted eigenvalues (a rank plot) with predicted levels;
* :func:`plot_eigenvalue_trajectories` - eigenvalues (or singular values) against epochs with
  the levels they should converge to;
* :func:`plot_histogram_with_levels` - a histogram of a whole spectrum with predicted levels;
* :func:`plot_theory_curves` - closed-form curves against a parameter (e.g. λ) with optional
  measured points and marked thresholds;
* :func:`add_theory_trajectories` - predictions that change along training (black lines);
* :func:`plot_coefficient_table` - a ``K x K`` table (``c_{cc'}``, ``f_{cc'}``) as a heat map;
* :func:`plot_grid_map` - a measured quantity over a grid of two parameters as a heat map, with
  cells where it is not measured hatched and labelled, and :func:`add_boundary_steps` - a
  closed-form boundary over a discrete axis (the condition of a theorem) drawn on such a map;
* :func:`save_figure` - PNG/PDF/SVG files whose bytes depend only on the figure (no dates,
  no software versions), written to ``$UFM_FIGURE_DIR`` (set by ``ufm regenerate`` for its kernels) or
  ``./figures``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import matplotlib
import numpy as np

from .validation import epoch_series

__all__ = [
    "STYLE",
    "THEORY",
    "use_style",
    "figure",
    "add_levels",
    "plot_spectrum_with_levels",
    "plot_eigenvalue_trajectories",
    "plot_histogram_with_levels",
    "plot_theory_curves",
    "add_theory_trajectories",
    "plot_coefficient_table",
    "plot_grid_map",
    "add_boundary_steps",
    "figure_dir",
    "save_figure",
]

STYLE: dict[str, Any] = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.4,
    "lines.markersize": 4,
    "axes.prop_cycle": matplotlib.cycler(color=matplotlib.colormaps["tab10"].colors),
    "svg.hashsalt": "ufmlib",
    "pdf.fonttype": 42,
}
"""rcParams of the companion's single style."""

THEORY: dict[str, Any] = {"color": "black", "linestyle": "--", "linewidth": 1.1, "zorder": 5}
"""Line style of every closed-form prediction."""

THRESHOLD: dict[str, Any] = {"color": "0.35", "linestyle": ":", "linewidth": 1.1, "zorder": 4}


def use_style() -> None:
    """Apply :data:`STYLE` to matplotlib's global rcParams."""
    matplotlib.rcParams.update(STYLE)


def figure(nrows: int = 1, ncols: int = 1, *, width: float | None = None, height: float | None = None):
    """A styled ``(fig, axes)`` pair; ``axes`` is a flat array when there is more than one."""
    import matplotlib.pyplot as plt

    use_style()
    w = width if width is not None else 3.4 * ncols + 0.6
    h = height if height is not None else 3.0 * nrows
    fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False, layout="constrained")
    axes = axes.ravel()
    return fig, (axes[0] if axes.size == 1 else axes)


def _axes(ax):
    if ax is not None:
        return ax
    return figure()[1]


def _level_list(levels: Mapping[str, float] | Sequence[float] | float | None) -> list[tuple[float, str | None]]:
    if levels is None:
        return []
    if isinstance(levels, Mapping):
        return [(float(v), str(k)) for k, v in levels.items()]
    if np.ndim(levels) == 0:
        return [(float(levels), None)]
    return [(float(v), None) for v in np.asarray(levels, dtype=float).ravel()]


def add_levels(ax, levels, *, axis: str = "y", label: str = "theory") -> None:
    """Draw predicted values as black dashed lines (horizontal for ``axis="y"``).

    ``levels`` is a number, a sequence of numbers or a mapping ``label -> value``; a legend
    entry is made for each labelled level and once for unlabelled ones.
    """
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y'; got {axis!r}")
    line = ax.axhline if axis == "y" else ax.axvline
    seen_unlabelled = False
    for value, name in _level_list(levels):
        if name is None:
            text = None if seen_unlabelled else label
            seen_unlabelled = True
        else:
            text = name
        line(value, label=text, **THEORY)


def _finish(ax, *, xlabel: str | None, ylabel: str | None, title: str | None, legend: bool) -> None:
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_spectrum_with_levels(
    eigenvalues,
    levels=None,
    *,
    ax=None,
    top: int | None = None,
    logy: bool = True,
    label: str = "measured",
    xlabel: str = "index (descending)",
    ylabel: str = "eigenvalue",
    title: str | None = None,
):
    """Eigenvalues sorted in decreasing order (markers) with predicted levels (dashed).

    ``top`` keeps only the largest ``top`` eigenvalues. With ``logy`` the absolute values are
    drawn on a log axis (values below 1e-18 are clipped there so that exact zeros stay visible).
    """
    ax = _axes(ax)
    vals = np.sort(np.asarray(_numpy(eigenvalues), dtype=float).ravel())[::-1]
    if top is not None:
        vals = vals[:top]
    idx = np.arange(1, vals.size + 1)
    if logy:
        ax.set_yscale("log")
        vals = np.clip(np.abs(vals), 1e-18, None)
    ax.plot(idx, vals, "o", label=label, zorder=3)
    add_levels(ax, levels)
    _finish(ax, xlabel=xlabel, ylabel=ylabel, title=title, legend=True)
    return ax


def plot_eigenvalue_trajectories(
    epochs,
    eigs,
    levels=None,
    *,
    ax=None,
    logx: bool = True,
    logy: bool = False,
    label: str | Sequence[str | None] | None = None,
    colors: Sequence[Any] | None = None,
    xlabel: str = "epoch",
    ylabel: str = "eigenvalue",
    title: str | None = None,
):
    """Trajectories ``eigs[t, j]`` against ``epochs[t]`` (coloured) and their limits (dashed).

    ``eigs`` has one row per epoch and one column per tracked value; ``label`` is one legend
    entry for all columns or one per column (``None`` for none), ``colors`` one colour per
    column (default: the style's colour cycle). Epoch 0 stays on a logarithmic x axis (a
    symmetric-log axis, linear below 1).
    """
    ax = _axes(ax)
    x = np.asarray(_numpy(epochs), dtype=float).ravel()
    y = np.asarray(_numpy(eigs), dtype=float)
    if y.ndim == 1:
        y = y[:, None]
    if y.shape[0] != x.size:
        raise ValueError(f"eigs must have one row per epoch ({x.size}); got shape {y.shape}")
    if label is None or isinstance(label, str):
        labels = [label] + [None] * (y.shape[1] - 1)
    else:
        labels = list(label)
    if len(labels) != y.shape[1] or (colors is not None and len(colors) != y.shape[1]):
        raise ValueError(f"label and colors must give one entry per column of eigs ({y.shape[1]})")
    for j in range(y.shape[1]):
        style = {} if colors is None else {"color": colors[j]}
        ax.plot(x, y[:, j], label=labels[j], alpha=0.85, **style)
    if logx:
        if np.any(x <= 0):
            ax.set_xscale("symlog", linthresh=1.0)
        else:
            ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    add_levels(ax, levels)
    _finish(ax, xlabel=xlabel, ylabel=ylabel, title=title, legend=True)
    return ax


def plot_histogram_with_levels(
    eigenvalues,
    levels=None,
    *,
    ax=None,
    bins: int | Sequence[float] = 80,
    logy: bool = True,
    label: str = "measured",
    xlabel: str = "eigenvalue",
    ylabel: str = "count",
    title: str | None = None,
):
    """Histogram of a whole spectrum (bulk and outliers) with predicted levels as vertical lines."""
    ax = _axes(ax)
    vals = np.asarray(_numpy(eigenvalues), dtype=float).ravel()
    ax.hist(vals, bins=bins, label=label, alpha=0.8, zorder=3)
    if logy:
        ax.set_yscale("log")
    add_levels(ax, levels, axis="x")
    _finish(ax, xlabel=xlabel, ylabel=ylabel, title=title, legend=True)
    return ax


def plot_theory_curves(
    x,
    curves: Mapping[str, Any],
    *,
    ax=None,
    dashed: Mapping[str, Any] | None = None,
    measured: Mapping[str, tuple[Any, Any]] | None = None,
    thresholds: Mapping[str, float] | None = None,
    levels=None,
    logx: bool = True,
    logy: bool = False,
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
):
    """Closed-form curves against a parameter, with measured points and thresholds.

    ``curves`` maps a label to y-values on ``x`` (solid, one colour each); ``dashed`` maps a
    label of ``curves`` to secondary y-values drawn dashed in the same colour (e.g. a branch
    that is not the global minimiser); ``measured`` maps a label to ``(x_points, y_points)``
    drawn as markers; ``thresholds`` maps a label to an x value (dotted vertical line);
    ``levels`` are horizontal theory lines (see :func:`add_levels`).
    """
    ax = _axes(ax)
    xs = np.asarray(_numpy(x), dtype=float).ravel()
    colours = {}
    for name, ys in curves.items():
        (line,) = ax.plot(xs, np.asarray(_numpy(ys), dtype=float).ravel(), label=name)
        colours[name] = line.get_color()
    for name, ys in (dashed or {}).items():
        ax.plot(xs, np.asarray(_numpy(ys), dtype=float).ravel(), linestyle="--", linewidth=1.0,
                color=colours.get(name), alpha=0.7)
    for name, (px, py) in (measured or {}).items():
        ax.plot(np.atleast_1d(_numpy(px)), np.atleast_1d(_numpy(py)), "o", label=name, zorder=6,
                markerfacecolor="none", markeredgewidth=1.4, markersize=7)
    for name, xv in (thresholds or {}).items():
        if name in colours:  # the threshold of a curve: dotted, in the curve's colour
            ax.axvline(float(xv), **{**THRESHOLD, "color": colours[name]})
        else:
            ax.axvline(float(xv), label=name, **THRESHOLD)
    add_levels(ax, levels)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    _finish(ax, xlabel=xlabel, ylabel=ylabel, title=title, legend=True)
    return ax


def add_theory_trajectories(ax, epochs, values, *, label: str | None = "theory", linestyle: str = "--") -> None:
    """Draw predicted trajectories ``values[t, j]`` against ``epochs[t]`` as black (dashed) lines.

    For predictions that change along training (e.g. eigenvalues predicted from the measured
    class means); one legend entry ``label`` for all columns. ``linestyle`` (e.g. ``":"``)
    tells such a prediction apart from a fixed closed-form level drawn on the same axes.
    """
    x, y = epoch_series(epochs, values)
    for j in range(y.shape[1]):
        ax.plot(x, y[:, j], label=label if j == 0 else None, **{**THEORY, "linestyle": linestyle})
    if label and ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_coefficient_table(table, *, ax, title: str | None = None, fmt: str = "{:.3f}",
                           xlabel: str = r"$c'$", ylabel: str = r"$c$"):
    """Heatmap of a ``K x K`` table (e.g. ``c_{cc'}`` or ``f_{cc'}``) with the values written in.

    Rows are ``c``, columns ``c'`` (1-based tick labels).
    """
    T = np.asarray(table.detach().cpu().numpy() if hasattr(table, "detach") else table, dtype=float)
    if T.ndim != 2 or T.shape[0] != T.shape[1]:
        raise ValueError(f"table must be a square matrix; got shape {T.shape}")
    K = T.shape[0]
    im = ax.imshow(T, cmap="Blues", vmin=0.0, vmax=max(float(np.nanmax(T)), 1e-300))
    for i in range(K):
        for j in range(K):
            colour = "white" if T[i, j] > 0.6 * np.nanmax(T) else "black"
            ax.text(j, i, fmt.format(T[i, j]), ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(K), [str(j + 1) for j in range(K)])
    ax.set_yticks(range(K), [str(i + 1) for i in range(K)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    if title:
        ax.set_title(title)
    return im


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted grid values (geometric midpoints on a log axis)."""
    v = np.log(values) if log else values.astype(float)
    if v.size == 1:
        e = np.array([v[0] - 0.5, v[0] + 0.5])
    else:
        mid = (v[1:] + v[:-1]) / 2
        e = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
    return np.exp(e) if log else e


def plot_grid_map(values, *, x, y, ax, log_y: bool = True, log_colour: bool = True, vmin: float | None = None,
                  vmax: float | None = None, labels=None, cmap: str = "viridis", colourbar: str | None = None,
                  xlabel: str | None = None, ylabel: str | None = None, title: str | None = None):
    """Heat map of ``values[i, j]`` measured at ``(x[j], y[i])``; NaN cells are hatched grey.

    ``x`` is a discrete axis (one column per value, e.g. ``K``), ``y`` a grid drawn on a log axis
    when ``log_y`` (e.g. a weight decay). ``log_colour`` uses a logarithmic colour scale (values
    are clipped to ``[vmin, vmax]``); ``labels[i][j]`` (strings, ``""`` for none) are written into
    the cells, so that what a hatched cell is stays readable. Returns the colour mapping.
    """
    from matplotlib.colors import LogNorm, Normalize

    V = np.asarray(_numpy(values), dtype=float)
    xs, ys = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if V.shape != (ys.size, xs.size):
        raise ValueError(f"values must have shape (len(y), len(x)) = {(ys.size, xs.size)}; got {V.shape}")
    finite = V[np.isfinite(V)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 1e-16)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    norm = LogNorm(vmin=lo, vmax=hi) if log_colour else Normalize(vmin=lo, vmax=hi)
    xe, ye = _edges(xs, False), _edges(ys, log_y)
    shown = np.ma.masked_invalid(np.clip(V, lo, hi))
    from matplotlib.patches import Rectangle

    for i, j in zip(*np.nonzero(~np.isfinite(V))):
        ax.add_patch(Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], facecolor="0.9",
                               edgecolor="0.6", hatch="//", linewidth=0.0, zorder=1))
    mesh = ax.pcolormesh(xe, ye, shown, cmap=cmap, norm=norm, edgecolor="white", linewidth=0.5)
    if labels is not None:
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                if labels[i][j]:
                    rgb = mesh.cmap(norm(shown[i, j]))[:3] if np.isfinite(V[i, j]) else (1.0, 1.0, 1.0)
                    dark = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 0.5
                    box = None if np.isfinite(V[i, j]) else {"facecolor": "0.9", "edgecolor": "none", "pad": 1.0}
                    ax.text(xv, yv, labels[i][j], ha="center", va="center", fontsize=7,
                            color="white" if dark else "black", zorder=6, bbox=box)
    if log_y:
        ax.set_yscale("log")
    else:
        ax.set_yticks(ys, [f"{v:g}" for v in ys])
    ax.set_xticks(xs, [f"{v:g}" for v in xs])
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    ax.grid(False)
    if colourbar is not None:
        ax.figure.colorbar(mesh, ax=ax, label=colourbar)
    _finish(ax, xlabel=xlabel, ylabel=ylabel, title=title, legend=False)
    return mesh


def add_boundary_steps(ax, x, boundary, *, label: str | None = "boundary") -> None:
    """Draw ``boundary[j]`` over each column ``x[j]`` of a :func:`plot_grid_map` as a black staircase.

    For a closed-form threshold over a discrete parameter (e.g. the weight decay at which a
    condition becomes an equality, for each ``K``): a horizontal segment across each column,
    joined by vertical ones, in the theory style.
    """
    xs = np.asarray(x, dtype=float).ravel()
    b = np.asarray(_numpy(boundary), dtype=float).ravel()
    if b.shape != xs.shape:
        raise ValueError(f"boundary must give one value per x ({xs.size}); got {b.size}")
    xe = _edges(xs, False)
    ax.stairs(b, xe, baseline=None, label=label, **{**THEORY, "linestyle": "-", "linewidth": 1.8})


def _numpy(value):
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def figure_dir() -> Path:
    """Where :func:`save_figure` writes: ``$UFM_FIGURE_DIR`` or ``./figures``."""
    return Path(os.environ.get("UFM_FIGURE_DIR") or "figures")


_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    "svg": {"Date": None, "Creator": None},
}


def save_figure(
    fig,
    name: str,
    *,
    directory: str | Path | None = None,
    formats: Iterable[str] = ("png", "pdf"),
) -> list[Path]:
    """Write ``fig`` as ``<directory>/<name>.<fmt>`` with deterministic metadata.

    The PNG carries no ``Software`` tag, the PDF no creation date or producer, the SVG no
    date and a fixed hash salt, so that the same figure gives the same bytes on every run.
    Returns the written paths.
    """
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem such as 'optimum-phase'; got {name!r}")
    formats = tuple(formats)
    bad = [f for f in formats if f not in _METADATA]
    if bad or not formats:
        raise ValueError(f"formats must be a non-empty subset of {tuple(_METADATA)}; got {formats!r}")
    out = Path(directory) if directory is not None else figure_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    # fontTools logs "'created' timestamp seems very low" for every font embedded in a PDF whose
    # date is fixed for reproducible files; that is the intended behaviour, not a problem
    head_log = logging.getLogger("fontTools.ttLib.tables._h_e_a_d")
    level = head_log.level
    head_log.setLevel(logging.ERROR)
    try:
        with matplotlib.rc_context({"svg.hashsalt": "ufmlib"}):
            for fmt in formats:
                path = out / f"{name}.{fmt}"
                fig.savefig(path, format=fmt, metadata=_METADATA[fmt], bbox_inches="tight")
                paths.append(path)
    finally:
        head_log.setLevel(level)
    return paths
