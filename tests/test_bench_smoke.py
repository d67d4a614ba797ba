"""The benchmark scripts keep working: each runs here on a tiny model in seconds (its figures mean nothing) and
writes its JSON, whose keys are checked; a change that breaks one fails the suite."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

BENCH = ROOT / "tests" / "benchmarks"


def _start(script, args, out):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")   # the session's cache of tiny models
    return subprocess.Popen([sys.executable, f"{script}.py", *args, "--out", str(out)], env=env, cwd=BENCH,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def smoke_runs(tiny_dirs, tiny_data, tmp_path_factory):
    """Every benchmark's smoke run, all at once (most of each is starting Python and torch): script -> (exit
    status, stderr's end, JSON or None)."""
    tmp = tmp_path_factory.mktemp("bench")
    procs = {name: _start(name, args(tmp, tiny_dirs, tiny_data), tmp / f"{name}.json")
             for name, (args, _) in SMOKE.items()}
    done = {}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        f = tmp / f"{name}.json"
        done[name] = (proc.returncode, err[-3000:], json.loads(f.read_text()) if f.is_file() else None)
    return done


def test_every_benchmark_script_has_a_smoke_run_here():
    scripts = {p.stem for p in BENCH.glob("bench_*.py")}
    assert scripts == set(SMOKE), scripts ^ set(SMOKE)


def _pair(tmp_path, tiny_dirs):
    pair = tmp_path / "pair"
    for s in ("mixed", "two-stage"):
        (pair / s).mkdir(parents=True)
        (pair / s / "model").symlink_to(tiny_dirs["tiny-llama"])
    return pair


SMOKE = {
    "bench_train_fast": (lambda t, d, data: ["--smoke"], {"ways", "environment", "cpu_capability"}),
    "bench_train_step": (lambda t, d, data: ["--model", "tiny-llama", "--repeats", "2"], {"environment"}),
    "bench_train_step_gpu": (lambda t, d, data: ["--model", "tiny-llama", "--device", "cpu", "--steps", "2",
                                                 "--warmup", "1", "--ways", "eager,fused"], {"ways", "environment"}),
    "bench_trace": (lambda t, d, data: ["--model", "tiny-llama", "--n-examples", "4", "--batch-size", "4",
                                        "--repeats", "1"], {"cpu_count", "load_average"}),
    "bench_patching": (lambda t, d, data: ["--model", "tiny-llama"], {"cpu_count", "load_average"}),
    "bench_consistency": (lambda t, d, data: ["--model", "tiny-llama", "--people", "2", "--repeats", "1"],
                          {"environment"}),
    "bench_head_restore": (lambda t, d, data: ["--base", str(d["tiny-llama"]), "--finetuned", str(d["tiny-llama"]),
                                               "--data", str(data), "--max-people", "2", "--layers", "0,1"],
                           {"speedup", "max_abs_diff", "peak_mem_ratio", "n_questions"}),
    "bench_side_by_side": (lambda t, d, data: ["--model", "tiny-llama", "--steps", "2", "--threads", "1"],
                           {"environment"}),
    "bench_analyses_side_by_side": (lambda t, d, data: ["--pair", str(_pair(t, d)), "--base", "tiny-llama",
                                                        "--people", "10", "--threads", "1"], {"environment"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_smoke(script, smoke_runs):
    code, err, res = smoke_runs[script]
    assert code == 0 and res is not None, err
    keys = SMOKE[script][1]
    assert keys <= set(res), keys - set(res)
    if script == "bench_train_fast":
        for row in res["ways"].values():
            assert row["real_tokens"] == res["ways"]["baseline"]["real_tokens"] > 0   # the same examples both ways
            assert 0 <= row["padding_share"] < 1 and row["tokens_per_s"] > 0
        assert res["ways"]["fast"]["steps"] < res["ways"]["baseline"]["steps"]       # the larger batch
    if script == "bench_head_restore":
        assert res["max_abs_diff"] == 0.0                                             # exact, as on the real model
