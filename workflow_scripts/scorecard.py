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
    """``{"preset": ..., "entries": [{"study": ..., <entry>}, ...], "side_by_side": {topic: [row, ...]}}`` from
    ``{study: metrics.json path}``. A study's optional ``side_by_side`` block (``{topic: [row, ...]}``, each row a
    flat object) puts its methods beside another study's on a shared task: rows of one topic from every study make
    one table."""
    entries: list[dict[str, Any]] = []
    side: dict[str, list[dict[str, Any]]] = {}
    for study, path in metrics_files.items():
        try:
            obj = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PipelineError(f"{path}: cannot read the study's metrics ({exc})") from None
        validate_metrics(obj, path)
        entries += [{"study": study, **entry} for entry in obj["entries"]]
        for topic, rows in (obj.get("side_by_side") or {}).items():
            side.setdefault(topic, []).extend({"study": study, **{k: _json_value(v) for k, v in row.items()}}
                                              for row in rows)
    return {"preset": preset, "entries": entries, "side_by_side": side}


def _json_value(v: Any) -> Any:
    """A side-by-side cell as strict JSON: NaN or inf (nothing to measure, e.g. an empty class) becomes None."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


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
    for topic, rows in (card.get("side_by_side") or {}).items():
        # the text columns (study, detector, ...) as they come, then the numbers by name (a label's columns side
        # by side whichever study wrote them first)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        text = [c for c in columns if any(isinstance(row.get(c), str) for row in rows)]
        columns = text + sorted(c for c in columns if c not in text)
        lines += [f"## Side by side: {topic}", "", "| " + " | ".join(columns) + " |",
                  "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(_value(row.get(c)).replace("|", "\\|") for c in columns) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)
