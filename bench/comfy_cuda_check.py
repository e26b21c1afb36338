#!/usr/bin/env python3
"""The pack's API workflows run through ComfyUI's own model management, and the VRAM comes back.

    python bench/comfy_cuda_check.py --comfy COMFYUI_DIR --json out/comfy_cuda.json
    python bench/comfy_cuda_check.py --prepare-text .gpu_carry/prompts.safetensors   # where MiniLM is

``COMFYUI_DIR`` is a ComfyUI source tree (``comfy/``, ``folder_paths.py``); nothing of it is
started as a server: this script imports ``comfy.model_management``, loads the pack the way
ComfyUI does (its ``comfy_entrypoint``), and executes every ``api_workflows/*.api.json`` in
topological order with the pack's nodes (core Load Image reads the pack's example picture; the
other core nodes, which only save or show the output, are skipped). For each loader dtype (``auto``, which is bf16 on a GPU that has it, and ``fp16``) it
runs each workflow twice and records the second (warm) run's time per node. Then it asks ComfyUI
to unload every model (``unload_all_models`` + ``soft_empty_cache``) and checks that allocated
VRAM is back within 64 MiB of its level before the first load.

Text: the GPU machine may lack the MiniLM package. ``--prepare-text`` (run where it is installed)
encodes every prompt of the workflows into a small file; on the GPU, when the encoder cannot be
loaded, those embeddings stand in for it (recorded in the JSON as ``"text": "precomputed"``).
"""

from __future__ import annotations

import argparse
import gc
import glob
import importlib.util
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE_MIB = 64


def workflows() -> dict[str, dict]:
    return {Path(p).name: json.loads(Path(p).read_text()) for p in sorted(glob.glob(str(ROOT / "api_workflows" / "*.api.json")))}


def prompts_of(graphs: dict[str, dict]) -> list[str]:
    found = set()
    for graph in graphs.values():
        for node in graph.values():
            for key in ("prompt", "prompts", "negative_prompt"):
                value = node["inputs"].get(key)
                if isinstance(value, str):
                    found.update(line.strip() for line in value.splitlines() if line.strip())
    return sorted(found)


def prepare_text(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from safetensors.torch import save_file

    from phenaki_core.text import load_minilm

    encoder = load_minilm()
    tensors, names = {}, prompts_of(workflows())
    for index, prompt in enumerate(names):
        cond = encoder.encode([prompt])
        tensors[f"{index}.embeds"], tensors[f"{index}.mask"] = cond.embeds[0].contiguous(), cond.mask[0].contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"prompts": json.dumps(names)})
    print(f"{len(names)} prompts -> {path}")


class PrecomputedText:
    """Stands in for the text encoder: the embeddings of the workflows' own prompts."""

    def __init__(self, path: Path, spec):
        import torch
        from safetensors import safe_open

        from phenaki_core.text_condition import TextCondition

        self.spec, self._device, self._condition = spec, torch.device("cpu"), TextCondition
        with safe_open(str(path), "pt") as handle:
            names = json.loads(handle.metadata()["prompts"])
            self.table = {p: (handle.get_tensor(f"{i}.embeds"), handle.get_tensor(f"{i}.mask"))
                          for i, p in enumerate(names)}

    @property
    def device(self):
        return self._device

    def to(self, device):
        import torch
        self._device = torch.device(device)
        return self

    def encode(self, prompts, device=None):
        import torch
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        missing = [p for p in prompts if p.strip() not in self.table]
        if missing:
            raise ValueError(f"no precomputed embedding for {missing}; rerun --prepare-text")
        rows = [self.table[p.strip()] for p in prompts]
        length = max(e.shape[0] for e, _ in rows)
        embeds = torch.stack([torch.nn.functional.pad(e, (0, 0, 0, length - e.shape[0])) for e, _ in rows])
        mask = torch.stack([torch.nn.functional.pad(m, (0, length - m.shape[0])) for _, m in rows])
        return self._condition(embeds.to(device or self._device), mask.to(device or self._device))


def load_pack():
    """{node id: class} of the pack, as ComfyUI gets them: ``comfy_entrypoint()``'s extension."""
    import asyncio

    spec = importlib.util.spec_from_file_location("phenaki_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["phenaki_pack"] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "comfy_entrypoint"):
        raise RuntimeError("the pack registered no nodes (ComfyUI too old? the log says why)")
    extension = asyncio.run(module.comfy_entrypoint())
    return {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(extension.get_node_list())}


def load_image(name: str):
    """What core Load Image gives for the pack's example picture: (IMAGE [1, H, W, 3], no mask)."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(ROOT / "nodes" / "example_clips" / name) as picture:
        pixels = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels)[None], None


def execute(graph: dict, mappings: dict, times: dict) -> None:
    """Run an API-format graph with the pack's nodes, in dependency order."""
    import torch

    done: dict[str, tuple] = {}

    def run(node_id: str) -> tuple:
        if node_id in done:
            return done[node_id]
        node = graph[node_id]
        if node["class_type"] == "LoadImage":  # the image-to-video template's core source node
            done[node_id] = load_image(node["inputs"]["image"])
            return done[node_id]
        cls = mappings.get(node["class_type"])
        if cls is None:
            raise KeyError(f"node {node_id} ({node['class_type']}) is not the pack's; only sinks may be core nodes")
        kwargs = {}
        for key, value in node["inputs"].items():
            kwargs[key] = run(value[0])[value[1]] if isinstance(value, list) else value
        hidden = cls.INPUT_TYPES().get("hidden", {})
        if "unique_id" in hidden:
            kwargs["unique_id"] = node_id
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times[f"{node_id} {node['class_type']}"] = time.perf_counter() - start
        out = out["result"] if isinstance(out, dict) else out
        done[node_id] = out
        return out

    for node_id, node in graph.items():
        if node["class_type"] in mappings:
            run(node_id)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfy", type=Path, help="a ComfyUI source tree")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--text", type=Path, default=ROOT / ".gpu_carry" / "prompts.safetensors",
                        help="precomputed prompt embeddings (used when the text encoder cannot be loaded)")
    parser.add_argument("--dtypes", default="auto,fp16")
    parser.add_argument("--prepare-text", type=Path, help="encode the workflows' prompts into this file and exit")
    args = parser.parse_args(argv)
    if args.prepare_text:
        prepare_text(args.prepare_text)
        return 0
    if not args.comfy or not args.json:
        parser.error("--comfy and --json are required")

    sys.path.insert(0, str(args.comfy.resolve()))
    import torch
    import comfy.cli_args

    if not torch.cuda.is_available():
        comfy.cli_args.args.cpu = True  # the CPU dry run
    import comfy.model_management as mm

    sys.path.insert(0, str(ROOT))
    import phenaki_core.pipeline as pipeline
    from phenaki_core.errors import PhenakiError

    text_source = "encoder"
    original = pipeline.load_text_encoder

    def load_text_encoder(spec, device="cpu", **kwargs):
        nonlocal text_source
        try:
            return original(spec, device=device, **kwargs)
        except (PhenakiError, ImportError, OSError):
            if not args.text.is_file():
                raise
            text_source = "precomputed"
            return PrecomputedText(args.text, spec).to(device)

    pipeline.load_text_encoder = load_text_encoder
    mappings = load_pack()
    device = mm.get_torch_device()
    cuda = device.type == "cuda"
    gc.collect()
    before = torch.cuda.memory_allocated(device) if cuda else 0
    result = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
              "allocated_before_mib": before / 2**20, "runs": {}}
    for dtype in args.dtypes.split(","):
        for name, graph in workflows().items():
            for node in graph.values():
                if node["class_type"] == "PhenakiLoader":
                    node["inputs"]["dtype"] = dtype
            times: dict[str, float] = {}
            execute(graph, mappings, {})  # cold: loading, caches
            execute(graph, mappings, times)  # warm
            result["runs"][f"{name} [{dtype}]"] = times
            print(f"{name} [{dtype}]: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items()), flush=True)
    if cuda:
        result["allocated_loaded_mib"] = torch.cuda.memory_allocated(device) / 2**20
    mm.unload_all_models()
    mm.soft_empty_cache()
    gc.collect()
    after = torch.cuda.memory_allocated(device) if cuda else 0
    result.update(text=text_source, allocated_after_unload_mib=after / 2**20,
                  reserved_after_unload_mib=(torch.cuda.memory_reserved(device) if cuda else 0) / 2**20,
                  vram_returned=(after - before) / 2**20 <= TOLERANCE_MIB, tolerance_mib=TOLERANCE_MIB)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    return 0 if result["vram_returned"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
