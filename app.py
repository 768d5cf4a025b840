"""Audio Studio: flags -> Settings -> build the UI -> launch."""

from __future__ import annotations

import logging
import sys


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

    from studio.ui.app import build_app, page_options
    from studio.ui.launch import launch_auth, launch_options

    auth, message = launch_auth(settings)
    if message:
        print(message, flush=True)  # once, on purpose: the only place the made-up password is shown
    demo = build_app(studio)
    studio.manager.warm_up()  # decides the device and imports torch in the background while the page comes up
    demo.launch(**page_options(), **launch_options(settings, auth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
