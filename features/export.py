"""Writing one feature table with its schema and dictionary beside it.

The Parquet file carries the schema (kept and dropped columns, with reasons) in its metadata,
and ``<name>.dictionary.json`` explains every column, so a feature table is readable without
churnflow. Files are written to a temporary name and renamed: a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.dictionary import dictionary_records
from features.schema import FeatureSchema


def write_feature_table(frame: pd.DataFrame, schema: FeatureSchema, out: Path) -> dict[str, Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"churnflow.schema"] = json.dumps(schema.to_dict(), sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    dictionary = out.with_suffix(".dictionary.json")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp_dict = dictionary.with_name(f".{dictionary.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        tmp_dict.write_text(json.dumps(
            {"features": dictionary_records(schema), "dropped_columns": schema.dropped}, indent=2, sort_keys=True
        ))
        os.replace(tmp, out)
        os.replace(tmp_dict, dictionary)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_dict.unlink(missing_ok=True)
    return {"features": out, "dictionary": dictionary}


def read_feature_schema(path: Path) -> FeatureSchema:
    meta = pq.read_schema(path).metadata or {}
    return FeatureSchema.from_dict(json.loads(meta[b"churnflow.schema"]))
