"""Every workflow: node types exist, links are valid, widget values fit the inputs, each UI workflow
(example_workflows/, ComfyUI's templates) has a thumbnail and an API-format twin (api_workflows/)
that says the same thing, and the twins run through the pack's nodes (ComfyUI's own load/save
nodes replaced by small stand-ins). The UI graphs saved before the nodes moved to the V3 schema
(tests/fixtures/saved_before_v3/) still load onto the V3 nodes, value for value, and give the same
prompts as today's twins.

The twins run on a tiny model in place of the bundled one (always), and on the bundled model
itself when it is present.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from phenaki_core.pipeline import BUNDLED_CHECKPOINT

from helpers import ROOT, node_info, pack_parts, save_tiny_bundle, ui_to_api

TEMPLATES = ROOT / "example_workflows"  # UI format only: ComfyUI's templates browser lists every *.json here
API = ROOT / "api_workflows"  # the API-format twins, where the templates browser does not look
SAVED_BEFORE_V3 = ROOT / "tests" / "fixtures" / "saved_before_v3"  # UI graphs saved with the V1 nodes
EXAMPLE_CLIPS = ROOT / "nodes" / "example_clips"
BUNDLED = "(bundled) shapes64"
# ComfyUI lists <pack>/<folder>/*.json as templates for each of these folders (app/custom_node_manager.py)
TEMPLATE_FOLDERS = ["example_workflows", "example", "examples", "workflow", "workflows"]

pack, NODES, glue, _ = pack_parts()


# --- node specs ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Input:
    name: str
    type: str  # socket type, or INT / FLOAT / STRING / BOOLEAN / COMBO for widgets
    widget: bool
    optional: bool = False
    options: dict = dataclasses.field(default_factory=dict)  # min / max / choices / control_after_generate


@dataclasses.dataclass
class Spec:
    inputs: list[Input]
    outputs: list[str]
    ui_extra_widgets: int = 0  # frontend-only widgets saved after the inputs' (LoadImage's upload button)

    @property
    def widgets(self) -> list[Input]:
        return [i for i in self.inputs if i.widget]


WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def spec_from_info(info: dict) -> Spec:
    """A node's inputs in the frontend's widget order (required, then optional), from its /object_info entry."""
    inputs = []
    for section in ("required", "optional"):
        for name in info["input_order"].get(section, []):
            kind, options = info["input"][section][name]
            options = dict(options)
            if isinstance(kind, list):  # a V1 combo
                options["choices"], kind = kind, "COMBO"
            elif kind == "COMBO":  # a V3 combo
                options["choices"] = options.get("options")
            inputs.append(Input(name, kind, kind in WIDGET_TYPES + ("COMBO",), section == "optional", options))
    return Spec(inputs, list(info["output"]))


# Core nodes used by the workflows, as declared by ComfyUI 0.33.0 (comfy_extras/nodes_images.py,
# comfy_extras/nodes_video.py, nodes.py). Widget options are only listed where the workflows set them.
CORE_NODES = {
    "SaveAnimatedWEBP": Spec([
        Input("images", "IMAGE", False),
        Input("filename_prefix", "STRING", True),
        Input("fps", "FLOAT", True, options={"min": 0.01, "max": 1000.0}),
        Input("lossless", "BOOLEAN", True),
        Input("quality", "INT", True, options={"min": 0, "max": 100}),
        Input("method", "COMBO", True, options={"choices": ["default", "fastest", "slowest"]}),
    ], ["IMAGE"]),
    "CreateVideo": Spec([
        Input("images", "IMAGE", False),
        Input("fps", "FLOAT", True, options={"min": 1.0, "max": 120.0}),
        Input("audio", "AUDIO", False, optional=True),
        Input("bit_depth", "INT", True, optional=True, options={"min": 8, "max": 10}),
    ], ["VIDEO"]),
    "SaveVideo": Spec([  # format/codec became dynamic combos in 0.33; these values are accepted by both forms
        Input("video", "VIDEO", False),
        Input("filename_prefix", "STRING", True),
        Input("format", "COMBO", True, options={"choices": ["auto", "mp4", "mkv", "webm"]}),
        Input("codec", "COMBO", True, optional=True, options={"choices": ["auto", "h264", "av1"]}),
    ], ["VIDEO"]),
    "LoadImage": Spec([Input("image", "COMBO", True)], ["IMAGE", "MASK"], ui_extra_widgets=1),
}
UI_ONLY_NODES = {"Note", "MarkdownNote"}  # frontend notes: no inputs, never in API prompts
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def node_spec(node_type: str) -> Spec:
    if node_type in NODES:
        return spec_from_info(node_info(NODES[node_type]))
    if node_type in CORE_NODES:
        return CORE_NODES[node_type]
    raise AssertionError(f"unknown node type {node_type!r}: neither a Phenaki node nor a listed core node")


def check_value(where: str, spec: Input, value) -> None:
    opts = spec.options
    if spec.type == "COMBO":
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
        if spec.name == "ckpt_name":
            assert value == BUNDLED, f"{where}: shipped workflows use the bundled model, not {value!r}"
        elif "choices" in opts:
            assert value in opts["choices"], f"{where}: {value!r} not in {opts['choices']}"
    elif spec.type == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an INT"
    elif spec.type == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} not a FLOAT"
    elif spec.type == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {value!r} is not a BOOLEAN"
    elif spec.type == "STRING":
        assert isinstance(value, str), f"{where}: {value!r} is not a STRING"
    if spec.type in ("INT", "FLOAT"):
        assert opts.get("min", -np.inf) <= value <= opts.get("max", np.inf), f"{where}: {value} out of range"


# --- loading the files -----------------------------------------------------------------------------
def ui_files() -> list[Path]:
    return sorted(TEMPLATES.glob("*.json"))


def saved_files() -> list[Path]:
    return sorted(SAVED_BEFORE_V3.glob("Phenaki *.json"))


def widget_order(node_type: str) -> list[tuple[str, bool, bool]]:
    """(name, is_widget, control_after_generate) of a node's inputs, in the frontend's order."""
    return [(i.name, i.widget, bool(i.options.get("control_after_generate"))) for i in node_spec(node_type).inputs]


def api_files() -> list[Path]:
    return sorted(API.glob("*.api.json"))


def twin(path: Path) -> Path:
    """The API twin of a template: "Phenaki story.json" -> api_workflows/phenaki_story.api.json."""
    return API / (path.stem.lower().replace(" ", "_") + ".api.json")


def test_the_required_workflows_exist():
    names = {p.stem for p in ui_files()}
    assert {"Phenaki text to video", "Phenaki story", "Phenaki continue a clip", "Phenaki image to video"} <= names
    assert {p.stem for p in saved_files()} == {"Phenaki text to video", "Phenaki story", "Phenaki continue a clip"}
    assert {twin(p) for p in ui_files()} == set(api_files()), "every UI workflow needs an API twin and vice versa"
    for path in [*TEMPLATES.rglob("*.json"), *API.rglob("*.json")]:
        json.loads(path.read_text())  # every JSON parses


def test_the_templates_browser_lists_only_ui_workflows_each_with_a_thumbnail():
    """What ComfyUI's /workflow_templates route lists for this pack: UI graphs only, each with <name>.jpg."""
    listed = [p for folder in TEMPLATE_FOLDERS for p in (ROOT / folder).glob("*.json")]
    assert sorted(listed) == ui_files()
    for path in listed:
        assert "nodes" in json.loads(path.read_text()), f"{path.name} is not a UI workflow"
        thumbnail = path.with_suffix(".jpg")
        assert thumbnail.is_file(), f"{path.name} has no thumbnail {thumbnail.name}"
        with Image.open(thumbnail) as image:
            assert image.format == "JPEG" and min(image.size) >= 128 and thumbnail.stat().st_size < 200_000
            assert np.asarray(image.convert("L")).std() > 5, f"{thumbnail.name} is blank"


@pytest.mark.parametrize("path", ui_files() + saved_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_ui_workflow_is_valid(path):
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]), "duplicate node ids"
    links = {link[0]: link for link in workflow["links"]}
    assert len(links) == len(workflow["links"]), "duplicate link ids"
    assert workflow["last_node_id"] >= max(nodes) and workflow["last_link_id"] >= max(links, default=0)

    for link_id, link in links.items():
        assert len(link) == 6, f"link {link_id} is not [id, from, from_slot, to, to_slot, type]"
        _, src, src_slot, dst, dst_slot, link_type = link
        assert src in nodes and dst in nodes, f"link {link_id} joins missing nodes"
        assert src_slot < len(nodes[src]["outputs"]) and dst_slot < len(nodes[dst]["inputs"]), f"link {link_id} slot"
        assert link_id in (nodes[src]["outputs"][src_slot]["links"] or []), f"link {link_id} not on its output"
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id, f"link {link_id} not on its input"
        assert nodes[src]["outputs"][src_slot]["type"] == link_type == nodes[dst]["inputs"][dst_slot]["type"]

    for node in nodes.values():
        where = f"{path.name} node {node['id']} ({node['type']})"
        for key in ("pos", "size", "inputs", "outputs", "mode", "order", "flags", "properties"):
            assert key in node, f"{where}: no {key!r}"
        if node["type"] in UI_ONLY_NODES:
            assert not node["inputs"] and not node["outputs"]
            continue
        spec = node_spec(node["type"])
        by_name = {i.name: i for i in spec.inputs}
        for slot in node["inputs"]:
            declared = by_name.get(slot["name"])
            assert declared is not None, f"{where}: no input {slot['name']!r}"
            assert slot["type"] == declared.type or (declared.widget and "widget" in slot), f"{where}: {slot}"
            assert declared.widget == ("widget" in slot), f"{where}: {slot['name']} widget/socket mix-up"
            if slot["link"] is not None:
                assert slot["link"] in links and links[slot["link"]][3] == node["id"], f"{where}: dangling link"
        linked = {slot["name"] for slot in node["inputs"] if slot["link"] is not None}
        for declared in spec.inputs:
            if not declared.widget and not declared.optional:
                assert declared.name in linked, f"{where}: required input {declared.name!r} is not connected"
        assert [o["type"] for o in node["outputs"]] == spec.outputs[:len(node["outputs"])], where
        for slot, output in enumerate(node["outputs"]):
            for link_id in output["links"] or []:
                assert links[link_id][1] == node["id"] and links[link_id][2] == slot, f"{where}: output links"

        values = list(node["widgets_values"])
        for declared in spec.widgets:
            if not values and declared.optional:
                break  # trailing optional widgets may be absent (older ComfyUI versions)
            assert values, f"{where}: no widget value for {declared.name!r}"
            check_value(f"{where} {declared.name}", declared, values.pop(0))
            if declared.options.get("control_after_generate"):
                control = values.pop(0)
                assert control in CONTROL_VALUES, f"{where}: {control!r} after the seed is no control value"
        assert len(values) == spec.ui_extra_widgets, f"{where}: {len(values)} widget values left over"


@pytest.mark.parametrize("path", ui_files() + saved_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_ui_graph_loads_as_its_api_twin(path):
    """Queued from the UI (widget values by position onto the V3 nodes' inputs), the graph is its twin;
    a graph saved with the V1 nodes gives the very prompt today's twin is."""
    api = {node_id: {"class_type": e["class_type"], "inputs": e["inputs"]}  # _meta (titles) is UI-only
           for node_id, e in json.loads(twin(path).read_text()).items()}
    assert ui_to_api(json.loads(path.read_text()), widget_order) == api


@pytest.mark.parametrize("path", api_files(), ids=lambda p: p.name)
def test_api_prompt_is_valid(path):
    prompt = json.loads(path.read_text())
    for node_id, entry in prompt.items():
        spec = node_spec(entry["class_type"])
        for declared in spec.inputs:
            value = entry["inputs"].get(declared.name)
            where = f"{path.name} node {node_id} ({entry['class_type']}) {declared.name}"
            if value is None:
                assert declared.optional, f"{where}: required input missing"
            elif isinstance(value, list):
                src, slot = value
                assert src in prompt, f"{where}: links to a missing node"
                source_type = node_spec(prompt[src]["class_type"]).outputs[slot]
                assert source_type == declared.type, f"{where}: a {source_type} output feeds a {declared.type} input"
            else:
                assert declared.widget, f"{where}: a socket needs a link, not a value"
                check_value(where, declared, value)
        unknown = set(entry["inputs"]) - {i.name for i in spec.inputs}
        assert not unknown, f"{path.name} node {node_id}: unknown inputs {sorted(unknown)}"


def test_every_template_runs_as_opened_without_files_from_the_user():
    """No template needs a file the user must copy into ComfyUI's input folder: Load Image only opens the
    pack's example picture, which the pack copies there when ComfyUI loads it."""
    for path in ui_files():
        workflow = json.loads(path.read_text())
        for node in workflow["nodes"]:
            assert node["type"] != "LoadVideo", f"{path.name}: needs a file the user must copy"
            if node["type"] == "LoadImage":
                assert node["widgets_values"][0] == glue.EXAMPLE_IMAGE.name, f"{path.name}: not the pack's picture"
                assert glue.EXAMPLE_IMAGE.is_file()
            if node["type"] == "PhenakiExampleClip":
                assert (EXAMPLE_CLIPS / node["widgets_values"][0]).is_file()


# --- running the API twins -------------------------------------------------------------------------
def load_image_frames(name: str) -> torch.Tensor:
    """LoadImage's result for a picture (one frame) or an animated file (every frame) that the pack
    ships: [f, H, W, 3] float32 in 0..1."""
    with Image.open(EXAMPLE_CLIPS / name) as image:
        frames = [np.asarray(frame.convert("RGB"), dtype=np.float32) / 255 for frame in ImageSequence.Iterator(image)]
    return torch.from_numpy(np.stack(frames))


class StandIns:
    """Minimal stand-ins for the core nodes; they check what they receive and record it."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.saved: list[tuple[str, torch.Tensor, float]] = []

    def check_images(self, images) -> None:
        assert isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[-1] == 3
        assert images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1

    def save(self, kind: str, images: torch.Tensor, fps: float, prefix: str) -> None:
        self.check_images(images)
        assert isinstance(fps, float) and fps > 0
        frames = [Image.fromarray(f) for f in (images.numpy() * 255).round().astype(np.uint8)]
        path = self.out_dir / f"{prefix.replace('/', '_')}.webp"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), lossless=True)
        self.saved.append((kind, images, fps))

    def run(self, class_type: str, **inputs):
        if class_type == "LoadImage":
            frames = load_image_frames(inputs["image"])
            return frames, torch.zeros(frames.shape[:3])
        if class_type == "SaveAnimatedWEBP":
            self.save("webp", inputs["images"], inputs["fps"], inputs["filename_prefix"])
            return (inputs["images"],)
        if class_type == "CreateVideo":
            self.check_images(inputs["images"])
            return ({"images": inputs["images"], "fps": float(inputs["fps"])},)
        if class_type == "SaveVideo":
            video = inputs["video"]
            self.save("video", video["images"], video["fps"], inputs["filename_prefix"])
            return (video,)
        raise AssertionError(f"no stand-in for {class_type}")


def run_prompt(prompt: dict, standins: StandIns) -> dict:
    """Execute an API prompt in dependency order, like ComfyUI's executor (without its caching)."""
    results: dict[str, tuple] = {}

    def value(v):
        return results[v[0]][v[1]] if isinstance(v, list) else v

    pending = dict(prompt)
    while pending:
        ready = [i for i, e in pending.items()
                 if all(not isinstance(v, list) or v[0] in results for v in e["inputs"].values())]
        assert ready, "the prompt has a cycle"
        for node_id in sorted(ready, key=int):
            entry = pending.pop(node_id)
            inputs = {name: value(v) for name, v in entry["inputs"].items()}
            cls = NODES.get(entry["class_type"])
            if cls is None:
                results[node_id] = standins.run(entry["class_type"], **inputs)
            else:
                results[node_id] = cls.execute(**inputs).args
            assert isinstance(results[node_id], tuple)
    return results


EXPECTED_FRAMES = {"phenaki_text_to_video.api.json": 17, "phenaki_story.api.json": 17 + 12 + 12,
                   "phenaki_continue_a_clip.api.json": 17, "phenaki_image_to_video.api.json": 17}


@pytest.fixture(scope="module")
def tiny_as_bundled(tmp_path_factory):
    """A tiny model in place of the bundled one, loaded once: the loader reuses it for every workflow."""
    path = save_tiny_bundle(tmp_path_factory.mktemp("tiny") / "tiny.safetensors")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(glue, "default_checkpoint", lambda: path)
        model = glue.load_model(BUNDLED, "auto", "auto")
    # held here, the loaded model stays in the loader's cache; each test patches the path itself,
    # so the real bundled model is still what later tests in this module get
    yield path, model


@pytest.mark.parametrize("path", api_files(), ids=lambda p: p.name)
def test_api_twin_runs_through_the_nodes_on_a_tiny_model(path, tiny_as_bundled, tmp_path, monkeypatch):
    monkeypatch.setattr(glue, "default_checkpoint", lambda: tiny_as_bundled[0])
    prompt = json.loads(path.read_text())
    for entry in prompt.values():
        if "steps" in entry["inputs"]:
            entry["inputs"]["steps"] = 2  # the tiny model learns nothing from more; the bundled run uses all
    standins = StandIns(tmp_path)
    run_prompt(prompt, standins)
    assert standins.saved, "the workflow saved nothing"
    for _, images, fps in standins.saved:
        assert images.shape == (EXPECTED_FRAMES[path.name], 8, 8, 3) and fps == 8.0
    assert all(f.stat().st_size > 0 for f in tmp_path.glob("*.webp"))


@pytest.mark.skipif(not BUNDLED_CHECKPOINT.is_file(), reason="the bundled model is not in phenaki_core/weights yet")
@pytest.mark.parametrize("path", api_files(), ids=lambda p: p.name)
def test_api_twin_runs_on_the_bundled_model(path, tmp_path):
    standins = StandIns(tmp_path)
    run_prompt(json.loads(path.read_text()), standins)
    for _, images, fps in standins.saved:
        assert images.shape == (EXPECTED_FRAMES[path.name], 64, 64, 3) and fps == 8.0
