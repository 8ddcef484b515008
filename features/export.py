"""Writing one feature table with its schema and dictionary beside it.

The Parquet file carries the schema (kept and dropped columns, with reasons) in its metadata,
and ``<name>.dictionary.json`` explains every column, so a feature table is readable without
churnflow. Files are written to a temporary name and renamed: a crash never leaves half a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnflow.features.dictionary import dictionary_records
from churnflow.features.errors import ChurnflowError
from churnflow.features.io import atomic_write, write_json
from churnflow.features.schema import FeatureSchema


class EmptyFeatureTableError(ChurnflowError, ValueError):
    """No customer at the as-of date: an empty table is no feature table (an as-of before the data)."""


def write_feature_table(frame: pd.DataFrame, schema: FeatureSchema, out: Path, as_of: pd.Timestamp) -> dict[str, Path]:
    """Write ``frame`` (features as of ``as_of``) to ``out`` (Parquet, schema in its metadata) and
    its dictionary beside it; an empty one is refused, nothing written.

    The dictionary is renamed into place first, so a table on disk always has its dictionary.
    """
    if frame.empty:
        raise EmptyFeatureTableError(
            f"no customers at {as_of.date()}: nobody has a history before that date or every customer churned "
            "before it, so there is no feature table to write. Check --as-of and that the sources are the ones "
            "you meant.")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"churnflow.schema"] = json.dumps(schema.to_dict(), sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    records = {"features": dictionary_records(schema, frame), "dropped_columns": schema.dropped}
    dictionary = atomic_write(out.with_suffix(".dictionary.json"), lambda p: write_json(p, records))
    atomic_write(out, lambda p: pq.write_table(table, p))
    return {"features": out, "dictionary": dictionary}


def read_feature_schema(path: Path) -> FeatureSchema:
    meta = pq.read_schema(path).metadata or {}
    return FeatureSchema.from_dict(json.loads(meta[b"churnflow.schema"]))
