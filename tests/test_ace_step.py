"""ACE-Step 1.5: songs with lyrics, repaint, cover and audio codes, on the tiny checkpoint (tests/tiny_ace_step.py).

The tiny pipeline is random: what it sings is noise, but it is the real pipeline's code path end to end (the
studio's loader, the Qwen tokenizer and text encoder, the condition encoder, the DiT, the audio tokenizer for covers,
the Oobleck VAE at 48 kHz with the real 1920-sample hop), so lengths, rates, seeds, progress, cancel, what reaches
the model and what the studio guarantees around it can be checked.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from studio.errors import Cancelled, InvalidInput
from studio.run import RunContext
from tests.conftest import cpu_studio

ACE = "ACE-Step/acestep-v15-xl-turbo-diffusers"
RATE = 48000
LYRICS = "[verse]\nSoft notes in the morning light\n[chorus]\nMusic fills the air tonight"


@pytest.fixture(scope="module")
def studio(tiny_cache, catalog, tmp_path_factory):
    return cpu_studio(catalog, tmp_path_factory)


@pytest.fixture(scope="module")
def riff(tmp_path_factory):
    """4 s of stereo chords at 44.1 kHz (the studio resamples it to 48 kHz), pulsing twice a second."""
    rate = 44100
    t = np.arange(4 * rate) / rate
    pulse = 0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)
    left = 0.3 * pulse * (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 277 * t))
    right = 0.3 * pulse * (np.sin(2 * np.pi * 330 * t) + 0.5 * np.sin(2 * np.pi * 165 * t))
    path = tmp_path_factory.mktemp("clips") / "riff.wav"
    soundfile.write(path, np.stack([left, right], axis=1).astype(np.float32), rate)
    return path


def _song(studio, seed=3, **params):
    settings = {"lyrics": LYRICS, "duration": 10.3, "language": "en", "bpm": 120, "key": "A minor",
                "time_signature": "4", **params}
    return studio.request("music", ACE, "upbeat synth-pop", seed=seed, params=settings)


@pytest.fixture(scope="module")
def song(studio):
    """One song run with what its context heard: (result, [(done, total) or stage, ...])."""
    heard = []
    ctx = RunContext(on_progress=lambda done, total: heard.append((done, total)), on_stage=heard.append)
    return studio.manager.run(_song(studio), ctx), heard


def test_the_studio_loads_the_real_pipeline_classes_from_the_cache(studio, song):
    from diffusers import AceStepPipeline
    from transformers import Qwen2Tokenizer, Qwen3Model

    with studio.manager.acquire(_song(studio)) as lease:
        pipe = lease.model.pipe
        assert type(pipe) is AceStepPipeline and pipe.is_turbo
        assert isinstance(pipe.text_encoder, Qwen3Model) and isinstance(pipe.tokenizer, Qwen2Tokenizer)
        assert pipe.sample_rate == RATE and pipe.latents_per_second == 25.0
        assert pipe.vae.use_tiling  # see load(): a 10-minute song decodes by tiles


def test_a_song_is_48khz_stereo_of_exactly_the_duration(song):
    result, _ = song
    audio = result.audio
    assert audio.sample_rate == RATE and audio.samples.dtype == np.float32
    assert audio.samples.shape == (2, round(10.3 * RATE))  # 258 latents decoded, cropped to 10.3 s
    assert np.isfinite(audio.samples).all()
    # Scaled to a -1 dBFS peak as the pipeline leaves its own output, so it is not silent either.
    assert np.abs(audio.samples).max() == pytest.approx(10 ** (-1 / 20), rel=1e-5)
    assert audio.info["latents"] == 258
    assert audio.info["metadata"] == {"mode": "song"}


def test_the_estimate_says_what_a_song_is(studio):
    assert studio.estimate(_song(studio)).work == "makes a 10.3 s song"
    assert studio.estimate(_song(studio, lyrics="")).work == "makes a 10.3 s instrumental"


def test_each_step_reports_progress_then_decoding(song):
    _, heard = song
    steps = [event for event in heard if isinstance(event, tuple)]
    assert steps == [(n, 8) for n in range(1, 9)]  # the turbo's 8 steps by default
    assert heard.index("decoding") > heard.index((8, 8))


def test_same_seed_same_song_and_the_lyrics_reach_the_model(studio, song):
    first = song[0].audio.samples
    again = studio.manager.run(_song(studio)).audio.samples
    other_words = studio.manager.run(_song(studio, lyrics="[verse]\nRain on the window, cold coffee")).audio.samples
    np.testing.assert_array_equal(again, first)
    # Same seed, same noise: only the lyrics differ, and the audio follows them. Measured: max difference 0.015 of a
    # 0.89 peak (the random DiT hears its conditioning faintly); the same lyrics give exactly 0.
    assert np.abs(other_words - first).max() > 0.005


def test_cancel_stops_within_one_step_and_the_next_run_works(studio):
    seen = []
    ctx = RunContext()

    def on_progress(done, total):
        seen.append(done)
        if done == 2:
            ctx.cancel.set()

    ctx.on_progress = on_progress
    with pytest.raises(Cancelled):
        studio.manager.run(_song(studio, steps=8), ctx)
    assert seen == [1, 2]
    assert studio.manager.run(_song(studio, steps=1, duration=10)).audio.samples.shape == (2, 10 * RATE)


def test_repaint_keeps_the_clip_outside_the_range_and_keeps_only_its_settings(studio, riff):
    request = studio.request("music", ACE, "an epic guitar solo", seed=4, params={
        "mode": "repaint", "audio": str(riff), "repaint_start": 1.0, "repaint_end": 2.5, "steps": 2,
        "cover_strength": 0.4, "duration": 20, "audio_codes": "<|audio_code_1|>", "lyrics": LYRICS})
    clip = request.get("audio").conformed(RATE, 2)
    result = studio.manager.run(request)
    repainted = result.audio.samples
    assert repainted.shape == clip.shape == (2, 4 * RATE)  # as long as the clip; Duration is not used
    # The pipeline repaints whole latents: int(2.5 x 25) = 62, so up to 2.48 s.
    first, last = RATE, round(2.48 * RATE)
    np.testing.assert_array_equal(repainted[:, :first], clip[:, :first])
    np.testing.assert_array_equal(repainted[:, last:], clip[:, last:])
    # Inside, the model's audio. The pipeline alone keeps nothing: the DiT regenerates every latent, with the clip's
    # as context outside the range. Measured on this checkpoint (8 steps, raw pipeline output): correlation with the
    # clip's VAE round trip 0.20 outside the range and 0.05 inside (the context reaches the DiT), with the clip
    # itself 0.00 on both sides. So the studio puts the clip back outside and crossfades over 0.1 s at the edges.
    assert np.abs(repainted[:, first + RATE // 10: last] - clip[:, first + RATE // 10: last]).max() > 0.05
    assert result.audio.info["metadata"] == {"mode": "repaint", "repainted_s": [1.0, 2.48]}
    # What a result's metadata keeps: the settings of its mode, not Duration, Cover strength or Audio codes.
    assert set(request.settings()) == {"mode", "audio", "repaint_start", "repaint_end", "lyrics", "language", "bpm",
                                       "key", "time_signature", "steps", "shift", "reference", "precision"}
    assert studio.estimate(request).work == "repaints 1.0-2.5 s of the 4.0 s clip 'riff.wav' and keeps the rest"


def test_cover_follows_the_clip_and_blends_in_text_below_strength_1(studio, riff):
    request = studio.request("music", ACE, "a jazz ballad", seed=5, params={
        "mode": "cover", "audio": str(riff), "cover_strength": 0.5, "steps": 2})
    result = studio.manager.run(request)
    assert result.audio.samples.shape == (2, 4 * RATE)
    assert result.audio.info["metadata"] == {"mode": "cover", "instrumental": True}
    assert studio.estimate(request).work == "covers the 4.0 s clip 'riff.wav' at strength 0.5"
    from models.ace_step import dit_layers, work_units

    spec = studio.catalog.get(ACE)
    full = studio.request("music", ACE, "a jazz ballad", seed=5, params={
        "mode": "cover", "audio": str(riff), "cover_strength": 1.0, "steps": 2})
    # Below strength 1 each step runs the DiT twice (with and without the clip's codes); the VAE's part is the same.
    # A pass counts the DiT's layers: the tiny one's 2 (its cached config) of the XL's 32.
    assert dit_layers(spec) == 2
    assert work_units(spec, request) - work_units(spec, full) == pytest.approx(2 * (470 + 100 + 100**2 / 2000) / 16)


def test_audio_codes_set_the_length_and_a_timbre_reference_is_heard(studio, riff):
    codes = "".join(f"<|audio_code_{(i * 7919) % 64000}|>" for i in range(50))  # 50 codes = 10 s
    request = _song(studio, audio_codes=codes, steps=2, duration=30, reference=str(riff))
    result = studio.manager.run(request)
    assert result.audio.samples.shape == (2, 10 * RATE)
    assert result.audio.info["metadata"] == {"mode": "song", "audio_codes": 50}
    assert studio.estimate(request).work == "makes a song from 50 audio codes (10.0 s), with the timbre of 'riff.wav'"
    plain = studio.manager.run(_song(studio, audio_codes=codes, steps=2)).audio.samples
    # The reference changes the song. Measured: max difference 0.010 (of a 0.89 peak); the same inputs give exactly 0.
    assert np.abs(plain - result.audio.samples).max() > 0.001


GB = 10**9


def test_the_xl_plan_says_before_the_run_that_a_12_gb_gpu_needs_offload(make_studio, monkeypatch):
    """With the published sizes (nothing cached): 11.5 GB of bfloat16 weights and the VAE's 1.9 GB decode tile do
    not fit 12 GB whole; its largest part, the 8.3 GB DiT, does with the working memory."""
    import studio.sizer
    import models.ace_step as ace

    monkeypatch.setattr(ace, "component_bytes", lambda repo_id, dtype_bytes: {})
    monkeypatch.setattr(ace, "cached_json", lambda repo_id, filename="config.json": None)
    monkeypatch.setattr(studio.sizer, "planned_weight_bytes",
                        lambda spec, dtype, floating, int8_parts=(), part_bytes=None: spec.weight_bytes(dtype))
    probe = make_studio(12 * GB, host_capacity=64 * GB)
    request = probe.request("music", ACE, "upbeat synth-pop", seed=1, params={"precision": "bfloat16"})
    estimate = probe.estimate(request)
    assert estimate.weights_bytes == 2 * sum(ace.PUBLISHED.values()) == 11_505_485_328
    assert 1.8 * GB < estimate.working_bytes < 2.1 * GB  # a 30 s song decodes in tiles of at most 640 latents
    assert estimate.placement == "offload" and estimate.fits
    assert estimate.summary().startswith("does not fit whole (13.5 GB of 12.0 GB): runs with CPU offload · makes a "
                                         "30 s instrumental")


def test_over_budget_runs_with_offload_within_the_budget(make_studio):
    from studio.catalog import DTYPE_BYTES

    probe = make_studio(4096 * 2**20)
    request = _song(probe, duration=10, steps=1)
    estimate = probe.estimate(request)
    spec = probe.catalog.get(ACE)
    parts = probe.catalog.family(spec).components(spec, DTYPE_BYTES[estimate.dtype])
    assert set(parts) == {"transformer", "condition_encoder", "audio_tokenizer", "audio_token_detokenizer",
                          "text_encoder", "vae"}
    largest = max(parts.values()) + estimate.working_bytes
    budget = (largest + estimate.weights_bytes + estimate.working_bytes) // 2  # the largest part fits, not all
    studio = make_studio(4096 * 2**20, budget=budget, host_capacity=10_000 * 2**20)
    assert studio.estimate(_song(studio, duration=10, steps=1)).placement == "offload"
    result = studio.manager.run(_song(studio, duration=10, steps=1))
    assert result.placement == "offload" and result.audio.samples.shape == (2, 10 * RATE)
    assert studio.device.peak <= budget and studio.device.peak >= max(parts.values())


def test_the_check_counts_tokens_as_the_pipeline_formats_and_tokenizes_them(studio):
    from diffusers import AceStepPipeline

    from models.ace_step import _cached_tokenizer, lyric_text, prompt_text

    text, lyrics = AceStepPipeline._format_prompt(AceStepPipeline, "calm piano", LYRICS, "de", 42.7,
                                                   AceStepPipeline._get_task_instruction("repaint"), 90, "F minor", "3")
    assert text == prompt_text("calm piano", "repaint", 90, "F minor", "3", 42.7)
    assert lyrics == lyric_text(LYRICS, "de")
    assert prompt_text("x", "text2music", None, None, None, 30.0) == AceStepPipeline._format_prompt(
        AceStepPipeline, "x", "", "en", 30.0, None, None, None, None)[0]
    with studio.manager.acquire(_song(studio)) as lease:
        tokenizer = lease.model.pipe.tokenizer
        assert len(_cached_tokenizer(ACE).encode(lyrics).ids) == len(tokenizer(lyrics)["input_ids"])


def test_the_estimate_counts_what_the_vae_tiles_process():
    """`tiled` is what diffusers' Oobleck tiling hands its decoder and encoder (windows and their overlaps)."""
    import warnings

    import torch
    from diffusers import AutoencoderOobleck

    from models.ace_step import DECODE_OVERLAP, DECODE_TILE, ENCODE_OVERLAP_S, ENCODE_TILE_S, HOP, tiled

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        vae = AutoencoderOobleck(encoder_hidden_size=4, downsampling_ratios=[2, 4, 4, 6, 10],
                                 channel_multiples=[1, 1, 1, 1, 1], decoder_channels=2, decoder_input_channels=2,
                                 audio_channels=2, sampling_rate=RATE)
    vae.enable_tiling()
    seen = []

    def decoder(z):  # what the tiles hand the decoder, answered with silence of the right length
        seen.append(z.shape[-1])
        return torch.zeros(1, 2, z.shape[-1] * HOP)

    def encoder(x):
        seen.append(x.shape[-1])
        return torch.zeros(1, 4, x.shape[-1] // HOP)

    vae.decoder.forward, vae.encoder.forward = decoder, encoder
    for length in (300, 640, 750, 6000):
        seen.clear()
        vae.decode(torch.zeros(1, 2, length))
        assert sum(seen) == tiled(length, DECODE_TILE, DECODE_OVERLAP), length
    for seconds in (20, 75):
        seen.clear()
        vae.encode(torch.zeros(1, 2, seconds * RATE))
        assert sum(seen) == tiled(seconds * RATE, int(ENCODE_TILE_S * RATE), int(ENCODE_OVERLAP_S * RATE)), seconds


def _refused(catalog, **params) -> str:
    values = {"lyrics": LYRICS, **params}
    with pytest.raises(InvalidInput) as error:
        catalog.make_request(ACE, "upbeat synth-pop", seed=1, params=values)
    return str(error.value)


@pytest.mark.parametrize(("params", "must_name"), [
    ({"bpm": 0}, ["bpm 0", "30 to 300", "-1"]),
    ({"bpm": 1000}, ["bpm 1000", "30 to 300"]),
    ({"key": "H major"}, ["'H major'", "C major", "A minor"]),
    ({"time_signature": "5"}, ["'5'", "auto, 2, 3, 4, 6"]),
    ({"language": "xx"}, ["'xx'", "en", "yue"]),
    ({"mode": "repaint"}, ["'repaint'", "Audio", "upload or record"]),
    ({"mode": "cover"}, ["'cover'", "Audio"]),
    ({"mode": "karaoke"}, ["'karaoke'", "song, repaint, cover"]),
    ({"duration": 5}, ["duration", "between 10 and 600"]),
    ({"duration": 601}, ["duration", "601"]),
    ({"audio_codes": "hello"}, ["'hello'", "<|audio_code_N|>"]),
    ({"audio_codes": "<|audio_code_64000|>"}, ["64000", "0 to 63999"]),
    ({"audio_codes": "<|audio_code_5|>" * 10}, ["2 s", "10 s to 600 s"]),
], ids=["bpm-0", "bpm-1000", "key", "time-signature", "language", "repaint-no-clip", "cover-no-clip", "mode",
        "duration-short", "duration-long", "codes-text", "codes-range", "codes-short"])
def test_bad_settings_are_refused_with_the_value_and_the_fix(catalog, tiny_cache, params, must_name):
    message = _refused(catalog, **params)
    for part in must_name:
        assert part in message, (part, message)


@pytest.mark.parametrize(("start", "end", "must_name"), [
    (5.0, -1.0, ["repaint_start 5", "4.00 s clip 'riff.wav'", "before 4.00 s"]),
    (1.0, 6.0, ["repaint_end 6", "at 4.00 s or sooner"]),
    (2.0, 2.0, ["2-2 s is empty", "must come after"]),
    (3.0, 1.0, ["3-1 s is reversed", "must come after"]),
    (2.0, 2.01, ["0.010 s long", "at least 0.04 s"]),
    (1.0, -0.5, ["repaint_end -0.5", "-1 for its end"]),
], ids=["start-past-end", "end-past-end", "empty", "reversed", "shorter-than-a-latent", "negative-end"])
def test_a_repaint_range_outside_the_clip_empty_or_reversed_is_refused(catalog, riff, start, end, must_name):
    message = _refused(catalog, mode="repaint", audio=str(riff), repaint_start=start, repaint_end=end)
    for part in must_name:
        assert part in message, (part, message)


def test_lyrics_over_the_limit_are_refused_with_the_count(catalog, tiny_cache):
    from models.ace_step import _cached_tokenizer, lyric_text

    words = "[verse]\n" + "shimmering neon heartbeat tonight\n" * 420
    count = len(_cached_tokenizer(ACE).encode(lyric_text(words.strip(), "en")).ids)
    assert count > 2048
    message = _refused(catalog, lyrics=words)
    assert f"{count:,} tokens" in message and "at most 2,048" in message and "shorten them" in message
    assert catalog.make_request(ACE, "x", seed=1, params={"lyrics": words[:2000]})  # within the limit


def test_auto_runs_the_dit_in_int8_on_the_cpu_and_the_plan_counts_its_bytes(studio, song):
    """The DiT's Linear layers are dynamic int8 (the music-dit bench: 4.1-4.7x a step at 0.5 % error); the encoders
    and the VAE stay float32; the plan's weight bytes from the headers are the loaded ones."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    result, _ = song
    assert result.dtype == "int8"
    with studio.manager.acquire(_song(studio)) as lease:
        pipe = lease.model.pipe
        quantized = [m for m in pipe.transformer.modules() if isinstance(m, DynamicLinear)]
        assert quantized and not any(isinstance(m, DynamicLinear) for m in pipe.vae.modules())
        assert not any(isinstance(m, DynamicLinear) for m in pipe.text_encoder.modules())
        from studio.weights import module_bytes

        loaded = module_bytes(lease.model.modules())
    from studio.weights import planned_weight_bytes

    spec = studio.catalog.get(ACE)
    planned = planned_weight_bytes(spec, "int8", 4, studio.catalog.family(spec).int8_parts)
    assert planned == pytest.approx(loaded, rel=0.05)
    assert planned < planned_weight_bytes(spec, "float32", 4)


def test_before_the_files_are_here_int8_counts_the_dit_at_a_byte_a_parameter(catalog, monkeypatch):
    import studio.sizer as sizer_module
    from models import ace_step
    from studio import weights

    monkeypatch.setattr(weights, "cached_weight_bytes", lambda *args: None)  # the files are not here yet
    monkeypatch.setattr(ace_step, "component_bytes", lambda repo, dtype_bytes: {})
    planned = sizer_module.Sizer(catalog).weights(catalog.get(ACE), "int8", "cpu")
    published = ace_step.PUBLISHED
    dit = published["transformer"]
    assert planned == dit + 4 * (sum(published.values()) - dit)


def test_keep_outside_leaves_the_clip_outside_the_range_and_fades_inside_it():
    """The join both repaint (ACE-Step) and inpaint (Stable Audio 3) use: exact outside, raised-cosine inside."""
    from models.common import keep_outside

    clip, new = np.zeros((2, 1000), np.float32), np.ones((2, 1000), np.float32)
    out = keep_outside(clip, new, 200, 600, fade=40)
    assert (out[:, :200] == 0).all() and (out[:, 600:] == 0).all()
    assert (out[:, 240:560] == 1).all()
    rise, fall = out[0, 200:240], out[0, 560:600]
    assert (np.diff(rise) > 0).all() and (np.diff(fall) < 0).all() and 0 < rise[0] < 0.01
    np.testing.assert_allclose(rise, fall[::-1], atol=1e-6)
    whole = keep_outside(clip, new, 0, 1000, fade=40)  # a range from the clip's start to its end: no fades
    assert (whole == 1).all()
    short = keep_outside(clip, new, 500, 508, fade=40)  # the fade shortens to a quarter of the range
    assert short[0, 502:506].tolist() == [1, 1, 1, 1] and 0 < short[0, 500] < 1
