#!/usr/bin/env python3
"""The GPU check's measurements beyond bench.py's timing table, one JSON file each.

    python bench/gpu_extras.py agreement --config L --device cuda --json out/agreement.json
    python bench/gpu_extras.py attention --config L --device cuda --json out/attention.json
    python bench/gpu_extras.py profile   --config L --device cuda --json out/profile.json

- agreement: bf16 against fp32 weights at the same seed and inputs: the step-0 guided logits
  (max and mean absolute error, relative to the fp32 logits' spread; argmax agreement) and the
  whole sample's token agreement.
- attention: one MaskGit self-attention at the config's sequence length (the guidance rows of a
  b8 sample: 16 rows): SDPA with the dense (h, n, n) bias (the memory-efficient kernel), SDPA's
  cuDNN backend with the bias where available, FlexAttention reading the bias table, and SDPA
  without a bias (the flash floor); forward, and forward+backward with the bias trained.
- profile: one eager bf16 sample under torch.profiler, device time split into matmul,
  attention, the sampler tail (``choose_tokens`` and the re-mask), other elementwise work, and
  host gaps (wall time the device sat idle).
- story: the bundled model's 3-scene story (the story workflow's settings), sampling + decode,
  warm, eager and with CUDA-graph replay (``compile=True``).

Every subcommand also runs on the CPU with ``--config tiny`` (the CI dry run); it asserts nothing
about speed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from phenaki_core import CriticConfig, Phenaki, SamplerConfig, TextCondition, preset, sample_ids  # noqa: E402
from phenaki_core import sampling  # noqa: E402
from phenaki_core.guided_model import GuidedModel  # noqa: E402
from phenaki_core.kernels import RelativeBias, attention  # noqa: E402

TEXT_LEN = 16


def build(config_name: str, device: torch.device, seed: int = 1) -> tuple[Phenaki, int, int]:
    config = preset(config_name).replace(critic=CriticConfig(kind="none"))
    frames = 17 if config_name != "tiny" else 9
    steps = 18 if config_name != "tiny" else 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Phenaki(config).to(device).eval()
    return model, frames, steps


def text_for(model: Phenaki, batch: int, device: torch.device, dtype=torch.float32) -> TextCondition:
    g = torch.Generator().manual_seed(7)
    embeds = torch.randn(batch, TEXT_LEN, model.config.maskgit.text_dim, generator=g)
    return TextCondition(embeds.to(device, dtype), torch.ones(batch, TEXT_LEN, dtype=torch.bool, device=device))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> dict:
    fn()  # warm-up (compile, caches): not counted
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


# --- agreement ------------------------------------------------------------------------------------
@torch.no_grad()
def agreement(args, device: torch.device) -> dict:
    fp32, frames, steps = build(args.config, device)
    bf16 = Phenaki(fp32.config).to(device).eval()
    bf16.load_state_dict(fp32.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    token_shape = fp32.config.cvivit.token_shape(frames)
    n = math.prod(token_shape)
    result = {}
    for batch in args.batches:
        text = text_for(fp32, batch, device)
        ids = torch.full((batch, n), fp32.maskgit.mask_id, device=device)
        positions = torch.arange(n, device=device).expand(batch, -1)
        ref = GuidedModel(fp32, text, None, None, token_shape, 3.0).logits(ids, positions).float()
        low = GuidedModel(bf16, text, None, None, token_shape, 3.0).logits(ids, positions).float()
        err = (low - ref).abs()
        sampler = SamplerConfig(steps=steps)
        tokens = [sample_ids(m, text, num_frames=frames, sampler=sampler,
                             generator=torch.Generator(device).manual_seed(0)) for m in (fp32, bf16)]
        result[f"b{batch}"] = {
            "step0_logits_max_abs_err": err.max().item(), "step0_logits_mean_abs_err": err.mean().item(),
            "step0_logits_std_fp32": ref.std().item(),
            "step0_argmax_agreement": (low.argmax(-1) == ref.argmax(-1)).float().mean().item(),
            "sample_token_agreement": (tokens[0] == tokens[1]).float().mean().item()}
        print(f"agreement b{batch}: {result[f'b{batch}']}", flush=True)
    return result


# --- attention ------------------------------------------------------------------------------------
def attention_bench(args, device: torch.device) -> dict:
    model, frames, _ = build(args.config, device)
    cfg = model.config.maskgit
    grid = model.config.cvivit.token_shape(frames)
    n, heads, dim_head = math.prod(grid), cfg.heads, cfg.dim_head
    rows = 16 if args.config != "tiny" else 2
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(rows, heads, n, dim_head, device=device, dtype=dtype, generator=g) for _ in range(3))
    with torch.no_grad():
        relative = model.maskgit.relative_bias(grid).to(dtype)
        dense = relative.dense()
    flex = RelativeBias(relative.table, grid, flex=True)
    results = {"shape": [rows, heads, n, dim_head], "dtype": str(dtype)}
    cases = {
        "sdpa dense bias": lambda: attention(q, k, v, scale=8.0, bias=dense),
        "flex bias table": lambda: attention(q, k, v, scale=8.0, bias=flex),
        "sdpa no bias (floor)": lambda: F.scaled_dot_product_attention(q, k, v, scale=8.0),
    }
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def cudnn():
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=dense[None], scale=8.0)
        cases["sdpa cudnn dense bias"] = cudnn
    with torch.no_grad():
        reference = cases["sdpa dense bias"]()
    for name, fn in cases.items():
        try:
            with torch.no_grad():
                out = fn()
                error = None if "floor" in name else (out.float() - reference.float()).abs().max().item()
                results[f"{name} forward"] = {**timed(lambda: fn(), device, args.repeats), "max_abs_err": error}
        except Exception as exc:  # noqa: BLE001 - a backend missing on this device is a result too
            results[f"{name} forward"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(name, results[f"{name} forward"], flush=True)
    # forward + backward with a trainable bias (training): dense SDPA vs Flex with the table trained
    qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))
    table = relative.table.detach().clone().requires_grad_()

    def dense_fb():
        attention(qg, kg, vg, scale=8.0, bias=RelativeBias(table, grid).dense()).sum().backward()

    def flex_fb():
        attention(qg, kg, vg, scale=8.0, bias=RelativeBias(table, grid, flex=True)).sum().backward()

    for name, fn in (("sdpa dense bias fwd+bwd", dense_fb), ("flex bias table fwd+bwd", flex_fb)):
        try:
            results[name] = timed(fn, device, args.repeats)
        except Exception as exc:  # noqa: BLE001
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(name, results[name], flush=True)
    return results


# --- profile --------------------------------------------------------------------------------------
CATEGORIES = (
    ("sampler tail", ("choose_tokens", "sampler_tail")),
    ("attention", ("flash", "fmha", "attention", "flex", "sdpa", "cudnn")),
    ("matmul", ("gemm", "matmul", "cutlass", "xmma", "aten::mm", "aten::addmm", "aten::bmm", "aten::linear",
                "cublas", "nvjet")),
)


def category(name: str) -> str:
    lower = name.lower()
    for label, keys in CATEGORIES:
        if any(key in lower for key in keys):
            return label
    return "elementwise and other"


def profile(args, device: torch.device) -> dict:
    from torch.profiler import ProfilerActivity, profile as torch_profile, record_function

    model, frames, steps = build(args.config, device)
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    text = text_for(model, args.batches[0], device, next(model.parameters()).dtype)
    sampler = SamplerConfig(steps=steps)
    original = sampling.choose_tokens

    def tail(*a, **k):  # label the sampler tail's kernels
        with record_function("sampler_tail"):
            return original(*a, **k)

    def run():
        sample_ids(model, text, num_frames=frames, sampler=sampler, generator=torch.Generator(device).manual_seed(0))

    sampling.choose_tokens = tail
    try:
        run()  # warm-up
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        start = time.perf_counter()
        with torch_profile(activities=activities) as prof:
            run()
            sync(device)
        wall = time.perf_counter() - start
    finally:
        sampling.choose_tokens = original
    split: dict[str, float] = {}
    if device.type == "cuda":
        tail_ids = set()
        events = prof.events()
        for event in events:  # kernels launched under the sampler_tail range
            if event.name == "sampler_tail":
                tail_ids.update(id(child) for child in _descendants(event))
        busy = 0.0
        for event in events:
            for kernel in getattr(event, "kernels", []):
                label = "sampler tail" if id(event) in tail_ids else category(kernel.name)
                split[label] = split.get(label, 0.0) + kernel.duration / 1e6
                busy += kernel.duration / 1e6
        split["host gaps (device idle)"] = max(0.0, wall - busy)
    else:  # CPU: self time of the leaf ops
        for item in prof.key_averages():
            label = category(item.key)
            split[label] = split.get(label, 0.0) + item.self_cpu_time_total / 1e6
    total = sum(split.values())
    result = {"wall_s": wall, "seconds": split, "share": {k: v / total for k, v in split.items()} if total else {}}
    print(json.dumps(result, indent=1), flush=True)
    return result


# --- story -----------------------------------------------------------------------------------------
STORY = ["a red circle moving right", "a red circle moving up", "a red circle moving left"]


@torch.no_grad()
def story(args, device: torch.device) -> dict:
    """The bundled model's 3-scene story (the story workflow's settings), sampling + decode, warm:
    eager and with CUDA-graph replay, at the bundled dtype auto (bf16 on such a GPU)."""
    from phenaki_core import load_bundle, make_video
    from phenaki_core.pipeline import default_checkpoint, resolve_dtype

    bundle = load_bundle(default_checkpoint())
    dtype = resolve_dtype("auto", device)
    model = bundle.model.to(device, dtype).eval()
    texts = _story_texts(bundle, device, dtype)
    result = {"dtype": str(dtype), "text": texts[1]}
    for compile in (False, True) if device.type == "cuda" else (False,):
        def run():
            return make_video(model, texts[0], 17, 5, sampler=SamplerConfig(steps=18, cond_scale=3.0),
                              generator=torch.Generator(device).manual_seed(7), compile=compile)
        first = time.perf_counter()
        videos = run()
        sync(device)
        result[f"{'graphs' if compile else 'eager'}"] = {**timed(run, device, args.repeats),
                                                          "first_call_s": time.perf_counter() - first,
                                                          "frames": videos.video.shape[2]}
        print(result, flush=True)
    return result


def _story_texts(bundle, device, dtype):
    try:
        from phenaki_core.text import load_text_encoder
        encoder = load_text_encoder(bundle.text_encoder, device=device)
        conditions, source = [encoder.encode([p], device=device) for p in STORY], "encoder"
    except Exception:  # noqa: BLE001 - no MiniLM on this machine: the carried embeddings
        from comfy_cuda_check import PrecomputedText
        encoder = PrecomputedText(ROOT / ".gpu_carry" / "prompts.safetensors", None)
        conditions, source = [encoder.encode([p], device=device) for p in STORY], "precomputed"
    return [TextCondition(c.embeds.to(dtype), c.mask) for c in conditions], source


def _descendants(event):
    stack = list(event.cpu_children)
    while stack:
        child = stack.pop()
        yield child
        stack.extend(child.cpu_children)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["agreement", "attention", "profile", "story"])
    parser.add_argument("--config", default="L", choices=["tiny", "S", "L"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", default="1,8", help="comma list of batch sizes (profile uses the first)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA GPU is available")
    result = {"agreement": agreement, "attention": attention_bench, "profile": profile,
              "story": story}[args.what](args, device)
    header = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "config": args.config, "command": " ".join(sys.argv)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"header": header, args.what: result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
