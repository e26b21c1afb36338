"""The Phenaki nodes: schema and plumbing only; the work happens in ``glue`` and ``phenaki_core``.

Node IDs are stored in every saved workflow: never rename them.
"""

from __future__ import annotations

from . import glue
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
    "critic_noise": _float(1.0, 0.0, 10.0, 0.05, "Noise on the token critic's scores when choosing which tokens "
                                                 "to resample (decays over the steps)."),
    "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                     "tooltip": "Same seed, same settings: the same frames."}),
}
# optional, so graphs saved before it existed keep working (they get the default)
REMASK = {"remask": (list(glue.REMASK_MODES), {"default": glue.DEFAULT_REMASK, "tooltip": (
    "Which tokens to resample at each step. confidence: the model's least sure tokens (the default; "
    "best measured on the bundled model). critic: the token critic's choice. auto: the critic when the "
    "model has one.")})}


class PhenakiLoader:
    DESCRIPTION = "Load a Phenaki checkpoint (models/phenaki, or the bundled Shapes World model) and its text encoder."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (glue.checkpoint_choices(), {"tooltip": "A .safetensors bundle from models/phenaki, or "
                                                                     "the bundled 64x64 Shapes World model."}),
                "device": (["auto", "cpu", "cuda"], {"tooltip": "auto: ComfyUI's device (the GPU if there is one)."}),
                "dtype": (["auto", "fp32", "bf16", "fp16"], {"tooltip": "auto: bf16 on GPUs that support it, "
                                                                        "else fp32."}),
            },
            "optional": {
                "t5_folder": ("STRING", {"default": "", "tooltip": "Only for checkpoints trained with a T5 text "
                                                                   "encoder: the local folder that holds it."}),
            },
        }

    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, ckpt_name, device, dtype, t5_folder=""):
        return (glue.load_model(ckpt_name, device, dtype, t5_folder),)


class PhenakiEncodeText:
    DESCRIPTION = "Encode a prompt (and an optional negative prompt) with the model's own text encoder."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL,),
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
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, model, prompt, negative_prompt=""):
        return (glue.encode_text(model, prompt, negative_prompt),)


class PhenakiSampleScene:
    DESCRIPTION = ("Generate one scene's tokens from a prompt; with a prime, the scene continues from the prime's "
                   "last frames.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL,),
                "cond": (COND,),
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
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, model, cond, frames, steps, cond_scale, temperature, critic_noise, seed, prime=None,
               prime_frames=5, remask=None):
        sampler = glue.sampler_config(steps, cond_scale, temperature, critic_noise, remask)
        return (glue.sample_scene(model, cond, frames, sampler, seed, prime, prime_frames),)


class PhenakiChainScenes:
    DESCRIPTION = ("A multi-scene story in one node: one prompt per line; each scene starts from the last "
                   "prime_frames frames of the scene before.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL,),
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
                "negative_prompt": ("STRING", {"multiline": True, "default": ""}),
                "prime": (TOKENS, {"tooltip": "Start the first scene from the end of this clip."}),
                **REMASK,
            },
        }

    RETURN_TYPES = ("IMAGE", "FLOAT", "STRING")
    RETURN_NAMES = ("images", "fps", "scene_starts")
    OUTPUT_TOOLTIPS = ("Every new frame of the story, scene after scene.", "The model's frame rate.",
                       "The frame index where each scene starts, comma-separated.")
    FUNCTION = "chain"
    CATEGORY = CATEGORY

    def chain(self, model, prompts, frames_per_scene, prime_frames, steps, cond_scale, temperature, critic_noise,
              seed, negative_prompt="", prime=None, remask=None):
        sampler = glue.sampler_config(steps, cond_scale, temperature, critic_noise, remask)
        story = glue.chain_scenes(model, prompts, frames_per_scene, prime_frames, sampler, seed, negative_prompt,
                                  prime)
        return glue.video_to_images(story.video), float(story.fps), ",".join(map(str, story.boundaries))


class PhenakiEncodeVideo:
    DESCRIPTION = ("Turn frames (Load Image, Load Video, ...) into tokens to continue from. Keeps the last 1 + k*2 "
                   "frames (at most the model's max, 17 for the bundled one); resizes the short side to the model's size and centre-crops "
                   "a square.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": (MODEL,), "images": ("IMAGE", {"tooltip": "Frames [frames, H, W, C]."})}}

    RETURN_TYPES = (TOKENS,)
    RETURN_NAMES = ("tokens",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, model, images):
        return (glue.encode_images(model, images),)


class PhenakiDecode:
    DESCRIPTION = "Decode tokens into frames (IMAGE) and the frame rate, for Create Video or Save Animated WEBP."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "tokens": (TOKENS,),
                "include_prime": ("BOOLEAN", {"default": True, "tooltip": "Keep the frames the scene was primed "
                                                                          "with (off: only the new frames)."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, tokens, include_prime=True):
        return glue.decode_tokens(tokens, include_prime), tokens.fps


NODE_CLASS_MAPPINGS = {
    "PhenakiLoader": PhenakiLoader,
    "PhenakiEncodeText": PhenakiEncodeText,
    "PhenakiSampleScene": PhenakiSampleScene,
    "PhenakiChainScenes": PhenakiChainScenes,
    "PhenakiEncodeVideo": PhenakiEncodeVideo,
    "PhenakiDecode": PhenakiDecode,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PhenakiLoader": "Load Phenaki",
    "PhenakiEncodeText": "Phenaki Encode Text",
    "PhenakiSampleScene": "Phenaki Sample Scene",
    "PhenakiChainScenes": "Phenaki Chain Scenes",
    "PhenakiEncodeVideo": "Phenaki Encode Video",
    "PhenakiDecode": "Phenaki Decode",
}
