"""The pack inside a real ComfyUI server, headless on the CPU (opt-in: needs a ComfyUI source snapshot).

Runs only when COMFY_GIT_DIR points at the git directory of a ComfyUI source snapshot (0.33 or
newer); it drives the shared tool ``comfyui_headless.sh`` (COMFYUI_HEADLESS_TOOL, default
``shared/tools/comfyui_headless.sh`` next to this checkout), which keeps ComfyUI and its venv
outside the project (under $ROOT, default a comfy-headless folder in the temp dir).

    COMFY_GIT_DIR=/path/to/ComfyUI.git python -m pytest tests/test_comfyui_headless.py -q

See docs/comfyui_headless.md for the commands and a recorded run.

It checks that /object_info lists the nodes, that every ``*.api.json`` in workflows/ runs to
success and writes its file, that bad inputs (wrong frame count, too long a prime, an empty prompt,
a cond from another model) show an actionable one-line message, and that Cancel stops
sampling and leaves the server able to run again. Checkpoints come from a models folder added with
``--extra-model-paths-config`` (a user path that must survive the pack's own registration); while
the bundled model is not shipped yet, a randomly initialised shapes64 model stands in for it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = Path(os.environ.get("COMFYUI_HEADLESS_TOOL", ROOT.parent / "shared" / "tools" / "comfyui_headless.sh"))
BUNDLED = "(bundled) shapes64"
STAND_IN = "phenaki_headless_test.safetensors"
UNCONDITIONAL = "phenaki_headless_unconditional.safetensors"  # its cond holds no text: a model/cond mismatch
NODE_IDS = ["PhenakiLoader", "PhenakiEncodeText", "PhenakiSampleScene", "PhenakiChainScenes",
            "PhenakiEncodeVideo", "PhenakiDecode"]

pytestmark = pytest.mark.skipif(not os.environ.get("COMFY_GIT_DIR") or not TOOL.is_file(),
                                reason="set COMFY_GIT_DIR to a ComfyUI source snapshot to run ComfyUI headless")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, env: dict, run_dir: Path):
        self.env = env
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.out = run_dir / "out"

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

    def submit(self, prompt: dict) -> str:
        return self.post("/prompt", {"prompt": prompt, "client_id": str(uuid.uuid4())})["prompt_id"]

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
    for clip in (ROOT / "workflows" / "input").iterdir():
        shutil.copy(clip, run_dir / "input" / clip.name)

    env = dict(os.environ, PORT=str(free_port()), RUN=str(run_dir), PACK_NAME="phenaki-comfyui",
               EXTRA_ARGS=f"--extra-model-paths-config {work / 'extra_model_paths.yaml'}")
    server = Server(env, run_dir)
    server.tool("setup")
    server.tool("link", str(ROOT))
    server.tool("start", timeout=300)
    try:
        yield server
    finally:
        server.tool("stop", timeout=60)


def prompts(server) -> dict[str, dict]:
    """The API twins, on the stand-in model while the bundled one is not shipped."""
    checkpoints = server.get("/object_info/PhenakiLoader")["PhenakiLoader"]["input"]["required"]["ckpt_name"][0]
    bundled_present = (ROOT / "phenaki_core" / "weights" / "shapes64.safetensors").is_file()
    result = {}
    for path in sorted((ROOT / "workflows").glob("*.api.json")):
        prompt = json.loads(path.read_text())
        for entry in prompt.values():
            if entry["inputs"].get("ckpt_name") == BUNDLED and not bundled_present:
                assert STAND_IN in checkpoints
                entry["inputs"]["ckpt_name"] = STAND_IN
        result[path.name] = prompt
    return result


def messages(entry: dict) -> dict:
    return {event: data for event, data in entry["status"].get("messages", [])}


def test_object_info_lists_the_nodes_and_keeps_user_model_paths(server):
    info = server.get("/object_info")
    for node_id in NODE_IDS:
        assert node_id in info, f"{node_id} is not registered"
        assert info[node_id]["category"] == "Phenaki"
    checkpoints = info["PhenakiLoader"]["input"]["required"]["ckpt_name"][0]
    assert checkpoints[0] == BUNDLED and STAND_IN in checkpoints  # the extra_model_paths.yaml folder is kept
    assert info["PhenakiDecode"]["output"] == ["IMAGE", "FLOAT"]
    assert info["PhenakiSampleScene"]["input"]["required"]["seed"][1]["control_after_generate"] is True


def test_every_api_workflow_runs_and_writes_its_file(server):
    for name, prompt in prompts(server).items():
        entry = server.wait(server.submit(prompt))
        assert entry["status"]["status_str"] == "success", f"{name}: {json.dumps(messages(entry))[:3000]}"
        files = [server.out / item.get("subfolder", "") / item["filename"]
                 for output in entry["outputs"].values() for items in output.values() if isinstance(items, list)
                 for item in items if isinstance(item, dict) and item.get("type") == "output"]
        assert files and all(f.is_file() and f.stat().st_size > 0 for f in files), name


WATCH = """
import asyncio, json, sys, uuid
import aiohttp

async def main(url, prompt, node, preview_method):
    client = str(uuid.uuid4())
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId={client}") as ws:
            response = await session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client,
                                                                  "extra_data": {"preview_method": preview_method}})
            prompt_id = (await response.json())["prompt_id"]
            previews, progress = 0, []
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    previews += 1
                    continue
                event = json.loads(message.data)
                if event["type"] == "progress" and event["data"]["node"] == node:
                    progress.append(event["data"]["value"])
                if event["type"] == "execution_error":
                    sys.exit(json.dumps(event["data"])[:2000])
                if event["type"] == "executing" and event["data"]["node"] is None \\
                        and event["data"].get("prompt_id") == prompt_id:
                    break
            print(json.dumps({"previews": previews, "progress": progress}))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]))
"""


def test_progress_advances_every_step_with_previews_when_enabled(server):
    """Watch the websocket like the browser does: one progress event per step, a few preview images."""
    python = Path(server.env.get("VENV") or Path(server.env.get("ROOT") or
                  Path(os.environ.get("TMPDIR", "/tmp")) / "comfy-headless") / "venv") / "bin" / "python"
    scene = prompts(server)["phenaki_text_to_scene.api.json"]
    node, sampler = next((i, e) for i, e in scene.items() if e["class_type"] == "PhenakiSampleScene")
    steps = sampler["inputs"]["steps"]
    seen = {}
    for seed, method in ((101, "auto"), (102, "none")):
        sampler["inputs"]["seed"] = seed
        done = subprocess.run([str(python), "-c", WATCH, server.url, json.dumps(scene), node, method],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
        seen[method] = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["auto"]["progress"][-1] == steps and 1 <= seen["auto"]["previews"] <= 6
    assert seen["none"]["previews"] == 0  # the user's preview setting is respected


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
    return "phenaki_text_to_scene.api.json", edit


BAD_INPUTS = {  # what the error dialog must say (exception_message), per bad input
    "frames 16": (with_inputs("phenaki_text_to_scene.api.json", "PhenakiSampleScene", frames=16),
                  "PhenakiSampleScene", ["1 + k*2", "try 15 or 17"]),
    "frames 19": (with_inputs("phenaki_text_to_scene.api.json", "PhenakiSampleScene", frames=19),
                  "PhenakiSampleScene", ["at most 17 frames", "Phenaki Chain Scenes"]),
    "empty prompt": (with_inputs("phenaki_text_to_scene.api.json", "PhenakiEncodeText", prompt="  "),
                     "PhenakiEncodeText", ["empty", "describe the scene"]),
    "empty story": (with_inputs("phenaki_story.api.json", "PhenakiChainScenes", prompts="\n \n"),
                    "PhenakiChainScenes", ["prompts is empty", "one prompt per line"]),
    "prime as long as the scene": (with_inputs("phenaki_continue_clip.api.json", "PhenakiSampleScene",
                                               prime_frames=17),
                                   "PhenakiSampleScene", ["prime_frames (17) must be shorter than the scene"]),
    "prime longer than the clip": (with_inputs("phenaki_continue_clip.api.json", "PhenakiSampleScene",
                                               prime_frames=11),
                                   "PhenakiSampleScene", ["longer than the prime clip (9 frames)", "at most 9"]),
    "cond from another model": (cond_from_unconditional_model(), "PhenakiSampleScene",
                                ["unconditional model", "Phenaki Encode Text"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_shows_what_to_change(server, case):
    """The error dialog shows ``exception_message``: one line that says what to change, no traceback."""
    (workflow, edit), node_type, expected = BAD_INPUTS[case]
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
    scene = prompts(server)["phenaki_text_to_scene.api.json"]
    next(e for e in scene.values() if e["class_type"] == "PhenakiSampleScene")["inputs"]["seed"] = 4321  # no cache hit
    again = server.wait(server.submit(scene))
    assert again["status"]["status_str"] == "success"
