"""Stage wall times as metrics: the record each stage writes (specdraft.stages._cli) and the
report's tables (specdraft.report.times)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from specdraft.io import InputError
from specdraft.report.times import by_family, load_times, stage_times_metrics, times_table


def _write(root, name, wall, finished, cpu="AMD EPYC (family 26, model 2)"):
    f = root / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"wall_s": wall, "cpu": cpu, "cores": 2, "finished": finished}))


def test_times_are_grouped_by_family_in_the_order_they_ran(tmp_path):
    _write(tmp_path, "prepare/gsm8k.json", 4.0, "2026-12-07T10:00:04Z")
    _write(tmp_path, "prepare/math.json", 6.0, "2026-12-07T10:00:10Z")
    _write(tmp_path, "base_models.json", 10.0, "2026-12-07T10:00:20Z")
    _write(tmp_path, "evaluate/gsm8k-cot.json", 50.0, "2026-12-07T10:01:20Z")
    _write(tmp_path, "evaluate/gsm8k-cod.json", 30.0, "2026-12-07T10:01:10Z")
    times = load_times(tmp_path)
    assert list(times) == ["prepare@gsm8k", "prepare@math", "base_models", "evaluate@gsm8k-cod", "evaluate@gsm8k-cot"]
    fams = by_family(times)
    assert list(fams) == ["prepare", "base_models", "evaluate"]
    assert fams["evaluate"] == {"stages": 2, "wall_s": 80.0, "share": 0.8, "slowest": "evaluate@gsm8k-cot",
                                "slowest_s": 50.0}
    m = stage_times_metrics(times)
    assert m["total_s"] == 100.0 and m["family_s"] == {"prepare": 10.0, "base_models": 10.0, "evaluate": 80.0}
    assert m["stage_s"]["evaluate@gsm8k-cot"] == 50.0
    assert m["machines"] == ["AMD EPYC (family 26, model 2), 2 cores"]
    table = "\n".join(times_table(times))
    assert "| evaluate | 2 | 80 s | 80 % | evaluate@gsm8k-cot (50 s) |" in table
    assert "| **total** | 5 | **100 s** | 100 % | |" in table
    assert times_table({}) == []


def test_a_broken_time_record_names_the_file_and_field(tmp_path):
    (tmp_path / "kernels.json").write_text(json.dumps({"wall": 3}))
    with pytest.raises(InputError, match=r"kernels.json: field 'wall_s'"):
        load_times(tmp_path)


def test_a_stage_writes_its_wall_time_and_machine_only_on_success(tmp_path, root):
    """The real entry point (compare's, the cheapest) with --times: the record holds the
    process's wall time, start-up included, and the CPU; a failing stage writes none."""
    out = tmp_path / "t" / "compare.json"
    code = ("import argparse, time; from specdraft.stages._cli import run\n"
            "def main(a):\n"
            "    time.sleep(0.5)\n"
            "    if a.fail: from specdraft.io import InputError; raise InputError('x.jsonl:3: bad')\n"
            "p = argparse.ArgumentParser(); p.add_argument('--fail', action='store_true'); run(main, p)\n")
    r = subprocess.run([sys.executable, "-c", code, "--times", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert 0.5 <= rec["wall_s"] < 30 and rec["cores"] >= 1 and rec["cpu"] and rec["finished"].endswith("Z")
    assert "threads" not in rec  # torch was never imported: the record does not import it either
    out.unlink()
    r = subprocess.run([sys.executable, "-c", code, "--times", str(out), "--fail"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "x.jsonl:3: bad" in r.stderr and not out.exists()


def test_the_ci_time_table_keeps_fixture_setup_apart_from_calls():
    from specdraft.tools.test_times import per_file, table

    rows = [{"nodeid": "tests/test_e2e.py::test_a", "when": "setup", "duration": 600.0, "outcome": "passed"},
            {"nodeid": "tests/test_e2e.py::test_a", "when": "call", "duration": 30.0, "outcome": "passed"},
            {"nodeid": "tests/test_e2e.py::test_b", "when": "setup", "duration": 0.5, "outcome": "passed"},
            {"nodeid": "tests/test_e2e.py::test_b", "when": "call", "duration": 9.5, "outcome": "failed"},
            {"nodeid": "tests/test_x.py::test_c", "when": "setup", "duration": 0.1, "outcome": "skipped"},
            {"nodeid": "tests/test_x.py::test_d", "when": "call", "duration": 2.0, "outcome": "passed"}]
    files = per_file(rows)
    assert list(files) == ["tests/test_e2e.py", "tests/test_x.py"]
    assert files["tests/test_e2e.py"] == {"tests": 2, "setup_s": 600.5, "call_s": 39.5, "teardown_s": 0.0,
                                          "total_s": 640.0}
    assert files["tests/test_x.py"]["tests"] == 2
    text = table(rows)
    assert "| tests/test_e2e.py | 2 | 600 s | 40 s | 640 s | 100 % |" in text
    assert "- 600 s  tests/test_e2e.py::test_a" in text.splitlines()[-3]
