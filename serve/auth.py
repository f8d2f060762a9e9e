"""The optional API key: one per ingress replica process, set when the replica starts.

Kept in this module, not on the ingress: the routes' dependency and the OpenAPI document are
module-level functions that Serve's frozen copy of the FastAPI app calls by reference, while
the ingress's own methods travel by value; a module is the state both reach."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request

PROTECTED = ("/search", "/vqa", "/thumbnail/{video_id}")
_digest: bytes | None = None  # sha256 of the key; None: no key


def _sha256(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def set_key(key: str | None) -> None:
    global _digest
    _digest = _sha256(key) if key else None


def key_required() -> bool:
    return _digest is not None


async def require_key(request: Request) -> None:
    """401 unless the request carries the key (``Authorization: Bearer KEY``), compared in
    constant time (as digests, so that the length does not show either); nothing without a key."""
    if _digest is None:
        return
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(_sha256(key.strip()), _digest):
        raise HTTPException(
            401,
            "this service needs an API key: send `Authorization: Bearer KEY`",
            headers={"WWW-Authenticate": "Bearer"},
        )


def declare(document: dict) -> dict:
    """The OpenAPI document with the bearer scheme on the protected routes, when a key is set."""
    if _digest is not None:
        document.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        for path in PROTECTED:
            for operation in document["paths"][path].values():
                operation["security"] = [{"bearer": []}]
    return document
