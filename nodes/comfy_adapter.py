"""The only module of the pack that imports ComfyUI (``comfy.*``, ``comfy_api``, ``folder_paths``).

Inside ComfyUI every name here delegates to ComfyUI; outside it (pytest, scripts) each one has a
plain fallback, so the nodes run anywhere:

    name                      in ComfyUI                                        fallback
    io, ComfyExtension        comfy_api.v0_0_2 (the V3 node API, a numbered     io_fallback.py: the same
                              version: ``latest`` changes without warning)      schema classes, no executor
    comfyui_problem()         why this ComfyUI cannot load the nodes, or None   None
    add_model_folder/...      folder_paths (models/phenaki + extra_model_paths)  folders added here
    load_device()             model_management.get_torch_device()                cuda if available, else cpu
    offload_device(load)      model_management.unet_offload_device()             the load device itself
    intermediate_device/dtype model_management.intermediate_device/dtype()       cpu / float32
                              (float32 on a ComfyUI before 0.18.0, which has no intermediate_dtype)
    manage_modules/load       ModelPatcher + load_models_gpu (evictable)         modules stay where loaded
    soft_empty_cache()        model_management.soft_empty_cache()                torch.cuda.empty_cache()
    check_interrupted()       throw_exception_if_processing_interrupted()        nothing
    ProgressBar(total)        comfy.utils.ProgressBar                            tqdm
    previews_enabled()        --preview-method / the UI's live preview setting   False
    input_directory()         folder_paths.get_input_directory() (Load Image)    None

``check_interrupted`` raises ComfyUI's ``InterruptProcessingException`` (a ``BaseException``):
callers must let it through, never catch it.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Iterable, Optional

import torch

logger = logging.getLogger("phenaki_comfyui")

try:  # ComfyUI puts these on sys.path; anywhere else they are absent
    import comfy.model_management as _mm
    import comfy.utils as _comfy_utils
    import folder_paths as _folder_paths
except ImportError:
    _mm = _comfy_utils = _folder_paths = None

IN_COMFYUI = _mm is not None
MODEL_FOLDER = "phenaki"  # models/phenaki
_fallback_model_dirs: list[str] = []

try:  # ComfyUI's V3 node API, at a numbered version
    from comfy_api.v0_0_2 import ComfyExtension, io
    _V3_ERROR = None
except ImportError as exc:  # not in ComfyUI, or a ComfyUI older than its V3 node API
    from .io_fallback import ComfyExtension, io
    _V3_ERROR = f"{type(exc).__name__}: {exc}"

# The first ComfyUI release with everything the nodes use from comfy_api.v0_0_2: V3 nodes loaded
# through comfy_entrypoint (0.3.48) and Schema.search_aliases (0.11.0). pyproject.toml's
# requires-comfyui says the same; the headless suite passes on 0.11.0 (docs/comfyui_headless.md).
MIN_COMFYUI = "0.11.0"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def comfyui_version() -> Optional[str]:
    """The running ComfyUI's version (comfyui_version.py, ComfyUI 0.3.11 and newer), or None."""
    if not IN_COMFYUI:
        return None
    try:
        import comfyui_version
    except ImportError:
        return None
    return str(getattr(comfyui_version, "__version__", "")) or None


def comfyui_problem() -> Optional[str]:
    """Why the running ComfyUI cannot load the nodes, in one line; None outside ComfyUI or when it can."""
    if not IN_COMFYUI:
        return None
    version = comfyui_version()
    if version is not None and _version_tuple(version) < _version_tuple(MIN_COMFYUI):
        return (f"Phenaki nodes not loaded: they need ComfyUI {MIN_COMFYUI} or newer (its V3 node API), "
                f"this is ComfyUI {version}; update ComfyUI")
    if _V3_ERROR is not None:
        return (f"Phenaki nodes not loaded: ComfyUI's V3 node API (comfy_api.v0_0_2) did not import ({_V3_ERROR}); "
                f"they need ComfyUI {MIN_COMFYUI} or newer")
    return None


# --- model files ---------------------------------------------------------------------------------
def register_model_folder() -> None:
    """Register ``models/phenaki``; paths that users added (extra_model_paths.yaml) stay first."""
    if IN_COMFYUI:
        _folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(_folder_paths.models_dir, MODEL_FOLDER))


def add_model_folder(path: str | os.PathLike) -> None:
    """Add a folder to search for checkpoints (ComfyUI: to ``phenaki`` in folder_paths)."""
    path = os.fspath(path)
    if IN_COMFYUI:
        _folder_paths.add_model_folder_path(MODEL_FOLDER, path)
    elif path not in _fallback_model_dirs:
        _fallback_model_dirs.append(path)


def list_model_files() -> list[str]:
    """File names (relative to their folder) of everything in the phenaki model folders."""
    if IN_COMFYUI:
        return _folder_paths.get_filename_list(MODEL_FOLDER)
    names = set()
    for folder in _fallback_model_dirs:
        for root, _dirs, files in os.walk(folder):
            names.update(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/") for f in files)
    return sorted(names)


def model_file_path(name: str) -> Optional[str]:
    """The full path of a listed model file, or None when it is in none of the folders."""
    if IN_COMFYUI:
        return _folder_paths.get_full_path(MODEL_FOLDER, name)
    for folder in _fallback_model_dirs:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


# --- devices and memory --------------------------------------------------------------------------
def load_device() -> torch.device:
    """Where models run: ComfyUI's torch device, or cuda when available."""
    if IN_COMFYUI:
        return _mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device(load: torch.device) -> torch.device:
    """Where a model rests between runs (ComfyUI moves it to ``load`` when a node needs it)."""
    if IN_COMFYUI and load.type != "cpu":
        return _mm.unet_offload_device()
    return load


def intermediate_device() -> torch.device:
    return _mm.intermediate_device() if IN_COMFYUI else torch.device("cpu")


def intermediate_dtype() -> torch.dtype:
    """IMAGE's dtype between nodes: ComfyUI's choice from 0.18.0 on (--fp16-intermediates), float32 before."""
    if IN_COMFYUI and hasattr(_mm, "intermediate_dtype"):
        return _mm.intermediate_dtype()
    return torch.float32


def manage_modules(module: torch.nn.Module, load: torch.device, offload: torch.device) -> Any:
    """Hand ``module`` to ComfyUI's model management (a ModelPatcher), so it can be offloaded."""
    if not IN_COMFYUI:
        return None
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(module, load_device=load, offload_device=offload)


def load_modules(patchers: Iterable[Any]) -> None:
    """Make sure managed modules sit on their load device (evicting others if memory is short)."""
    patchers = [p for p in patchers if p is not None]
    if IN_COMFYUI and patchers:
        # force_full_load: plain torch modules have no ComfyUI weight casting for partial loading
        _mm.load_models_gpu(patchers, force_full_load=True)


def soft_empty_cache() -> None:
    if IN_COMFYUI:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- progress, previews, cancel ------------------------------------------------------------------
def check_interrupted() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel (a no-op elsewhere)."""
    if IN_COMFYUI:
        _mm.throw_exception_if_processing_interrupted()


class _TqdmProgressBar:
    """``comfy.utils.ProgressBar``'s interface on top of tqdm."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self.total = total
        self._bar = tqdm(total=total, desc="phenaki", leave=False, disable=None)

    def update_absolute(self, value: int, total: Optional[int] = None, preview: Any = None) -> None:
        if total is not None:
            self.total = self._bar.total = total
        self._bar.n = min(value, self.total)
        self._bar.refresh()
        if value >= self.total:
            self._bar.close()


def ProgressBar(total: int) -> Any:  # noqa: N802 - mirrors comfy.utils.ProgressBar
    return _comfy_utils.ProgressBar(total) if IN_COMFYUI else _TqdmProgressBar(total)


def previews_enabled() -> bool:
    """Whether the user wants live previews (ComfyUI's preview method is not 'none')."""
    if not IN_COMFYUI:
        return False
    from comfy.cli_args import LatentPreviewMethod, args

    return args.preview_method != LatentPreviewMethod.NoPreviews


def input_directory() -> Optional[str]:
    """ComfyUI's input folder, where Load Image looks (None outside ComfyUI)."""
    return _folder_paths.get_input_directory() if IN_COMFYUI else None


def preview_max_size() -> int:
    if IN_COMFYUI:
        from comfy.cli_args import args

        return int(args.preview_size)
    return 512
