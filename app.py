"""Audio Studio: flags -> Settings -> build the UI -> launch."""

from __future__ import annotations

import logging
import sys
import threading

WARM_UP_DELAY_S = 1.0


def main(argv: list[str] | None = None) -> int:
    from studio.errors import StudioError
    from studio.settings import parse_settings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio polls itself at startup; not news
    try:
        settings = parse_settings(argv)
        from studio.service import Studio

        studio = Studio(settings)
    except StudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from studio.ui.app import build_app, page_options, page_routes
    from studio.ui.endpoints import Endpoints
    from studio.ui.launch import launch_auth, launch_options
    from studio.ui.openai_api import api_key_for, speech_routes

    auth, message = launch_auth(settings)
    if message:
        print(message, flush=True)  # once, on purpose: the only place the made-up password is shown
    key, message = api_key_for(settings)
    if message:
        print(message, flush=True)  # likewise the made-up API key
    endpoints = Endpoints(studio)
    demo = build_app(studio, endpoints)
    # The live player's stream, and /v1/audio/speech and /v1/models in OpenAI's shape, on the page's server.
    routes = [*page_routes(endpoints), *speech_routes(endpoints, key)]
    demo.launch(prevent_thread_lock=True, **page_options(), **launch_options(settings, auth, routes))
    # Once the page is served, decide the device and import torch in the background: started earlier, the
    # import would compete with the server's start-up for the interpreter and delay the first page.
    warm_up = threading.Timer(WARM_UP_DELAY_S, studio.manager.warm_up)
    warm_up.daemon = True
    warm_up.start()
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
