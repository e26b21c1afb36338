#!/usr/bin/env python3
"""Speed and memory of phenaki_core, side by side with phenaki-pytorch 0.5.0 (the peer).

    python bench/bench.py --config S --device cpu [--peer] [--quick] [--threads N] [--profile] [--json out.json]

Both implementations get the same architecture (our preset -> peer kwargs, bench/peer.py), random
weights (the MaskGit weights are identical: the peer's are converted with phenaki_core.convert),
random text embeddings, and run in this one process on one device. Measured, per precision:

    sample b1 / b8   17 frames, 18 steps, cond_scale 3, no critic (confidence re-masking), ending
                     in decoded pixels: ours = Phenaki.sample + CViViT.decode_from_ids, the peer's
                     Phenaki.sample decodes itself
    maskgit train    batch 8, precomputed codes, text embeddings given, no critic in either:
                     forward (masked-token cross-entropy) + backward + Adam step
    cvivit train     batch 8 clips: forward + reconstruction loss + backward + Adam step (peer:
                     use_vgg_and_gan=False; ours adds the LFQ commit/entropy terms the peer computes
                     but drops)
    encode / decode  the tokenizer alone, batch 1, no grad

Each cell is the median of the timed repeats (ours and the peer alternate). Peak memory is
torch.cuda.max_memory_allocated above the level before the call on CUDA; on the CPU it is the
peak resident-set growth during the (untimed) warm-up call, sampled every 5 ms: a coarse number.
For sampling the script counts the FLOPs of our forward passes (FlopCounterMode, CPU attention
kernel included) and reports both implementations against the matmul peak measured in this run.
Precisions: ours fp32 and bf16 (bf16 weights for sampling, autocast for training); the peer fp32,
TF32 (CUDA) and bf16 autocast, each ratio against the peer's fastest. bf16 on the CPU is fast only
where the CPU has bf16 matrix units (AMX, AVX512-BF16). ``--quick`` runs the tiny preset once, for CI; it asserts nothing about
speed.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):  # phenaki_core from this checkout (the peer's venv lacks it); bench/peer.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count  # noqa: E402

from phenaki_core import CriticConfig, Phenaki, SamplerConfig, TextCondition, preset, sample_ids  # noqa: E402
from phenaki_core.convert import convert_peer_state_dict  # noqa: E402

TEXT_LEN = 16
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}


class tf32_matmuls:
    """Allow TF32 matmuls (CUDA) inside the block, restoring the previous setting after."""

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved
        return False


# --------------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------------


class RSSPeak:
    """Peak resident-set growth of this process while active (sampled by a thread, Linux /proc)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.available = Path("/proc/self/statm").exists()

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def __enter__(self):
        self.peak = self.start = self._rss() if self.available else 0
        self._stop = threading.Event()
        if self.available:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self._thread.join()
            self.peak = max(self.peak, self._rss())
        return False

    @property
    def delta(self) -> Optional[int]:
        return self.peak - self.start if self.available else None


@dataclass
class Cell:
    times: list = field(default_factory=list)  # timed runs only: warm-ups are never counted
    peak_bytes: Optional[int] = None
    first_s: Optional[float] = None  # the first (warm-up) call: compile, graph recording, caches

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.times) if self.times else None

    @property
    def spread(self) -> Optional[tuple[float, float]]:
        return (min(self.times), max(self.times)) if self.times else None


class Timer:
    def __init__(self, device: torch.device, repeats: int, warmup: int, budget_s: float):
        self.device, self.repeats, self.warmup, self.budget_s = device, repeats, warmup, budget_s

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _once(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def _memory(self, fn: Callable[[], object]) -> tuple[Optional[int], float]:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            elapsed = self._once(fn)
            return torch.cuda.max_memory_allocated(self.device) - base, elapsed
        with RSSPeak() as rss:
            elapsed = self._once(fn)
        return rss.delta, elapsed

    def compare(self, fns: dict[str, Callable[[], object]]) -> dict[str, Cell]:
        """Warm up each fn (its first call measures memory and is reported apart), then alternate
        timed runs: ``repeats`` each, and more while the budget lasts (up to 3x repeats).
        With warmup 0 (``--quick``) the single call is the timed run."""
        cells = {name: Cell() for name in fns}
        for name, fn in fns.items():
            cells[name].peak_bytes, cells[name].first_s = self._memory(fn)
            if self.warmup == 0:
                cells[name].times.append(cells[name].first_s)
            for _ in range(self.warmup - 1):
                self._once(fn)
        spent = 0.0
        while True:
            runs = min(len(c.times) for c in cells.values())
            if runs >= self.repeats and (spent > self.budget_s or runs >= 3 * self.repeats):
                break
            for name, fn in fns.items():
                elapsed = self._once(fn)
                cells[name].times.append(elapsed)
                spent += elapsed
        return cells


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """Best FLOP/s of an n x n x n matmul (the device's practical dense peak for this dtype)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timer = Timer(device, 1, 0, 0)
    for _ in range(2):
        timer._once(lambda: a @ b)
    best, spent = float("inf"), 0.0
    while spent < seconds or best == float("inf"):
        elapsed = timer._once(lambda: a @ b)
        best, spent = min(best, elapsed), spent + elapsed
    return 2 * n**3 / best


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of fn's matmuls and attention (FlopCounterMode, plus the CPU flash-attention kernel)."""
    custom = {}
    cpu_flash = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_flash is not None:
        def cpu_flash_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs):
            return sdpa_flop_count(q_shape, k_shape, v_shape)
        custom[cpu_flash.default] = cpu_flash_flops
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        fn()
    return counter.get_total_flops()


# --------------------------------------------------------------------------------------------------
# workloads
# --------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    name: str  # preset
    config: object
    frames: int
    steps: int
    sample_batches: tuple
    train_batch: int
    coding_batch: int


def make_setup(config_name: str, quick: bool) -> Setup:
    if quick:
        config = preset("tiny").replace(critic=CriticConfig(kind="none"))
        return Setup("tiny", config, frames=9, steps=2, sample_batches=(1, 2), train_batch=2, coding_batch=1)
    config = preset(config_name).replace(critic=CriticConfig(kind="none"))
    return Setup(config_name, config, frames=17, steps=18, sample_batches=(1, 8), train_batch=8, coding_batch=1)


class Workloads:
    """Builds the callables that are timed: ours, and the peer's when it is built."""

    def __init__(self, setup: Setup, device: torch.device, with_peer: bool, seed: int = 0):
        self.setup, self.device = setup, device
        cfg = setup.config
        self.text_dim = cfg.maskgit.text_dim
        self.token_shape = cfg.cvivit.token_shape(setup.frames)
        self.peer = None
        if with_peer:
            from peer import build_peer  # bench/peer.py; imports phenaki_pytorch

            self.peer = build_peer(cfg, steps=setup.steps, device=device, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.ours = Phenaki(cfg).to(device).eval()
        if self.peer is not None:  # identical MaskGit weights
            self.ours.maskgit.load_state_dict(convert_peer_state_dict(self.peer.maskgit.state_dict()), strict=True)
        self.gen = torch.Generator(device="cpu").manual_seed(seed + 2)

    # inputs -----------------------------------------------------------------------------------
    def text(self, batch: int) -> torch.Tensor:
        return torch.randn(batch, TEXT_LEN, self.text_dim, generator=self.gen).to(self.device)

    def video(self, batch: int) -> torch.Tensor:
        c = self.setup.config.cvivit
        return torch.rand(batch, c.channels, self.setup.frames, c.image_size, c.image_size,
                          generator=self.gen).to(self.device)

    def ids(self, batch: int) -> torch.Tensor:
        return torch.randint(0, self.setup.config.cvivit.codebook_size, (batch, *self.token_shape),
                             generator=self.gen).to(self.device)

    # sampling ---------------------------------------------------------------------------------
    def sampling(self, batch: int, dtype: torch.dtype, variants: tuple[str, ...] = ("eager-sdpa",)
                 ) -> dict[str, Callable[[], object]]:
        """Our sampler in each variant ``{eager,graphs}-{sdpa,flex,auto}`` (graphs: compile=True)."""
        embeds = self.text(batch)
        sampler = SamplerConfig(steps=self.setup.steps, cond_scale=3.0)
        ours = self.ours if dtype == torch.float32 else self._ours_in(dtype)
        text = TextCondition(embeds.to(dtype), torch.ones(batch, TEXT_LEN, dtype=torch.bool, device=self.device))
        fns = {}
        for variant in variants:
            mode, attention = variant.split("-")

            def run(compile=mode == "graphs", attention=attention):
                gen = torch.Generator(device=self.device).manual_seed(0)
                ids = sample_ids(ours, text, num_frames=self.setup.frames, sampler=sampler, generator=gen,
                                 compile=compile, attention=attention)
                return ours.cvivit.decode_from_ids(ids)

            fns[f"ours {variant}"] = run
        return fns

    def peer_sampling(self, batch: int, precision: str) -> Callable[[], object]:
        embeds = self.text(batch)
        peer = self.peer

        def run():
            peer.set_text(embeds)
            with self._precision(precision):
                return peer.phenaki.sample(texts=[""] * batch, num_frames=self.setup.frames, cond_scale=3.0)

        return run

    def sampling_flops(self, batch: int) -> int:
        """FLOPs our sampler executes for one sample: the preparation, per step the trunk on all
        2b guidance rows and the head at the k_s masked positions only, and the final decode."""
        from phenaki_core.guided_model import GuidedModel
        from phenaki_core.sampling import plan_steps

        model = self.ours
        text = TextCondition(self.text(batch), torch.ones(batch, TEXT_LEN, dtype=torch.bool, device=self.device))
        n = math.prod(self.token_shape)
        ids = torch.full((batch, n), model.maskgit.mask_id, device=self.device)
        with torch.no_grad():
            holder = {}
            setup_flops = count_flops(lambda: holder.setdefault(
                "g", GuidedModel(model, text, None, None, self.token_shape, 3.0, "sdpa")))
            guided = holder["g"]
            trunk = count_flops(lambda: model.maskgit(guided._rows(ids), text_mask=guided.text_mask,
                                                      token_shape=self.token_shape, attn_bias=guided.bias,
                                                      text_kvs=guided.text_kvs, return_embeds=True))
            decode_flops = count_flops(lambda: model.cvivit.decode_from_ids(self.ids(batch)))
        head = 2 * batch * model.maskgit.dim * model.maskgit.num_tokens  # per masked position
        plans = plan_steps(n, SamplerConfig(steps=self.setup.steps))
        return setup_flops + len(plans) * trunk + head * sum(p.masked for p in plans) + decode_flops

    def _ours_in(self, dtype: torch.dtype) -> Phenaki:
        cached = getattr(self, "_cast", {})
        if dtype not in cached:
            import copy

            cached[dtype] = copy.deepcopy(self.ours).to(dtype)
            self._cast = cached
        return cached[dtype]

    def _autocast(self, dtype: torch.dtype):
        if dtype == torch.float32:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=dtype)

    def _precision(self, precision: str):
        """fp32, tf32 (fp32 tensors, TF32 matmuls on CUDA) or bf16 (autocast), for the peer."""
        if precision == "tf32":
            return tf32_matmuls()
        return self._autocast(DTYPES[precision])

    # training ---------------------------------------------------------------------------------
    def _train_step(self, dtype: torch.dtype, module: torch.nn.Module, params, loss_fn: Callable[[], torch.Tensor],
                    eval_after: bool = False) -> Callable[[], object]:
        """One optimizer step of ``module`` (Adam over ``params``) on the loss ``loss_fn`` returns."""
        opt = torch.optim.Adam(params, lr=1e-4)

        def run():
            module.train()
            with self._autocast(dtype):
                loss = loss_fn()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if eval_after:
                module.eval()
            return loss

        return run

    def maskgit_train(self, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
        b = self.setup.train_batch
        ids, embeds = self.ids(b), self.text(b)
        text = TextCondition(embeds, torch.ones(b, TEXT_LEN, dtype=torch.bool, device=self.device))
        model = self.ours
        gen = torch.Generator(device=self.device).manual_seed(0)
        fns = {"ours": self._train_step(dtype, model, model.maskgit.parameters(),
                                        lambda: model(ids, text=text, generator=gen).loss)}
        if self.peer is not None:
            peer = self.peer.phenaki
            fns["peer"] = self._train_step(dtype, peer, self.peer.maskgit.parameters(),
                                           lambda: peer(video_codebook_ids=ids, text_embeds=embeds))
        return fns

    def cvivit_train(self, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
        video = self.video(self.setup.train_batch)
        tokenizer = self.ours.cvivit

        def ours_loss():
            out = tokenizer(video)
            return out.recon_loss + out.commit_loss + out.entropy_loss

        fns = {"ours": self._train_step(dtype, tokenizer, tokenizer.parameters(), ours_loss, eval_after=True)}
        if self.peer is not None:
            peer = self.peer.cvivit
            fns["peer"] = self._train_step(dtype, peer, peer.parameters(), lambda: peer(video))
        return fns

    def encode(self, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
        video = self.video(self.setup.coding_batch)
        tokenizer = self.ours.cvivit.eval()
        fns = {"ours": lambda: self._no_grad(dtype, lambda: tokenizer.encode_to_ids(video))}
        if self.peer is not None:
            peer = self.peer.phenaki.cvivit.eval()
            fns["peer"] = lambda: self._no_grad(dtype, lambda: peer(video, return_only_codebook_ids=True))
        return fns

    def decode(self, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
        ids = self.ids(self.setup.coding_batch)
        tokenizer = self.ours.cvivit.eval()
        fns = {"ours": lambda: self._no_grad(dtype, lambda: tokenizer.decode_from_ids(ids))}
        if self.peer is not None:
            peer = self.peer.phenaki.cvivit.eval()
            flat = ids.flatten(1)  # the peer's LFQ crashes on 4-D ids
            fns["peer"] = lambda: self._no_grad(dtype, lambda: peer.decode_from_codebook_indices(flat))
        return fns

    def _no_grad(self, dtype: torch.dtype, fn: Callable[[], object]):
        with torch.no_grad(), self._autocast(dtype):
            return fn()


# --------------------------------------------------------------------------------------------------
# per-op profile of one step
# --------------------------------------------------------------------------------------------------

# op families, first match wins (aten names; on CUDA the device time of each op's kernels)
OP_FAMILIES = (
    ("attention kernel", ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention",
                          "flex_attention")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")),
    ("convolution (PEG)", ("conv", "mkldnn_convolution")),
    ("layout copies", ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous", "constant_pad_nd",
                       "aten::_to_copy", "aten::index", "aten::gather", "aten::scatter", "aten::stack")),
    ("norms", ("layer_norm", "aten::linalg_vector_norm", "aten::norm")),
    ("softmax / cross-entropy", ("softmax", "nll_loss", "cross_entropy")),
    ("GELU", ("gelu",)),
    ("reductions", ("aten::sum", "aten::mean", "aten::amax", "aten::max")),
    ("optimizer", ("adam", "aten::_foreach", "aten::lerp", "aten::addcdiv", "aten::addcmul", "aten::sqrt")),
    ("elementwise", ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::neg", "aten::where",
                     "aten::masked_fill", "aten::pow", "aten::rsqrt", "aten::exp", "aten::log", "aten::fill_",
                     "aten::zero_", "aten::clamp", "aten::sign", "aten::abs", "aten::leaky_relu")),
)


def op_family(name: str) -> str:
    lowered = name.lower()
    for family, needles in OP_FAMILIES:
        if any(needle.lower() in lowered for needle in needles):
            return family
    return "other"


def profile_step(fn: Callable[[], object], device: torch.device, top: int = 12) -> dict:
    """One call of ``fn`` under torch.profiler: self time per op family and the ``top`` ops (by
    self time, with their input shapes). CPU: host self time; CUDA: the kernels' device time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()  # warm
    with profile(activities=activities, record_shapes=True) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages(group_by_input_shape=True) if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events)
    families: dict[str, float] = {}
    for e in events:
        families[op_family(e.key)] = families.get(op_family(e.key), 0.0) + getattr(e, attr) / 1e6
    ops = sorted(events, key=lambda e: -getattr(e, attr))[:top]
    return {"total_s": total / 1e6, "clock": "device" if device.type == "cuda" else "host",
            "families": dict(sorted(families.items(), key=lambda kv: -kv[1])),
            "top_ops": [{"op": e.key, "shapes": str(e.input_shapes)[:120], "calls": e.count,
                         "s": getattr(e, attr) / 1e6} for e in ops]}


def render_profiles(profiles: dict) -> str:
    """Per task: a family table with one column per implementation, then each one's top ops."""
    lines = []
    for task, by_impl in profiles.items():
        impls = list(by_impl)
        families = []
        for prof in by_impl.values():
            families += [f for f in prof["families"] if f not in families]
        lines += ["", f"### profile: {task} (self time per op family, one step)", "",
                  "| op family | " + " | ".join(impls) + " |", "|---|" + "---|" * len(impls)]
        for family in families:
            lines.append(f"| {family} | " + " | ".join(
                fmt_time(by_impl[i]["families"].get(family)) for i in impls) + " |")
        lines.append("| **total** | " + " | ".join(f"**{fmt_time(by_impl[i]['total_s'])}**" for i in impls) + " |")
        for impl, prof in by_impl.items():
            lines += ["", f"top ops, {impl}:", "", "| op | input shapes | calls | self time |", "|---|---|---|---|"]
            lines += [f"| {o['op']} | {o['shapes']} | {o['calls']} | {fmt_time(o['s'])} |" for o in prof["top_ops"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.get_num_threads()} threads"


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_mem(nbytes: Optional[int]) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.0f} MiB"


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def opt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else spec.format(value)


def paired(row: dict) -> str:
    if "paired_ratio" not in row:
        return "-"
    low, high = row["paired_ratio_spread"]
    return f"{row['paired_ratio']:.2f}x [{low:.2f}-{high:.2f}]"


def render(rows: list[dict], header: dict) -> str:
    lines = [f"device: {header['device']}  |  torch {header['torch']}  |  config {header['config']}"
             f"  |  peer: {header['peer'] or 'not run'}",
             "matmul peak (measured): " + ", ".join(f"{k} {v / 1e12:.3f} TFLOP/s"
                                                    for k, v in header["matmul_peak"].items()),
             "times: median of the timed runs [min-max], warm-up excluded; ratio: the peer's fastest precision / "
             "ours, of the medians and (paired) per round of the alternation",
             "",
             "| measurement | ours | ours time | runs | first call | ours peak mem | peer best | peer time "
             "| peer best / ours | paired ratio [min-max] | GFLOP | ours % peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        spread = r.get("ours_spread")
        lines.append(
            f"| {r['name']} | {r['ours']} | {fmt_time(r['ours_s'])}"
            f"{'' if not spread else f' [{fmt_time(spread[0])}-{fmt_time(spread[1])}]'} | {len(r['ours_times'])} "
            f"| {fmt_time(r.get('ours_first_s'))} | {fmt_mem(r.get('ours_mem'))} | {r.get('peer') or '-'} "
            f"| {fmt_time(r.get('peer_s'))} | {ratio(r.get('peer_s'), r['ours_s'])} | {paired(r)} "
            f"| {opt(r.get('gflop'), '{:.3g}')} | {opt(r.get('ours_peak_pct'), '{:.1f}%')} |")
    peers = [r for r in rows if r.get("peer_cells")]
    if peers:
        lines += ["", "| measurement | peer precision | time | peak mem | % peak |", "|---|---|---|---|---|"]
        seen = set()
        for r in peers:
            for name, cell in r["peer_cells"].items():
                if (r["name"], name) in seen:
                    continue
                seen.add((r["name"], name))
                lines.append(f"| {r['name']} | {name} | {fmt_time(cell['s'])} | {fmt_mem(cell['mem'])} "
                             f"| {opt(cell.get('peak_pct'), '{:.1f}%')} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="S", choices=["S", "L"], help="config preset (docs/peer.md)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--peer", action="store_true", help="also run phenaki-pytorch 0.5.0 (must be installed)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny preset, 1 repeat, no warm-up")
    parser.add_argument("--dtypes", default=None, help="ours: comma list of fp32,bf16 (default: fp32, plus bf16 on CUDA)")
    parser.add_argument("--peer-precisions", default=None,
                        help="the peer: comma list of fp32,tf32,bf16 (default: all three on CUDA, fp32 on the CPU); "
                             "every ratio is taken against the fastest")
    parser.add_argument("--variants", default=None,
                        help="our sampler: comma list of {eager,graphs}-{sdpa,flex,auto} (default: eager-sdpa on "
                             "the CPU; eager-sdpa, eager-flex, graphs-flex on CUDA)")
    parser.add_argument("--only", default=None,
                        help="comma list of: sample, maskgit_train, cvivit_train, encode, decode")
    parser.add_argument("--sample-batches", default=None, help="comma list overriding the sampling batch sizes")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell, at least (median reported)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="keep adding timed runs (up to 3x --repeats) while a cell's runs took less than this")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, profile one step of each training task per implementation and "
                             "precision: self time per op family and the top ops (torch.profiler)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA GPU is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    dtypes = args.dtypes.split(",") if args.dtypes else (["bf16", "fp32"] if cuda else ["fp32"])
    precisions = (args.peer_precisions.split(",") if args.peer_precisions
                  else (["fp32", "tf32", "bf16"] if cuda else ["fp32"])) if args.peer else []
    variants = tuple(args.variants.split(",") if args.variants
                     else (["eager-sdpa", "eager-flex", "graphs-flex"] if cuda else ["eager-sdpa"]))
    if not cuda and "tf32" in precisions:
        parser.error("tf32 is a CUDA precision")
    tasks = args.only.split(",") if args.only else ["sample", "maskgit_train", "cvivit_train", "encode", "decode"]
    repeats, warmup = (1, 0) if args.quick else (args.repeats, 1)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (tf32 is its own peer precision)
        torch.backends.cudnn.allow_tf32 = False

    setup = make_setup(args.config, args.quick)
    if args.sample_batches:
        setup.sample_batches = tuple(int(b) for b in args.sample_batches.split(","))
    work = Workloads(setup, device, args.peer)
    timer = Timer(device, repeats, warmup, args.budget)
    peak_n = 256 if args.quick else (8192 if cuda else 2048)
    peaks = {d: matmul_peak(device, DTYPES[d], peak_n, seconds=0.2 if args.quick else 2.0) for d in dtypes}
    header = {"device": device_name(device), "torch": torch.__version__, "config": setup.name,
              "peer": f"phenaki-pytorch {__import__('peer').peer_version()}" if args.peer else None,
              "matmul_peak": peaks, "command": " ".join([Path(sys.executable).name] + sys.argv),
              "threads": torch.get_num_threads(), "repeats": repeats}

    rows = []

    def record(name: str, cells: dict[str, Cell], gflop: Optional[float] = None):
        """One row per ours-cell, each against the fastest peer cell."""
        peer_cells = {k[len("peer "):]: c for k, c in cells.items() if k.startswith("peer ")}
        best = min(peer_cells, key=lambda k: peer_cells[k].median) if peer_cells else None
        for key, cell in cells.items():
            if not key.startswith("ours "):
                continue
            label = key[len("ours "):]
            row = {"name": name, "ours": label, "ours_s": cell.median, "ours_spread": cell.spread,
                   "ours_times": cell.times, "ours_first_s": cell.first_s, "ours_mem": cell.peak_bytes}
            if best is not None:
                row.update(peer=best, peer_s=peer_cells[best].median, peer_mem=peer_cells[best].peak_bytes,
                           peer_cells={k: {"s": c.median, "times": c.times, "mem": c.peak_bytes,
                                           "peak_pct": None if gflop is None else
                                           100 * gflop * 1e9 / c.median / max(peaks.values())}
                                       for k, c in peer_cells.items()})
                # runs of the two cells taken in the same round of the alternation: robust to drift
                pairs = [p / o for p, o in zip(peer_cells[best].times, cell.times)]
                row["paired_ratio"] = statistics.median(pairs)
                row["paired_ratio_spread"] = (min(pairs), max(pairs))
            if gflop is not None:
                row["gflop"] = gflop
                dtype = label.split()[0]
                row["ours_peak_pct"] = 100 * gflop * 1e9 / cell.median / peaks.get(dtype, max(peaks.values()))
            rows.append(row)
            print(f"  {name} [{label}]: {fmt_time(row['ours_s'])}"
                  + (f", peer {best} {fmt_time(row['peer_s'])} ({ratio(row['peer_s'], row['ours_s'])})"
                     if best else ""), flush=True)

    def peer_fn(task, precision):
        fn = task(DTYPES[precision])["peer"]
        if precision != "tf32":
            return fn

        def run():
            with tf32_matmuls():
                return fn()
        return run

    profiles: dict[str, dict] = {}
    print(f"bench: {header['device']}, config {setup.name}, peer {precisions or 'off'}", flush=True)
    if "sample" in tasks:
        for b in setup.sample_batches:
            fns = {}
            for dname in dtypes:
                fns.update({f"ours {dname} {k[len('ours '):]}": fn
                            for k, fn in work.sampling(b, DTYPES[dname], variants).items()})
            for precision in precisions:
                fns[f"peer {precision}"] = work.peer_sampling(b, precision)
            record(f"sample b{b} ({setup.frames} frames, {setup.steps} steps, CFG 3, decoded)", timer.compare(fns),
                   work.sampling_flops(b) / 1e9)
    for task_name, label in (("maskgit_train", f"MaskGit train step b{setup.train_batch}"),
                             ("cvivit_train", f"C-ViViT train step b{setup.train_batch}"),
                             ("encode", f"tokenizer encode b{setup.coding_batch}"),
                             ("decode", f"tokenizer decode b{setup.coding_batch}")):
        if task_name not in tasks:
            continue
        task = getattr(work, task_name)
        fns = {f"ours {d}": task(DTYPES[d])["ours"] for d in dtypes}
        fns.update({f"peer {p}": peer_fn(task, p) for p in precisions})
        record(label, timer.compare(fns))
        if args.profile and task_name.endswith("_train"):
            profiles[label] = {name: profile_step(fn, device) for name, fn in fns.items()}

    print()
    print(render(rows, header))
    if profiles:
        print(render_profiles(profiles))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"header": header, "rows": rows, "profiles": profiles}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
