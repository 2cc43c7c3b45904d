"""Saving figures: PNG (and PDF) written atomically, the figure closed whatever happens; the figures' error type."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from workflow_scripts.errors import PipelineError  # noqa: E402
from workflow_scripts.io import atomic_path  # noqa: E402


class FigureError(PipelineError):
    """A figure cannot be made from the inputs it was given."""


def save_figure(fig: plt.Figure, out_png: str | Path, out_pdf: str | Path | None = None, dpi: int = 150) -> Path:
    """Write ``fig`` to ``out_png`` (and ``out_pdf``), each through a temporary file renamed into place."""
    out_png = Path(out_png)
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
        if out_pdf is not None:
            with atomic_path(out_pdf) as tmp:
                fig.savefig(tmp, format="pdf")
    finally:
        plt.close(fig)
    return out_png
