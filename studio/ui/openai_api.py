"""The OpenAI-compatible speech API on the page's own server: POST /v1/audio/speech, GET /v1/models (and one model).

Served by the FastAPI app Gradio launches: the routes go in through `launch(app_kwargs={"routes": ...})`
(studio.ui.launch.launch_options), which Gradio hands to its FastAPI app's constructor (gradio/routes.py
App.create_app: `App(..., **app_kwargs)`), so they sit before Gradio's own routes, on the same host and port, and
behind the same share link. Gradio's login does not cover them: they take OpenAI's `Authorization: Bearer KEY`.

A request goes through the page's own core (Endpoints.generate: the manager's queue, one generation per device, the
memory panel, History, where its row says `source: "api"`), in a worker thread (studio.streaming.stream) whose
pieces of audio are sent as they come. A client that goes away cancels its run: the reader polls for the disconnect
while it waits for the next piece (Starlette's StreamingResponse under uvicorn's ASGI 2.4 only notices one when a
send fails, which may be a whole sentence later).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from typing import Any, AsyncIterator, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from studio.catalog import TASK_LABELS
from studio.device import expected_device_kind
from studio.errors import Cancelled, DoesNotFit, InvalidInput, ModelUnavailable, StudioError
from studio.openai_speech import (SpeechCall, SpeechError, aliases, file_bytes, pcm16, read_call,
                                  streaming_wav_header)
from studio.settings import Settings
from studio.streaming import Done, Piece, stream
from studio.ui.endpoints import Endpoints
from studio.ui.text import sentence

log = logging.getLogger(__name__)

KEY_PREFIX = "sk-studio-"
DISCONNECT_POLL_S = 0.2  # how often a waiting reader looks for a client that went away
_END = object()


def api_key_for(settings: Settings) -> tuple[str | None, str | None]:
    """The bearer key the OpenAI-compatible endpoints require, and a console message when the studio made one up.

    --api-key / STUDIO_API_KEY always sets one. Without it, a login (--auth) or a share link (--share) gets a fresh
    key, printed once at start; a studio on its own machine with neither stays open, as its page is."""
    if settings.api_key:
        return settings.api_key, None
    if not (settings.auth or settings.share):
        return None, None
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    message = ("The OpenAI-compatible speech API (/v1/audio/speech) needs this key (no --api-key was given, so one "
               f"was made for this run):\n  api key:  {key}\nPass --api-key KEY (or STUDIO_API_KEY) to choose your own.")
    return key, message


def error_response(status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status)


def studio_error_response(error: BaseException) -> JSONResponse:
    """A StudioError as OpenAI's error, with the studio's message. Only server faults are 5xx: the openai client
    retries those, and a run that does not fit or was cancelled would only be repeated."""
    message = sentence(str(error))
    if isinstance(error, SpeechError):
        return error_response(400, message, param=error.param, code=error.code)
    if isinstance(error, InvalidInput):
        return error_response(400, message, code="invalid_value")
    if isinstance(error, DoesNotFit):
        return error_response(400, message, code="does_not_fit")
    if isinstance(error, ModelUnavailable):
        return error_response(400, message, code="model_unavailable")
    if isinstance(error, Cancelled):
        return error_response(400, message, code="cancelled")
    if isinstance(error, StudioError):
        return error_response(500, message, type_="server_error", code="studio_error")
    log.error("/v1/audio/speech failed", exc_info=error)
    return error_response(500, "the studio failed to make the audio; its console says why", type_="server_error",
                          code="internal_error")


class OpenAISpeech:
    """The routes over one Endpoints (the page's core) and the key they require (None: open)."""

    def __init__(self, endpoints: Endpoints, key: str | None) -> None:
        self.endpoints = endpoints
        self._key = key

    def routes(self) -> list[Route]:
        return [Route("/v1/audio/speech", self.speech, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/models/{model:path}", self.model, methods=["GET"])]

    # ------------------------------------------------------------------ auth and models
    def _refused(self, request: Request) -> JSONResponse | None:
        if self._key is None:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return error_response(401, "This studio's API needs a key: send the header 'Authorization: Bearer KEY' "
                                  "(the openai client's api_key) with the key from --api-key, STUDIO_API_KEY or the "
                                  "console at start", code="invalid_api_key")
        if not secrets.compare_digest(given.strip().encode(), self._key.encode()):
            # Never echo the key given: it may be another service's secret.
            return error_response(401, "Incorrect API key: use the key from --api-key, STUDIO_API_KEY or the console "
                                  "at start", code="invalid_api_key")
        return None

    def _device_kind(self) -> str:
        devices = self.endpoints.studio.devices
        return devices[0].kind if devices.resolved else expected_device_kind(self.endpoints.studio.settings)

    def _entries(self) -> list[dict[str, Any]]:
        catalog = self.endpoints.studio.catalog
        entries = []
        for spec in self.endpoints.specs("speech"):
            entries.append({"id": spec.repo_id, "object": "model", "created": 0, "owned_by": spec.repo_id.split("/")[0],
                            "name": spec.label, "sample_rate": spec.sample_rate,
                            "voices": [*catalog.voices(spec), *catalog.saved_voices(spec)],
                            "openai_voices": dict(spec.openai_voices), "max_input_chars": spec.max_prompt_chars})
        for alias, repo in aliases(catalog, self._device_kind()).items():
            entries.append({"id": alias, "object": "model", "created": 0, "owned_by": "audio-studio",
                            "alias_of": repo})
        return entries

    async def models(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        return JSONResponse({"object": "list", "data": await run_in_threadpool(self._entries)})

    async def model(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        name = request.path_params["model"]
        entry = next((e for e in await run_in_threadpool(self._entries) if e["id"] == name), None)
        if entry is None:
            return error_response(404, f"model {name!r} is not a {TASK_LABELS['speech'].lower()} model of the studio: "
                                  "GET /v1/models lists them", param="model", code="model_not_found")
        return JSONResponse(entry)

    # ------------------------------------------------------------------ speech
    async def speech(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "the request body is not JSON: send {\"model\": ..., \"input\": ..., "
                                  "\"voice\": ...} with Content-Type: application/json", code="invalid_body")
        try:
            call = await run_in_threadpool(self._prepare, body)
        except StudioError as error:
            log.info("/v1/audio/speech refused: %s", error)
            return studio_error_response(error)
        session = f"openai-{secrets.token_hex(8)}"
        items = stream(lambda on_audio: self._generate(call, session, on_audio))
        chunks = self._chunks(call, items, request, session)
        try:
            first = await chunks.__anext__()  # nothing is sent before the first audio: an early failure is JSON
        except StopAsyncIteration:  # the client went away before any audio
            return Response(status_code=499)
        except BaseException as error:
            await chunks.aclose()
            if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):
                raise
            return studio_error_response(error)
        headers = {"X-Studio-Model": call.spec.repo_id}
        if call.ignored:
            headers["X-Studio-Ignored"] = ", ".join(call.ignored)
        if not call.progressive and call.stream_format == "audio":
            rest = [chunk async for chunk in chunks]  # a finished file: one piece, with its length
            return Response(first + b"".join(rest), media_type=call.media_type, headers=headers)
        if call.stream_format == "sse":
            return StreamingResponse(self._events(first, chunks), media_type="text/event-stream",
                                     headers={**headers, "Cache-Control": "no-cache"})
        return StreamingResponse(_prepend(first, chunks), media_type=call.media_type, headers=headers)

    def _prepare(self, body: Any) -> SpeechCall:
        """Read OpenAI's body and check it as the studio checks any request (voices, text, settings), so that a
        refusal is an error response, not a stream that breaks off."""
        if not self.endpoints.specs("speech"):
            raise InvalidInput("no speech models are installed")
        catalog = self.endpoints.studio.catalog
        call = read_call(catalog, body, self._device_kind())
        try:
            self.endpoints.studio.request("speech", call.spec.repo_id, call.text, seed=call.seed, params=call.params)
        except InvalidInput as error:
            raise SpeechError(str(error), _field_of(str(error)), "invalid_value") from None
        return call

    def _generate(self, call: SpeechCall, session: str, on_audio: Any) -> Any:
        return self.endpoints.generate("speech", call.spec.repo_id, call.text, seed=call.seed, params=call.params,
                                       fmt=call.studio_format, session=session, on_audio=on_audio,
                                       metadata=call.metadata())

    def _cancel(self, session: str) -> None:
        """Stop the run of `session` at its next step; one still waiting for its turn is stopped as it starts."""
        if not self.endpoints.runs.cancel(session):
            self.endpoints.runs.cancel_queued(session)

    async def _next(self, items: Iterator[Any], request: Request, session: str) -> Any:
        """The stream's next item (_END when it is over), read in a worker thread while watching for the client to
        go away: then the run is cancelled, and _END is returned once it has stopped."""
        task = asyncio.ensure_future(run_in_threadpool(next, items, _END))
        # A reader dropped while it waits leaves the task behind: its outcome (the run's Cancelled) is nobody's news.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        gone = False
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                if gone:
                    task.exception()  # the run's Cancelled, expected: nobody is left to tell
                    return _END
                return task.result()
            if not gone and await request.is_disconnected():
                gone = True
                log.info("/v1/audio/speech: the client went away; cancelling its run")
                self._cancel(session)

    async def _chunks(self, call: SpeechCall, items: Iterator[Any], request: Request, session: str) -> AsyncIterator[bytes]:
        """The response body's bytes: a progressive format piece by piece as the run hands them on (then whatever of
        the file no piece carried), any other once the run is done, from the file History keeps."""
        finished = False
        sent_frames, header_sent = 0, False
        try:
            while True:
                try:
                    item = await self._next(items, request, session)
                except (asyncio.CancelledError, GeneratorExit):
                    raise  # the response was dropped while it waited (Starlette saw the client go): cancel, below
                except BaseException:
                    finished = True  # the run failed (and so is over): nothing left to cancel
                    raise
                if item is _END:
                    finished = True
                    return
                if isinstance(item, Piece) and call.progressive:
                    if call.response_format == "wav" and not header_sent:
                        header_sent = True
                        yield streaming_wav_header(item.sample_rate)
                    sent_frames += item.samples.shape[-1]
                    yield pcm16(item.samples)
                elif isinstance(item, Done):
                    finished = True
                    path = item.value.path
                    if call.progressive:
                        tail = await run_in_threadpool(_tail, path, sent_frames)
                        if tail is not None:
                            rate, samples = tail
                            if call.response_format == "wav" and not header_sent:
                                yield streaming_wav_header(rate)
                            yield pcm16(samples)
                    else:
                        yield await run_in_threadpool(file_bytes, path, call.response_format)
                    return
        finally:
            if not finished:  # the response was dropped (the client went away, or the server stops)
                self._cancel(session)
                items_close(items)

    async def _events(self, first: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """OpenAI's speech SSE: speech.audio.delta events with base64 audio (the bytes of stream_format "audio"),
        then speech.audio.done; a failure midway is an error event."""
        total = 0
        try:
            async for chunk in _prepend(first, chunks):
                total += len(chunk)
                yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode("ascii")})
        except StudioError as error:
            yield _event({"type": "error", "error": json.loads(studio_error_response(error).body)["error"]})
            return
        # OpenAI's usage counts tokens, which these models do not have: zeros, and the audio's bytes beside them.
        yield _event({"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0,
                                                             "total_tokens": 0, "audio_bytes": total}})


def _event(data: dict) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


async def _prepend(first: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in chunks:
        yield chunk


def _tail(path: Any, sent_frames: int) -> tuple[int, Any] | None:
    """(rate, samples) of the saved file after the first `sent_frames` frames, or None when the pieces covered it."""
    import soundfile as sf

    samples, rate = sf.read(str(path), dtype="float32", always_2d=True, start=sent_frames)
    return (rate, samples.T) if samples.shape[0] else None


def items_close(items: Iterator[Any]) -> None:
    """Close the stream's iterator, unless a worker thread is inside it now (it then ends with the run)."""
    try:
        items.close()  # type: ignore[attr-defined]
    except ValueError:  # "generator already executing"
        pass


def _field_of(message: str) -> str | None:
    """The OpenAI field a studio refusal is about, from the setting it names (voice, the text, a speed setting)."""
    lowered = message.lower()
    if lowered.startswith("voice") or " voice " in lowered[:40]:
        return "voice"
    if lowered.startswith("the text"):
        return "input"
    if "speaking_rate" in lowered or "speed" in lowered:
        return "speed"
    return None


def speech_routes(endpoints: Endpoints, key: str | None) -> list[Route]:
    """The OpenAI-compatible routes for launch_options(..., routes=...)."""
    return OpenAISpeech(endpoints, key).routes()
