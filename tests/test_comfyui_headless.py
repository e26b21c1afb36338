"""The pack inside a real ComfyUI server, headless on the CPU (opt-in: needs a ComfyUI source snapshot).

Runs only when COMFY_GIT_DIR points at the git directory of a ComfyUI source snapshot (0.33 or
newer) and COMFYUI_HEADLESS_TOOL at the ``comfyui_headless.sh`` tool, which keeps ComfyUI and its
venv outside the project (under $ROOT, default a comfy-headless folder in the temp dir).

    COMFY_GIT_DIR=/path/to/ComfyUI.git COMFYUI_HEADLESS_TOOL=/path/to/comfyui_headless.sh \
        python -m pytest tests/test_comfyui_headless.py -q

See docs/comfyui_headless.md for the commands and a recorded run.

It checks what a user meets in ComfyUI's own UI, through the server routes the frontend uses:
/object_info lists the V3 nodes (registered by comfy_entrypoint) with the interface the V1 nodes had
(tests/fixtures/saved_before_v3/v1_node_info.json), a tooltip on every input and output and search
aliases for "text to video", "t2v", "image to video", "story", "video" and "continue"; the templates
route lists only the UI graphs, each with its thumbnail, and every node they use exists; every
template, and every UI graph saved before the move to V3, queued as the frontend queues it (widget
values by position), runs to success; every API twin in api_workflows/ runs to success and writes
its file (image to video: Load Image opens the picture the pack copied into the input folder); a
changed checkpoint file is loaded again rather than served from the cache (fingerprint_inputs);
live previews (when enabled) come at the promised rate and
Chain Scenes' previews hold each scene's prime, the last one per scene equal to the frames it
returns; bad frame counts, primes and prompts are refused when the graph is queued, before anything
runs (validate_inputs), and what only the run can know shows an actionable one-line message; Cancel
stops sampling and leaves the server able to run again. Checkpoints come from a models folder added
with ``--extra-model-paths-config`` (a user path that must survive the pack's own registration);
where the bundled model is absent (no phenaki_core/weights/), a randomly initialised shapes64 model stands in.

With VHS_GIT_DIR pointing at a ComfyUI-VideoHelperSuite snapshot (given like COMFY_GIT_DIR), it
also runs VideoHelperSuite's Load Video -> Encode Video -> Sample Scene -> Video Combine on a 24 fps
clip, and checks that the continuation moves at the clip's speed. VideoHelperSuite runs with
opencv-python-headless and imageio-ffmpeg, which the test installs into ComfyUI's venv.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from helpers import interface, ui_to_api

ROOT = Path(__file__).resolve().parents[1]
TOOL = Path(os.environ.get("COMFYUI_HEADLESS_TOOL", ""))
BUNDLED = "(bundled) shapes64"
STAND_IN = "phenaki_headless_test.safetensors"
UNCONDITIONAL = "phenaki_headless_unconditional.safetensors"  # its cond holds no text: a model/cond mismatch
NODE_IDS = ["PhenakiLoader", "PhenakiEncodeText", "PhenakiSampleScene", "PhenakiChainScenes",
            "PhenakiEncodeVideo", "PhenakiDecode", "PhenakiExampleClip"]
PACK_NAME = "phenaki-comfyui"  # the pack's folder in custom_nodes/
TEMPLATES = ROOT / "example_workflows"
SAVED_BEFORE_V3 = ROOT / "tests" / "fixtures" / "saved_before_v3"
EXAMPLE_IMAGE = ROOT / "nodes" / "example_clips" / "phenaki_example_image.png"
# widget types as /object_info names them; SaveVideo's format is a V3 dynamic combo (its nested options are
# left out here: the templates store only its top-level value)
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "COMFY_DYNAMICCOMBO_V3")
VHS_GIT_DIR = os.environ.get("VHS_GIT_DIR", "")
VHS_NAME = "ComfyUI-VideoHelperSuite"
CLIP_24FPS = "phenaki_test_24fps.mp4"
CLIP_SPEED = 16.0  # px per second: 2 px per frame at the model's 8 fps (a Shapes World speed)

pytestmark = pytest.mark.skipif(not os.environ.get("COMFY_GIT_DIR") or not TOOL.is_file(),
                                reason="set COMFY_GIT_DIR to a ComfyUI source snapshot and COMFYUI_HEADLESS_TOOL "
                                       "to comfyui_headless.sh to run ComfyUI headless")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, env: dict, run_dir: Path, models: Path):
        self.env = env
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.out = run_dir / "out"
        self.input = run_dir / "input"
        self.models = models

    def tool(self, *args: str, timeout: float = 900) -> str:
        done = subprocess.run(["bash", str(TOOL), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"comfyui_headless.sh {args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.load(response)

    def post(self, path: str, payload: dict):
        request = urllib.request.Request(self.url + path, json.dumps(payload).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def get_raw(self, path: str) -> tuple[str, bytes]:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.headers.get("Content-Type", ""), response.read()

    def submit(self, prompt: dict) -> str:
        return self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})["prompt_id"]

    def refused(self, prompt: dict) -> dict:
        """POST a prompt that validation must refuse (HTTP 400); return its node_errors."""
        try:
            self.submit(prompt)
        except urllib.error.HTTPError as error:
            assert error.code == 400, error.code
            return json.loads(error.read())["node_errors"]
        raise AssertionError("the prompt was queued; validation should have refused it")

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and (entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                return entry
            time.sleep(0.25)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("comfy")
    run_dir = work / "run"
    models = work / "models"
    (models / "phenaki").mkdir(parents=True)
    (work / "extra_model_paths.yaml").write_text(f"phenaki_test:\n    base_path: {models}\n    phenaki: phenaki\n")
    import dataclasses

    import torch
    from phenaki_core import MINILM_SPEC, Phenaki, preset, save_bundle

    tiny = preset("tiny-shapes")
    tiny = tiny.replace(maskgit=dataclasses.replace(tiny.maskgit, unconditional=True),
                        critic=dataclasses.replace(tiny.critic, has_cross_attn=False))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_bundle(models / "phenaki" / STAND_IN, Phenaki(preset("shapes64")).eval(), MINILM_SPEC)
        save_bundle(models / "phenaki" / UNCONDITIONAL, Phenaki(tiny).eval(), MINILM_SPEC)
    (run_dir / "input").mkdir(parents=True)

    env = dict(os.environ, PORT=str(free_port()), RUN=str(run_dir), PACK_NAME=PACK_NAME,
               EXTRA_ARGS=f"--extra-model-paths-config {work / 'extra_model_paths.yaml'}")
    server = Server(env, run_dir, models / "phenaki")
    server.tool("setup")
    server.tool("link", str(ROOT))
    vhs_link = None
    if VHS_GIT_DIR:
        vhs_link = add_videohelpersuite(env, work, run_dir / "input" / CLIP_24FPS)
    server.tool("start", timeout=300)
    try:
        yield server
    finally:
        server.tool("stop", timeout=60)
        if vhs_link is not None:
            vhs_link.unlink()


def comfy_paths(env: dict) -> tuple[Path, Path]:
    """ComfyUI's checkout and the python of its venv, where comfyui_headless.sh puts them."""
    root = Path(env.get("ROOT") or Path(os.environ.get("TMPDIR", "/tmp")) / "comfy-headless")
    return Path(env.get("COMFY") or root / "ComfyUI"), Path(env.get("VENV") or root / "venv") / "bin" / "python"


def add_videohelpersuite(env: dict, work: Path, clip: Path) -> Path:
    """Extract the VideoHelperSuite snapshot into ``work``, install what it runs with, link it into
    custom_nodes/ (removed again after the tests), and write a 24 fps test clip for Load Video."""
    comfy, python = comfy_paths(env)
    target = work / VHS_NAME
    listing = subprocess.run(["git", "--git-dir", VHS_GIT_DIR, "ls-tree", "-r", "HEAD"], capture_output=True,
                             text=True, check=True).stdout
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        _mode, kind, sha = meta.split()
        if kind == "blob":
            (target / path).parent.mkdir(parents=True, exist_ok=True)
            (target / path).write_bytes(subprocess.run(["git", "--git-dir", VHS_GIT_DIR, "cat-file", "blob", sha],
                                                       capture_output=True, check=True).stdout)
    constraints = Path(env.get("ROOT") or comfy.parent) / "constraints-torch.txt"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), "opencv-python-headless",
                    "imageio-ffmpeg"], check=True, capture_output=True, timeout=600)
    link = comfy / "custom_nodes" / VHS_NAME
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target)
    subprocess.run([str(python), "-c", WRITE_CLIP, str(clip)], check=True, capture_output=True, timeout=120)
    return link


WRITE_CLIP = f"""
import sys, numpy as np, imageio_ffmpeg
size, fps, frames, radius = 64, 24, 25, 7  # 25 frames: one second at 24 fps
yy, xx = np.mgrid[0:size, 0:size]
writer = imageio_ffmpeg.write_frames(sys.argv[1], (size, size), fps=fps, quality=10, macro_block_size=1)
writer.send(None)
for i in range(frames):
    x = 10 + {CLIP_SPEED} * i / fps  # a red circle moving right
    frame = np.zeros((size, size, 3), np.uint8)
    frame[((xx - x) ** 2 + (yy - 32) ** 2) <= radius ** 2] = (255, 0, 0)
    writer.send(np.ascontiguousarray(frame))
writer.close()
"""


def combo_options(spec: list) -> list:
    """A combo input's choices in /object_info: V1 lists them as the type, V3 as ``options``."""
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def checkpoint_choices(server) -> list:
    return combo_options(server.get("/object_info/PhenakiLoader")["PhenakiLoader"]["input"]["required"]["ckpt_name"])


def on_stand_in(server, prompt: dict) -> dict:
    """The prompt on the stand-in model where the bundled one is absent."""
    if not (ROOT / "phenaki_core" / "weights" / "shapes64.safetensors").is_file():
        for entry in prompt.values():
            if entry["inputs"].get("ckpt_name") == BUNDLED:
                assert STAND_IN in checkpoint_choices(server)
                entry["inputs"]["ckpt_name"] = STAND_IN
    return prompt


def prompts(server) -> dict[str, dict]:
    """The API twins, on the stand-in model where the bundled one is absent."""
    return {path.name: on_stand_in(server, json.loads(path.read_text()))
            for path in sorted((ROOT / "api_workflows").glob("*.api.json"))}


def frontend_prompt(server, workflow: dict) -> dict:
    """A UI graph queued as the frontend queues it, from the server's own /object_info."""
    info = server.get("/object_info")

    def inputs_of(node_type: str):
        node = info[node_type]
        for section in ("required", "optional"):
            for name in node["input_order"].get(section, []):
                kind, options = node["input"][section][name]
                yield name, isinstance(kind, list) or kind in WIDGET_TYPES, bool(options.get("control_after_generate"))

    return on_stand_in(server, ui_to_api(workflow, lambda node_type: list(inputs_of(node_type))))


def messages(entry: dict) -> dict:
    return {event: data for event, data in entry["status"].get("messages", [])}


def test_object_info_lists_the_nodes_and_keeps_user_model_paths(server):
    info = server.get("/object_info")
    for node_id in NODE_IDS:
        assert node_id in info, f"{node_id} is not registered"
        assert info[node_id]["category"] == "Phenaki"
    checkpoints = combo_options(info["PhenakiLoader"]["input"]["required"]["ckpt_name"])
    assert checkpoints[0] == BUNDLED and STAND_IN in checkpoints  # the extra_model_paths.yaml folder is kept
    assert info["PhenakiDecode"]["output"] == ["IMAGE", "FLOAT"]
    assert info["PhenakiSampleScene"]["input"]["required"]["seed"][1]["control_after_generate"] is True


def test_the_v3_nodes_show_the_interface_the_v1_nodes_had(server):
    """What saved graphs (widget values by position) and API prompts (inputs by name) depend on: names,
    inputs in order with types, choices, defaults and ranges, outputs in order; V3 nodes, no V1 ones."""
    info = server.get("/object_info")
    v1 = json.loads((SAVED_BEFORE_V3 / "v1_node_info.json").read_text())
    for node_id in NODE_IDS:
        now = dict(info[node_id])
        if now["name"] == "PhenakiLoader":  # the stand-ins in the extra models folder are listed too
            spec = now["input"]["required"]["ckpt_name"]
            now["input"] = {**now["input"], "required": {**now["input"]["required"], "ckpt_name": [
                spec[0], {**spec[1], "options": [BUNDLED]}]}}
        assert interface(now) == interface(v1[node_id]), node_id
        assert set(v1[node_id]["search_aliases"]) <= set(now["search_aliases"]), node_id
        assert now["python_module"] == f"custom_nodes.{PACK_NAME}"


def test_every_input_and_output_shows_a_tooltip(server):
    info = server.get("/object_info")
    for node_id in NODE_IDS:
        node = info[node_id]
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} shows no tooltip"
        assert len(node["output_tooltips"]) == len(node["output"]) and all(node["output_tooltips"]), node_id


# The frontend's node search looks in name, display_name and search_aliases (a fuzzy match; a phrase that is
# one of those strings, or part of one, is found).
SEARCHES = {"text to video": {"PhenakiSampleScene", "PhenakiChainScenes"}, "t2v": {"PhenakiSampleScene"},
            "story": {"PhenakiChainScenes"}, "video": {"PhenakiEncodeVideo", "PhenakiDecode"},
            "continue": {"PhenakiSampleScene", "PhenakiEncodeVideo"},
            "image to video": {"PhenakiEncodeVideo", "PhenakiSampleScene"}, "i2v": {"PhenakiEncodeVideo"}}


def test_the_node_search_finds_phenaki_nodes(server):
    info = server.get("/object_info")
    for query, expected in SEARCHES.items():
        found = {node_id for node_id in NODE_IDS if any(
            query in text.lower() for text in [node_id, info[node_id]["display_name"],
                                               *info[node_id]["search_aliases"]])}
        assert expected <= found, f"{query!r} finds {sorted(found)}"


def test_the_templates_browser_lists_ui_graphs_with_thumbnails_that_open(server):
    """What the templates browser does: list /workflow_templates, show <name>.jpg, open <name>.json."""
    listed = server.get("/workflow_templates")
    names = sorted(p.stem for p in TEMPLATES.glob("*.json"))
    assert sorted(listed[PACK_NAME]) == names and len(names) == 4, listed.get(PACK_NAME)
    info = server.get("/object_info")
    for name in names:
        base = f"/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(name)}"
        kind, thumbnail = server.get_raw(base + ".jpg")
        assert kind.startswith("image/jpeg") and Image.open(io.BytesIO(thumbnail)).format == "JPEG", name
        workflow = server.get(base + ".json")
        assert workflow["version"] == 0.4 and workflow["nodes"], f"{name} is not a UI graph"
        missing = {n["type"] for n in workflow["nodes"]} - set(info) - {"Note", "MarkdownNote"}
        assert not missing, f"{name} opens with missing nodes {missing}"


def test_the_pack_put_its_example_picture_where_load_image_finds_it(server):
    assert (server.input / EXAMPLE_IMAGE.name).read_bytes() == EXAMPLE_IMAGE.read_bytes()
    choices = combo_options(server.get("/object_info/LoadImage")["LoadImage"]["input"]["required"]["image"])
    assert EXAMPLE_IMAGE.name in choices


@pytest.mark.parametrize("saved", ["template", "saved before V3"])
def test_ui_graphs_queued_from_the_frontend_run(server, saved):
    """Each template as the templates browser opens it, and each UI graph saved with the V1 nodes,
    queued as the frontend queues it: every widget value lands on its input, and the graph runs."""
    if saved == "template":
        graphs = {name: server.get(f"/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(name)}.json")
                  for name in server.get("/workflow_templates")[PACK_NAME]}
    else:
        graphs = {path.stem: json.loads(path.read_text()) for path in sorted(SAVED_BEFORE_V3.glob("Phenaki *.json"))}
    assert len(graphs) == (4 if saved == "template" else 3)
    for name, graph in graphs.items():
        prompt = frontend_prompt(server, graph)
        twin = on_stand_in(server, json.loads((ROOT / "api_workflows" / (name.lower().replace(" ", "_") + ".api.json"))
                                              .read_text()))
        for node_id, entry in twin.items():  # the pack's nodes get exactly their twin's inputs (core nodes'
            if entry["class_type"].startswith("Phenaki"):  # inputs differ between ComfyUI versions)
                assert prompt[node_id] == {"class_type": entry["class_type"], "inputs": entry["inputs"]}, name
        entry = server.wait(server.submit(prompt))
        assert entry["status"]["status_str"] == "success", f"{name}: {json.dumps(messages(entry))[:3000]}"


def test_a_changed_checkpoint_is_loaded_again_not_served_from_the_cache(server):
    """fingerprint_inputs: the same graph twice is served from ComfyUI's cache; after the checkpoint
    file changes on disk (retrained, replaced), Load Phenaki and everything after it run again."""
    prompt = prompts(server)["phenaki_text_to_video.api.json"]
    loader = next(i for i, e in prompt.items() if e["class_type"] == "PhenakiLoader")
    prompt[loader]["inputs"]["ckpt_name"] = STAND_IN
    node(prompt, "PhenakiSampleScene")["inputs"].update(seed=777, steps=2)

    def cached(entry: dict) -> set:
        assert entry["status"]["status_str"] == "success", json.dumps(messages(entry))[:3000]
        return set(messages(entry).get("execution_cached", {}).get("nodes", []))

    cached(server.wait(server.submit(prompt)))
    assert loader in cached(server.wait(server.submit(prompt)))
    path = server.models / STAND_IN
    stamp = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(stamp, stamp))
    assert loader not in cached(server.wait(server.submit(prompt)))


def test_every_api_workflow_runs_and_writes_its_file(server):
    for name, prompt in prompts(server).items():
        entry = server.wait(server.submit(prompt))
        assert entry["status"]["status_str"] == "success", f"{name}: {json.dumps(messages(entry))[:3000]}"
        files = output_files(server, entry)
        assert files and all(f.is_file() and f.stat().st_size > 0 for f in files), name


def output_files(server, entry: dict) -> list[Path]:
    return [server.out / item.get("subfolder", "") / item["filename"]
            for output in entry["outputs"].values() for items in output.values() if isinstance(items, list)
            for item in items if isinstance(item, dict) and item.get("type") == "output"]


WATCH = """
import asyncio, base64, json, sys, uuid
import aiohttp

async def main(url, prompt, node, preview_method):
    client = str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId={client}") as ws:
            response = await session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client,
                                                                  "extra_data": {"preview_method": preview_method}})
            prompt_id = (await response.json())["prompt_id"]
            previews, progress = [], []
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    previews.append(base64.b64encode(message.data).decode())
                    continue
                event = json.loads(message.data)
                if event["type"] == "progress" and event["data"]["node"] == node:
                    progress.append(event["data"]["value"])
                if event["type"] == "execution_error":
                    sys.exit(json.dumps(event["data"])[:2000])
                if event["type"] == "executing" and event["data"]["node"] is None \\
                        and event["data"].get("prompt_id") == prompt_id:
                    break
            print(json.dumps({"previews": previews, "progress": progress, "prompt_id": prompt_id}))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]))
"""


def watch(server, prompt: dict, node: str, method: str) -> dict:
    """Run a prompt while watching the websocket like the browser does (previews are binary messages)."""
    done = subprocess.run([str(comfy_paths(server.env)[1]), "-c", WATCH, server.url, json.dumps(prompt), node, method],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    import base64
    # a binary preview: event type (4 bytes), image type (4 bytes, 1 = JPEG), the image
    seen["images"] = [Image.open(io.BytesIO(base64.b64decode(p)[8:])).convert("RGB") for p in seen["previews"]]
    return seen


def test_progress_advances_every_step_with_previews_when_enabled(server):
    scene = prompts(server)["phenaki_text_to_video.api.json"]
    node, sampler = next((i, e) for i, e in scene.items() if e["class_type"] == "PhenakiSampleScene")
    steps = sampler["inputs"]["steps"]
    seen = {}
    for seed, method in ((101, "auto"), (102, "none")):
        sampler["inputs"]["seed"] = seed
        seen[method] = watch(server, scene, node, method)
    assert seen["auto"]["progress"][-1] == steps and 1 <= len(seen["auto"]["previews"]) <= 6
    assert len(seen["none"]["previews"]) == 0  # the user's preview setting is respected


def sheet_frames(sheet: Image.Image, count: int, size: int = 64) -> np.ndarray:
    """The frames of a preview contact sheet (count frames, size px, laid out as the pack does)."""
    import math
    columns = min(count, max(1, math.ceil(math.sqrt(count * 1.5))))
    array = np.asarray(sheet, dtype=np.float32) / 255
    return np.stack([array[r * size:(r + 1) * size, c * size:(c + 1) * size]
                     for r, c in (divmod(i, columns) for i in range(count))])


def test_chain_scenes_previews_every_scene_with_its_prime(server):
    """Every preview shows the whole window (prime + new frames); each scene's last preview is the scene."""
    story = prompts(server)["phenaki_story.api.json"]
    node, chain = next((i, e) for i, e in story.items() if e["class_type"] == "PhenakiChainScenes")
    chain["inputs"].update(seed=55, steps=6)  # a preview after every step: 6 per scene
    for node_id in [i for i, e in story.items() if e["class_type"] in ("CreateVideo", "SaveVideo")]:
        del story[node_id]
    story["90"] = {"class_type": "SaveAnimatedWEBP", "inputs": {  # lossless, to compare pixels
        "images": [node, 0], "filename_prefix": "phenaki/previews", "fps": 8.0, "lossless": True, "quality": 100,
        "method": "default"}}
    scenes, frames, prime = 3, chain["inputs"]["frames_per_scene"], chain["inputs"]["prime_frames"]
    seen = watch(server, story, node, "auto")
    assert len(seen["images"]) == scenes * 6
    # 17 frames of 64 px make a 6 x 3 sheet (11 frames, the prime missing, would make 5 x 3); ComfyUI scales
    # every preview to fit its preview size (512 px by default): 384 x 192 arrives as 512 x 256
    width, height = 64 * 6, 64 * 3
    assert all(image.size == (512, 256) for image in seen["images"]), [i.size for i in seen["images"]]
    entry = server.get(f"/history/{seen['prompt_id']}")[seen["prompt_id"]]
    (webp,) = output_files(server, entry)
    with Image.open(webp) as image:
        output = np.stack([np.asarray(f.convert("RGB"), dtype=np.float32) / 255 for f in ImageSequence.Iterator(image)])
    starts = [0, frames, 2 * frames - prime, 3 * frames - 2 * prime]
    assert len(output) == starts[-1]
    for scene in range(scenes):
        last = sheet_frames(seen["images"][(scene + 1) * 6 - 1].resize((width, height), Image.BILINEAR), frames)
        new = last[(prime if scene else 0):]
        error = np.abs(new - output[starts[scene]:starts[scene + 1]]).mean()
        assert error < 0.03, f"scene {scene + 1}: its last preview differs from its frames by {error:.3f}"


def node(prompt: dict, class_type: str) -> dict:
    return next(e for e in prompt.values() if e["class_type"] == class_type)


def with_inputs(workflow: str, class_type: str, **inputs):
    def edit(prompt: dict) -> None:
        node(prompt, class_type)["inputs"].update(inputs)
    return workflow, edit


def cond_from_unconditional_model():
    def edit(prompt: dict) -> None:
        prompt["99"] = {"class_type": "PhenakiLoader",
                        "inputs": {"ckpt_name": UNCONDITIONAL, "device": "auto", "dtype": "auto", "t5_folder": ""}}
        node(prompt, "PhenakiEncodeText")["inputs"]["model"] = ["99", 0]
    return "phenaki_text_to_video.api.json", edit


PRE_RUN = {  # refused when the graph is queued (HTTP 400, shown on the node), before any node runs
    "frames 16": (with_inputs("phenaki_text_to_video.api.json", "PhenakiSampleScene", frames=16),
                  "PhenakiSampleScene", ["1 + k*2", "try 15 or 17"]),
    "frames 19": (with_inputs("phenaki_text_to_video.api.json", "PhenakiSampleScene", frames=19),
                  "PhenakiSampleScene", ["at most 17 frames", "Phenaki Chain Scenes"]),
    "frames 5000": (with_inputs("phenaki_text_to_video.api.json", "PhenakiSampleScene", frames=5001),
                    "PhenakiSampleScene", ["at most 17 frames"]),
    "empty prompt": (with_inputs("phenaki_text_to_video.api.json", "PhenakiEncodeText", prompt="  "),
                     "PhenakiEncodeText", ["prompt is empty", "describe the scene"]),
    "empty story": (with_inputs("phenaki_story.api.json", "PhenakiChainScenes", prompts="\n \n"),
                    "PhenakiChainScenes", ["prompts is empty", "one prompt per line"]),
    "story frames 19": (with_inputs("phenaki_story.api.json", "PhenakiChainScenes", frames_per_scene=19),
                        "PhenakiChainScenes", ["frames_per_scene is 19", "at most 17 frames per scene"]),
    "story prime 4": (with_inputs("phenaki_story.api.json", "PhenakiChainScenes", prime_frames=4),
                      "PhenakiChainScenes", ["prime_frames must be 0 (no priming) or 1 + k*2", "try 3 or 5"]),
    "prime as long as the scene": (with_inputs("phenaki_continue_a_clip.api.json", "PhenakiSampleScene",
                                               prime_frames=17),
                                   "PhenakiSampleScene", ["prime_frames (17) must be shorter than the scene"]),
    "prime 0 with a prime": (with_inputs("phenaki_continue_a_clip.api.json", "PhenakiSampleScene", prime_frames=0),
                             "PhenakiSampleScene", ["prime_frames is 0 but a prime is connected"]),
}


@pytest.mark.parametrize("case", list(PRE_RUN))
def test_a_bad_input_is_refused_before_the_graph_runs(server, case):
    (workflow, edit), node_type, expected = PRE_RUN[case]
    prompt = prompts(server)[workflow]
    edit(prompt)
    before = len(server.get("/history"))
    errors = server.refused(prompt)
    (node_id,) = [i for i, e in errors.items() if e["class_type"] == node_type]
    details = {e["details"].split(" - ", 1)[1] for e in errors[node_id]["errors"] if " - " in e["details"]}
    assert len(details) == 1, errors  # one message (ComfyUI repeats it for each input the check names)
    (text,) = details
    assert "\n" not in text and all(phrase in text for phrase in expected), text
    assert len(server.get("/history")) == before  # nothing ran


def frames_from_a_primitive(value: int):
    """frames fed by a link (ComfyUI's Int primitive): validate_inputs gets None, the run checks it."""
    def edit(prompt: dict) -> None:
        prompt["98"] = {"class_type": "PrimitiveInt", "inputs": {"value": value}}
        node(prompt, "PhenakiSampleScene")["inputs"]["frames"] = ["98", 0]
    return "phenaki_text_to_video.api.json", edit


AT_RUN = {  # what needs the run to know: the error dialog shows exception_message
    "prime longer than the clip": (with_inputs("phenaki_continue_a_clip.api.json", "PhenakiSampleScene",
                                               prime_frames=11),
                                   "PhenakiSampleScene", ["longer than the prime clip (9 frames)", "at most 9"]),
    "cond from another model": (cond_from_unconditional_model(), "PhenakiSampleScene",
                                ["unconditional model", "Phenaki Encode Text"]),
    "frames 16 from a link": (frames_from_a_primitive(16), "PhenakiSampleScene", ["1 + k*2", "try 15 or 17"]),
    "prime of 5 from one picture": (with_inputs("phenaki_image_to_video.api.json", "PhenakiSampleScene",
                                                prime_frames=5),
                                    "PhenakiSampleScene", ["longer than the prime clip (1 frame)", "at most 1"]),
}


@pytest.mark.parametrize("case", list(AT_RUN))
def test_a_bad_input_found_by_the_run_shows_what_to_change(server, case):
    """The error dialog shows ``exception_message``: one line that says what to change, no traceback."""
    (workflow, edit), node_type, expected = AT_RUN[case]
    prompt = prompts(server)[workflow]
    edit(prompt)
    entry = server.wait(server.submit(prompt))
    assert entry["status"]["status_str"] == "error"
    error = messages(entry)["execution_error"]
    text = error["exception_message"].strip()
    assert error["node_type"] == node_type and error["exception_type"].endswith("InputError"), error
    assert "\n" not in text and "Traceback" not in text, text
    for phrase in expected:
        assert phrase in text, text


@pytest.mark.skipif(not VHS_GIT_DIR, reason="set VHS_GIT_DIR to a ComfyUI-VideoHelperSuite snapshot")
def test_videohelpersuite_clip_continues_at_its_own_speed(server):
    """VHS Load Video (24 fps) -> Video Info's fps -> Encode Video -> Sample Scene -> Decode -> Video Combine."""
    if not (ROOT / "phenaki_core" / "weights" / "shapes64.safetensors").is_file():
        pytest.skip("the speed check needs the bundled (trained) model")
    prompt = {
        "1": {"class_type": "PhenakiLoader", "inputs": {"ckpt_name": prompts(server)["phenaki_story.api.json"]["1"][
            "inputs"]["ckpt_name"], "device": "auto", "dtype": "auto", "t5_folder": ""}},
        "2": {"class_type": "VHS_LoadVideo", "inputs": {"video": CLIP_24FPS, "force_rate": 0, "custom_width": 0,
                                                        "custom_height": 0, "frame_load_cap": 0,
                                                        "skip_first_frames": 0, "select_every_nth": 1}},
        "3": {"class_type": "VHS_VideoInfo", "inputs": {"video_info": ["2", 3]}},
        "4": {"class_type": "PhenakiEncodeVideo", "inputs": {"model": ["1", 0], "images": ["2", 0], "crop": "center",
                                                             "source_fps": ["3", 0]}},
        "5": {"class_type": "PhenakiEncodeText", "inputs": {"model": ["1", 0], "prompt": "a red circle moving right",
                                                            "negative_prompt": ""}},
        "6": {"class_type": "PhenakiSampleScene", "inputs": {
            "model": ["1", 0], "cond": ["5", 0], "prime": ["4", 0], "frames": 17, "prime_frames": 5, "steps": 18,
            "cond_scale": 3.0, "temperature": 0.9, "critic_noise": 1.0, "seed": 1, "remask": "confidence"}},
        "7": {"class_type": "PhenakiDecode", "inputs": {"tokens": ["6", 0], "include_prime": True}},
        "8": {"class_type": "VHS_VideoCombine", "inputs": {
            "images": ["7", 0], "frame_rate": ["7", 1], "loop_count": 0, "filename_prefix": "phenaki/vhs",
            "format": "image/webp", "lossless": True, "pingpong": False, "save_output": True}},
    }
    entry = server.wait(server.submit(prompt))
    assert entry["status"]["status_str"] == "success", json.dumps(messages(entry))[:3000]
    (webp,) = [f for f in output_files(server, entry) if f.suffix == ".webp"]
    with Image.open(webp) as image:
        frames = [np.asarray(f.convert("RGB"), dtype=np.float32) / 255 for f in ImageSequence.Iterator(image)]
    assert len(frames) == 17
    xs = []
    for frame in frames:  # the red circle's centre, frame by frame
        red = (frame[..., 0] > 0.5) & (frame[..., 1] < 0.4)
        xs.append(np.argwhere(red)[:, 1].mean() if red.sum() >= 5 else np.nan)
    xs = np.array(xs)
    expected = CLIP_SPEED / 8  # px per frame at the model's 8 fps
    prime_speed = np.polyfit(np.arange(5), xs[:5], 1)[0]
    new = xs[5:]
    known = ~np.isnan(new)
    assert known.sum() >= 8, xs
    speed = np.polyfit(np.arange(len(new))[known], new[known], 1)[0]
    # the prime is the clip resampled to 8 fps (2 px per frame), and the continuation keeps that speed;
    # without resampling the prime would move 2/3 px per frame and the continuation about 3x faster
    assert abs(prime_speed - expected) < 0.5, xs
    assert 0.6 * expected < speed < 1.5 * expected, (speed, xs)


def test_cancel_stops_sampling_and_the_server_runs_again(server):
    story = prompts(server)["phenaki_story.api.json"]
    chain = next(e for e in story.values() if e["class_type"] == "PhenakiChainScenes")
    chain["inputs"].update(steps=200, prompts="\n".join(["a red circle moving right"] * 20), seed=12345)
    prompt_id = server.submit(story)
    deadline = time.time() + 120
    while not server.get("/queue")["queue_running"]:
        assert time.time() < deadline, "the story never started"
        time.sleep(0.1)
    time.sleep(3)  # into sampling on most machines; a cancel during loading must stop the story as well
    server.post("/interrupt", {})
    # 20 scenes of 200 steps run for many minutes on the CPU: ending within the wait means Cancel stopped them
    entry = server.wait(prompt_id, timeout=120)
    assert entry["status"]["status_str"] == "error" and "execution_interrupted" in messages(entry)
    scene = prompts(server)["phenaki_text_to_video.api.json"]
    next(e for e in scene.values() if e["class_type"] == "PhenakiSampleScene")["inputs"]["seed"] = 4321  # no cache hit
    again = server.wait(server.submit(scene))
    assert again["status"]["status_str"] == "success"
