#!/usr/bin/env python3
"""Regenerate the templates' thumbnails (example_workflows/<name>.jpg) from the bundled model's output.

Each template's API twin (api_workflows/) runs through the pack's own nodes on the bundled model,
with its own prompts, seed and settings, exactly as ComfyUI would run it; the frames its save node
receives become a 3x3 sheet of frames spread over the clip. Re-run it whenever the bundled weights
or a template change, then commit example_workflows/*.jpg. The story's sheet is also the pack's
registry icon (docs/images/icon.png, [tool.comfy] Icon in pyproject.toml):

    OMP_NUM_THREADS=1 python scripts/make_template_thumbnails.py      # CPU, well under a minute

ComfyUI's own nodes in the twins (save nodes) are not needed: the script stops at their input.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PACK = "phenaki_comfyui_pack"
SAVE_NODES = {"SaveAnimatedWEBP": "images", "CreateVideo": "images", "VHS_VideoCombine": "images"}
GRID, CELL, GAP = 3, 128, 4  # 3x3 frames of 128 px (the bundled model's 64 px, doubled)

logger = logging.getLogger("make_template_thumbnails")


def load_pack():
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
    return module


def run(prompt: dict, nodes: dict) -> torch.Tensor:
    """Run the Phenaki nodes of an API prompt in dependency order; return the frames a save node gets."""
    results: dict[str, tuple] = {}
    pending = dict(prompt)
    while pending:
        ready = [i for i, e in pending.items()
                 if all(not isinstance(v, list) or v[0] in results for v in e["inputs"].values())]
        if not ready:
            raise SystemExit("the prompt has a cycle or a node this script cannot run")
        for node_id in sorted(ready, key=int):
            entry = pending.pop(node_id)
            inputs = {k: results[v[0]][v[1]] if isinstance(v, list) else v for k, v in entry["inputs"].items()}
            if entry["class_type"] in SAVE_NODES:
                return inputs[SAVE_NODES[entry["class_type"]]]
            cls = nodes[entry["class_type"]]
            results[node_id] = getattr(cls(), cls.FUNCTION)(**inputs)
    raise SystemExit("the prompt has no save node")


def thumbnail(images: torch.Tensor) -> Image.Image:
    """IMAGE [f, H, W, 3] -> a GRID x GRID sheet of frames spread evenly over the clip."""
    frames = (images.float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    picks = np.linspace(0, len(frames) - 1, GRID * GRID).round().astype(int)
    size = GRID * CELL + (GRID + 1) * GAP
    sheet = Image.new("RGB", (size, size), (40, 40, 40))
    for n, index in enumerate(picks):
        row, col = divmod(n, GRID)
        frame = Image.fromarray(frames[index]).resize((CELL, CELL), Image.NEAREST)
        sheet.paste(frame, (GAP + col * (CELL + GAP), GAP + row * (CELL + GAP)))
    return sheet


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_grad_enabled(False)
    nodes = load_pack().NODE_CLASS_MAPPINGS
    for template in sorted((ROOT / "example_workflows").glob("*.json")):
        twin = ROOT / "api_workflows" / (template.stem.lower().replace(" ", "_") + ".api.json")
        images = run(json.loads(twin.read_text()), nodes)
        out = template.with_suffix(".jpg")
        thumbnail(images).save(out, quality=90, optimize=True)
        logger.info("%s: %d frames -> %s (%d KB)", twin.name, len(images), out.name, out.stat().st_size // 1024)
        if twin.name == "phenaki_story.api.json":
            icon = ROOT / "docs" / "images" / "icon.png"
            thumbnail(images).save(icon, optimize=True)
            logger.info("the story's sheet -> %s (%d KB)", icon.relative_to(ROOT), icon.stat().st_size // 1024)


if __name__ == "__main__":
    main()
