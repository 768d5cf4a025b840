"""Launch options from Settings: who may log in, which files may be served, where to listen, MCP."""

from __future__ import annotations

import importlib.util
import logging
import secrets
from typing import Any, Sequence

from starlette.middleware import Middleware

from studio import clips
from studio.errors import InvalidInput
from studio.settings import Settings
from studio.ui.queue_check import QueueJoinCheck

log = logging.getLogger(__name__)

SHARE_USER = "studio"
# Gradio's /upload route takes the audio clips the page and the API send, and is open to every visitor: cap it at
# what the longest clip the studio accepts needs (studio.clips: 300 s of 48 kHz stereo float WAV, about 116 MB).
MAX_UPLOAD_BYTES = clips.MAX_UPLOAD_BYTES
MCP_HINT = 'install the MCP extra: pip install "gradio[mcp]==6.31.0"'

Login = tuple[str, str]


def launch_auth(settings: Settings) -> tuple[Login | list[Login] | None, str | None]:
    """The login(s) the server requires, and a message for the console when the studio made one up.

    `settings.auth` is one (user, password) pair or a list of them (a file of USER:PASS lines).
    A share link is reachable by anyone who learns its address, so `--share` without `--auth`
    gets a fresh strong password instead of no password at all.
    """
    if settings.auth:
        return _logins(settings.auth), None
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


def _logins(auth: Any) -> Login | list[Login]:
    if isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(part, str) for part in auth):
        return auth
    pairs: Sequence[Any] = list(auth)
    return [(str(user), str(password)) for user, password in pairs]


def mcp_available() -> bool:
    return importlib.util.find_spec("mcp") is not None


def launch_options(settings: Settings, auth: Login | list[Login] | None, routes: Sequence[Any] = ()) -> dict[str, Any]:
    """Keyword arguments for `gr.Blocks.launch`; only the output directory is served from disk. `routes` (Starlette
    routes: the OpenAI-compatible API, studio.ui.openai_api.speech_routes) are served by the same app, before
    Gradio's own: launch hands app_kwargs to its FastAPI app's constructor (gradio/routes.py App.create_app)."""
    if settings.share and not auth:
        raise InvalidInput("--share needs a login: pass the one launch_auth(settings) makes, or --auth USER:PASS")
    options: dict[str, Any] = {
        "server_name": settings.host,
        "server_port": settings.port,
        "share": settings.share,
        "auth": auth,
        "allowed_paths": [str(settings.output_dir.expanduser().resolve())],
        "footer_links": ["api", "settings"],
        "max_file_size": MAX_UPLOAD_BYTES,
        # A queue join with an fn_index the app does not have is a 400, not Gradio's 500 (studio.ui.queue_check).
        "app_kwargs": {"middleware": [Middleware(QueueJoinCheck)], "routes": list(routes)},
    }
    if settings.mcp:
        if mcp_available():
            options["mcp_server"] = True
        else:
            # Gradio would swallow the ImportError and serve without MCP; say why, and the fix, once.
            log.warning("--mcp: Gradio's MCP server needs the `mcp` package, which is not installed; %s", MCP_HINT)
    return options
