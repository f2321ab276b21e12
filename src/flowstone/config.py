"""Where FlowStone keeps things when nobody says otherwise.

The embedded default needs no setup: a SQLite file and a storage folder under ``.flowstone/`` in
the working directory. Environment variables move them:

- ``FLOWSTONE_HOME``: the folder (default ``.flowstone``).
- ``FLOWSTONE_DATABASE_URL``: the metadata store's URL (default ``sqlite:///$FLOWSTONE_HOME/flowstone.db``;
  ``memory`` for an in-memory store).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "FLOWSTONE_HOME"
DATABASE_URL_ENV = "FLOWSTONE_DATABASE_URL"


def home() -> Path:
    """The folder for FlowStone's embedded database and stored values."""
    return Path(os.environ.get(HOME_ENV) or ".flowstone")


def database_url() -> str:
    """The metadata store URL from the environment, or the SQLite file under :func:`home`."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    return f"sqlite:///{home() / 'flowstone.db'}"


def storage_dir() -> Path:
    """The folder where the default filesystem I/O manager writes values."""
    return home() / "storage"
