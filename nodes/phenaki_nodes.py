"""The Phenaki nodes: schema and plumbing only; the work happens in ``glue`` and ``phenaki_core``.

Node IDs are stored in every saved workflow: never rename them. New inputs are optional and come
after the old ones (saved graphs store widget values by position), new outputs come last.

``critic_noise`` stays a required widget of Sample Scene and Chain Scenes, between temperature and
seed, although only critic re-masking uses it (``remask`` = critic, or auto on a model with a
critic): a saved graph lists its widget values by position, so moving critic_noise to the
optional inputs would hand its value to seed, and every later value to the widget before it.
Its tooltip says when it matters.

``VALIDATE_INPUTS`` runs when the graph is queued, before any node runs. ComfyUI passes it the
widget values it names; an input fed by a link arrives as None (its value does not exist yet), an
optional input that is not connected does not arrive at all (the default is used), and ComfyUI
skips its own min/max checks for every input it names. So the checks here skip linked values,
cover the widgets' ranges themselves, and leave what needs the model or a linked clip to the run.
"""

from __future__ import annotations

from . import glue
from ..phenaki_core import PhenakiError
from .sockets import COND, MODEL, TOKENS

CATEGORY = "Phenaki"
SEED_MAX = 0xFFFFFFFFFFFFFFFF


def _int(default: int, low: int, high: int, tooltip: str) -> tuple:
    return ("INT", {"default": default, "min": low, "max": high, "tooltip": tooltip})


def _float(default: float, low: float, high: float, step: float, tooltip: str) -> tuple:
    return ("FLOAT", {"default": default, "min": low, "max": high, "step": step, "tooltip": tooltip})


FRAMES_TIP = ("Frames in the clip: 1 + k*2 for the bundled model (1, 3, ... 17); at most 17 with the bundled "
              "model. With a prime, the prime's frames are part of this count.")
PRIME_TIP = ("How many of the prime's last frames the scene starts from: 1 + k*2 (e.g. 5), and fewer than "
             "the scene's frames. Only used when a prime is connected.")
SAMPLING = {
    "steps": _int(18, 1, 200, "Unmasking steps: more steps, finer detail, slower."),
    "cond_scale": _float(3.0, 0.0, 30.0, 0.1, "Classifier-free guidance: how strongly the prompt steers the "
                                              "video (1 = no guidance)."),
    "temperature": _float(0.9, 0.0, 5.0, 0.05, "Token sampling temperature at the first step (annealed to 0): "
                                               "higher is more varied, 0 is greedy."),
    "critic_noise": _float(1.0, 0.0, 10.0, 0.05, "Noise on the token critic's scores when it chooses which "
                                                 "tokens to resample (decays over the steps). Only matters with "
                                                 "remask = critic, or auto on a model with a critic; the default "
                                                 "remask (confidence) ignores it."),
    "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                     "tooltip": "Same seed, same settings: the same frames."}),
}
# optional, so a graph saved without it still loads (it gets the default)
REMASK = {"remask": (list(glue.REMASK_MODES), {"default": glue.DEFAULT_REMASK, "tooltip": (
    "Which tokens to resample at each step. confidence: the model's least sure tokens (the default; "
    "best measured on the bundled model). critic: the token critic's choice. auto: the critic when the "
    "model has one.")})}


MODEL_TIP = "The Phenaki model from Load Phenaki."
ABSENT = object()  # VALIDATE_INPUTS: an optional input that is not connected (a linked one arrives as None)


def _refusal(check) -> "bool | str":
    """VALIDATE_INPUTS' answer: True, or the one-line message the node would raise when it runs."""
    try:
        message = check()
    except PhenakiError as exc:
        return str(exc)
    return message or True


class PhenakiLoader:
    DESCRIPTION = ("Load a Phenaki text-to-video checkpoint (models/phenaki, or the bundled Shapes World model) "
                   "and its text encoder.")
    SEARCH_ALIASES = ["text to video", "t2v", "video model", "load video model", "phenaki checkpoint"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (glue.checkpoint_choices(), {"tooltip": "A .safetensors bundle from models/phenaki, or "
                                                                     "the bundled 64x64 Shapes World model."}),
                "device": (["auto", "cpu", "cuda"], {"tooltip": "auto: ComfyUI's device (the GPU if there is one)."}),
                "dtype": (["auto", *glue.DTYPES], {"tooltip": "auto: bf16 on GPUs that support it, "
                                                                        "else fp32."}),
            },
            "optional": {
                "t5_folder": ("STRING", {"default": "", "tooltip": "Only for checkpoints trained with a T5 text "
                                                                   "encoder: the local folder that holds it."}),
            },
        }

    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded model, for Encode Text, Sample Scene, Chain Scenes and Encode Video.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, ckpt_name, device, dtype, t5_folder=""):
        return (glue.load_model(ckpt_name, device, dtype, t5_folder),)


class PhenakiEncodeText:
    DESCRIPTION = "Encode a prompt (and an optional negative prompt) with the model's own text encoder."
    SEARCH_ALIASES = ["text to video", "t2v", "video prompt", "prompt", "text encode"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": MODEL_TIP + " Its text encoder encodes the prompt."}),
                "prompt": ("STRING", {"multiline": True, "default": "a red circle moving right",
                                      "tooltip": "What happens in the scene."}),
            },
            "optional": {
                "negative_prompt": ("STRING", {"multiline": True, "default": "",
                                               "tooltip": "Guidance pushes away from this (empty: from no text)."}),
            },
        }

    RETURN_TYPES = (COND,)
    RETURN_NAMES = ("cond",)
    OUTPUT_TOOLTIPS = ("The encoded prompt, for Sample Scene with the same model (or one with the same text "
                       "encoder).",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None):
        if prompt is None:  # linked: known when the node runs
            return True
        return _refusal(lambda: glue.check_prompt(prompt) and None)

    def encode(self, model, prompt, negative_prompt=""):
        return (glue.encode_text(model, prompt, negative_prompt),)


class PhenakiSampleScene:
    DESCRIPTION = ("Generate one scene's tokens from a prompt (text to video); with a prime, the scene continues "
                   "from the prime's last frames. Decode turns the tokens into frames.")
    SEARCH_ALIASES = ["text to video", "t2v", "video", "generate video", "continue", "continue video",
                      "extend video", "scene"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": MODEL_TIP}),
                "cond": (COND, {"tooltip": "The prompt, from Phenaki Encode Text."}),
                "frames": _int(17, 1, 1025, FRAMES_TIP),
                **SAMPLING,
            },
            "optional": {
                "prime": (TOKENS, {"tooltip": "Tokens to continue from (Sample Scene or Encode Video)."}),
                "prime_frames": _int(5, 0, 1025, PRIME_TIP),
                **REMASK,
            },
        }

    RETURN_TYPES = (TOKENS,)
    RETURN_NAMES = ("tokens",)
    OUTPUT_TOOLTIPS = ("The scene's tokens, prime included: Phenaki Decode makes frames of them, or prime the next "
                       "Sample Scene with them.",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, frames=None, prime_frames=None, prime=ABSENT):
        if frames is None:  # linked: known when the node runs
            return True

        def check(config):
            glue.check_frames(config, frames)
            if prime is not ABSENT and prime_frames is not None:  # a prime is connected
                glue.check_prime_setting(config, prime_frames, frames)
        return _refusal(lambda: glue.precheck(check))

    def sample(self, model, cond, frames, steps, cond_scale, temperature, critic_noise, seed, prime=None,
               prime_frames=5, remask=None):
        sampler = glue.sampler_config(steps, cond_scale, temperature, critic_noise, remask)
        return (glue.sample_scene(model, cond, frames, sampler, seed, prime, prime_frames),)


class PhenakiChainScenes:
    DESCRIPTION = ("A multi-scene story (text to video) in one node: one prompt per line; each scene starts from "
                   "the last prime_frames frames of the scene before.")
    SEARCH_ALIASES = ["story", "text to video", "t2v", "video", "long video", "multi scene", "storyboard",
                      "continue"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": MODEL_TIP + " Its text encoder encodes every line."}),
                "prompts": ("STRING", {"multiline": True,
                                       "default": "a red circle moving right\na red circle moving up",
                                       "tooltip": "One scene per line."}),
                "frames_per_scene": _int(17, 1, 1025, "Each scene's window, its prime included: 1 + k*2 for the "
                                                      "bundled model, at most 17."),
                "prime_frames": _int(5, 0, 1025, "Frames carried from one scene into the next: 0 (a fresh start) "
                                                 "or 1 + k*2, fewer than frames_per_scene."),
                **SAMPLING,
            },
            "optional": {
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip": (
                    "One negative prompt for every scene: guidance pushes away from it (empty: from no text).")}),
                "prime": (TOKENS, {"tooltip": "Start the first scene from the end of this clip (Encode Video or "
                                              "Sample Scene)."}),
                **REMASK,
            },
        }

    RETURN_TYPES = ("IMAGE", "FLOAT", "STRING")
    RETURN_NAMES = ("images", "fps", "scene_starts")
    OUTPUT_TOOLTIPS = ("Every new frame of the story, scene after scene, for Create Video, Save Animated WEBP or "
                       "Video Combine.", "The model's frame rate (8 for the bundled model): connect it to the "
                                         "video node's fps.",
                       "The frame index where each scene starts, comma-separated.")
    FUNCTION = "chain"
    CATEGORY = CATEGORY

    @classmethod
    def VALIDATE_INPUTS(cls, prompts=None, frames_per_scene=None, prime_frames=None):
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

    def chain(self, model, prompts, frames_per_scene, prime_frames, steps, cond_scale, temperature, critic_noise,
              seed, negative_prompt="", prime=None, remask=None):
        sampler = glue.sampler_config(steps, cond_scale, temperature, critic_noise, remask)
        story = glue.chain_scenes(model, prompts, frames_per_scene, prime_frames, sampler, seed, negative_prompt,
                                  prime)
        return glue.video_to_images(story.video), float(story.fps), ",".join(map(str, story.boundaries))


class PhenakiEncodeVideo:
    DESCRIPTION = ("Turn a clip's frames (IMAGE: Load Image on an animated GIF/WebP, Load Video -> Get Video "
                   "Components, VideoHelperSuite's Load Video) into tokens to continue from. Resamples to the "
                   "model's frame rate when source_fps is set, keeps the last 1 + k*2 frames (at most 17 for the "
                   "bundled model) and makes each frame the model's square (crop). The report output says what was "
                   "kept, dropped and cropped.")
    SEARCH_ALIASES = ["video", "continue", "continue video", "extend video", "video to tokens", "prime",
                      "encode video"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": MODEL_TIP + " Its tokenizer encodes the frames."}),
                "images": ("IMAGE", {"tooltip": "The clip's frames [frames, H, W, C], e.g. from Load Image (animated "
                                                "GIF/WebP) or Get Video Components."}),
            },
            "optional": {
                "crop": (list(glue.CROP_MODES), {"default": "center", "tooltip": (
                    "How a frame becomes the model's square. center: fill the square, cutting the long side's ends "
                    "(an off-centre subject can be cut away). pad: the whole frame, with black bars. fit: the "
                    "whole frame, stretched.")}),
                "source_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1000.0, "step": 0.01, "tooltip": (
                    "The clip's frame rate (e.g. from Get Video Components or VideoHelperSuite's Video Info). The "
                    "clip is resampled to the model's rate (8 fps for the bundled model) so the continuation "
                    "moves at the clip's speed. 0: the frames are used as they are.")}),
            },
        }

    RETURN_TYPES = (TOKENS, "STRING")
    RETURN_NAMES = ("tokens", "report")
    OUTPUT_TOOLTIPS = ("The clip as tokens: connect it to Sample Scene's or Chain Scenes' prime.",
                       "What was kept, dropped, resampled and cropped, in one line.")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, model, images, crop="center", source_fps=0.0):
        return glue.encode_images(model, images, crop, source_fps)


class PhenakiDecode:
    DESCRIPTION = "Decode tokens into frames (IMAGE) and the frame rate, for Create Video or Save Animated WEBP."
    SEARCH_ALIASES = ["video", "decode video", "tokens to video", "text to video", "t2v"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tokens": (TOKENS, {"tooltip": "Tokens from Sample Scene or Encode Video."}),
                "include_prime": ("BOOLEAN", {"default": True, "tooltip": "Keep the frames the scene was primed "
                                                                          "with (off: only the new frames)."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    OUTPUT_TOOLTIPS = ("The frames [frames, H, W, 3], for Create Video, Save Animated WEBP or Video Combine.",
                       "The model's frame rate (8 for the bundled model): connect it to the video node's fps.")
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, tokens, include_prime=True):
        return glue.decode_tokens(tokens, include_prime), tokens.fps


class PhenakiExampleClip:
    DESCRIPTION = ("A short example clip shipped with the pack (a Shapes World clip at 8 fps), so the "
                   "continue-a-clip template runs as opened. For your own clip use Load Image (animated GIF/WebP) "
                   "or Load Video -> Get Video Components instead.")
    SEARCH_ALIASES = ["example video", "sample clip", "video", "continue", "demo clip"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": (glue.example_clip_choices(), {"tooltip": "One of the pack's example clips."})}}

    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    OUTPUT_TOOLTIPS = ("The clip's frames [frames, H, W, 3].", "The clip's frame rate: connect it to Encode Video's "
                                                               "source_fps.")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, clip):
        return glue.load_example_clip(clip)


NODE_CLASS_MAPPINGS = {
    "PhenakiLoader": PhenakiLoader,
    "PhenakiEncodeText": PhenakiEncodeText,
    "PhenakiSampleScene": PhenakiSampleScene,
    "PhenakiChainScenes": PhenakiChainScenes,
    "PhenakiEncodeVideo": PhenakiEncodeVideo,
    "PhenakiDecode": PhenakiDecode,
    "PhenakiExampleClip": PhenakiExampleClip,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PhenakiLoader": "Load Phenaki",
    "PhenakiEncodeText": "Phenaki Encode Text",
    "PhenakiSampleScene": "Phenaki Sample Scene",
    "PhenakiChainScenes": "Phenaki Chain Scenes",
    "PhenakiEncodeVideo": "Phenaki Encode Video",
    "PhenakiDecode": "Phenaki Decode",
    "PhenakiExampleClip": "Phenaki Example Clip",
}
