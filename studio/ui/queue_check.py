"""A check in front of Gradio's queue: a join naming no function of this app, or a file the server never received,
is a client error with a message, not a 500 or a bare failure.

Gradio 6.31's POST /gradio_api/queue/join looks the function up with `fns[body.fn_index]`; an index the app does
not have (9999, -1, 2**70) raises KeyError there, which the server answers with HTTP 500. QueueJoinCheck is an
ASGI middleware (installed through `launch(app_kwargs={"middleware": ...})`, see studio.ui.launch) that lets the
join run as usual and turns exactly that failure into HTTP 400 with a JSON body naming the index and the fix.

A join whose inputs name a file (a FileData payload, {"path": ..., "meta": {"_type": "gradio.FileData"}}) outside
Gradio's upload folder and the folders the app serves is refused the same way, with the input and the fix. Gradio
refuses such a path itself when it preprocesses an input, but answers the client with an error event that carries
no message; and the page's own events that take their values as sent (no preprocessing) would not check it at all.

It runs inside Gradio's route, after its login check: with --auth, a request without a login still gets 401 (the
check never answers for a request Gradio refused first), and a good join is passed on untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Awaitable, Callable

from studio.catalog import echo

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JOIN_PATH = "/queue/join"  # under Gradio's API prefix (/gradio_api) and any root path
CALL_PATH = "/call/"  # POST /gradio_api/call/<api name>: the same inputs by the endpoint's name (no fn_index)
MAX_BODY_BYTES = 64 * 10**6  # a join carries the inputs as JSON (files are uploaded apart); beyond this, leave it be


class QueueJoinCheck:
    """ASGI middleware: an unknown fn_index in a queue join gets HTTP 400 {"detail": ...} instead of a 500."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") != "POST" \
                or not (path.endswith(JOIN_PATH) or CALL_PATH in path):
            await self.app(scope, receive, send)
            return
        read = await _read_body(receive)
        replay = _replay(read, receive)
        body = _body(read)
        foreign = _foreign_file(body.get("data"), _readable(scope)) if body else None
        if foreign is not None:
            where, path = foreign
            await _json_response(send, 400, {"detail": (
                f"input {where} names a file the server did not receive ({echo(Path(path).name)}): upload the file "
                "itself (gradio_client's handle_file(\"clip.wav\") does); the studio reads no other paths")})
            return
        fn_index = _fn_index(body)
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


def _body(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The join's JSON body when it is all there and an object (Gradio refuses anything else itself, with a 4xx)."""
    if not messages or messages[-1]["type"] != "http.request" or messages[-1].get("more_body", False):
        return None
    try:
        body = json.loads(b"".join(m.get("body", b"") for m in messages))
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _fn_index(body: dict[str, Any] | None) -> int | None:
    """The join's fn_index when it is a whole number."""
    value = body.get("fn_index") if body else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _readable(scope: Scope) -> list[str]:
    """Where a file named in a join may be: Gradio's upload folder (uploads and the results it hands out) and the
    folders the app serves (allowed_paths: the output folder)."""
    from gradio.utils import get_upload_folder

    folders = [get_upload_folder()]
    try:
        folders += list(scope["app"].get_blocks().allowed_paths)
    except Exception:
        pass
    return folders


def _foreign_file(data: Any, readable: list[str]) -> tuple[str, str] | None:
    """(which input, its path) of the first FileData payload in `data` whose local path is outside `readable`."""
    from gradio.utils import is_in_or_equal

    def visit(value: Any, where: str) -> tuple[str, str] | None:
        if isinstance(value, dict):
            meta = value.get("meta")
            path = value.get("path")
            if isinstance(meta, dict) and meta.get("_type") == "gradio.FileData" and isinstance(path, str) and path \
                    and not path.startswith(("http://", "https://", "data:")) \
                    and not any(is_in_or_equal(path, folder) for folder in readable):
                return where, path
            values = value.items()
        elif isinstance(value, list):
            values = ((str(i), v) for i, v in enumerate(value))
        else:
            return None
        for key, item in values:
            found = visit(item, f"{where}[{key}]")
            if found is not None:
                return found
        return None

    return visit(data, "data")


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
