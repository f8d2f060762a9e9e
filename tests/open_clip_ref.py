"""open_clip, the independent OpenAI-architecture CLIP the conversion tests compare with.

open_clip imports torchvision at import time, and PyPI's torchvision wheels are CUDA builds
that do not load beside the CPU torch these machines carry (a broken torchvision also
breaks ``transformers``). So the test command installs open_clip with ``--no-deps`` and,
when torchvision is absent, this module gives open_clip inert stand-ins for the few
torchvision names it imports (image transforms and a frozen BatchNorm that the ViT CLIPs
compared here never use).
"""

from __future__ import annotations

import importlib.util
import sys
import types


def _stub_torchvision() -> None:
    class Inert(type):  # class attributes (InterpolationMode.BICUBIC ...) are placeholders too
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return cls

    class Placeholder(metaclass=Inert):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision is not installed (tests/open_clip_ref.py)")

    class Module(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Placeholder

    for name in (
        "torchvision",
        "torchvision.ops",
        "torchvision.ops.misc",
        "torchvision.transforms",
        "torchvision.transforms.functional",
        "torchvision.transforms.v2",
    ):
        module = Module(name)
        module.__path__ = []  # a package, so that submodules import
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def open_clip():
    """The ``open_clip`` package (torchvision stubbed while it imports, when not installed)."""
    if "open_clip" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        import open_clip as package

        return package
    from transformers.utils import import_utils

    import_utils.is_torchvision_available()  # cached as False before the stand-ins exist
    _stub_torchvision()
    try:
        import open_clip as package
    finally:  # nothing else in the test session sees the stand-ins
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    return package
