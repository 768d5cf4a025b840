"""studio.settings: sizes, flags and their STUDIO_* twins, defaults, and the messages bad values get."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from studio.errors import InvalidInput, StudioError
from studio.settings import (
    DEFAULT_RESERVE,
    Settings,
    add_arguments,
    format_bytes,
    parse_settings,
    parse_size,
    settings_from,
)

# --------------------------------------------------------------------------------------------
# parse_size
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6GB", 6 * 10**9),
        ("300MB", 300 * 10**6),
        ("1.5GiB", int(1.5 * 2**30)),
        ("512", 512),
        ("512B", 512),
        ("10KiB", 10 * 2**10),
        ("2TB", 2 * 10**12),
        ("6gb", 6 * 10**9),  # units are case-insensitive
        (" 6 GB ", 6 * 10**9),  # spaces a shell or an env file may leave
        ("0.5GB", 500 * 10**6),
    ],
)
def test_parse_size_accepts(text, expected):
    assert parse_size(text) == expected
    assert isinstance(parse_size(text), int)


@pytest.mark.parametrize(
    "text",
    ["6XB", "", "-1GB", "0GB", "GB", "1e400GB", "1" + "0" * 400 + "GB", "six GB", "6 G B", "nan", "inf"],
    ids=["unknown-unit", "empty", "negative", "zero", "unit-only", "exponent", "overflows-float", "words",
         "split-unit", "nan", "inf"],
)
def test_parse_size_rejects_and_names_the_value(text):
    with pytest.raises(InvalidInput) as info:
        parse_size(text, what="--memory-budget")
    message = str(info.value)
    assert repr(text) in message, "the message must quote the value that was given"
    assert "--memory-budget" in message, "the message must name the setting"
    assert "GB" in message, "the message must show how to write a size"


@pytest.mark.parametrize("text", ["0.5", "0.4B"])
def test_parse_size_rejects_sizes_below_one_byte(text):
    with pytest.raises(InvalidInput):
        parse_size(text)


def test_invalid_input_is_a_studio_error():
    # The CLI and the UI turn StudioError into a user message; a bad size must be one.
    with pytest.raises(StudioError):
        parse_size("6XB")


# --------------------------------------------------------------------------------------------
# format_bytes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (12_345, "12.3 kB"),
        (340 * 10**6, "340 MB"),
        (1.2e9, "1.2 GB"),
        (6 * 10**9, "6.0 GB"),
        (1.5 * 2**30, "1.6 GB"),
        (99.94e9, "99.9 GB"),
        (150e9, "150 GB"),
        (2.5e12, "2.5 TB"),
        (-1.5e9, "-1.5 GB"),
    ],
)
def test_format_bytes(n, expected):
    assert format_bytes(n) == expected


# --------------------------------------------------------------------------------------------
# Flags and their STUDIO_* environment twins
# --------------------------------------------------------------------------------------------

# (flag, env twin, flag argv, env value, Settings field, value from the flag, value from the env)
TWINS = [
    ("--host", "STUDIO_HOST", ["--host", "0.0.0.0"], "192.168.1.5", "host", "0.0.0.0", "192.168.1.5"),
    ("--port", "STUDIO_PORT", ["--port", "8000"], "9000", "port", 8000, 9000),
    ("--share", "STUDIO_SHARE", ["--share"], "0", "share", True, False),
    ("--auth", "STUDIO_AUTH", ["--auth", "me:flag-pass"], "you:env-pass", "auth", ("me", "flag-pass"),
     ("you", "env-pass")),
    ("--device", "STUDIO_DEVICE", ["--device", "cpu"], "cuda", "device", "cpu", "cuda"),
    ("--memory-budget", "STUDIO_MEMORY_BUDGET", ["--memory-budget", "6GB"], "300MB", "memory_budget",
     6 * 10**9, 300 * 10**6),
    ("--memory-reserve", "STUDIO_MEMORY_RESERVE", ["--memory-reserve", "1GiB"], "256MB", "memory_reserve",
     2**30, 256 * 10**6),
    ("--output-dir", "STUDIO_OUTPUT_DIR", ["--output-dir", "from-flag"], "from-env", "output_dir",
     Path("from-flag"), Path("from-env")),
    ("--mcp", "STUDIO_MCP", ["--mcp"], "no", "mcp", True, False),
]
TWIN_IDS = [t[0] for t in TWINS]


@pytest.mark.parametrize(("flag", "var", "argv", "env_value", "field", "from_flag", "from_env"), TWINS, ids=TWIN_IDS)
def test_flag_wins_over_its_env_twin(flag, var, argv, env_value, field, from_flag, from_env):
    settings = parse_settings(argv, env={var: env_value})
    assert getattr(settings, field) == from_flag


@pytest.mark.parametrize(("flag", "var", "argv", "env_value", "field", "from_flag", "from_env"), TWINS, ids=TWIN_IDS)
def test_env_twin_is_used_when_the_flag_is_absent(flag, var, argv, env_value, field, from_flag, from_env):
    settings = parse_settings([], env={var: env_value})
    assert getattr(settings, field) == from_env
    assert getattr(settings, field) != getattr(Settings(), field) or field in ("share", "mcp")


@pytest.mark.parametrize(("var", "field"), [("STUDIO_SHARE", "share"), ("STUDIO_MCP", "mcp")])
@pytest.mark.parametrize("text", ["1", "true", "Yes", "on"])
def test_boolean_env_twins_switch_on(var, field, text):
    assert getattr(parse_settings([], env={var: text}), field) is True


@pytest.mark.parametrize(
    ("argv", "var", "bad_env_value"),
    [
        (["--port", "8000"], "STUDIO_PORT", "not-a-port"),
        (["--share"], "STUDIO_SHARE", "maybe"),
        (["--device", "cpu"], "STUDIO_DEVICE", "tpu"),
        (["--memory-budget", "6GB"], "STUDIO_MEMORY_BUDGET", "6XB"),
        (["--auth", "me:pw"], "STUDIO_AUTH", "nocolon"),
    ],
    ids=["port", "share", "device", "memory-budget", "auth"],
)
def test_a_flag_makes_its_env_twin_irrelevant_even_when_invalid(argv, var, bad_env_value):
    parse_settings(argv, env={var: bad_env_value})  # must not raise: the flag was given


@pytest.mark.parametrize(
    ("var", "value"),
    [("STUDIO_PORT", "0"), ("STUDIO_SHARE", "maybe"), ("STUDIO_MCP", "2"), ("STUDIO_DEVICE", "tpu"),
     ("STUDIO_AUTH", "nocolon"), ("STUDIO_MEMORY_BUDGET", "6XB"), ("STUDIO_MEMORY_RESERVE", "-1GB")],
)
def test_bad_env_values_are_refused(var, value):
    with pytest.raises(InvalidInput):
        parse_settings([], env={var: value})


def test_every_flag_has_an_env_twin_named_in_its_help():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    helps = {opt: action.help or "" for action in parser._actions for opt in action.option_strings}
    flags = {opt for opt in helps if opt.startswith("--") and opt != "--help"}
    assert flags == {t[0] for t in TWINS}, "a flag was added or removed: give it a STUDIO_* twin and list it here"
    for flag, var, *_ in TWINS:
        assert var in helps[flag], f"{flag}'s help should name its environment twin {var}"


def test_settings_from_reads_os_environ_when_no_env_is_given(monkeypatch):
    monkeypatch.setenv("STUDIO_PORT", "9123")
    assert settings_from(None).port == 9123


# --------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: parse_settings([], env={}), lambda: settings_from(None, env={}), Settings],
                         ids=["parse_settings", "settings_from", "Settings"])
def test_defaults(make):
    settings = make()
    assert (settings.host, settings.port) == ("127.0.0.1", 7860)
    assert settings.share is False and settings.mcp is False
    assert settings.auth is None
    assert settings.device == "auto"
    assert settings.memory_budget is None
    assert settings.memory_reserve == DEFAULT_RESERVE == 512 * 2**20
    assert settings.output_dir == Path("outputs")


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().port = 1  # type: ignore[misc]


def test_memory_reserve_may_be_zero_but_budget_may_not():
    assert parse_settings(["--memory-reserve", "0"], env={}).memory_reserve == 0
    with pytest.raises(InvalidInput):
        parse_settings(["--memory-budget", "0"], env={})


def test_output_dir_expands_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_settings(["--output-dir", "~/clips"], env={}).output_dir == tmp_path / "clips"


# --------------------------------------------------------------------------------------------
# Bad values: the message names the flag and tells the fix
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "must_name"),
    [
        (["--port", "0"], ["--port", "'0'", "1 to 65535"]),
        (["--port", "70000"], ["--port", "70000", "1 to 65535"]),
        (["--port", "http"], ["--port", "http", "1 to 65535"]),
        (["--auth", "nocolon"], ["--auth", "USER:PASS"]),
        (["--auth", ":pw"], ["--auth", "USER:PASS"]),
        (["--auth", "me:"], ["--auth", "USER:PASS"]),
        (["--device", "tpu"], ["--device", "tpu", "auto", "cpu"]),
        (["--memory-budget", "6XB"], ["--memory-budget", "6XB", "6GB"]),
        (["--memory-reserve", "lots"], ["--memory-reserve", "lots", "GB"]),
        (["--host", "  "], ["--host", "127.0.0.1"]),
        (["--output-dir", ""], ["--output-dir", "outputs"]),
    ],
    ids=["port-0", "port-70000", "port-text", "auth-nocolon", "auth-no-user", "auth-no-pass", "device-tpu",
         "budget-unit", "reserve-words", "host-blank", "output-dir-empty"],
)
def test_bad_flag_values_name_the_flag_and_the_fix(argv, must_name):
    with pytest.raises(InvalidInput) as info:
        parse_settings(argv, env={})
    message = str(info.value)
    assert "\n" not in message
    for part in must_name:
        assert part in message, f"{part!r} missing from {message!r}"


def test_auth_error_does_not_echo_the_password():
    with pytest.raises(InvalidInput) as info:
        parse_settings(["--auth", ":s3cret-pw"], env={})
    assert "s3cret-pw" not in str(info.value)


def test_auth_keeps_colons_in_the_password():
    assert parse_settings(["--auth", "me:a:b:c"], env={}).auth == ("me", "a:b:c")


def test_auth_file_of_pairs(tmp_path):
    from studio.settings import settings_from

    logins = tmp_path / "logins.txt"
    logins.write_text("# who may use the studio\nalice:wonder-land\n\nbob:builder:with:colons\n", encoding="utf-8")
    settings = settings_from(None, {"STUDIO_AUTH": f"@{logins}"})
    assert settings.auth == (("alice", "wonder-land"), ("bob", "builder:with:colons"))


@pytest.mark.parametrize("content,needle", [("", "has no USER:PASS lines"), ("nocolon-secret\n", "USER:PASS")])
def test_bad_auth_file_is_named_without_echoing_secrets(tmp_path, content, needle):
    from studio.settings import settings_from

    logins = tmp_path / "logins.txt"
    logins.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput) as info:
        settings_from(None, {"STUDIO_AUTH": f"@{logins}"})
    assert needle in str(info.value) and "nocolon-secret" not in str(info.value)


def test_missing_auth_file(tmp_path):
    from studio.settings import settings_from

    with pytest.raises(InvalidInput, match="cannot read"):
        settings_from(None, {"STUDIO_AUTH": f"@{tmp_path / 'nope.txt'}"})
