"""Phenaki for ComfyUI: the custom-node pack entry point (ComfyUI imports this file).

ComfyUI loads the nodes through ``comfy_entrypoint`` (its V3 node API). The model code lives in
``phenaki_core/`` and the nodes in ``nodes/``; both are imported relatively, so the pack works
straight from ``ComfyUI/custom_nodes/`` without being installed. A ComfyUI too old for the V3
nodes gets one line in its log instead (and no nodes).
"""

import logging

if __package__:
    from .nodes import comfy_adapter as _adapter

    _problem = _adapter.comfyui_problem()
    if _problem is None:
        from .nodes import comfy_entrypoint

        __all__ = ["comfy_entrypoint"]
    else:
        logging.getLogger("phenaki_comfyui").error("%s", _problem)
        __all__ = []
else:
    # Imported as a lone module rather than as ComfyUI's custom-node package: pytest does this
    # with a checkout whose folder name is not a Python name (``phenaki-comfyui``). There are no
    # nodes to register then; the tests import ``nodes`` themselves.
    __all__ = []
