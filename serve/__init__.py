"""Ray Serve: ``serve run serve.app`` (defaults) or ``serve run serve:build_app key=value ...``.

Importing this package starts nothing and loads nothing heavy; ``app`` is built when Serve
asks for it. ``schemas`` (the HTTP contract) -> ``replicas`` (the models and index shards)
-> ``ingress`` (routes, fan-out, errors) -> ``app`` (the graph).
"""


def __getattr__(name: str):
    if name in ("AppArgs", "build_app"):
        from . import app

        return getattr(app, name)
    if name == "app":
        from .app import AppArgs, build_app

        return build_app(AppArgs())
    raise AttributeError(f"module 'serve' has no attribute {name!r}")
