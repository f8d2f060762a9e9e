"""Ray Serve: ``serve run serve.app`` (defaults) or ``serve run serve:build_app key=value ...``.

Importing this package starts nothing and loads nothing heavy; ``app`` is built when Serve
asks for it. The deployments live in ``serve.deployments``.
"""


def __getattr__(name: str):
    if name in ("AppArgs", "build_app"):
        from . import deployments

        return getattr(deployments, name)
    if name == "app":
        from .deployments import AppArgs, build_app

        return build_app(AppArgs())
    raise AttributeError(f"module 'serve' has no attribute {name!r}")
