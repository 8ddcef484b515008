"""Does a column hold personal data? A small, conservative detector run before any training.

Personal data must never become a feature: a name column turned into a category would put
customers' names into the model's schema, its drift reference and MLflow. Users declare such
columns in ``data.columns.pii``; this detector catches the ones they forgot, from two signals:

- the **values** look like e-mail addresses, phone numbers, street addresses or person names (most of a sample
  matches, and most values are distinct: personal data identify people);
- the column's **name** is a personal-data word (name, email, phone, address, street, mobile,
  postcode, date of birth, ...)
  and its values are mostly distinct (``PhoneService = Yes/No`` is a feature, not a phone number).

A false alarm costs one line of settings (``features.allow_personal``); a miss leaks names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

SAMPLE = 2_000
VALUE_SHARE = 0.6
"""Share of sampled non-blank values that must look personal."""
DISTINCT_SHARE = 0.5
MIN_DISTINCT = 5

_EMAIL = r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}"
_PHONE = r"(?=(?:\D*\d){7,15}\D*$)(?:\+|00|\(|0)?[\d\s().\-/]{7,22}"
_NAME_PART = r"[A-Z][a-z]+(?:[-'’][A-Za-z]+)?\.?"
_PERSON = rf"(?:(?:Mr|Mrs|Ms|Dr)\.? )?{_NAME_PART}(?: {_NAME_PART}){{1,3}}|{_NAME_PART}, {_NAME_PART}"
_DATE = r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})(?:[ T][\d:.]+\S*)?"
"""Dates as text (``2024-03-14``, ``14/03/2024 10:00``): digits and separators, but not phones."""
_STREET_TYPES = ("street|st|road|rd|avenue|ave|lane|ln|drive|dr|way|boulevard|blvd|place|pl|court|ct|close|"
                 "crescent|terrace|square|sq|highway|hwy|parkway|pkwy")
_STREET = (rf"(?i)(?:[\w.,/-]+ ){{0,3}}\d+[a-z]?,? (?:[a-z][\w'.-]* ){{0,4}}(?:{_STREET_TYPES})\.?(?:,.*)?"
           r"|[\w-]+(?:straße|strasse|str\.|weg|gasse|allee|platz|laan|straat|gata|gatan|vej) \d+\w?(?:,.*)?")
"""Street addresses (``12 High Street``, ``Flat 2, 10 Mill Rd, Leeds``, ``Hauptstraße 5``)."""
_PERSON_NAME_WORDS = {"fullname", "firstname", "lastname", "surname", "forename", "givenname"}
"""Names that say the column holds people's names, however often they repeat (a bank's Surname)."""
_NAME_WORDS = {
    "name", "fullname", "firstname", "lastname", "surname", "forename", "givenname",
    "email", "mail", "emailaddress", "phone", "telephone", "tel", "mobile", "cell", "msisdn",
    "address", "street", "addr", "ssn", "passport", "iban",
    "postcode", "zip", "zipcode", "postalcode", "birth", "dob", "birthdate", "dateofbirth", "birthday",
}


def _tokens(column: str) -> set[str]:
    """``full_name`` → {full, name, fullname}; ``EmailAddress`` → {email, address, emailaddress}."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", column)
    words = [w for w in re.split(r"[^0-9A-Za-z]+", spaced.lower()) if w]
    return set(words) | {"".join(words)} | {"".join(words[i:i + 2]) for i in range(len(words) - 1)}


def _share(text: pd.Series, pattern: str) -> float:
    return float(text.str.fullmatch(pattern).mean()) if len(text) else 0.0


def screen_sample(values: pd.Series, keys: np.ndarray | None = None) -> pd.Series:
    """The values the screen looks at: the non-missing values of the ``SAMPLE`` rows whose row
    labels hash lowest. Unlike a random draw this sample does not depend on how the rows are
    split: the samples of a table's parts, concatenated and sampled again, are the table's own
    (the Dask engine decides once for all partitions this way, as the local engine would).
    ``keys``: the row labels' hashes when already computed (:func:`screen_samples`)."""
    present = values.notna().to_numpy()
    rows = np.flatnonzero(present)
    if len(rows) <= SAMPLE:
        return values.iloc[rows]
    if keys is None:
        keys = pd.util.hash_pandas_object(values.index, index=False).to_numpy()
    return values.iloc[rows[np.sort(np.argpartition(keys[rows], SAMPLE - 1)[:SAMPLE])]]  # distinct keys: one answer


def screen_samples(frame: pd.DataFrame, columns: Iterable[str]) -> dict[str, pd.Series]:
    """:func:`screen_sample` of each of ``columns``: the row labels are hashed once for all of
    them, and the columns without missing values share one sample of rows (hashing and choosing
    among a million labels cost as much as the rest of a column's screen)."""
    if len(frame) <= SAMPLE:
        return {col: screen_sample(frame[col]) for col in columns}
    keys = pd.util.hash_pandas_object(frame.index, index=False).to_numpy()
    every_row = np.sort(np.argpartition(keys, SAMPLE - 1)[:SAMPLE])  # the sample of a column without gaps
    return {col: frame[col].iloc[every_row] if not frame[col].hasnans else screen_sample(frame[col], keys)
            for col in columns}


def personal_data_reason(values: pd.Series, column: str) -> str:
    """Why ``values`` look like personal data ("" when they do not)."""
    sample = screen_sample(values)
    if sample.empty:
        return ""
    distinct = sample.nunique()
    varied = distinct >= MIN_DISTINCT and distinct / len(sample) >= DISTINCT_SHARE
    named = bool(_tokens(column) & _NAME_WORDS)
    is_text = not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
                   or pd.api.types.is_datetime64_any_dtype(values))
    if is_text:
        text = sample.astype("string").str.strip()
        text = text[text != ""]
        if _share(text, _EMAIL) >= VALUE_SHARE:
            return "its values look like e-mail addresses"
        if (varied and _share(text, _PHONE) >= VALUE_SHARE and not _share(text, r"-?\d+(\.\d+)?") >= VALUE_SHARE
                and not _share(text, _DATE) >= VALUE_SHARE):
            return "its values look like phone numbers"
        if varied and _share(text, _STREET) >= VALUE_SHARE:
            return "its values look like street addresses"
        if varied and _share(text, _PERSON) >= VALUE_SHARE:
            return "its values look like person names"
        if _tokens(column) & _PERSON_NAME_WORDS and distinct >= MIN_DISTINCT:
            return "its name says it holds people's names"
    if named and varied:
        return "its name suggests personal data and almost every value is different"
    return ""


def personal_columns(frame: pd.DataFrame, candidates: list[str]) -> dict[str, str]:
    """The ``candidates`` of ``frame`` that look like personal data, with the reason for each."""
    found = {}
    for col, sample in screen_samples(frame, candidates).items():
        reason = personal_data_reason(sample, str(col))
        if reason:
            found[col] = reason
    return found
