"""The benchmark scripts keep working: each runs here in its smoke mode (a tiny model, seconds) and writes its JSON."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_bench_train_fast_smoke(tmp_path, isolated_cache):
    out = tmp_path / "fast.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))          # the session cache of tiny models (conftest)
    subprocess.run([sys.executable, "bench_train_fast.py", "--smoke", "--out", str(out)], check=True, env=env,
                   cwd=ROOT / "tests" / "benchmarks", capture_output=True, timeout=300)
    res = json.loads(out.read_text())
    assert set(res["ways"]) == {"baseline", "fast"} and res["environment"]["cpu_count"]
    for row in res["ways"].values():
        assert row["real_tokens"] == res["ways"]["baseline"]["real_tokens"] > 0    # the same examples both ways
        assert 0 <= row["padding_share"] < 1 and row["tokens_per_s"] > 0 and row["steps"] > 0
    assert res["ways"]["fast"]["steps"] < res["ways"]["baseline"]["steps"]           # the larger batch
