"""A module that fails while being imported, for reasons of its own."""

from __future__ import annotations

raise RuntimeError("the config service is down")
