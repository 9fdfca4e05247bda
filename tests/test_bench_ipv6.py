"""The IPv6 rows of bench/throughput.py and bench/latency.py (issue 11), without a network:
the ``--family`` option, the 10 % verdict, the tables and the README rows built from them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import _common as c
import latency
import run_all
import throughput

MACHINE = {
    "cpu": "test",
    "cores": 2,
    "kernel": "6",
    "python": "3.11",
    "uvloop": "off",
    "checksum": "c",
    "load_average_1min": 0.0,
    "date": "2026-01-01 00:00 UTC",
}


def _families(text: str) -> list[int]:
    families: list[int] = c.families_of(argparse.Namespace(family=text))
    return families


def test_family_option_defaults_to_both_and_rejects_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(c, "ipv6_available", lambda: True)
    p = argparse.ArgumentParser()
    c.add_family_option(p)
    assert c.families_of(p.parse_args([])) == [4, 6]
    assert _families("6") == [6]
    assert _families("ipv6,4,6") == [4, 6]
    with pytest.raises(SystemExit):
        _families("5")
    monkeypatch.setattr(c, "ipv6_available", lambda: False)
    assert _families("4,6") == [4]
    with pytest.raises(SystemExit):
        _families("6")


def test_within_ten_percent_is_one_sided() -> None:
    assert c.within_tolerance(91.0, 100.0, higher_is_better=True) is True
    assert c.within_tolerance(89.0, 100.0, higher_is_better=True) is False
    assert c.within_tolerance(150.0, 100.0, higher_is_better=True) is True
    assert c.within_tolerance(109.0, 100.0, higher_is_better=False) is True
    assert c.within_tolerance(111.0, 100.0, higher_is_better=False) is False
    assert c.within_tolerance(float("nan"), 100.0, higher_is_better=False) is None
    assert c.verdict_line("x", 80.0, 100.0, higher_is_better=True).endswith(
        "IPv6 within 10 % of IPv4: not met"
    )


def _tp_row(family: int, direction: str, offload: str, mb_s: float) -> dict[str, Any]:
    return {
        "mtu": 1500,
        "offload": offload,
        "direction": direction,
        "family": family,
        "ustack_mb_s": mb_s,
        "kernel_mb_s": 1000.0,
        "ratio": mb_s / 1000.0,
        "ustack_cpu": 1.0,
        "ustack_runqueue_wait": 0.0,
        "target_mb_s": 500.0,
        "all_ok": True,
        "ustack_runs": [],
        "kernel_runs": [],
    }


def _tp_doc() -> dict[str, Any]:
    rows = []
    for offload, v4, v6 in (("on", 600.0, 570.0), ("off", 100.0, 80.0)):
        for d in throughput.DIRECTIONS:
            a, b = _tp_row(4, d, offload, v4), _tp_row(6, d, offload, v6)
            b.update(
                ipv4_ustack_mb_s=v4,
                ipv4_kernel_mb_s=1000.0,
                ratio_ipv6_ipv4=v6 / v4,
                kernel_ratio_ipv6_ipv4=1.0,
            )
            rows += [a, b]
    return {
        "size_bytes": 1,
        "seconds_limit": 1,
        "runs": 1,
        "families": [4, 6],
        "ipv6_tolerance": 0.1,
        "rows": rows,
        "machine": MACHINE,
    }


def test_throughput_table_has_ipv6_rows_ratios_and_verdicts() -> None:
    text = throughput.render(_tp_doc())
    table = [line.split() for line in text.splitlines() if line.lstrip().startswith("1500")]
    assert [row[3] for row in table] == ["IPv4", "IPv6"] * 4
    assert [row[7] for row in table if row[3] == "IPv6"] == ["0.95", "0.95", "0.80", "0.80"]
    verdicts = [line for line in text.splitlines() if "within 10 % of IPv4" in line]
    assert len(verdicts) == 4
    assert sum(line.endswith(": met [kernel IPv6/IPv4 1.00]") for line in verdicts) == 2
    assert sum(": not met" in line for line in verdicts) == 2


def _lat_summary(p50: float) -> dict[str, Any]:
    return {
        "p50_us": p50,
        "p99_us": p50 * 2,
        "mean_us": p50,
        "server_cpu_us_per_trip": 10.0,
        "server_wait_us_per_trip": 1.0,
        "all_ok": True,
    }


def _lat_doc() -> dict[str, Any]:
    summary = {
        "ustack": _lat_summary(50.0),
        "kernel": _lat_summary(20.0),
        "ustack_busy": _lat_summary(40.0),
        "ustack_ipv6": _lat_summary(60.0),
        "kernel_ipv6": _lat_summary(21.0),
        "ustack_busy_ipv6": _lat_summary(41.0),
    }
    return {
        "payload_bytes": 64,
        "count": 10,
        "warmup": 1,
        "runs": 1,
        "target_p50_us": 40.0,
        "busy_poll_us": 100,
        "families": [4, 6],
        "ipv6_tolerance": 0.1,
        "summary": summary,
        **latency.ratios(summary),
        "per_run": {},
        "calls": None,
        "median_run_samples_us": {},
        "machine": MACHINE,
    }


def test_latency_tables_per_family_and_verdicts() -> None:
    doc = _lat_doc()
    assert doc["ipv6_ipv4_ustack_p50"] == pytest.approx(1.2)
    text = latency.render(doc)
    assert "64 B echo RTT, IPv4" in text and "64 B echo RTT, IPv6" in text
    assert "ustack echo p50 (us): IPv6 60.0 vs IPv4 50.0" in text
    assert "ustack echo p50 (us): IPv6 60.0 vs IPv4 50.0 (IPv6/IPv4 1.20); IPv6 within 10 % of " \
        "IPv4: not met" in text  # fmt: skip
    assert "ustack --busy-poll echo p50 (us): IPv6 41.0 vs IPv4 40.0 (IPv6/IPv4 1.02); IPv6 " \
        "within 10 % of IPv4: met" in text  # fmt: skip


def test_readme_rows_add_ipv6_and_keep_old_results(tmp_path: Path) -> None:
    (tmp_path / "throughput.json").write_text(json.dumps(_tp_doc()))
    (tmp_path / "latency.json").write_text(json.dumps(_lat_doc()))
    rows, _ = run_all.performance_rows(tmp_path)
    v6 = [r for r in rows if "**IPv6**" in r[0]]
    assert [r[-1] for r in v6] == ["yes", "yes", "**no**", "**no**", "**no**"]
    assert v6[0][4] == "≥ 540.0 (IPv4 - 10 %)"
    assert v6[-1][0].startswith("64 B echo round trip, p50, **IPv6** (IPv6/IPv4 1.20)")
    # Results written before issue 11 (no family, no IPv6 keys) render as they did.
    old_tp = _tp_doc()
    old_tp["rows"] = [r for r in old_tp["rows"] if r["family"] == 4]
    for r in old_tp["rows"]:
        del r["family"]
    old_lat = _lat_doc()
    for key in ("ustack_ipv6", "kernel_ipv6", "ustack_busy_ipv6"):
        del old_lat["summary"][key]
    (tmp_path / "throughput.json").write_text(json.dumps(old_tp))
    (tmp_path / "latency.json").write_text(json.dumps(old_lat))
    rows, _ = run_all.performance_rows(tmp_path)
    assert not [r for r in rows if "IPv6" in r[0]]
    assert len([r for r in rows if r[0].startswith("bulk")]) == 4
