"""A check in front of Gradio's queue: a join naming no function of this app is a client error, not a 500.

Gradio 6.31's POST /gradio_api/queue/join looks the function up with `fns[body.fn_index]`; an index the app does
not have (9999, -1, 2**70) raises KeyError there, which the server answers with HTTP 500. QueueJoinCheck is an
ASGI middleware (installed through `launch(app_kwargs={"middleware": ...})`, see studio.ui.launch) that lets the
join run as usual and turns exactly that failure into HTTP 400 with a JSON body naming the index and the fix.

It runs inside Gradio's route, after its login check: with --auth, a request without a login still gets 401 (the
check never answers for a request Gradio refused first), and a good join is passed on untouched.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

from studio.catalog import echo

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JOIN_PATH = "/queue/join"  # under Gradio's API prefix (/gradio_api) and any root path
MAX_BODY_BYTES = 64 * 10**6  # a join carries the inputs as JSON (files are uploaded apart); beyond this, leave it be


class QueueJoinCheck:
    """ASGI middleware: an unknown fn_index in a queue join gets HTTP 400 {"detail": ...} instead of a 500."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith(JOIN_PATH):
            await self.app(scope, receive, send)
            return
        read = await _read_body(receive)
        replay = _replay(read, receive)
        fn_index = _fn_index(read)
        if fn_index is None or _known(scope, fn_index):
            await self.app(scope, replay, send)
            return

        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, tracked)
        except KeyError:  # Gradio's fns[fn_index] (a dict) failed for this very index
            if started:
                raise
            await _json_response(send, 400, {"detail": (
                f"fn_index {echo(fn_index)} is not a function of this app: call an endpoint by its name "
                "(see the page's 'Use via API' link, or gradio_client's view_api())")})


async def _read_body(receive: Receive) -> list[dict[str, Any]]:
    """The messages of the request body as received: all of it, or up to a disconnect or MAX_BODY_BYTES."""
    messages: list[dict[str, Any]] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages
        size += len(message.get("body", b""))
        if size > MAX_BODY_BYTES:
            return messages


def _replay(messages: list[dict[str, Any]], receive: Receive) -> Receive:
    """A receive that hands the app the messages already read, in order, then whatever the client sends next."""
    pending = list(messages)

    async def replay() -> dict[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replay


def _fn_index(messages: list[dict[str, Any]]) -> int | None:
    """The join's fn_index when the body is all there and it is a whole number (Gradio refuses anything else
    itself, with a 4xx)."""
    if not messages or messages[-1]["type"] != "http.request" or messages[-1].get("more_body", False):
        return None
    try:
        value = json.loads(b"".join(m.get("body", b"") for m in messages)).get("fn_index")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _known(scope: Scope, fn_index: int) -> bool:
    app = scope.get("app")
    try:
        return fn_index in app.get_blocks().fns
    except Exception:  # no Blocks configured (yet): let Gradio answer, and catch what it raises
        return False


async def _json_response(send: Send, status: int, content: dict[str, Any]) -> None:
    payload = json.dumps(content).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
