"""Framework integrations.

- ``taapit_async.integrations.asgi``: ``TaapitMiddleware`` for any ASGI app, and
  ``current_tracker()``. No framework needed.
- ``taapit_async.integrations.starlette``: ``get_tracker``, ``get_client``,
  ``taapit_lifespan`` (``pip install 'taapit-async[starlette]'``).
- ``taapit_async.integrations.fastapi``: the ``Tracker`` and ``TaapitClient`` dependencies
  and ``taapit_lifespan`` (``pip install 'taapit-async[fastapi]'``).
"""

from __future__ import annotations

from ._tracker import RequestTracker

__all__ = ["RequestTracker"]
