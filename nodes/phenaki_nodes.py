"""The Phenaki nodes on ComfyUI's V3 schema: schema and plumbing only; the work happens in ``glue``
and ``phenaki_core``.

Node IDs are stored in every saved workflow: never rename them. A saved UI graph stores each node's
widget values by position, in the order the frontend shows the widgets (the required inputs, then
the optional ones, each in schema order). So each schema lists its required inputs first, new
inputs are optional and come after the old ones, and new outputs come last.

``critic_noise`` stays a required widget of Sample Scene and Chain Scenes, between temperature and
seed, although only critic re-masking uses it (``remask`` = critic, or auto on a model with a
critic): moving it to the optional inputs would hand its value to seed in every saved graph, and
every later value to the widget before it. Its tooltip says when it matters.

``validate_inputs`` runs when the graph is queued, before any node runs. ComfyUI passes it the
inputs it names; an input fed by a link arrives as None (its value does not exist yet), an optional
input that is not connected does not arrive at all (the default is used), and ComfyUI skips its
own min/max checks for every input it names. So the checks here skip linked values, cover the
widgets' ranges themselves, and leave what needs the model or a linked clip to the run.
"""

from __future__ import annotations

from . import glue
from ..phenaki_core import PhenakiError
from .comfy_adapter import io
from .sockets import COND, MODEL, TOKENS

CATEGORY = "Phenaki"
SEED_MAX = 0xFFFFFFFFFFFFFFFF

Model, Cond, Tokens = io.Custom(MODEL), io.Custom(COND), io.Custom(TOKENS)

FRAMES_TIP = ("Frames in the clip: 1 + k*2 for the bundled model (1, 3, ... 17); at most 17 with the bundled "
              "model. With a prime, the prime's frames are part of this count.")
PRIME_TIP = ("How many of the prime's last frames the scene starts from: 1 + k*2 (e.g. 5), and fewer than "
             "the scene's frames; 1 for a single picture (image to video). Only used when a prime is connected.")
MODEL_TIP = "The Phenaki model from Load Phenaki."
ABSENT = object()  # validate_inputs: an optional input that is not connected (a linked one arrives as None)


def _int(id: str, default: int, low: int, high: int, tooltip: str) -> io.Int.Input:
    return io.Int.Input(id, default=default, min=low, max=high, tooltip=tooltip)


def _float(id: str, default: float, low: float, high: float, step: float, tooltip: str) -> io.Float.Input:
    return io.Float.Input(id, default=default, min=low, max=high, step=step, tooltip=tooltip)


def sampling_inputs() -> list:
    """steps, cond_scale, temperature, critic_noise, seed: required, in this order (saved graphs)."""
    return [
        _int("steps", 18, 1, 200, "Unmasking steps: more steps, finer detail, slower."),
        _float("cond_scale", 3.0, 0.0, 30.0, 0.1, "Classifier-free guidance: how strongly the prompt steers the "
                                                  "video (1 = no guidance)."),
        _float("temperature", 0.9, 0.0, 5.0, 0.05, "Token sampling temperature at the first step (annealed to 0): "
                                                   "higher is more varied, 0 is greedy."),
        _float("critic_noise", 1.0, 0.0, 10.0, 0.05, "Noise on the token critic's scores when it chooses which "
                                                     "tokens to resample (decays over the steps). Only matters with "
                                                     "remask = critic, or auto on a model with a critic; the "
                                                     "default remask (confidence) ignores it."),
        io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                     tooltip="Same seed, same settings: the same frames."),
    ]


def remask_input() -> io.Combo.Input:
    """Optional, so a graph saved without it still loads (it gets the default)."""
    return io.Combo.Input("remask", options=list(glue.REMASK_MODES), default=glue.DEFAULT_REMASK, optional=True,
                          tooltip="Which tokens to resample at each step. confidence: the model's least sure tokens "
                                  "(the default; best measured on the bundled model). critic: the token critic's "
                                  "choice. auto: the critic when the model has one.")


def _refusal(check) -> "bool | str":
    """validate_inputs' answer: True, or the one-line message the node would raise when it runs."""
    try:
        message = check()
    except PhenakiError as exc:
        return str(exc)
    return message or True


class PhenakiLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PhenakiLoader", display_name="Load Phenaki", category=CATEGORY,
            description="Load a Phenaki text-to-video checkpoint (models/phenaki, or the bundled Shapes World "
                        "model) and its text encoder.",
            search_aliases=["text to video", "t2v", "video model", "load video model", "phenaki checkpoint"],
            inputs=[
                io.Combo.Input("ckpt_name", options=glue.checkpoint_choices(), tooltip=(
                    "A .safetensors bundle from models/phenaki, or the bundled 64x64 Shapes World model.")),
                io.Combo.Input("device", options=["auto", "cpu", "cuda"],
                               tooltip="auto: ComfyUI's device (the GPU if there is one)."),
                io.Combo.Input("dtype", options=["auto", *glue.DTYPES],
                               tooltip="auto: bf16 where the device has bf16 matrix units (a GPU from Ampere "
                                       "on, a CPU with AMX or AVX512-BF16), else fp32."),
                io.String.Input("t5_folder", default="", optional=True, tooltip=(
                    "Only for checkpoints trained with a T5 text encoder: the local folder that holds it.")),
            ],
            outputs=[Model.Output("model", tooltip="The loaded model, for Encode Text, Sample Scene, Chain Scenes "
                                                   "and Encode Video.")],
        )

    @classmethod
    def fingerprint_inputs(cls, ckpt_name, device=None, dtype=None, t5_folder=""):
        """A checkpoint file that changed on disk (retrained, replaced) is loaded again, not served from cache."""
        return glue.checkpoint_fingerprint(ckpt_name)

    @classmethod
    def execute(cls, ckpt_name, device, dtype, t5_folder=""):
        return io.NodeOutput(glue.load_model(ckpt_name, device, dtype, t5_folder))


class PhenakiEncodeText(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PhenakiEncodeText", display_name="Phenaki Encode Text", category=CATEGORY,
            description="Encode a prompt (and an optional negative prompt) with the model's own text encoder.",
            search_aliases=["text to video", "t2v", "video prompt", "prompt", "text encode"],
            inputs=[
                Model.Input("model", tooltip=MODEL_TIP + " Its text encoder encodes the prompt."),
                io.String.Input("prompt", multiline=True, default="a red circle moving right",
                                tooltip="What happens in the scene."),
                io.String.Input("negative_prompt", multiline=True, default="", optional=True,
                                tooltip="Guidance pushes away from this (empty: from no text)."),
            ],
            outputs=[Cond.Output("cond", tooltip="The encoded prompt, for Sample Scene with the same model (or one "
                                                 "with the same text encoder).")],
        )

    @classmethod
    def validate_inputs(cls, prompt=None):
        if prompt is None:  # linked: known when the node runs
            return True
        return _refusal(lambda: glue.check_prompt(prompt) and None)

    @classmethod
    def execute(cls, model, prompt, negative_prompt=""):
        return io.NodeOutput(glue.encode_text(model, prompt, negative_prompt))


class PhenakiSampleScene(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PhenakiSampleScene", display_name="Phenaki Sample Scene", category=CATEGORY,
            description="Generate one scene's tokens from a prompt (text to video); with a prime, the scene "
                        "continues from the prime's last frames (a clip, or one picture: image to video). Decode "
                        "turns the tokens into frames.",
            search_aliases=["text to video", "t2v", "video", "generate video", "continue", "continue video",
                            "extend video", "scene", "image to video", "i2v", "animate image"],
            inputs=[
                Model.Input("model", tooltip=MODEL_TIP),
                Cond.Input("cond", tooltip="The prompt, from Phenaki Encode Text."),
                _int("frames", 17, 1, 1025, FRAMES_TIP),
                *sampling_inputs(),
                Tokens.Input("prime", optional=True, tooltip="Tokens to continue from (Sample Scene, or Encode Video "
                                                             "of a clip or of one picture)."),
                io.Int.Input("prime_frames", default=5, min=0, max=1025, optional=True, tooltip=PRIME_TIP),
                remask_input(),
            ],
            outputs=[Tokens.Output("tokens", tooltip="The scene's tokens, prime included: Phenaki Decode makes frames "
                                                     "of them, or prime the next Sample Scene with them.")],
        )

    @classmethod
    def validate_inputs(cls, frames=None, prime_frames=None, prime=ABSENT):
        if frames is None:  # linked: known when the node runs
            return True

        def check(config):
            glue.check_frames(config, frames)
            if prime is not ABSENT and prime_frames is not None:  # a prime is connected
                glue.check_prime_setting(config, prime_frames, frames)
        return _refusal(lambda: glue.precheck(check))

    @classmethod
    def execute(cls, model, cond, frames, steps, cond_scale, temperature, critic_noise, seed, prime=None,
                prime_frames=5, remask=None):
        sampler = glue.sampler_config(steps, cond_scale, temperature, critic_noise, remask)
        return io.NodeOutput(glue.sample_scene(model, cond, frames, sampler, seed, prime, prime_frames))


class PhenakiChainScenes(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PhenakiChainScenes", display_name="Phenaki Chain Scenes", category=CATEGORY,
            description="A multi-scene story (text to video) in one node: one prompt per line; each scene starts "
                        "from the last prime_frames frames of the scene before.",
            search_aliases=["story", "text to video", "t2v", "video", "long video", "multi scene", "storyboard",
                            "continue"],
            inputs=[
                Model.Input("model", tooltip=MODEL_TIP + " Its text encoder encodes every line."),
                io.String.Input("prompts", multiline=True, default="a red circle moving right\na red circle moving up",
                                tooltip="One scene per line."),
                _int("frames_per_scene", 17, 1, 1025, "Each scene's window, its prime included: 1 + k*2 for the "
                                                      "bundled model, at most 17."),
                _int("prime_frames", 5, 0, 1025, "Frames carried from one scene into the next: 0 (a fresh start) or "
                                                 "1 + k*2, fewer than frames_per_scene."),
                *sampling_inputs(),
                io.String.Input("negative_prompt", multiline=True, default="", optional=True, tooltip=(
                    "One negative prompt for every scene: guidance pushes away from it (empty: from no text).")),
                Tokens.Input("prime", optional=True, tooltip="Start the first scene from the end of this clip (Encode "
                                                             "Video or Sample Scene)."),
                remask_input(),
            ],
            outputs=[
                io.Image.Output("images", tooltip="Every new frame of the story, scene after scene, for Create "
                                                  "Video, Save Animated WEBP or Video Combine."),
                io.Float.Output("fps", tooltip="The model's frame rate (8 for the bundled model): connect it to the "
                                               "video node's fps."),
                io.String.Output("scene_starts", tooltip="The frame index where each scene starts, comma-separated."),
            ],
        )

    @classmethod
    def validate_inputs(cls, prompts=None, frames_per_scene=None, prime_frames=None):
        def check():
            scenes = None if prompts is None else len(glue.story_prompts(prompts))
            if frames_per_scene is None:
                return None

            def rule(config):
                glue.check_frames(config, frames_per_scene, "frames_per_scene")
                if scenes is not None and scenes > 1 and prime_frames is not None:
                    glue.check_prime_frames(config, prime_frames, frames_per_scene, "frames_per_scene")
            return glue.precheck(rule)
        return _refusal(check)

    @classmethod
    def execute(cls, model, prompts, frames_per_scene, prime_frames, steps, cond_scale, temperature, critic_noise,
                seed, negative_prompt="", prime=None, remask=None):
        sampler = glue.sampler_config(steps, cond_scale, temperature, critic_noise, remask)
        story = glue.chain_scenes(model, prompts, frames_per_scene, prime_frames, sampler, seed, negative_prompt,
                                  prime)
        return io.NodeOutput(glue.video_to_images(story.video), float(story.fps),
                             ",".join(map(str, story.boundaries)))


class PhenakiEncodeVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PhenakiEncodeVideo", display_name="Phenaki Encode Video", category=CATEGORY,
            description="Turn a clip's frames, or one picture, into tokens to continue from (IMAGE: Load Image on "
                        "a picture or an animated GIF/WebP, Load Video -> Get Video Components, VideoHelperSuite's "
                        "Load Video). A single picture is a one-frame prime: image to video, with prime_frames 1 in "
                        "Sample Scene. Resamples to the model's frame rate when source_fps is set, keeps the last "
                        "1 + k*2 frames (at most 17 for the bundled model) and makes each frame the model's square "
                        "(crop). The report output says what was kept, dropped and cropped.",
            search_aliases=["video", "continue", "continue video", "extend video", "video to tokens", "prime",
                            "encode video", "image to video", "i2v", "encode image", "animate image"],
            inputs=[
                Model.Input("model", tooltip=MODEL_TIP + " Its tokenizer encodes the frames."),
                io.Image.Input("images", tooltip="The clip's frames [frames, H, W, C], e.g. from Load Image (a "
                                                 "picture: one frame; an animated GIF/WebP: every frame) or Get "
                                                 "Video Components."),
                io.Combo.Input("crop", options=list(glue.CROP_MODES), default="center", optional=True, tooltip=(
                    "How a frame becomes the model's square. center: fill the square, cutting the long side's ends "
                    "(an off-centre subject can be cut away). pad: the whole frame, with black bars. fit: the whole "
                    "frame, stretched.")),
                io.Float.Input("source_fps", default=0.0, min=0.0, max=1000.0, step=0.01, optional=True, tooltip=(
                    "The clip's frame rate (e.g. from Get Video Components or VideoHelperSuite's Video Info). The "
                    "clip is resampled to the model's rate (8 fps for the bundled model) so the continuation moves "
                    "at the clip's speed. 0: the frames are used as they are (and for a single picture).")),
            ],
            outputs=[
                Tokens.Output("tokens", tooltip="The clip as tokens: connect it to Sample Scene's or Chain Scenes' "
                                                "prime."),
                io.String.Output("report", tooltip="What was kept, dropped, resampled and cropped, in one line."),
            ],
        )

    @classmethod
    def execute(cls, model, images, crop="center", source_fps=0.0):
        return io.NodeOutput(*glue.encode_images(model, images, crop, source_fps))


class PhenakiDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PhenakiDecode", display_name="Phenaki Decode", category=CATEGORY,
            description="Decode tokens into frames (IMAGE) and the frame rate, for Create Video or Save Animated WEBP.",
            search_aliases=["video", "decode video", "tokens to video", "text to video", "t2v"],
            inputs=[
                Tokens.Input("tokens", tooltip="Tokens from Sample Scene or Encode Video."),
                io.Boolean.Input("include_prime", default=True, tooltip="Keep the frames the scene was primed with "
                                                                        "(off: only the new frames)."),
            ],
            outputs=[
                io.Image.Output("images", tooltip="The frames [frames, H, W, 3], for Create Video, Save Animated WEBP "
                                                  "or Video Combine."),
                io.Float.Output("fps", tooltip="The model's frame rate (8 for the bundled model): connect it to the "
                                               "video node's fps."),
            ],
        )

    @classmethod
    def execute(cls, tokens, include_prime=True):
        return io.NodeOutput(glue.decode_tokens(tokens, include_prime), tokens.fps)


class PhenakiExampleClip(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PhenakiExampleClip", display_name="Phenaki Example Clip", category=CATEGORY,
            description="A short example clip shipped with the pack (a Shapes World clip at 8 fps), so the "
                        "continue-a-clip template runs as opened. For your own clip use Load Image (animated "
                        "GIF/WebP) or Load Video -> Get Video Components instead.",
            search_aliases=["example video", "sample clip", "video", "continue", "demo clip"],
            inputs=[io.Combo.Input("clip", options=glue.example_clip_choices(),
                                   tooltip="One of the pack's example clips.")],
            outputs=[
                io.Image.Output("images", tooltip="The clip's frames [frames, H, W, 3]."),
                io.Float.Output("fps", tooltip="The clip's frame rate: connect it to Encode Video's source_fps."),
            ],
        )

    @classmethod
    def execute(cls, clip):
        return io.NodeOutput(*glue.load_example_clip(clip))


NODES = [PhenakiLoader, PhenakiEncodeText, PhenakiSampleScene, PhenakiChainScenes, PhenakiEncodeVideo, PhenakiDecode,
         PhenakiExampleClip]
