"""The report in a real headless browser: the script runs, search and sort work, it renders.

Skipped when Debian's ``/usr/bin/chromium`` is absent (CI installs it). The browser runs with
networking-related background features off, so the test also shows the page needs no network.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from churnflow.serving.report import render_report

CHROMIUM = Path("/usr/bin/chromium")
GAINS = [  # two deciles of training.evaluate.gains_table
    {"decile": 1, "n": 10, "churners": 4, "churn_rate": 0.4, "min_score": 0.5, "max_score": 0.9,
     "cum_share": 0.1, "cum_recall": 0.4, "cum_lift": 4.0},
    {"decile": 2, "n": 90, "churners": 6, "churn_rate": 0.067, "min_score": 0.0, "max_score": 0.5,
     "cum_share": 1.0, "cum_recall": 1.0, "cum_lift": 1.0},
]
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")


def _page(tmp_path: Path) -> Path:
    lst = pd.DataFrame(
        {
            "rank": pd.array([1, 2, 3], dtype="Int64"),
            "customer_id": ["c-17", "c-03", "c-42"],
            "churn_probability": [0.61, 0.93, 0.25],
            "risk_tier": ["high", "high", "medium"],
            "value_at_risk": [900.0, 120.5, 80.0],
            "segment": ["loyal", "at risk", "new"],
            "reason_1": ["no activity for 63 days", "<script>alert(1)</script>", "plan is basic"],
            "reason_2": ["", "", ""],
            "reason_3": ["", "", ""],
            "recommended_action": ["loyalty reward", "win-back offer", "onboarding check-in"],
            "channel": ["email", "email", "email"],
            "status": ["new", "still on", "new"],
        }
    )
    summary = {"as_of": "2024-03-04", "n_scored": 1000, "n_contactable": 3, "capacity": 3}
    drift = pd.DataFrame({"feature": ["recency_days"], "psi": [0.02], "status": ["ok"]})
    path = tmp_path / "report.html"
    path.write_text(render_report(summary, lst, GAINS, drift), encoding="utf-8")
    return path


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _dom(tmp_path: Path, url: str) -> str:
    result = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", url)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _list_rows(dom: str) -> list[tuple[str, bool]]:
    """(customer id, visible) for each list row, in DOM order."""
    body = dom.split('id="list"', 1)[1].split("</table>", 1)[0]
    rows = []
    for tr in re.findall(r"<tr[^>]*data-i=[^>]*>.*?</tr>", body, flags=re.S):
        cid = re.findall(r'data-v="(c-\d+)"', tr)[0]
        rows.append((cid, "display: none" not in tr.split(">", 1)[0]))
    return rows


def test_script_runs_and_rows_are_in_the_dom(tmp_path: Path) -> None:
    page = _page(tmp_path)
    dom = _dom(tmp_path, page.as_uri())
    assert 'data-ready="1"' in dom  # set by the script after it ran
    assert "3 of 3 customers shown" in dom
    assert _list_rows(dom) == [("c-17", True), ("c-03", True), ("c-42", True)]
    assert "<script>alert(1)</script>" not in dom.split('id="list"', 1)[1]


def test_search_and_sort_from_url(tmp_path: Path) -> None:
    page = _page(tmp_path)
    dom = _dom(tmp_path, page.as_uri() + "#q=win-back")
    assert _list_rows(dom) == [("c-17", False), ("c-03", True), ("c-42", False)]
    assert "1 of 3 customers shown" in dom
    dom = _dom(tmp_path, page.as_uri() + "#sort=churn_probability:desc")
    assert [cid for cid, _ in _list_rows(dom)] == ["c-03", "c-17", "c-42"]
    assert 'aria-sort="descending"' in dom
    dom = _dom(tmp_path, page.as_uri() + "#sort=segment:asc")
    assert [cid for cid, _ in _list_rows(dom)] == ["c-03", "c-17", "c-42"]


def test_screenshot_is_a_png(tmp_path: Path) -> None:
    page = _page(tmp_path)
    shot = tmp_path / "shot.png"
    result = _chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000  # a rendered page, not a blank image
    if shutil.which("file"):
        assert "PNG image" in subprocess.run(["file", str(shot)], capture_output=True, text=True, check=False).stdout


def test_history_of_past_lists_renders_as_pictures(tmp_path: Path) -> None:
    from churnflow.serving.outcomes import Outcomes, latest_version_alarm

    cards = [{"as_of": day, "horizon_closed": True, "horizon_end": "2024-06-01", "model_version": "2",
              "model_test_roc_auc": 0.86, "predicted_churn_rate": 0.2, "realised_churn_rate": 0.22,
              "model_quality": {"roc_auc": auc, "list_lift": 2.5},
              "campaign": {"difference": -0.04, "difference_ci95": [-0.07, -0.01],
                           "verdict": "The outreach reduced churn by 4.0 percentage points"}}
             for day, auc in (("2024-01-01", 0.84), ("2024-01-08", 0.74), ("2024-01-15", 0.73))]
    outcomes = Outcomes(cards=cards, estimates=[{"as_of": "2024-03-04", "horizon_closed": False,
                                                 "estimate_before_horizon": {"churn_rate": 0.2, "roc_auc": 0.8}}],
                        alarm=latest_version_alarm(cards, 0.05))
    page = tmp_path / "history.html"
    empty = pd.DataFrame(columns=["rank", "customer_id", "status"])
    page.write_text(render_report({"as_of": "2024-03-11"}, empty, outcomes=outcomes), encoding="utf-8")
    dom = _dom(tmp_path, page.as_uri())
    history = dom.split('id="history"', 1)[1].split("</section>", 1)[0]
    assert history.count("<svg") == 4 and history.count("<polyline") >= 5
    assert history.count('class="interval"') == 3  # the campaign effect's 95 % intervals
    assert "Recommendation: retrain the model" in history and "horizon open" in history
