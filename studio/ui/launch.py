"""Launch options from Settings: who may log in, which files may be served, where to listen."""

from __future__ import annotations

import secrets
from typing import Any

from studio.settings import Settings

SHARE_USER = "studio"


def launch_auth(settings: Settings) -> tuple[tuple[str, str] | None, str | None]:
    """The login the server requires, and a message for the console when the studio made one up.

    A share link is reachable by anyone who learns its address, so `--share` without `--auth`
    gets a fresh strong password instead of no password at all.
    """
    if settings.auth is not None:
        return settings.auth, None
    if not settings.share:
        return None, None
    password = secrets.token_urlsafe(18)
    message = (
        "The share link is password-protected (no --auth was given, so one was made for this run):\n"
        f"  user:     {SHARE_USER}\n"
        f"  password: {password}\n"
        "Pass --auth USER:PASS to choose your own."
    )
    return (SHARE_USER, password), message


def launch_options(settings: Settings, auth: tuple[str, str] | None) -> dict[str, Any]:
    """Keyword arguments for `gr.Blocks.launch`; only the output directory is served from disk."""
    options: dict[str, Any] = {
        "server_name": settings.host,
        "server_port": settings.port,
        "share": settings.share,
        "auth": auth,
        "allowed_paths": [str(settings.output_dir.expanduser().resolve())],
        "footer_links": ["api", "settings"],
    }
    if settings.mcp:
        options["mcp_server"] = True
    return options
