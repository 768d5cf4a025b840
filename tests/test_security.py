"""What a shared page exposes, and what a prompt or a model repo can make the studio do.

Share links always have a password; with --auth nothing (API, queue, files) answers without a login; files are
served only from the output folder; a prompt never becomes a path or markup; weights never run code; uploads
and prompts have limits.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

from tests.serving import launched

ROOT = Path(__file__).resolve().parent.parent
SPEECH, MUSIC = "facebook/mms-tts-eng", "facebook/musicgen-small"
GB = 10**9
LOGIN = ("alice", "a-long-test-password-7")
XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"
SLUG_NAME = re.compile(r"^[0-9]{8}-[0-9]{6}-[a-z0-9-]+\.(wav|flac|mp3|ogg)$")


def _studio(folder: Path, catalog):
    from studio.device import SimulatedDevice
    from studio.service import Studio
    from studio.settings import Settings

    return Studio(Settings(output_dir=folder, memory_reserve=0), catalog=catalog, device=SimulatedDevice(8 * GB))


@pytest.fixture(scope="module")
def open_app(tmp_path_factory, catalog, tiny_cache):
    """(url, studio, a generated file) for an app without a login."""
    studio = _studio(tmp_path_factory.mktemp("security") / "out", catalog)
    made = studio.generate(studio.request("speech", SPEECH, "hello", seed=1))
    with launched(studio) as url:
        yield url, studio, made.path


@pytest.fixture(scope="module")
def locked_app(tmp_path_factory, catalog, tiny_cache):
    """(url, a generated file) for an app launched with --auth."""
    studio = _studio(tmp_path_factory.mktemp("security-auth") / "out", catalog)
    made = studio.generate(studio.request("speech", SPEECH, "private words", seed=1))
    with launched(studio, auth=LOGIN) as url:
        yield url, made.path


# ---------------------------------------------------------------------- logins

@pytest.mark.reliability("Security", "share link without --auth", "launch_auth / launch_options, app.py main")
def test_a_share_link_always_has_a_password(reliability):
    from studio.errors import StudioError
    from studio.settings import Settings
    from studio.ui.launch import SHARE_USER, launch_auth, launch_options

    auth, message = launch_auth(Settings(share=True))
    user, password = auth
    assert user == SHARE_USER and len(password) >= 20
    assert password in message and "--auth" in message
    assert launch_options(Settings(share=True), auth)["auth"] == auth
    assert launch_auth(Settings(share=True))[0][1] != password  # fresh for every run

    given, message = launch_auth(Settings(share=True, auth=LOGIN))
    assert given == LOGIN and message is None
    assert launch_auth(Settings()) == (None, None)  # local, no --auth: no login, no link

    with pytest.raises(StudioError, match="--share"):  # a caller that skips launch_auth cannot open a bare link
        launch_options(Settings(share=True), None)
    reliability.note("--share alone gets user 'studio' and a 24-character password printed once; "
                     "launch_options refuses share without a login")


@pytest.mark.reliability("Security", "API without a login when --auth is set",
                         "gradio_client without auth; raw HTTP POST /gradio_api/call, /run, /api, /queue/join; "
                         "GET /config, /info")
def test_auth_refuses_unauthenticated_api_calls(locked_app, reliability):
    import httpx
    from gradio_client import Client

    url, _ = locked_app
    with pytest.raises(Exception):
        Client(url + "/", verbose=False)

    payload = {"data": [], "fn_index": 0, "session_hash": "intruder"}
    refused = {}
    with httpx.Client(base_url=url, timeout=10) as http:
        for route in ("/gradio_api/call/memory", "/gradio_api/run/memory", "/gradio_api/api/memory",
                      "/gradio_api/call/speech", "/gradio_api/queue/join"):
            response = http.post(route, json={**payload, "data": [SPEECH, "hello"]})
            refused[route] = response.status_code
        for route in ("/config", "/gradio_api/info", "/gradio_api/queue/data?session_hash=intruder"):
            refused[route] = http.get(route).status_code
    assert all(code in (401, 403) for code in refused.values()), refused

    client = Client(url + "/", auth=LOGIN, verbose=False)
    try:
        assert client.predict(api_name="/memory")["device"]
    finally:
        client.close()
    reliability.note(f"refused: {sorted(set(refused.values()))}; with the login the API answers")


@pytest.mark.reliability("Security", "file URL without a login when --auth is set",
                         "raw HTTP GET /gradio_api/file=<generated file>, with and without the login cookie")
def test_auth_refuses_unauthenticated_file_urls(locked_app, reliability):
    import httpx

    url, path = locked_app
    with httpx.Client(base_url=url, timeout=10) as http:
        for route in (f"/gradio_api/file={path}", f"/gradio_api/file/{path}", f"/file={path}"):
            response = http.get(route)
            assert response.status_code in (401, 403, 404), (route, response.status_code)
            assert not response.content.startswith(b"RIFF")
        assert http.post("/login", data={"username": LOGIN[0], "password": LOGIN[1]}).status_code == 200
        response = http.get(f"/gradio_api/file={path}")
        assert response.status_code == 200 and response.content.startswith(b"RIFF")
    reliability.note("401 without the login; the same URL serves the WAV after /login")


# ---------------------------------------------------------------------- files

def _get(url: str, route: str):
    import httpx

    # httpx would normalise ../ away: send the path as written, the way a hostile client would.
    with httpx.Client(timeout=10) as http:
        request = http.build_request("GET", url + "/")
        request.url = httpx.URL(url + route) if ".." not in route else request.url.copy_with(raw_path=route.encode())
        return http.send(request)


TRAVERSALS = [
    ("relative ../../etc/passwd", "/gradio_api/file=../../etc/passwd"),
    ("deep relative traversal", "/gradio_api/file=" + "../" * 12 + "etc/passwd"),
    ("URL-encoded %2e%2e", "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
    ("URL-encoded slashes", "/gradio_api/file=..%2f..%2f..%2f..%2fetc%2fpasswd"),
    ("absolute /etc/passwd", "/gradio_api/file=/etc/passwd"),
    ("absolute, /file/ route", "/gradio_api/file//etc/passwd"),
]


@pytest.mark.parametrize("name, route", [
    pytest.param(name, route, id=name, marks=pytest.mark.reliability(
        "Security", f"path traversal: {name}", "raw HTTP GET " + route)) for name, route in TRAVERSALS])
def test_path_traversal_is_refused(name, route, open_app, reliability):
    url, _, made = open_app
    response = _get(url, route)
    assert response.status_code in (400, 403, 404), response.status_code
    assert b"root:" not in response.content
    assert _get(url, f"/gradio_api/file={made}").status_code == 200  # the server still serves its own files
    reliability.note(f"HTTP {response.status_code}")


@pytest.mark.reliability("Security", "symlink in the output folder pointing outside",
                         "raw HTTP GET /gradio_api/file=<output>/link.wav -> a file outside; history list")
def test_a_symlink_out_of_the_output_folder_is_not_followed(open_app, tmp_path, reliability):
    url, studio, _ = open_app
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF-secret-outside-the-output-folder")
    folder = Path(studio.settings.output_dir)
    links = [folder / "link-to-secret.wav", folder / "link-to-passwd.wav"]
    links[0].symlink_to(secret)
    links[1].symlink_to("/etc/passwd")
    try:
        for link in links:
            response = _get(url, f"/gradio_api/file={link}")
            assert response.status_code in (400, 403, 404), (link, response.status_code)
            assert b"secret-outside" not in response.content and b"root:" not in response.content
    finally:
        for link in links:
            link.unlink()
    reliability.note(f"HTTP {response.status_code} for links to a file outside and to /etc/passwd")


@pytest.mark.parametrize("prompt", [
    pytest.param(p, id=p, marks=pytest.mark.reliability("Security", f"prompt {p!r} as a path",
                                                        "API /speech; file name and folder checked"))
    for p in ("../../x", "/etc/passwd", "..\\..\\windows\\x", "~/.ssh/id_rsa")])
def test_a_prompt_never_becomes_a_path(prompt, open_app, reliability):
    from gradio_client import Client

    url, studio, _ = open_app
    folder = Path(studio.settings.output_dir).resolve()
    client = Client(url + "/", verbose=False)
    try:
        path, meta = client.predict(model=SPEECH, text=f"{prompt} hello", seed=3, api_name="/speech")
    finally:
        client.close()
    written = folder / meta["file"]
    assert written.is_file() and written.resolve().parent == folder
    assert SLUG_NAME.match(meta["file"]), meta["file"]
    assert meta["text"] == f"{prompt} hello"
    reliability.note(f"written as {meta['file']} inside the output folder")


# ---------------------------------------------------------------------- markup

@pytest.mark.reliability("Security", "prompt with HTML and script", "page handlers: history list, result and history "
                                                                    "metadata tables, error messages; API metadata")
def test_prompts_render_as_text_never_markup(open_app, reliability):
    import gradio as gr
    from markdown_it import MarkdownIt

    from studio.ui.endpoints import Endpoints, user_errors
    from studio.ui.history_tab import item_metadata
    from studio.ui.text import history_html, metadata_markdown

    _, studio, _ = open_app
    endpoints = Endpoints(studio)
    result = endpoints.generate("music", MUSIC, XSS, seed=5, params={"duration": 0.5})
    assert result.metadata["prompt"] == XSS  # stored as typed: escaping is the renderer's job
    item = studio.history.get(result.history_id)
    assert item.prompt == XSS

    # The tables are Markdown: render them as a Markdown renderer that passes raw HTML through would.
    markdown = MarkdownIt("commonmark", {"html": True}).enable("table")
    rendered = {
        "history list": history_html(studio.history.list("alert", limit=10)),
        "result table": markdown.render(metadata_markdown(result.metadata)),
        "history table": markdown.render(metadata_markdown(item_metadata(item))),
    }
    for where, text in rendered.items():
        assert "<script" not in text.lower() and "<img" not in text.lower(), (where, text[:600])
        assert "&lt;script&gt;" in text and "&lt;img" in text, (where, text[:600])

    with pytest.raises(gr.Error) as error:
        user_errors(endpoints.generate)("music", XSS, "lofi", seed=1)
    assert "<script" not in str(error.value) and "&lt;script&gt;" in str(error.value)
    reliability.note("history list, result and history tables and error text show &lt;script&gt;, never a tag")


# ---------------------------------------------------------------------- weights and remote code

def _from_pretrained_calls() -> list[tuple[str, int, str]]:
    calls = []
    for source in sorted((ROOT / "models").glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
                safe = any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == "SAFE_LOAD"
                           for k in node.keywords) or any(
                    k.arg == "trust_remote_code" and isinstance(k.value, ast.Constant) and k.value.value is False
                    for k in node.keywords)
                calls.append((f"{source.name}:{node.lineno}", safe, ast.unparse(node.func)))
    return calls


@pytest.mark.reliability("Security", "remote code never trusted", "source scan of models/: SAFE_LOAD and every "
                                                                  "from_pretrained call")
def test_every_from_pretrained_call_refuses_remote_code(reliability):
    from models.common import SAFE_LOAD

    assert SAFE_LOAD.get("trust_remote_code") is False
    calls = _from_pretrained_calls()
    assert len(calls) >= 8, calls
    unsafe = [(where, name) for where, safe, name in calls if not safe]
    assert not unsafe, f"from_pretrained without **SAFE_LOAD: {unsafe}"
    reliability.note(f"{len(calls)} from_pretrained calls in models/, every one with trust_remote_code=False")


EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("remote code ran")
from transformers import GPT2Model
class EvilModel(GPT2Model):
    pass
"""


class _Trap:
    """Pickled into a .bin: unpickling it with a plain pickle.load would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _tiny_repo(folder: Path, marker: Path, *, safetensors: bool, auto_map: bool) -> Path:
    import torch
    from transformers import GPT2Config, GPT2Model

    config = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=16)
    model = GPT2Model(config)
    if safetensors:
        model.save_pretrained(folder)  # model.safetensors
    else:
        config.save_pretrained(folder)
    torch.save({"trap": _Trap(marker), **model.state_dict()}, folder / "pytorch_model.bin")
    if auto_map:
        data = json.loads((folder / "config.json").read_text())
        data["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
        (folder / "config.json").write_text(json.dumps(data))
        (folder / "evil.py").write_text(EVIL_MODULE.format(marker=str(marker) + ".py"))
    return folder


@pytest.mark.reliability("Security", "repo with pickled weights and custom code", "models.common.load_pretrained "
                                                                                  "and AutoModel with SAFE_LOAD")
@pytest.mark.parametrize("safetensors", [True, False], ids=["safetensors beside the pickle", "pickle only"])
def test_a_hostile_repo_runs_no_code(tmp_path, safetensors, reliability):
    from types import SimpleNamespace

    from transformers import AutoModel, GPT2Model

    from models.common import SAFE_LOAD, load_pretrained

    marker = tmp_path / "pwned"
    repo = _tiny_repo(tmp_path / "repo", marker, safetensors=safetensors, auto_map=True)

    outcomes = []
    for attempt in (lambda: load_pretrained(GPT2Model, SimpleNamespace(repo_id=str(repo)), "cpu", "float32"),
                    lambda: AutoModel.from_pretrained(str(repo), **SAFE_LOAD)):
        try:
            model = attempt()
            outcomes.append(type(model).__name__)
        except Exception as error:  # refusing is as good as loading safely; running the code is not
            outcomes.append(type(error).__name__)
    assert not marker.exists(), "unpickling the .bin ran code"
    assert not Path(str(marker) + ".py").exists(), "the repo's custom code ran"
    assert "EvilModel" not in outcomes
    if safetensors:
        assert outcomes[0] == "GPT2Model"  # loaded from model.safetensors; the pickle was never opened
    reliability.note(f"outcomes {outcomes}; no marker file: neither the pickle nor evil.py ran")


# ---------------------------------------------------------------------- limits

@pytest.mark.reliability("Security", "upload size and prompt length limits", "launch_options max_file_size; raw HTTP "
                                                                             "POST /gradio_api/upload; API /music")
def test_uploads_and_prompts_are_limited(open_app, reliability):
    import httpx
    from gradio_client import Client

    from studio.settings import Settings
    from studio.ui.launch import MAX_UPLOAD_BYTES, launch_options

    assert launch_options(Settings(), None)["max_file_size"] == MAX_UPLOAD_BYTES
    url, studio, _ = open_app
    with httpx.Client(base_url=url, timeout=30) as http:
        big = http.post("/gradio_api/upload", files={"files": ("big.wav", b"\0" * (MAX_UPLOAD_BYTES + 1))})
        assert big.status_code == 413, big.status_code
        small = http.post("/gradio_api/upload", files={"files": ("small.wav", b"RIFF")})
        assert small.status_code == 200

    client = Client(url + "/", verbose=False)
    try:
        with pytest.raises(Exception, match="takes at most 2,000"):
            client.predict(model=MUSIC, prompt="x" * 2001, duration=0.5, api_name="/music")
    finally:
        client.close()
    reliability.note(f"uploads over {MAX_UPLOAD_BYTES:,} bytes get HTTP 413; prompts over 2,000 characters refused")


# ---------------------------------------------------------------------- the queue route

BAD_FN_INDEX = {"unknown 9999": 9999, "negative -1": -1, "text 'abc'": "abc", "missing": None, "huge 2**70": 2**70,
                "a list": [0]}


def _join(http, fn_index, session: str = "probe"):
    body = {"data": [SPEECH, "hello"], "session_hash": session}
    if fn_index is not None:
        body["fn_index"] = fn_index
    return http.post("/gradio_api/queue/join", json=body)


@pytest.mark.reliability("Security", "queue join with a bad fn_index",
                         "raw HTTP POST /gradio_api/queue/join: fn_index 9999, -1, 'abc', 2**70, [0], missing; "
                         "then gradio_client")
@pytest.mark.parametrize("name", list(BAD_FN_INDEX))
def test_a_bad_fn_index_is_a_client_error(name, open_app, reliability):
    import httpx
    from gradio_client import Client

    url, _, _ = open_app
    with httpx.Client(base_url=url, timeout=10) as http:
        response = _join(http, BAD_FN_INDEX[name])
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert response.json().get("detail"), response.text[:300]

    client = Client(url + "/", verbose=False)  # the queue still serves the page and the client
    try:
        assert client.predict(api_name="/memory")["device"]
        path, meta = client.predict(model=SPEECH, text="still served", seed=1, api_name="/speech")
        assert Path(path).is_file() and meta["model"] == SPEECH
    finally:
        client.close()
    reliability.note(f"HTTP {response.status_code}: {response.text[:120]}; the next client call is served")


@pytest.mark.reliability("Security", "queue join with a bad fn_index when --auth is set",
                         "raw HTTP POST /gradio_api/queue/join with fn_index 9999 and -1, without and with the login")
def test_a_bad_fn_index_with_auth_is_401_then_a_client_error(locked_app, reliability):
    import httpx

    url, _ = locked_app
    codes = {}
    with httpx.Client(base_url=url, timeout=10) as http:
        for fn_index in (9999, -1):
            codes[f"{fn_index} without login"] = _join(http, fn_index).status_code
        assert http.post("/login", data={"username": LOGIN[0], "password": LOGIN[1]}).status_code == 200
        for fn_index in (9999, -1):
            response = _join(http, fn_index)
            codes[f"{fn_index} with login"] = response.status_code
            assert response.json().get("detail"), response.text[:300]
    assert codes["9999 without login"] == codes["-1 without login"] == 401, codes
    assert all(400 <= code < 500 for code in codes.values()), codes
    reliability.note(f"{codes}")


def test_a_join_naming_a_file_the_server_never_received_is_found(tmp_path):
    """The queue check's scan of a join's inputs: FileData payloads outside the upload folder and the served
    folders are caught wherever they sit (the page's events that take values as sent are not preprocessed)."""
    from gradio.utils import get_upload_folder

    from studio.ui.queue_check import _foreign_file

    def file(path):
        return {"path": str(path), "meta": {"_type": "gradio.FileData"}}

    uploaded = Path(get_upload_folder()) / "abc" / "riff.wav"
    served = tmp_path / "out" / "clip.wav"
    readable = [get_upload_folder(), str(tmp_path / "out")]
    assert _foreign_file(["x", file(uploaded), 3, file(served)], readable) is None
    assert _foreign_file([{"url": "https://example.com/a.wav", **file("https://example.com/a.wav")}], readable) is None
    assert _foreign_file(["x", {"value": [file("/etc/passwd")]}], readable) == ("data[1][value][0]", "/etc/passwd")
    assert _foreign_file([file(tmp_path / "out" / ".." / "secret.wav")], readable) == \
        ("data[0]", str(tmp_path / "out" / ".." / "secret.wav"))
    assert _foreign_file([{"path": "/etc/passwd"}], readable) is None  # no FileData: the endpoint's own check
