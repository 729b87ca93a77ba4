"""The one place that knows Qdrant. `open_store` picks the engine the settings name:

    base.py        the engine-neutral contract (Store, Record, Hit), point ids, vector checks
    conditions.py  our filter terms -> an engine's conditions
    edge.py        qdrant-edge in this process: the embedded default, and its locking protocol
    server.py      qdrant-client: a Qdrant server or cluster, or qdrant-client's local mode

Each engine module imports its engine at the top; this facade imports only the one it opens, so a search
on the embedded store never pays for importing qdrant-client.
"""

from __future__ import annotations

from audiosim.shared.settings import Settings
from audiosim.shared.store.base import Hit, Page, Record, Store, check_vector, check_vectors, is_point_id, point_id

__all__ = ["Hit", "Page", "Record", "Store", "check_vector", "check_vectors", "is_point_id", "open_store", "point_id"]


def open_store(settings: Settings) -> Store:
    """The store the settings name: a server when `qdrant_url` is set (`local:DIR` for qdrant-client's local
    mode), else the embedded store."""
    url = settings.qdrant_url
    if url and url.startswith("local:"):
        from audiosim.shared.store.server import LocalStore

        return LocalStore(url.removeprefix("local:"), settings.collection)
    if url:
        from audiosim.shared.store.server import ServerStore

        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return ServerStore(
            url,
            settings.collection,
            api_key=key,
            timeout=settings.timeout,
            shards=settings.shards,
            replication_factor=settings.replication_factor,
            on_disk=settings.on_disk,
        )
    from audiosim.shared.store.edge import EdgeStore

    return EdgeStore(settings.store, settings.collection, lock_timeout=settings.lock_timeout)
