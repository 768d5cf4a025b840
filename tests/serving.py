"""The app served on a free port with the product's launch options, for tests that talk to it over HTTP."""

from __future__ import annotations

import contextlib
import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def launched(studio, auth=None):
    """The app for `studio` on a free port with the product's launch options; yields its base URL."""
    from studio.settings import Settings
    from studio.ui.app import build_app, page_options, page_routes
    from studio.ui.endpoints import Endpoints
    from studio.ui.launch import launch_options

    import torch

    endpoints = Endpoints(studio)
    demo = build_app(studio, endpoints)
    settings = Settings(port=free_port(), output_dir=studio.settings.output_dir)
    # The tiny models run on one thread while the app is served: with torch on both of the machine's two cores, a
    # long tiny-Bark run left the browser too little CPU to paint a screenshot or take a click within 20 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    demo.launch(prevent_thread_lock=True, quiet=True, **page_options(),
                **launch_options(settings, auth, page_routes(endpoints)))
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        # A run a failed test left going would go on computing after the server closes (its thread outlives it) and
        # starve every later test of the cores: stop it first.
        endpoints.runs.cancel_all()
        demo.close()
        torch.set_num_threads(threads)


@contextlib.contextmanager
def serving(studio, auth=None):
    """A gradio_client Client for `studio`'s app (see `launched`)."""
    from gradio_client import Client

    with launched(studio, auth) as url:
        client = Client(f"{url}/", verbose=False, auth=auth)
        try:
            yield client
        finally:
            client.close()
