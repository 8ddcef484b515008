"""Numbering the distinct texts of a column: event types and customers' categories.

A handful of distinct texts over millions of rows (event types, plans, regions) are numbered
straight from the Arrow buffers by a compiled loop on two threads (``compiled.encode_words``):
``pd.factorize`` (Arrow's hash encoding) took four times as long on 20M event rows, and filling
its nulls and renumbering as long again. Other columns go through pandas or Arrow as before.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as arrow
import pyarrow.compute as pc

from churnflow.features import compiled


def factorize_text(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """``pd.factorize(values)`` (codes, -1 for missing, and the distinct values in order seen).
    Arrow-backed text is read from its buffers by a compiled loop (``compiled.encode_words``)
    when it holds few distinct texts, else encoded by Arrow itself (its int32 codes used as
    they are, where pandas converts them to int64)."""
    if not (isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow") or not len(values):
        codes, found = pd.factorize(values)
        return codes, pd.Index(found)
    column = arrow.chunked_array(values.array.__arrow_array__())
    if (words := _encoded_words(column)) is not None:
        return words[0], pd.Index(words[1], dtype=values.dtype)
    encoded = pc.dictionary_encode(column)
    if encoded.num_chunks > 1:
        encoded = encoded.unify_dictionaries()
    parts = [chunk.indices.fill_null(-1).to_numpy() for chunk in encoded.chunks]
    return parts[0] if len(parts) == 1 else np.concatenate(parts), pd.Index(encoded.chunk(0).dictionary.to_pylist(), dtype=values.dtype)


MAX_WORDS = 126
"""Distinct texts ``_encoded_words`` numbers itself (int8 codes, with room for ``unknown``)."""


def _encoded_words(column: arrow.ChunkedArray) -> tuple[np.ndarray, list[str]] | None:
    """int8 codes (-1: missing) and the distinct texts in order seen of an Arrow text column
    read from its buffers; ``None`` when it is not plain text or has more than ``MAX_WORDS``.

    The rows are split into pieces numbered in threads, each by its own texts in order seen;
    the pieces' texts in piece order are the column's in order seen, and a piece that saw them
    in another order is renumbered."""
    if column.type != arrow.large_string():  # (pandas keeps Arrow text as large_string)
        return None
    pieces, base = {}, 0  # the piece's first row in the column -> the piece
    for chunk in column.chunks:
        for a, b in compiled.even_ranges(len(chunk), compiled.THREADS):
            pieces[base + a] = chunk.slice(a, b - a)
        base += len(chunk)
    codes = np.empty(len(column), dtype=np.int8)
    found = compiled.in_threads(lambda a, b: _piece_words(pieces[a], codes[a:b]),
                                [(a, a + len(piece)) for a, piece in pieces.items()])
    if any(piece_words is None for piece_words in found):
        return None
    words = list(dict.fromkeys(w for piece_words in found for w in piece_words))
    if len(words) > MAX_WORDS:
        return None
    position = {w: k for k, w in enumerate(words)}
    for (a, piece), piece_words in zip(pieces.items(), found, strict=True):
        lookup = np.array([position[w] for w in piece_words] + [-1], dtype=np.int8)
        if (lookup[:-1] != np.arange(len(piece_words))).any():
            compiled.renumber(codes[a:a + len(piece)], lookup, codes[a:a + len(piece)])
    return codes, words


def _piece_words(piece: arrow.LargeStringArray, codes: np.ndarray) -> list[str] | None:
    """Number the texts of one Arrow text array into ``codes``; its distinct texts in order seen."""
    validity, offsets, data = piece.buffers()
    offsets = np.frombuffer(offsets, np.int64)[piece.offset:piece.offset + len(piece) + 1]
    data = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    bits = np.frombuffer(validity, np.uint8) if validity is not None and piece.null_count else np.zeros(0, np.uint8)
    pool, pool_offsets = np.empty(8192, np.uint8), np.zeros(MAX_WORDS + 1, np.int64)
    n_words = compiled.encode_words(offsets, data, bits, piece.offset, codes, pool, pool_offsets)
    return None if n_words < 0 else [bytes(pool[pool_offsets[k]:pool_offsets[k + 1]]).decode() for k in range(n_words)]
