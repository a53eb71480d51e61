"""The figures of a report: drawn once here for the page, ``vssl probe --confusion`` and the demo.

Each function returns a matplotlib figure (the Agg backend: no display needed); :func:`save_png`
writes one to a file and :func:`png_data_uri` inlines one in a page.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain(text: str) -> str:
    """``text`` shown as written: matplotlib reads a pair of ``$`` as TeX (and fails on bad TeX)."""
    return str(text).replace("$", r"\$")


def save_png(fig, path: str | Path, dpi: int = 120) -> None:
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)


def png_data_uri(fig, dpi: int = 100) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (closed after)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def confusion_figure(confusion: Any, classes: Sequence[str], title: str):
    """A row-normalised confusion matrix (true rows, predicted columns); ``[seeds, C, C]`` is pooled
    over the seeds (each has the same support, so pooled counts give the seeds' mean rates)."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    seeds = len(cm) if cm.ndim == 3 else 1
    cm = cm.sum(axis=0) if cm.ndim == 3 else cm
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    c = len(classes)
    size = min(4 + 0.18 * c, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(plain(title) + (f", {seeds} seeds pooled" if seeds > 1 else ""))
    if c <= 60:
        names = [plain(name) for name in classes]
        ax.set_xticks(range(c), names, rotation=90, fontsize=6)
        ax.set_yticks(range(c), names, fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def training_curves_figure(rows: Sequence[dict[str, Any]]):
    """Stage two's loss (the total and each term) and contrastive top-1 per epoch, from ``metrics.csv``
    rows; the terms are those the run logged (:data:`vssl.aggregate.terms.TERMS`)."""
    from vssl.aggregate.terms import TERMS

    plt = _pyplot()
    epochs = [int(float(r["epoch"])) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    terms = [t for t in TERMS if f"{t.name}_loss" in rows[0]]  # the run's loss terms, in the metrics' order
    curves = [("loss", "L = " + " + ".join(f"L_{t.title}" for t in terms))]
    marker = "o" if len(rows) < 20 else None                    # a short run's few points stay visible
    for key, label in curves + [(f"{t.name}_loss", f"L_{t.title}") for t in terms]:
        ax_loss.plot(epochs, [float(r[key]) for r in rows], label=label, marker=marker)
    for key, label in [(f"{t.name}_top1", f"{t.title} top-1") for t in terms]:
        ax_acc.plot(epochs, [100 * float(r[key]) for r in rows], label=label, marker=marker)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="SCALE training loss")
    ax_acc.set(xlabel="epoch", ylabel="%", title="contrastive accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))      # epochs are whole numbers
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def feature_map_figure(maps: Sequence[tuple[str, np.ndarray]], labels: np.ndarray, classes: Sequence[str],
                       method: str):
    """The test videos on a plane, one panel per feature source (``(name, [n, 2])``), coloured by class."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(4.6 * len(maps), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    for ax, (name, xy) in zip(axes[0], maps):
        for c, cls in enumerate(classes):
            pick = labels == c
            if pick.any():
                ax.scatter(xy[pick, 0], xy[pick, 1], s=14, color=cmap(c % cmap.N), label=plain(cls))
        ax.set(title=f"{name} ({method})", xticks=[], yticks=[])
    if len(classes) <= 20:
        axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig
