"""Test helpers: tiny models and inputs built from private RNGs, so tests never disturb each other,
and the node pack imported as ComfyUI imports it, with one call per node. Shared fixtures are in
conftest.py."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import sys
from pathlib import Path

import torch

from phenaki_core import MINILM_SPEC, Phenaki, TextCondition, preset, save_bundle

ROOT = Path(__file__).resolve().parents[1]
PACK = "phenaki_comfyui_pack"


def perturbed(build, seed: int = 0) -> torch.nn.Module:
    """``build()`` under a private RNG seeded with ``seed``, every weight nudged by 0.05 N(0, 1) (so no
    parameter is a constant), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.05 * torch.randn_like(param))
    return model.eval()


def build_tiny(seed: int = 0, **changes) -> Phenaki:
    """A tiny Phenaki with deterministic, slightly perturbed weights."""
    config = preset("tiny")
    if changes:
        config = config.replace(**changes)
    return perturbed(lambda: Phenaki(config), seed)


def random_text(batch: int, length: int = 5, dim: int = 24, seed: int = 0, pad_last: int = 0) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(batch, length, dim, generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    if pad_last:
        mask[-1, -pad_last:] = False
        embeds[-1, -pad_last:] = 0
    return TextCondition(embeds, mask)


def random_video(batch: int, frames: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g)


def load_pack():
    """Import the node pack like ComfyUI does: ``spec_from_file_location`` on the root ``__init__.py``."""
    if PACK not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK]


def save_tiny_bundle(path: Path, seed: int = 0) -> Path:
    """A tiny model with MiniLM-sized text (384) that makes up to 17 frames of 8x8."""
    base = build_tiny().config
    maskgit = dataclasses.replace(base.maskgit, text_dim=384, max_seq_len=base.cvivit.num_tokens(17))
    return save_bundle(path, build_tiny(seed, maskgit=maskgit), MINILM_SPEC)


_NODES: dict = {}  # node ID -> class, as comfy_entrypoint registers them


def pack_parts():
    """(pack, the nodes by node ID, glue, comfy_adapter) of the pack, imported like ComfyUI does; the
    nodes are what its ``comfy_entrypoint`` registers."""
    pack = load_pack()
    if not _NODES:
        extension = asyncio.run(pack.comfy_entrypoint())
        _NODES.update({cls.define_schema().node_id: cls for cls in asyncio.run(extension.get_node_list())})
    return pack, _NODES, sys.modules[f"{PACK}.nodes.glue"], sys.modules[f"{PACK}.nodes.comfy_adapter"]


def run(node_id: str, **inputs) -> tuple:
    """A node's outputs, in order, called as ComfyUI calls it: ``execute(**inputs)``."""
    output = pack_parts()[1][node_id].execute(**inputs)
    assert type(output).__name__ == "NodeOutput", f"{node_id} returned {type(output).__name__}, not io.NodeOutput"
    return output.args


# One call per node, with the nodes' own input names and small defaults: 2 steps, 9 frames a scene.
STEPS = 2


def load_model(ckpt_name, device="cpu", dtype="fp32", t5_folder=""):
    (model,) = run("PhenakiLoader", ckpt_name=ckpt_name, device=device, dtype=dtype, t5_folder=t5_folder)
    return model


def encode_text(model, prompt, negative_prompt=""):
    (cond,) = run("PhenakiEncodeText", model=model, prompt=prompt, negative_prompt=negative_prompt)
    return cond


def sample_scene(model, cond, frames=9, steps=STEPS, cond_scale=3.0, temperature=0.9, critic_noise=1.0, seed=0,
                 **optional):
    (tokens,) = run("PhenakiSampleScene", model=model, cond=cond, frames=frames, steps=steps, cond_scale=cond_scale,
                    temperature=temperature, critic_noise=critic_noise, seed=seed, **optional)
    return tokens


def chain_scenes(model, prompts, frames=9, prime_frames=5, steps=STEPS, cond_scale=3.0, temperature=0.9,
                 critic_noise=1.0, seed=0, **optional):
    """(images, fps, scene starts) of Phenaki Chain Scenes."""
    return run("PhenakiChainScenes", model=model, prompts=prompts, frames_per_scene=frames, prime_frames=prime_frames,
               steps=steps, cond_scale=cond_scale, temperature=temperature, critic_noise=critic_noise, seed=seed,
               **optional)


def encode_video(model, images, **optional):
    """The tokens of Phenaki Encode Video; its report must be one line."""
    tokens, report = run("PhenakiEncodeVideo", model=model, images=images, **optional)
    assert isinstance(report, str) and "\n" not in report and "1 frames" not in report
    return tokens


def decode(tokens, include_prime=True):
    """(images, fps) of Phenaki Decode."""
    return run("PhenakiDecode", tokens=tokens, include_prime=include_prime)


# --- what /object_info shows of a node, and the part of it a saved graph depends on ------------------
WIDGET_OPTIONS = ("default", "min", "max", "step", "multiline", "control_after_generate")


def node_info(cls) -> dict:
    """A V3 node's /object_info entry, as ComfyUI's ``Schema.get_v1_info`` writes it (the keys the
    pack's schemas use), built from ``define_schema()``: works on ComfyUI's io and on the fallback."""
    schema = cls.define_schema()
    inputs: dict = {"required": {}}
    for spec in schema.inputs:
        options = {"tooltip": spec.tooltip}
        options.update({key: getattr(spec, key, None) for key in WIDGET_OPTIONS})
        if spec.io_type == "COMBO":
            options["options"] = spec.options
        inputs.setdefault("optional" if spec.optional else "required", {})[spec.id] = [
            spec.io_type, {k: v for k, v in options.items() if v is not None}]
    return {"input": inputs, "input_order": {section: list(names) for section, names in inputs.items()},
            "output": [o.io_type for o in schema.outputs],
            "output_name": [o.display_name or o.io_type for o in schema.outputs],
            "output_tooltips": [o.tooltip for o in schema.outputs], "name": schema.node_id,
            "display_name": schema.display_name, "category": schema.category, "description": schema.description,
            "search_aliases": schema.search_aliases}


def interface(info: dict) -> dict:
    """What saved graphs and API prompts depend on, from an /object_info entry (V1 or V3 style):
    the node's name, its inputs in the frontend's order (required, then optional) with their
    types, choices, defaults and ranges, and its outputs. Tooltips and descriptions are left out."""
    inputs = []
    for section in ("required", "optional"):
        for name in info["input_order"].get(section, []):
            kind, options = info["input"][section][name]
            choices = kind if isinstance(kind, list) else options.get("options")
            kind = "COMBO" if isinstance(kind, list) else kind
            widget = {key: options[key] for key in WIDGET_OPTIONS if key in options}
            if not widget.get("multiline", False):
                widget.pop("multiline", None)  # single-line text: V3 says multiline False, V1 said nothing
            inputs.append((section, name, kind, choices, widget))
    return {"display_name": info["display_name"], "category": info["category"], "inputs": inputs,
            "output": list(info["output"]), "output_name": list(info["output_name"])}


def ui_to_api(workflow: dict, inputs_of) -> dict:
    """A UI graph as the API prompt ComfyUI's frontend makes of it (its graphToPrompt), the way a saved
    graph is loaded and queued: each node's ``widgets_values`` go, by position, to its widget inputs in
    the order ``inputs_of(node_type)`` gives as ``(name, is_widget, control_after_generate)`` (a
    control-after-generate widget stores one more value, the control); a linked input becomes
    ``[source node id, output slot]``. Values left over (Load Image's upload button) stay in the UI.
    Notes (no inputs, no outputs) are not part of the prompt."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in ("Note", "MarkdownNote") or node.get("mode", 0) in (2, 4):  # notes, muted, bypassed
            continue
        linked = {slot["name"]: [str(links[slot["link"]][1]), links[slot["link"]][2]]
                  for slot in node.get("inputs", []) if slot.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs = {}
        for name, is_widget, control in inputs_of(node["type"]):
            if is_widget and values:  # none left: saved before a trailing optional widget existed (its default)
                inputs[name] = values.pop(0)
                if control and values:
                    values.pop(0)
            if name in linked:
                inputs[name] = linked[name]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
