"""``taapit_lifespan``: an app lifespan that owns the client, for Starlette and FastAPI."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

from taapit_async._client import AsyncTaapit

from .asgi import CLIENT_STATE_KEY

__all__ = ["taapit_lifespan"]

AppT = TypeVar("AppT")
Lifespan = Callable[[AppT], contextlib.AbstractAsyncContextManager[Mapping[str, Any] | None]]


def taapit_lifespan(
    lifespan: Lifespan[AppT] | None = None,
    *,
    client: AsyncTaapit | Callable[[], AsyncTaapit] | None = None,
) -> Callable[[AppT], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """Return a lifespan that opens a client at startup and closes it at shutdown.

    At shutdown the client drains its background queue within its ``drain_timeout``; with
    an outbox, what is not delivered by then stays in the file for the next start.

    The client is put in lifespan state under ``"taapit_client"``, where
    ``TaapitMiddleware``, ``Tracker`` and ``TaapitClient`` find it.

    Args:
        lifespan: Your own lifespan, to run inside this one; the state it yields is kept.
        client: The client to use: an ``AsyncTaapit`` you own (not closed here), a factory
            called at startup, or None to build one from the environment
            (``TAAPIT_API_KEY``; with ``TAAPIT_ENABLED=0`` no key is needed).

    Example:
        >>> app = FastAPI(lifespan=taapit_lifespan())
        >>> app = FastAPI(lifespan=taapit_lifespan(my_lifespan))  # composed with yours
    """

    @contextlib.asynccontextmanager
    async def run(app: AppT) -> AsyncIterator[dict[str, Any]]:
        owned = not isinstance(client, AsyncTaapit)
        taapit = client if isinstance(client, AsyncTaapit) else (client or AsyncTaapit)()
        try:
            # Opens an outbox at startup: a bad path fails the app's startup, and events a
            # previous run left in the file go out without waiting for a new one.
            await taapit.start()
            if lifespan is None:
                yield {CLIENT_STATE_KEY: taapit}
            else:
                async with lifespan(app) as state:
                    yield {**(state or {}), CLIENT_STATE_KEY: taapit}
        finally:
            if owned:
                await taapit.aclose()

    return run
