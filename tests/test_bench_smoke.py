"""bench/bench.py runs end to end on the CPU in its CI-sized form (no peer, no speed assertions)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_runs_on_cpu_without_the_peer(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--device", "cpu", "--threads", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| measurement |" in result.stdout
    data = json.loads(out.read_text())
    names = [row["name"] for row in data["rows"]]
    for expected in ("sample b1", "sample b2", "MaskGit train step", "C-ViViT train step", "tokenizer encode",
                     "tokenizer decode"):
        assert any(name.startswith(expected) for name in names), (expected, names)
    for row in data["rows"]:
        assert row["ours_s"] > 0 and "peer_s" not in row
    sampling = [row for row in data["rows"] if row["name"].startswith("sample")]
    assert all(row["gflop"] > 0 and row["ours_peak_pct"] > 0 for row in sampling)
    assert data["header"]["matmul_peak"]["fp32"] > 0
