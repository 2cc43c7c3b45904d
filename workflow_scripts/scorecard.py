"""The scorecard: every enabled study's headline metrics entries (``results/{study}/metrics.json``) in one JSON
file and one Markdown table, paper beside ours, and whether each goal holds."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workflow_scripts.errors import PipelineError
from workflow_scripts.metrics import validate_metrics

#: what the holds column shows
HOLDS_MARK = {True: "yes", False: "**no**", None: "–"}


def gather(metrics_files: Mapping[str, str | Path], preset: str) -> dict[str, Any]:
    """``{"preset": ..., "entries": [{"study": ..., <entry>}, ...]}`` from ``{study: metrics.json path}``."""
    entries = []
    for study, path in metrics_files.items():
        try:
            obj = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PipelineError(f"{path}: cannot read the study's metrics ({exc})") from None
        validate_metrics(obj, path)
        entries += [{"study": study, **entry} for entry in obj["entries"]]
    return {"preset": preset, "entries": entries}


def _value(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    return str(v)


def markdown(card: Mapping[str, Any]) -> str:
    """One table: study, id, what, paper, ours, unit, goal, holds; a count of goals met under it."""
    lines = [f"# Scorecard ({card['preset']} preset)", "",
             "| study | id | what | paper | ours | unit | goal | holds |",
             "|---|---|---|---:|---:|---|---|---|"]
    for e in card["entries"]:
        cells = [e["study"], f"`{e['id']}`", e["what"], _value(e["paper"]), _value(e["ours"]), e["unit"] or "",
                 e["goal"] or "", HOLDS_MARK[e["holds"]]]
        # a "|" inside a cell (|dmag|, |x| <= 0.1) would end it: Markdown tables escape it
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    judged = [e["holds"] for e in card["entries"] if e["holds"] is not None]
    lines += ["", f"{sum(judged)} of {len(judged)} goals hold; {len(card['entries']) - len(judged)} entries have no goal.",
              ""]
    return "\n".join(lines)
