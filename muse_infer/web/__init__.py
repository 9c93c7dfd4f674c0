"""Results you can look at: the static results page (``page``), the search service (``app``,
``server``), and the plain data both are built from (``rows``).

The page needs nothing beyond the core install. The service needs the ``web`` extra (Starlette,
uvicorn): ``pip install "muse-infer[web]"``; its modules import them lazily through
``require_web_extra``, which names the extra when they are missing.
"""

from __future__ import annotations

from ..errors import MissingExtraError


def require_web_extra() -> None:
    """Raise ``MissingExtraError`` naming the ``web`` extra unless Starlette and uvicorn import."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise MissingExtraError(
            f"the search service needs Starlette and uvicorn ({error.name} is not installed): "
            'pip install "muse-infer[web]"'
        ) from None
