"""Constants the page's modules share."""

from __future__ import annotations

# Event options for the page's own quick events: not part of the API, never waiting for a slot, no spinner.
LIGHT = {"api_visibility": "private", "concurrency_limit": None, "show_progress": "hidden"}
