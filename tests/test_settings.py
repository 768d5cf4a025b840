"""studio.settings: sizes, flags and their STUDIO_* twins, defaults, and the messages bad values get."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from studio.errors import InvalidInput, StudioError
from studio.user_models import parse_entries
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
    ("--add-model", "STUDIO_ADD_MODEL", ["--add-model", "me/a=bark"], "me/b=mms_tts,me/c=musicgen", "add_models",
     parse_entries("me/a=bark"), parse_entries("me/b=mms_tts,me/c=musicgen", "STUDIO_ADD_MODEL")),
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
     ("STUDIO_AUTH", "nocolon"), ("STUDIO_MEMORY_BUDGET", "6XB"), ("STUDIO_MEMORY_RESERVE", "-1GB"),
     ("STUDIO_ADD_MODEL", "me/a=bark,me/b")],
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


# --------------------------------------------------------------------------------------------
# Several devices: --device lists, per-device budgets, simulated devices, and their cross-check
# --------------------------------------------------------------------------------------------

GB = 10**9


@pytest.mark.parametrize(
    ("text", "device", "device_list"),
    [
        ("auto", "auto", ("auto",)),
        ("cuda", "cuda", ("cuda",)),
        ("mps", "mps", ("mps",)),
        ("cpu", "cpu", ("cpu",)),
        ("cuda:1", "cuda:1", ("cuda:1",)),
        ("cuda:0,cuda:1", "cuda:0,cuda:1", ("cuda:0", "cuda:1")),
        ("cuda:0 , cuda:1", "cuda:0,cuda:1", ("cuda:0", "cuda:1")),  # whitespace around commas
        (" CUDA:2,Cuda:0 ", "cuda:2,cuda:0", ("cuda:2", "cuda:0")),  # lower-cased, order kept
        ("cuda:0,cuda:1,cuda:2,cuda:3", "cuda:0,cuda:1,cuda:2,cuda:3", ("cuda:0", "cuda:1", "cuda:2", "cuda:3")),
        ("cuda:10", "cuda:10", ("cuda:10",)),
    ],
)
@pytest.mark.parametrize("via", ["flag", "env"])
def test_device_accepts_and_normalizes(text, device, device_list, via):
    settings = (parse_settings(["--device", text], env={}) if via == "flag"
                else parse_settings([], env={"STUDIO_DEVICE": text}))
    assert settings.device == device
    assert settings.device_list == device_list


def test_device_list_of_a_settings_built_directly():
    assert Settings().device_list == ("auto",)
    assert Settings(device="cuda:0,cuda:1").device_list == ("cuda:0", "cuda:1")


# (value, the words the message must hold besides the value itself)
BAD_DEVICES = [
    ("mps,cpu", ["only CUDA devices", "cuda:0,cuda:1"]),
    ("cuda:0,cpu", ["only CUDA devices", "cuda:0,cuda:1"]),
    ("auto,cuda:1", ["only CUDA devices", "cuda:0,cuda:1"]),
    ("cuda:x", ["cuda:N", "cuda:0,cuda:1"]),
    ("cuda:-1", ["cuda:N", "cuda:0,cuda:1"]),
    ("cuda:0,cuda:x", ["'cuda:x'", "cuda:N", "cuda:0,cuda:1"]),
    ("cuda:", ["cuda:N", "cuda:0,cuda:1"]),
    ("cuda0", ["cuda:N", "cuda:0,cuda:1"]),
    ("cuda:0,", ["empty item", "cuda:0,cuda:1"]),
    (",cuda:0", ["empty item", "cuda:0,cuda:1"]),
    ("cuda:0,,cuda:1", ["empty item", "cuda:0,cuda:1"]),
    ("cuda:0,cuda:0", ["names cuda:0 twice", "list each device once", "cuda:0,cuda:1"]),
    ("cuda:1,cuda:01", ["names cuda:1 twice", "list each device once"]),
    ("tpu", ["auto", "cpu", "cuda:0,cuda:1"]),
    ("", ["auto", "cpu"]),
]
BAD_DEVICE_IDS = [value or "empty" for value, _ in BAD_DEVICES]


@pytest.mark.parametrize(("value", "must_name"), BAD_DEVICES, ids=BAD_DEVICE_IDS)
def test_bad_device_names_the_value_and_the_fix(value, must_name):
    with pytest.raises(InvalidInput) as info:
        parse_settings(["--device", value], env={})
    message = str(info.value)
    assert "\n" not in message
    for part in ["--device", repr(value), *must_name]:
        assert part in message, f"{part!r} missing from {message!r}"
    assert "environment variable" not in message, "a typed flag is not an environment variable"


@pytest.mark.parametrize(("value", "must_name"), BAD_DEVICES, ids=BAD_DEVICE_IDS)
def test_bad_device_from_the_env_names_the_variable(value, must_name):
    with pytest.raises(InvalidInput) as info:
        parse_settings([], env={"STUDIO_DEVICE": value})
    message = str(info.value)
    assert repr(value) in message and must_name[-1] in message
    assert message.endswith("(from the environment variable STUDIO_DEVICE)")


def test_device_list_with_spaces_quotes_what_was_typed():
    with pytest.raises(InvalidInput) as info:
        parse_settings(["--device", "cuda:0, cuda:0"], env={})
    assert "'cuda:0, cuda:0'" in str(info.value) and "twice" in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6GB", 6 * GB),
        ("12GB,6GB", (12 * GB, 6 * GB)),
        ("12GB, 6GB", (12 * GB, 6 * GB)),
        (" 1GiB ,300MB,2GB ", (2**30, 300 * 10**6, 2 * GB)),
        ("5GB,5GB", (5 * GB, 5 * GB)),  # equal sizes are fine: devices differ
    ],
)
@pytest.mark.parametrize("via", ["flag", "env"])
def test_memory_budget_one_size_or_one_per_device(text, expected, via):
    settings = (parse_settings(["--memory-budget", text], env={}) if via == "flag"
                else parse_settings([], env={"STUDIO_MEMORY_BUDGET": text}))
    assert settings.memory_budget == expected
    assert type(settings.memory_budget) is type(expected), "one size stays an int, a list becomes a tuple"
    if isinstance(expected, tuple):
        assert all(type(size) is int for size in settings.memory_budget)


# (value, the words the message must hold: the bad item and a fix)
BAD_BUDGETS = [
    ("12GB,6XB", ["'6XB'", "item 2 of '12GB,6XB'", "6GB"]),
    ("6XB,12GB", ["'6XB'", "item 1 of '6XB,12GB'", "6GB"]),
    ("12GB,0", ["'0'", "at least one byte", "6GB"]),
    ("12GB,-1GB", ["'-1GB'", "6GB"]),
    ("12GB,", ["'12GB,'", "empty item", "12GB,6GB"]),
    ("12GB,,6GB", ["'12GB,,6GB'", "empty item", "12GB,6GB"]),
    (",", ["','", "empty item", "12GB,6GB"]),
]


@pytest.mark.parametrize(("value", "must_name"), BAD_BUDGETS, ids=[v for v, _ in BAD_BUDGETS])
def test_bad_memory_budget_lists_name_the_item_and_the_fix(value, must_name):
    with pytest.raises(InvalidInput) as info:
        parse_settings(["--memory-budget", value], env={})
    message = str(info.value)
    assert "--memory-budget" in message and "\n" not in message
    for part in must_name:
        assert part in message, f"{part!r} missing from {message!r}"
    with pytest.raises(InvalidInput) as info:
        parse_settings([], env={"STUDIO_MEMORY_BUDGET": value})
    assert str(info.value) == f"{message} (from the environment variable STUDIO_MEMORY_BUDGET)"


@pytest.mark.parametrize(
    ("budget", "count", "caps"),
    [
        (None, 1, (None,)),
        (None, 3, (None, None, None)),
        (6 * GB, 1, (6 * GB,)),
        (6 * GB, 2, (6 * GB, 6 * GB)),  # one size caps every device
        ((12 * GB, 6 * GB), 2, (12 * GB, 6 * GB)),
        ((1, 2, 3), 3, (1, 2, 3)),
    ],
)
def test_budget_caps(budget, count, caps):
    assert Settings(memory_budget=budget).budget_caps(count) == caps


@pytest.mark.parametrize(
    ("budget", "count", "must_name"),
    [
        ((12 * GB, 6 * GB, 3 * GB), 2,
         ["--memory-budget '12GB,6GB,3GB'", "gives 3 sizes", "has 2 devices", "one size for all devices",
          "one per device", "e.g. --memory-budget 12GB,6GB"]),
        ((12 * GB, 6 * GB), 3, ["'12GB,6GB'", "gives 2 sizes", "has 3 devices", "e.g. --memory-budget 12GB,6GB,6GB"]),
        ((12 * GB, 6 * GB), 1, ["'12GB,6GB'", "gives 2 sizes", "has 1 device:", "give one size",
                                 "e.g. --memory-budget 12GB"]),
        ((int(1.5 * 2**30), GB), 3, ["'1536MiB,1GB'", "has 3 devices"]),  # the sizes written back exactly
    ],
)
def test_budget_caps_refuses_a_list_of_another_length(budget, count, must_name):
    with pytest.raises(InvalidInput) as info:
        Settings(memory_budget=budget).budget_caps(count)
    message = str(info.value)
    for part in must_name:
        assert part in message, f"{part!r} missing from {message!r}"


def test_budget_caps_wants_at_least_one_device():
    with pytest.raises(ValueError):
        Settings(memory_budget=GB).budget_caps(0)


@pytest.mark.parametrize(
    ("text", "memory", "sizes"),
    [
        ("2GB", 2 * GB, (2 * GB,)),  # one size stays an int, as the single simulated device always was
        ("4GB,2GB", (4 * GB, 2 * GB), (4 * GB, 2 * GB)),
        ("4GB, 2GB", (4 * GB, 2 * GB), (4 * GB, 2 * GB)),
        ("1GB,1GB,512MiB", (GB, GB, 512 * 2**20), (GB, GB, 512 * 2**20)),
    ],
)
def test_simulated_memory_one_device_per_size(text, memory, sizes):
    settings = parse_settings([], env={"STUDIO_SIMULATED_MEMORY": text})
    assert settings.simulated_memory == memory
    assert type(settings.simulated_memory) is type(memory)
    assert settings.simulated_sizes == sizes
    assert settings.known_device_count == len(sizes)


def test_simulated_sizes_of_settings_built_directly():
    assert Settings().simulated_sizes is None
    assert Settings(simulated_memory=123).simulated_sizes == (123,)
    assert Settings(simulated_memory=(4, 2)).simulated_sizes == (4, 2)


def test_no_simulation_by_default_and_an_empty_variable_is_none():
    assert parse_settings([], env={}).simulated_memory is None
    assert parse_settings([], env={"STUDIO_SIMULATED_MEMORY": ""}).simulated_sizes is None


@pytest.mark.parametrize(
    ("value", "must_name"),
    [
        ("4GB,2XB", ["'2XB'", "item 2 of '4GB,2XB'", "6GB"]),
        ("4GB,", ["'4GB,'", "empty item", "STUDIO_SIMULATED_MEMORY=4GB,2GB"]),
        ("lots", ["'lots'", "6GB"]),
    ],
)
def test_bad_simulated_memory_names_the_variable(value, must_name):
    with pytest.raises(InvalidInput) as info:
        parse_settings([], env={"STUDIO_SIMULATED_MEMORY": value})
    message = str(info.value)
    for part in ["STUDIO_SIMULATED_MEMORY", *must_name]:
        assert part in message, f"{part!r} missing from {message!r}"
    assert message.endswith("(from the environment variable STUDIO_SIMULATED_MEMORY)")


@pytest.mark.parametrize(
    ("settings", "count"),
    [
        (Settings(), None),  # auto: as many as are visible, unknown until the device is picked
        (Settings(device="cuda"), None),
        (Settings(device="cpu"), 1),
        (Settings(device="mps"), 1),
        (Settings(device="cuda:1"), 1),
        (Settings(device="cuda:0,cuda:1"), 2),
        (Settings(device="cuda:0,cuda:1,cuda:2"), 3),
        (Settings(simulated_memory=2 * GB), 1),
        (Settings(simulated_memory=(4 * GB, 2 * GB)), 2),
        (Settings(device="cuda:0,cuda:1,cuda:2", simulated_memory=(4 * GB, 2 * GB)), 2),  # the simulation wins
        (Settings(device="cpu", simulated_memory=(4 * GB, 2 * GB)), 2),
        (Settings(device="auto", simulated_memory=GB), 1),
    ],
)
def test_known_device_count(settings, count):
    assert settings.known_device_count == count


@pytest.mark.parametrize(
    ("argv", "env", "budget"),
    [
        (["--memory-budget", "1GB,1GB"], {"STUDIO_SIMULATED_MEMORY": "4GB,2GB"}, (GB, GB)),
        (["--memory-budget", "1GB"], {"STUDIO_SIMULATED_MEMORY": "4GB,2GB"}, GB),
        (["--memory-budget", "3GB,2GB", "--device", "cuda:0,cuda:1"], {}, (3 * GB, 2 * GB)),
        (["--memory-budget", "3GB,2GB,1GB"], {}, (3 * GB, 2 * GB, GB)),  # auto: unknown count, checked later
        (["--memory-budget", "3GB,2GB", "--device", "cuda"], {}, (3 * GB, 2 * GB)),  # bare cuda: unknown too
        (["--memory-budget", "3GB", "--device", "cpu"], {}, 3 * GB),
    ],
)
def test_budgets_that_match_the_device_count_pass(argv, env, budget):
    assert parse_settings(argv, env=env).memory_budget == budget


@pytest.mark.parametrize(
    ("argv", "env", "must_name", "from_var"),
    [
        (["--memory-budget", "1GB,1GB,1GB"], {"STUDIO_SIMULATED_MEMORY": "4GB,2GB"},
         ["'1GB,1GB,1GB'", "3 sizes", "2 devices", "STUDIO_SIMULATED_MEMORY=4GB,2GB", "--memory-budget 1GB,1GB"],
         None),
        ([], {"STUDIO_MEMORY_BUDGET": "1GB,1GB,1GB", "STUDIO_SIMULATED_MEMORY": "4GB,2GB"},
         ["'1GB,1GB,1GB'", "3 sizes", "2 devices", "STUDIO_SIMULATED_MEMORY=4GB,2GB"], "STUDIO_MEMORY_BUDGET"),
        (["--memory-budget", "1GB,1GB"], {"STUDIO_SIMULATED_MEMORY": "4GB"},
         ["'1GB,1GB'", "2 sizes", "1 device", "give one size"], None),
        (["--memory-budget", "12GB,6GB,3GB", "--device", "cuda:0,cuda:1"], {},
         ["'12GB,6GB,3GB'", "3 sizes", "2 devices", "--device cuda:0,cuda:1", "--memory-budget 12GB,6GB"], None),
        (["--memory-budget", "12GB,6GB"], {"STUDIO_DEVICE": "cpu"},
         ["'12GB,6GB'", "2 sizes", "1 device", "give one size", "--memory-budget 12GB"], None),
        (["--memory-budget", "12GB,6GB", "--device", "mps"], {}, ["'12GB,6GB'", "1 device"], None),
        (["--memory-budget", "12GB,6GB", "--device", "cuda:1"], {}, ["'12GB,6GB'", "1 device"], None),
    ],
    ids=["simulated-flag", "simulated-env", "one-simulated", "cuda-list", "cpu-from-env", "mps", "one-cuda"],
)
def test_a_budget_list_of_another_length_than_the_devices_is_refused(argv, env, must_name, from_var):
    with pytest.raises(InvalidInput) as info:
        parse_settings(argv, env=env)
    message = str(info.value)
    assert "\n" not in message
    for part in ["--memory-budget", *must_name]:
        assert part in message, f"{part!r} missing from {message!r}"
    if from_var:
        assert message.endswith(f"(from the environment variable {from_var})")
    else:
        assert "(from the environment variable" not in message


def test_help_tells_about_several_devices():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    helps = {opt: action.help or "" for action in parser._actions for opt in action.option_strings}
    assert "cuda:0,cuda:1" in helps["--device"] and "every visible CUDA device" in helps["--device"]
    assert "12GB,6GB" in helps["--memory-budget"] and "per device" in helps["--memory-budget"]


def test_readme_tells_about_several_devices():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    device_row = next(line for line in readme.splitlines() if line.startswith("| `--device"))
    budget_row = next(line for line in readme.splitlines() if line.startswith("| `--memory-budget"))
    assert "cuda:0,cuda:1" in device_row and "every visible CUDA device" in device_row
    assert "12GB,6GB" in budget_row and "per device" in budget_row
    assert "STUDIO_SIMULATED_MEMORY=4GB,2GB" in readme
