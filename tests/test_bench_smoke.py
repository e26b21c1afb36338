"""bench/bench.py runs end to end on the CPU in its CI-sized form (no peer, no speed assertions)."""

import json
import subprocess
import tarfile
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


def test_bench_profile_splits_each_training_step_into_op_families(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--quick", "--device", "cpu", "--threads", "1",
         "--only", "maskgit_train,cvivit_train", "--profile", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "### profile: C-ViViT train step" in result.stdout
    profiles = json.loads(out.read_text())["profiles"]
    assert sorted(profiles) == ["C-ViViT train step b2", "MaskGit train step b2"]
    for by_impl in profiles.values():
        prof = by_impl["ours fp32"]
        assert prof["total_s"] > 0 and prof["families"]["matmul"] > 0 and prof["top_ops"]
        assert abs(sum(prof["families"].values()) - prof["total_s"]) < 1e-6 * max(1.0, prof["total_s"]) + 1e-6


def test_precision_ab_runs_both_precisions_from_one_seed(tmp_path):
    out = tmp_path / "ab.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "precision_ab.py"), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    stage = json.loads(out.read_text())["tokenizer"]
    assert [(r["precision"], r["seed"]) for r in stage["runs"]] == [("fp32", 0), ("bf16", 0), ("fp32", 1)]
    assert all(len(r["losses"]) == 4 for r in stage["runs"])
    assert stage["runs"][0]["losses"] != stage["runs"][1]["losses"]  # bf16 really ran in bf16
    assert set(stage["final"]) == {"loss", "recon", "entropy"}
    assert isinstance(stage["final"]["recon"]["within_tolerance"], bool)


def test_gpu_check_script_dry_runs_on_cpu(tmp_path):
    """bench/gpu_check.sh is what a rare GPU runs as is: its CPU dry run keeps it from rotting."""
    import os
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "DRY_RUN": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True,
                            timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("exit 0") == 7, result.stdout
    assert [p.name for p in out.iterdir()] == ["gpu_check.tgz"]  # the device returns at most 8 files
    with tarfile.open(out / "gpu_check.tgz") as archive:
        archive.extractall(out, filter="data")
    assert "joined process group: rank 0 of 1 (gloo)" in (out / "torchrun.log").read_text()
    sample = json.loads((out / "bench_sample.json").read_text())
    assert {row["ours"] for row in sample["rows"]} == {"fp32 eager-sdpa", "fp32 eager-flex"}
    assert all(row["ours_first_s"] > 0 and row["ours_times"] for row in sample["rows"])
    train = json.loads((out / "bench_train.json").read_text())
    assert [row["name"].split(" train")[0] for row in train["rows"]] == ["MaskGit", "C-ViViT"]
    agreement = json.loads((out / "agreement.json").read_text())["agreement"]
    assert 0 <= agreement["b1"]["step0_logits_max_abs_err"] < 1 and agreement["b1"]["step0_argmax_agreement"] > 0.9
    attention = json.loads((out / "attention.json").read_text())["attention"]
    assert attention["flex bias table forward"]["max_abs_err"] < 1e-4
    story = json.loads((out / "story.json").read_text())["story"]
    assert story["eager"]["frames"] == 41 and story["eager"]["median_s"] > 0
    shares = json.loads((out / "profile.json").read_text())["profile"]["share"]
    assert abs(sum(shares.values()) - 1) < 1e-6 and shares["matmul"] > 0 and shares["sampler tail"] > 0


def test_precomputed_prompts_stand_in_for_the_text_encoder(tmp_path):
    """The GPU check's ComfyUI step may run where MiniLM is not installed: the workflows' prompts,
    encoded beforehand (one at a time), must give what the encoder gives (batching only rounds)."""
    import torch
    sys.path.insert(0, str(ROOT / "bench"))
    from comfy_cuda_check import PrecomputedText, prepare_text, prompts_of, workflows
    from phenaki_core.text import load_minilm

    prompts = prompts_of(workflows())
    assert len(prompts) >= 3 and all("\n" not in p for p in prompts)
    prepare_text(tmp_path / "prompts.safetensors")
    stand_in, encoder = PrecomputedText(tmp_path / "prompts.safetensors", None), load_minilm()
    ours, real = stand_in.encode(prompts), encoder.encode(prompts)
    assert torch.equal(ours.mask, real.mask)
    torch.testing.assert_close(ours.embeds, real.embeds, atol=1e-5, rtol=1e-5)
