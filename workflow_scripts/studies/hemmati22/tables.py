"""Parquet tables of the study with provenance (and optional facts about how they were made) in their metadata,
as the boundary catalogues carry theirs (:func:`workflow_scripts.io.read_provenance` reads it back)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from workflow_scripts.io import atomic_path

#: metadata key of the facts a step adds beside the provenance (engine, model, ... of a photometry run)
FACTS_KEY = b"genastro.photometry"


def write_table(path: Any, df: pd.DataFrame, prov: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
    """Write a Parquet table atomically with provenance (and ``extra`` facts) in its metadata."""
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"genastro.provenance"] = json.dumps(dict(prov), default=str).encode()
    if extra:
        meta[FACTS_KEY] = json.dumps(dict(extra), default=str).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A table written by :func:`write_table` and its ``extra`` facts ({} when it has none)."""
    meta = pq.read_schema(path).metadata or {}
    return pd.read_parquet(path), json.loads(meta.get(FACTS_KEY, b"{}"))
