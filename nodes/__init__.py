"""ComfyUI nodes for Phenaki, on ComfyUI's V3 node schema. Part of the pack, never a top-level
package: ComfyUI has its own top-level ``nodes`` module, so everything here is imported relatively
(``from .nodes import ...``).

    comfy_adapter.py  the only module that imports ComfyUI, with fallbacks for plain Python
    io_fallback.py    the V3 schema classes the nodes use, for where comfy_api is absent
    sockets.py        PHENAKI_MODEL / PHENAKI_COND / PHENAKI_TOKENS objects
    glue.py           loading, checks, priming, progress and layout helpers
    phenaki_nodes.py  the node classes (schema + plumbing)

ComfyUI registers the nodes through ``comfy_entrypoint`` (the pack's root ``__init__.py`` exports
it); importing this package registers nothing and touches no folder.
"""

from . import comfy_adapter, glue
from .phenaki_nodes import NODES


class PhenakiExtension(comfy_adapter.ComfyExtension):
    async def get_node_list(self) -> list:
        return list(NODES)


async def comfy_entrypoint() -> PhenakiExtension:
    """ComfyUI calls this once, when it loads the pack: register models/phenaki, put the example
    picture where Load Image looks, and hand over the nodes. (Here, not in ``on_load``: ComfyUI
    awaits ``ComfyExtension.on_load`` only from 0.14.0 on, and the nodes run on 0.11.0.)"""
    comfy_adapter.register_model_folder()
    glue.provide_example_image(comfy_adapter.input_directory())
    return PhenakiExtension()


__all__ = ["comfy_entrypoint", "NODES"]
