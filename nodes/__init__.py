"""ComfyUI nodes for Phenaki. Part of the pack, never a top-level package: ComfyUI has its own
top-level ``nodes`` module, so everything here is imported relatively (``from .nodes import ...``).

    comfy_adapter.py  the only module that imports ComfyUI, with fallbacks for plain Python
    sockets.py        PHENAKI_MODEL / PHENAKI_COND / PHENAKI_TOKENS objects
    glue.py           loading, checks, priming, progress and layout helpers
    phenaki_nodes.py  the node classes (schema + plumbing)
"""

from . import comfy_adapter
from .phenaki_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

comfy_adapter.register_model_folder()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
