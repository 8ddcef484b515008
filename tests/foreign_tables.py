"""Seeded look-alikes of the snapshot tables users bring: a telco export, a bank export and a SaaS
account table, with their real column names and quirks (ids like ``7590-VHVEG``, ``TotalCharges``
as text with blank ``" "`` values, ``No internet service`` categories, a ``RowNumber`` index and a
``Surname`` column, flags as 0/1, Yes/No and true/false, dates as text) and a churn flag drawn
from a logistic of a few columns, so a model has something real to find.

``python -m tests.foreign_tables OUT_DIR [ROWS]`` writes ``telco.csv``, ``bank.csv`` and
``saas.csv`` for trying churnflow by hand; the tests call the functions directly.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SURNAMES = ["Hargrave", "Onio", "Mitchell", "Chu", "Bartlett", "Obinna", "Boni", "Kay", "Genovese",
            "Maclean", "Trevisani", "Hsueh", "Akhtar", "Fiorentini", "Yeh", "Scott", "Lombardo",
            "Nwachukwu", "Romeo", "Kuo", "Okwudilichukwu", "Sutherland", "Azikiwe", "Capon"]


def _surnames(rng: np.random.Generator, rows: int) -> np.ndarray:
    """About one distinct surname per three customers, as in a real bank export (Smith repeats)."""
    stems = np.array(SURNAMES)
    pool = np.array([f"{a}{b[1:].lower()}" if i % 2 else a for i, (a, b) in
                     enumerate(zip(rng.choice(stems, rows), rng.choice(stems, rows), strict=True))])
    return rng.choice(np.unique(pool)[: max(rows // 3, 5)], rows)


def _churn(rng: np.random.Generator, logit: np.ndarray) -> np.ndarray:
    return rng.random(len(logit)) < 1 / (1 + np.exp(-logit))


def telco(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """The telco export: ``TotalCharges`` as text with blanks for brand-new customers."""
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_uppercase))
    ids = [f"{rng.integers(1000, 9999)}-{''.join(rng.choice(letters, 5))}" for _ in range(rows)]
    tenure = rng.integers(0, 73, rows)
    tenure[rng.choice(rows, max(rows // 600, 2), replace=False)] = 0
    phone = rng.random(rows) < 0.9
    internet = rng.choice(["DSL", "Fiber optic", "No"], rows, p=[0.35, 0.45, 0.2])
    contract = rng.choice(["Month-to-month", "One year", "Two year"], rows, p=[0.55, 0.2, 0.25])
    monthly = np.round(np.where(internet == "No", 20, np.where(internet == "DSL", 55, 85))
                       + rng.normal(0, 8, rows) + phone * 5, 2)

    def service(p: float) -> np.ndarray:
        return np.where(internet == "No", "No internet service", np.where(rng.random(rows) < p, "Yes", "No"))

    security = service(0.35)
    total = np.where(tenure == 0, " ", np.round(monthly * tenure, 2).astype(str))
    logit = (-1.2 + 1.4 * (contract == "Month-to-month") - 0.03 * tenure + 0.8 * (internet == "Fiber optic")
             - 0.6 * (security == "Yes"))
    return pd.DataFrame({
        "customerID": ids,
        "gender": rng.choice(["Female", "Male"], rows),
        "SeniorCitizen": (rng.random(rows) < 0.16).astype(int),
        "Partner": rng.choice(["Yes", "No"], rows),
        "Dependents": rng.choice(["Yes", "No"], rows, p=[0.3, 0.7]),
        "tenure": tenure,
        "PhoneService": np.where(phone, "Yes", "No"),
        "MultipleLines": np.where(phone, rng.choice(["Yes", "No"], rows), "No phone service"),
        "InternetService": internet,
        "OnlineSecurity": security,
        "OnlineBackup": service(0.4),
        "TechSupport": service(0.35),
        "StreamingTV": service(0.5),
        "Contract": contract,
        "PaperlessBilling": rng.choice(["Yes", "No"], rows, p=[0.6, 0.4]),
        "PaymentMethod": rng.choice(["Electronic check", "Mailed check", "Bank transfer (automatic)",
                                     "Credit card (automatic)"], rows),
        "MonthlyCharges": monthly,
        "TotalCharges": total,
        "Churn": np.where(_churn(rng, logit), "Yes", "No"),
    })


def bank(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """The bank export: a ``RowNumber`` index, numeric ids, a ``Surname`` and 0/1 flags."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(39, 10, rows).round(), 18, 92).astype(int)
    products = rng.choice([1, 2, 3, 4], rows, p=[0.5, 0.46, 0.03, 0.01])
    active = (rng.random(rows) < 0.5).astype(int)
    geography = rng.choice(["France", "Spain", "Germany"], rows, p=[0.5, 0.25, 0.25])
    balance = np.where(rng.random(rows) < 0.35, 0.0, np.round(rng.normal(120000, 30000, rows), 2))
    logit = (-1.3 + 0.07 * (age - 39) - 0.9 * active + 0.7 * (geography == "Germany")
             + 1.5 * (products >= 3) - 0.5 * (products == 2))
    return pd.DataFrame({
        "RowNumber": np.arange(1, rows + 1),
        "CustomerId": rng.choice(np.arange(15565701, 15815690), rows, replace=False),
        "Surname": _surnames(rng, rows),
        "CreditScore": rng.normal(650, 95, rows).clip(350, 850).round().astype(int),
        "Geography": geography,
        "Gender": rng.choice(["Female", "Male"], rows),
        "Age": age,
        "Tenure": rng.integers(0, 11, rows),
        "Balance": balance,
        "NumOfProducts": products,
        "HasCrCard": (rng.random(rows) < 0.7).astype(int),
        "IsActiveMember": active,
        "EstimatedSalary": np.round(rng.uniform(11, 199990, rows), 2),
        "Exited": _churn(rng, logit).astype(int),
    })


def saas(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """The SaaS account table: ids with leading zeros, signup dates as text, ``true``/``false``."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(["starter", "team", "business", "enterprise"], rows, p=[0.4, 0.3, 0.2, 0.1])
    seats = np.maximum(1, rng.poisson(np.select([plan == "starter", plan == "team", plan == "business"],
                                                [2, 8, 25], 80)))
    price = np.select([plan == "starter", plan == "team", plan == "business"], [15, 12, 10], 8)
    logins = rng.poisson(seats * rng.gamma(1.5, 8, rows))
    tickets = rng.poisson(1.5, rows)
    signup = pd.Timestamp("2026-10-01") - pd.to_timedelta(rng.integers(30, 1100, rows), unit="D")
    logit = 0.3 - 1.0 * np.log1p(logins / seats) + 0.35 * tickets - 0.6 * (plan == "enterprise")
    return pd.DataFrame({
        "account_id": [f"{i:06d}" for i in rng.choice(999999, rows, replace=False)],
        "plan": plan,
        "seats": seats,
        "mrr": (seats * price).astype(float),
        "monthly_logins": logins,
        "reports_created": rng.poisson(seats * 1.5),
        "support_tickets": tickets,
        "signup_date": signup.strftime("%Y-%m-%d"),
        "churned": np.where(_churn(rng, logit), "true", "false"),
    })


TABLES = {"telco": telco, "bank": bank, "saas": saas}


if __name__ == "__main__":  # pragma: no cover - a convenience for trying churnflow by hand
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, make in TABLES.items():
        make(*(int(a) for a in sys.argv[2:3])).to_csv(out / f"{name}.csv", index=False)
