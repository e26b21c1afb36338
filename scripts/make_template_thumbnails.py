#!/usr/bin/env python3
"""Regenerate the templates' thumbnails (example_workflows/<name>.jpg) from the bundled model's output.

Each template's API twin (api_workflows/) runs through the pack's own nodes on the bundled model,
with its own prompts, seed and settings, exactly as ComfyUI would run it; the frames its save node
receives become a 3x3 sheet of frames spread over the clip. Re-run it whenever the bundled weights
or a template change, then commit example_workflows/*.jpg. The story's sheet is also the pack's
registry icon (docs/images/icon.png, [tool.comfy] Icon in pyproject.toml):

    OMP_NUM_THREADS=1 python scripts/make_template_thumbnails.py      # CPU, well under a minute

The loader runs on the CPU in fp32 whatever its device and dtype widgets say, so a thumbnail does not
depend on the machine (dtype auto is bf16 on CPUs with bf16 matrix units, fp32 elsewhere).

It also writes the image-to-video template's picture (nodes/example_clips/phenaki_example_image.png,
a Shapes World frame rendered by phenaki_core.data.shapes_world) when it is missing or differs.
ComfyUI's own nodes in the twins are not needed: Load Image opens that picture (as ComfyUI does
from its input folder, where the pack copies it), and the script stops at a save node's input.
"""

from __future__ import annotations

import asyncio
import importlib
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
PICTURE = ROOT / "nodes" / "example_clips" / "phenaki_example_image.png"
PICTURE_OBJECT = ("square", "blue")  # the image-to-video template's prompt names them

logger = logging.getLogger("make_template_thumbnails")


def load_pack():
    spec = importlib.util.spec_from_file_location(PACK, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK] = module
    spec.loader.exec_module(module)
    return module


def node_classes(pack) -> dict:
    """The pack's nodes by node ID, as its comfy_entrypoint registers them."""
    extension = asyncio.run(pack.comfy_entrypoint())
    return {cls.define_schema().node_id: cls for cls in asyncio.run(extension.get_node_list())}


def example_picture() -> Image.Image:
    """The image-to-video template's picture: a still Shapes World frame at the bundled model's 64x64
    (the object in the middle, half-extent 7 px), so Encode Video uses it as it is."""
    shapes_world = importlib.import_module(f"{PACK}.phenaki_core.data.shapes_world")
    shape, colour = PICTURE_OBJECT
    video = shapes_world.render_video(shape, colour, np.array([[32.0, 32.0]]), np.array([7.0]), 64)  # (3, 1, 64, 64)
    frame = (video[:, 0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
    return Image.fromarray(frame)


def write_example_picture() -> None:
    picture = example_picture()
    if PICTURE.is_file():
        with Image.open(PICTURE) as old:
            if np.array_equal(np.asarray(old.convert("RGB")), np.asarray(picture)):
                return
    picture.save(PICTURE, optimize=True)
    logger.info("wrote %s (%d bytes)", PICTURE.relative_to(ROOT), PICTURE.stat().st_size)


def load_image(name: str) -> torch.Tensor:
    """Load Image's output for a picture the pack ships: IMAGE [1, H, W, 3] in 0..1."""
    with Image.open(PICTURE.parent / name) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255)[None]


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
            if entry["class_type"] == "LoadImage":
                images = load_image(inputs["image"])
                results[node_id] = (images, torch.zeros(images.shape[:3]))
                continue
            if entry["class_type"] == "PhenakiLoader":
                inputs.update(device="cpu", dtype="fp32")
            results[node_id] = nodes[entry["class_type"]].execute(**inputs).args
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
    nodes = node_classes(load_pack())
    write_example_picture()
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
