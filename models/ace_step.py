"""ACE-Step 1.5 (ACE Studio and StepFun): songs with sung lyrics at 48 kHz stereo; repaint part of a clip, cover a clip.

The diffusers pipeline (`AceStepPipeline`, diffusers 0.42.1) is the diffusion half of ACE-Step: a Qwen3 text encoder
and a condition encoder for the prompt, the lyrics and a timbre, a flow-matching DiT over 25 Hz Oobleck latents, and
the VAE. ACE-Step's 5 Hz planner language model (which turns a request into a song blueprint: structure, metadata and
semantic "audio codes") is not part of it: songs come from the DiT alone, and codes made elsewhere can be passed in.
Lines cited as "L" are those of diffusers 0.42.1's pipelines/ace_step/pipeline_ace_step.py.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from studio.catalog import MODE, Accepts, Family, ModelSpec, Param, Request, SpeedPrior, duration_param, echo
from studio.clips import MAX_SECONDS, Clip
from studio.errors import InvalidInput
from studio.run import Audio, RunContext
from studio.weights import cached_json, component_bytes

from models.common import (SAFE_LOAD, DiffusersPipelineModel, check_tokenizer, keep_outside, quantize_int8,
                           seed_everything, step_end_callback, torch_dtype)

log = logging.getLogger(__name__)

REPO = "ACE-Step/acestep-v15-xl-turbo-diffusers"
SAMPLE_RATE = 48000
HOP = 1920  # samples per latent: the VAE's downsampling ratios [2, 4, 4, 6, 10]; 25 latents a second
# ACE-Step's own limits (acestep/constants.py of github.com/ace-step/ACE-Step-1.5; diffusers' docs say the same
# "10 seconds to 10 minutes"). The pipeline itself enforces none of them.
MIN_S, MAX_S = 10.0, 600.0
BPM_MIN, BPM_MAX = 30, 300
AUTO_BPM = -1  # "let the model choose": the pipeline writes "bpm: N/A" into the prompt for None (L336)
# What the pipeline reads of the text (__call__'s max_text_length and max_lyric_length, L811-812); it cuts longer
# text off without a word (truncation=True, L478 and L489), so the studio refuses it instead.
MAX_TEXT_TOKENS, MAX_LYRIC_TOKENS = 256, 2048
MAX_LYRIC_CHARS = 100_000  # far over any 2048-token lyric: refused before tokenizing megabytes
# ACE-Step's documented way to ask for no vocals (acestep/inference.py: 'Use "[Instrumental]" for instrumental
# songs'); the pipeline would otherwise send an empty lyric section.
INSTRUMENTAL = "[Instrumental]"
CODES_PER_SECOND = 5  # the planner's codes: one per pool window of 5 latents (the detokenizer's pool_window_size)
CODE = re.compile(r"<\|audio_code_(\d+)\|>")
CODEBOOK = 64000  # the audio tokenizer's FSQ levels [8, 8, 8, 5, 5, 5]: codes 0-63999
MIN_CLIP_S = 1.0  # the shortest clip to repaint or cover: 25 latents (the cover tokenizer pools 5 at a time)
MIN_REPAINT_S = HOP / SAMPLE_RATE  # the pipeline repaints whole latents (L762-775): at least one, 0.04 s
CROSSFADE_S = 0.1  # inside a repainted range, its edges fade over from the clip (as MusicGen's extension joins do)
REFERENCE_S = 30.0  # the timbre encoder hears 30 s of a reference: three 10 s pieces, a short clip repeated (L580-630)

MODES = ("song", "repaint", "cover")
TASKS = {"song": "text2music", "repaint": "repaint", "cover": "cover"}
CLIP_MODES = ("repaint", "cover")
# extract, lego and complete are left out: the pipeline runs them (they need only a clip), but ACE-Step trained
# only its base models for them (TASK_TYPES_TURBO = text2music, repaint, cover in acestep/constants.py), and the
# base checkpoints are not published in diffusers format under a repo the diffusers docs name.

# The vocal languages ACE-Step lists (acestep/constants.py VALID_LANGUAGES), with names for the page.
LANGUAGES = (
    ("ar", "Arabic"), ("az", "Azerbaijani"), ("bg", "Bulgarian"), ("bn", "Bengali"), ("ca", "Catalan"),
    ("cs", "Czech"), ("da", "Danish"), ("de", "German"), ("el", "Greek"), ("en", "English"), ("es", "Spanish"),
    ("fa", "Persian"), ("fi", "Finnish"), ("fr", "French"), ("he", "Hebrew"), ("hi", "Hindi"), ("hr", "Croatian"),
    ("ht", "Haitian Creole"), ("hu", "Hungarian"), ("id", "Indonesian"), ("is", "Icelandic"), ("it", "Italian"),
    ("ja", "Japanese"), ("ko", "Korean"), ("la", "Latin"), ("lt", "Lithuanian"), ("ms", "Malay"), ("ne", "Nepali"),
    ("nl", "Dutch"), ("no", "Norwegian"), ("pa", "Punjabi"), ("pl", "Polish"), ("pt", "Portuguese"),
    ("ro", "Romanian"), ("ru", "Russian"), ("sa", "Sanskrit"), ("sk", "Slovak"), ("sr", "Serbian"),
    ("sv", "Swedish"), ("sw", "Swahili"), ("ta", "Tamil"), ("te", "Telugu"), ("th", "Thai"), ("tl", "Tagalog"),
    ("tr", "Turkish"), ("uk", "Ukrainian"), ("ur", "Urdu"), ("vi", "Vietnamese"), ("yue", "Cantonese"),
    ("zh", "Chinese"), ("unknown", "not known or none: for instrumentals"),
)
# The prompt builder writes the key as given ("- keyscale: C major", L316-345); ACE-Step accepts a note, an
# accidental and major/minor (acestep/constants.py VALID_KEYSCALES). Each of the 24 keys in its usual spelling.
KEYS = (*(f"{note} major" for note in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")),
        *(f"{note} minor" for note in ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")))
# ACE-Step's VALID_TIME_SIGNATURES, as the beats in a bar the prompt builder writes ("- timesignature: 4").
TIME_SIGNATURES = (("2", "2/4: marches, polkas"), ("3", "3/4: waltzes"), ("4", "4/4: most pop, rock and hip-hop"),
                   ("6", "6/8: compound time, folk dances"))
AUTO = "auto"

# The pipeline's prompt and lyric formats (_format_prompt, L347-399, from ACE-Step's handler), copied so that the
# request check counts tokens without importing diffusers; tests/test_ace_step.py checks they stay the same.
SFT_GEN_PROMPT = "# Instruction\n{}\n\n# Caption\n{}\n\n# Metas\n{}<|endoftext|>\n"
INSTRUCTIONS = {"text2music": "Fill the audio semantic mask based on the given conditions:",
                "repaint": "Repaint the mask area based on the given conditions:",
                "cover": "Generate audio semantic tokens based on the given conditions:"}

# Estimates. One work unit is one DiT pass over one latent (1/25 s of audio) in a denoising step. Measured with
# diffusers' classes at the XL's published width, 2 of its 32 layers, random weights, float32 on this project's
# 2-core CPU (load average 0.9): 0.58, 1.43, 2.62 and 21.0 s a pass over 250, 750, 1,500 and 6,000 latents. Fitted:
# 0.41 s + 0.87 ms per latent + 0.43 us per latent squared, per 2 layers. So a pass costs STEP_LATENTS latents'
# worth whatever the length (the cross-attention over the prompt and lyrics, the embeddings), and attention equals
# the rest at ATTENTION_LATENTS (80 s): torch's CPU attention computes the whole sequence even in the
# sliding-window layers, whose mask is dense. On a GPU attention's share is smaller (its FLOPs equal the rest's
# only at about 30,000 latents); the calibration fits the cost per unit, not this shape.
ATTENTION_LATENTS = 2000
STEP_LATENTS = 470
# The Oobleck VAE (the published config, float32) decodes a latent in 5.5 units' time and encodes one in 6.5: 0.25
# and 0.28 s a latent against 45 ms a unit, measured together under the same load (average 6).
DECODE_UNITS = 5.5
ENCODE_UNITS = 6.5
XL_LAYERS = 32  # the XL DiT's layers, which the units count; a checkpoint of another depth scales its passes
# With tiling (turned on at load) the VAE decodes windows of 512 latents overlapping by 64 each side and encodes
# 30 s windows overlapping by 2 s (diffusers' AutoencoderOobleck defaults): memory stays bounded for a 10-minute
# song, the overlaps cost a little time.
DECODE_TILE, DECODE_OVERLAP = 512, 64
ENCODE_TILE_S, ENCODE_OVERLAP_S = 30.0, 2.0
# The XL turbo's published architecture (the acestep-v15-xl-base-diffusers card: DiT 2560 wide, 32 layers, 32
# heads; encoder 2048), until the repo's configs are cached.
XL = {"hidden_size": 2560, "intermediate_size": 9728, "patch_size": 2}
ENCODER = {"hidden_size": 2048, "intermediate_size": 6144}
# Parameters per part, counted from the published configs (diffusers' classes built on the meta device); the
# weights' sum matches the 9.5 GB bfloat16 model.safetensors of the original XL checkpoints.
# The condition encoder's count includes its 960,000-element silence_latent buffer, which the file holds too.
PUBLISHED = {"transformer": 4_168_897_088, "condition_encoder": 609_329_664, "audio_tokenizer": 105_032_198,
             "audio_token_detokenizer": 105_011_776, "text_encoder": 595_776_512, "vae": 168_695_426}


def _mode_help() -> tuple[tuple[str, str], ...]:
    return (
        ("song", "Makes a new song from the prompt (the style) and the Lyrics; empty Lyrics make an instrumental. "
                 "Duration sets its length."),
        ("repaint", "Makes Repaint start to Repaint end of the clip in Audio anew, following the prompt and the "
                    "Lyrics, and keeps the rest of the clip as it is. Needs a clip; the result is as long as it."),
        ("cover", "Remakes the clip in Audio in the style of the prompt, keeping its structure (melody, rhythm, "
                  "sections); Cover strength sets how closely. Needs a clip; the result is as long as it."),
    )


def _params() -> tuple[Param, ...]:
    clip_help = ("WAV, FLAC, OGG or MP3, or a recording; any rate, mono or stereo: it is resampled to 48 kHz stereo), "
                 f"{MIN_CLIP_S:g} s to {MAX_SECONDS / 60:g} min.")
    return (
        Param(MODE, str, "song", "Mode", "What to make: a new song, a repaint of part of a clip, or a cover of a "
              "clip.", choices=MODES, advanced=False, choice_help=_mode_help()),
        Param("lyrics", str, "", "Lyrics",
              "The words to sing, one line per sung line, with section tags such as [verse], [chorus] and "
              f"[bridge] on lines of their own. Empty: an instrumental. At most {MAX_LYRIC_TOKENS:,} tokens "
              "(about 6,000 characters of English).", advanced=False, lines=8),
        Param("language", str, "en", "Vocal language", "The language the lyrics are sung in.",
              choices=tuple(code for code, _ in LANGUAGES), advanced=False, choice_help=LANGUAGES),
        replace(duration_param(MAX_S, 30.0, minimum=MIN_S, step=1.0, help=(
            f"Length of the song in seconds ({MIN_S:g} s to {MAX_S / 60:g} min). With Audio codes, the codes set "
            "the length.")), modes=("song",)),
        Param("audio", Clip, None, "Audio", f"The song to repaint or cover ({clip_help}",
              minimum=MIN_CLIP_S, maximum=MAX_SECONDS, advanced=False, modes=CLIP_MODES),
        Param("repaint_start", float, 0.0, "Repaint start (s)", "Where the part to make anew starts, in seconds "
              "from the start of the clip.", minimum=0.0, advanced=False, modes=("repaint",)),
        Param("repaint_end", float, -1.0, "Repaint end (s)", "Where the part to make anew ends, in seconds from "
              "the start of the clip; -1: the end of the clip.", minimum=-1.0, advanced=False, modes=("repaint",)),
        Param("cover_strength", float, 1.0, "Cover strength",
              "How closely the cover follows the clip's structure: 1 closely; lower values blend in a song made "
              "from the text alone (ACE-Step suggests about 0.2 to change the style a lot). Below 1 every step "
              "runs the model twice.", minimum=0.0, maximum=1.0, step=0.05, advanced=False, modes=("cover",)),
        Param("bpm", int, AUTO_BPM, "BPM", f"Tempo in beats per minute, {BPM_MIN} to {BPM_MAX}; -1 (the "
              "default) lets the model choose.", advanced=False),
        Param("key", str, AUTO, "Key", "The song's key; auto lets the model choose.", choices=(AUTO, *KEYS),
              advanced=False),
        Param("time_signature", str, AUTO, "Time signature", "Beats in a bar; auto lets the model choose.",
              choices=(AUTO, *(beats for beats, _ in TIME_SIGNATURES)), choice_help=TIME_SIGNATURES,
              advanced=False),
        Param("steps", int, 8, "Steps", "Denoising steps. The turbo model was distilled for 8; fewer are "
              "faster and rougher.", minimum=1, maximum=20, step=1),
        Param("shift", float, 3.0, "Shift", "Where the steps are spent: higher values spend more of them on "
              "coarse structure. The turbo model was trained with 1, 2 and 3.", minimum=1.0, maximum=5.0, step=0.1),
        Param("reference", Clip, None, "Timbre reference",
              "Optional: a clip whose sound (voice, instruments, production) the result takes on. The model hears "
              f"{REFERENCE_S:g} s of it: three 10 s pieces from its start, middle and end, a shorter clip repeated "
              f"({clip_help}", minimum=MIN_CLIP_S, maximum=MAX_SECONDS),
        Param("audio_codes", str, "", "Audio codes",
              "Semantic codes from ACE-Step's planner language model, which this studio does not run "
              "(<|audio_code_N|> tokens, 5 a second): the song then follows their structure, and its length is "
              "theirs. Empty: the DiT alone plans the song.", modes=("song",)),
    )


SPECS = (
    ModelSpec(
        repo_id=REPO, family="ace_step", tasks=("music",), label="ACE-Step 1.5 XL turbo", license="MIT",
        parameters=sum(PUBLISHED.values()), sample_rate=SAMPLE_RATE, channels=2, max_duration=MAX_S,
        params=_params(),
        # Units: DiT passes over one latent (see ATTENTION_LATENTS). CPU, measured in float32: 14 ms a unit; the
        # fixed part is the Qwen3 text encoder (120 tokens) and the condition encoder (300 lyric tokens, the 30 s
        # timbre input), 34 s under load average 7-10, where the DiT ran 3.3x slower than on the quiet machine.
        # CUDA: ACE-Step's published "under 10 s for a 4-minute song on an RTX 3090" (its 2B turbo) in these units,
        # scaled by the XL's 2.6x larger DiT. MPS: a guess. The calibration replaces all of them after a run.
        # CPU int8 (the default there): the DiT's units 4.1x faster (music-dit bench), the VAE's not; at the default
        # 30 s song the DiT is 71 % of the units, so a unit costs about 0.46 of float32's on average.
        speed={"cpu": SpeedPrior(8.0, 0.014), "cpu/int8": SpeedPrior(8.0, 0.0065), "cuda": SpeedPrior(2.0, 1e-4),
               "mps": SpeedPrior(5.0, 1e-3)},
        unit="latent step", max_prompt_chars=512,  # ACE-Step's caption limit (acestep/inference.py)
        description="Songs with sung lyrics in 50 languages, up to 10 minutes, 48 kHz stereo; repaints part of a "
        "clip or covers it in another style.",
    ),
)


# -------------------------------------------------------------------------------------------- what a run makes


def audio_codes(text: str) -> list[int]:
    """The code numbers in `text` (ACE-Step's planner writes them as <|audio_code_N|>); refuses anything else."""
    codes = [int(n) for n in CODE.findall(text)]
    rest = CODE.sub("", text).strip()
    if rest:
        raise InvalidInput(f"audio_codes holds text that is not a code ({echo(rest, 40)}): give only "
                           "<|audio_code_N|> tokens as ACE-Step's planner writes them, or leave it empty")
    if not codes:
        return codes
    if max(codes) >= CODEBOOK:
        raise InvalidInput(f"audio_codes has code {max(codes)}; ACE-Step's codes run from 0 to {CODEBOOK - 1}: "
                           "give codes from its planner")
    return codes


def seconds(request: Request | Mapping[str, Any]) -> float:
    """Seconds of audio a run makes: the clip's in Repaint and Cover, the codes' with audio codes, else Duration."""
    values = request.params if isinstance(request, Request) else request
    mode = values[MODE]
    if mode in CLIP_MODES and values.get("audio") is not None:
        return values["audio"].seconds
    codes = audio_codes(values.get("audio_codes") or "") if mode == "song" else []
    return len(codes) / CODES_PER_SECOND if codes else values["duration"]


def latents(request: Request) -> int:
    """Latents the DiT denoises: a clip is padded to whole latents, Duration rounded up (L1031)."""
    return math.ceil(seconds(request) * SAMPLE_RATE / HOP - 1e-9)


def repaint_range(values: Mapping[str, Any]) -> tuple[float, float]:
    """(start, end) in seconds of the clip; the end of the clip for -1."""
    clip = values["audio"]
    end = values["repaint_end"]
    return values["repaint_start"], clip.seconds if end == -1 else end


def lyric_text(lyrics: str, language: str) -> str:
    """The lyric section as the text encoder reads it (_format_prompt L397)."""
    return f"# Languages\n{language}\n\n# Lyric\n{lyrics or INSTRUMENTAL}<|endoftext|>"


def prompt_text(prompt: str, task: str, bpm: int | None, key: str | None, time_signature: str | None,
                duration: float) -> str:
    """The prompt as the text encoder reads it: instruction, caption and metadata (L336-345, L393)."""
    metas = (f"- bpm: {bpm if bpm else 'N/A'}\n- timesignature: {time_signature or 'N/A'}\n"
             f"- keyscale: {key or 'N/A'}\n- duration: {int(duration)} seconds\n")
    return SFT_GEN_PROMPT.format(INSTRUCTIONS[task], prompt, metas)


def describe(spec: ModelSpec, request: Request) -> str:
    mode = request.get(MODE)
    timbre = request.params.get("reference")
    with_timbre = f", with the timbre of {timbre.name!r}" if timbre is not None else ""
    if mode == "repaint":
        clip = request.get("audio")
        start, end = repaint_range(request.params)
        return (f"repaints {start:.1f}-{end:.1f} s of the {clip.seconds:.1f} s clip {clip.name!r} and keeps the "
                f"rest{with_timbre}")
    if mode == "cover":
        clip = request.get("audio")
        return f"covers the {clip.seconds:.1f} s clip {clip.name!r} at strength {request.get('cover_strength'):g}" \
               f"{with_timbre}"
    what = "instrumental" if not request.get("lyrics") else "song"
    codes = audio_codes(request.get("audio_codes"))
    if codes:
        return f"makes a {what} from {len(codes)} audio codes ({seconds(request):.1f} s){with_timbre}"
    return f"makes a {seconds(request):g} s {what}{with_timbre}"


# -------------------------------------------------------------------------------------------- checks


def check(spec: ModelSpec, values: Mapping[str, Any]) -> None:
    """The rules across settings: a clip for the modes that need one, a repaint range inside it, a tempo in range,
    codes that parse, and lyrics the text encoder reads whole (counted with the cached tokenizer)."""
    mode = values[MODE]
    clip = values.get("audio")
    if mode in CLIP_MODES and clip is None:
        raise InvalidInput(f"mode {mode!r} needs a clip in Audio (the song to {mode}): upload or record one, or "
                           "choose mode 'song' to make a new song")
    if mode == "repaint":
        _check_range(values)
    bpm = values["bpm"]
    if bpm != AUTO_BPM and not BPM_MIN <= bpm <= BPM_MAX:
        raise InvalidInput(f"bpm {bpm} is out of range: give a tempo from {BPM_MIN} to {BPM_MAX} beats per minute, "
                           f"or {AUTO_BPM} to let the model choose")
    if mode == "song" and values.get("audio_codes"):
        length = len(audio_codes(values["audio_codes"])) / CODES_PER_SECOND
        if not MIN_S <= length <= MAX_S:
            raise InvalidInput(f"audio_codes hold {length:g} s of music ({CODES_PER_SECOND} codes a second); "
                               f"{spec.repo_id} makes {MIN_S:g} s to {MAX_S:g} s: give codes for that long")
    lyrics = values["lyrics"]
    if len(lyrics) > MAX_LYRIC_CHARS:
        raise InvalidInput(f"the lyrics have {len(lyrics):,} characters; {spec.repo_id} reads at most "
                           f"{MAX_LYRIC_TOKENS:,} tokens of lyrics (about 6,000 characters of English): shorten them")
    tokenizer = _cached_tokenizer(spec.repo_id)
    if tokenizer is not None:  # not downloaded yet: the run counts them once the model is loaded
        _check_lyric_tokens(spec, len(tokenizer.encode(lyric_text(lyrics, values["language"])).ids))


def _check_range(values: Mapping[str, Any]) -> None:
    clip = values["audio"]
    start, end = values["repaint_start"], values["repaint_end"]
    where = f"the {clip.seconds:.2f} s clip {clip.name!r}"
    if end != -1 and end < 0:
        raise InvalidInput(f"repaint_end {end:g} is not a time: give a time in {where} in seconds, or -1 for its end")
    if start >= clip.seconds:
        raise InvalidInput(f"repaint_start {start:g} s is past the end of {where}: start the range inside it, "
                           f"before {clip.seconds:.2f} s")
    if end > clip.seconds + 1e-6:
        raise InvalidInput(f"repaint_end {end:g} s is past the end of {where}: end the range at {clip.seconds:.2f} s "
                           "or sooner (or -1 for the end of the clip)")
    start, end = repaint_range(values)
    if end <= start:
        kind = "is empty" if end == start else "is reversed"
        raise InvalidInput(f"the repaint range {start:g}-{end:g} s {kind}: repaint_end must come after "
                           f"repaint_start (e.g. {start:g}-{min(clip.seconds, start + 5):g} s)")
    if end - start < MIN_REPAINT_S:
        raise InvalidInput(f"the repaint range {start:g}-{end:g} s is {end - start:.3f} s long; the model repaints "
                           f"whole latents of {MIN_REPAINT_S:.2f} s: make it at least {MIN_REPAINT_S:.2f} s")


def _check_lyric_tokens(spec: ModelSpec, count: int) -> None:
    if count > MAX_LYRIC_TOKENS:
        raise InvalidInput(f"the lyrics take {count:,} tokens (with their language header); {spec.repo_id} reads "
                           f"at most {MAX_LYRIC_TOKENS:,} and would cut the rest off: shorten them")


def _check_prompt_tokens(spec: ModelSpec, count: int) -> None:
    if count > MAX_TEXT_TOKENS:
        raise InvalidInput(f"the prompt takes {count:,} tokens with the settings the model reads with it (mode, bpm, "
                           f"key, time signature, duration); {spec.repo_id} reads at most {MAX_TEXT_TOKENS} and "
                           "would cut the rest off: shorten the prompt")


@functools.lru_cache(maxsize=4)
def _tokenizer_from(path: str):
    from tokenizers import Tokenizer  # the tokenizers library alone: no torch, no transformers

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()  # count every token; the pipeline's truncation is what the check prevents
    tokenizer.no_padding()
    return tokenizer


def _cached_tokenizer(repo_id: str):
    """The repo's tokenizer.json as a `tokenizers.Tokenizer` when it is in the HF cache (no download), else None."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, "tokenizer/tokenizer.json")
    if not isinstance(path, str):
        return None
    try:
        return _tokenizer_from(path)
    except Exception as error:  # a damaged file: the load names it (Family.files); the run counts with the model's
        log.warning("could not read %s (%s); lyrics are counted when the model loads", path, error)
        return None


# -------------------------------------------------------------------------------------------- estimates


def _config(spec: ModelSpec, folder: str, published: Mapping[str, Any]) -> dict:
    return {**published, **(cached_json(spec.repo_id, f"{folder}/config.json") or {})}


def dit_layers(spec: ModelSpec) -> int:
    """The DiT's layers from the cached transformer/config.json (the XL's 32 until it is cached): a pass costs that
    many layers', so a checkpoint of another depth (the bench's build of 2) is timed by what it runs."""
    layers = _config(spec, "transformer", {"num_hidden_layers": XL_LAYERS}).get("num_hidden_layers")
    return layers if isinstance(layers, int) and not isinstance(layers, bool) and layers > 0 else XL_LAYERS


def _guided(spec: ModelSpec, request: Request) -> bool:
    """Whether the pipeline runs guidance (a doubled batch): never for a turbo checkpoint (L215-218, L943-945)."""
    turbo = _config(spec, "transformer", {"is_turbo": True}).get("is_turbo", False)
    return not turbo and request.params.get("guidance_scale", 1.0) > 1.0


def _passes(spec: ModelSpec, request: Request) -> int:
    """DiT passes per step: 2 with guidance (one doubled batch), 2 for a cover below strength 1 (L1074, L1219-1231)."""
    cover_blend = request.get(MODE) == "cover" and request.get("cover_strength") < 1.0
    return 2 if _guided(spec, request) or cover_blend else 1


def tiled(length: int, tile: int, overlap: int) -> int:
    """What the VAE processes for `length` (latents or samples) with diffusers' Oobleck tiling (windows of `tile`
    whose cores overlap by `overlap` each side), as _tiled_decode and _tiled_encode cut it."""
    if length <= tile:
        return length
    stride = tile - 2 * overlap
    return sum(min(length, (i + 1) * stride + overlap) - max(0, i * stride - overlap)
               for i in range(math.ceil(length / stride)))


def _encoded_latents(clip_seconds: float) -> float:
    samples = math.ceil(clip_seconds * SAMPLE_RATE / HOP) * HOP
    tile = int(ENCODE_TILE_S * SAMPLE_RATE)
    return tiled(samples, tile, int(ENCODE_OVERLAP_S * SAMPLE_RATE)) / HOP


def work_units(spec: ModelSpec, request: Request) -> float:
    """Steps x passes x (STEP_LATENTS + latents + latents^2 / ATTENTION_LATENTS) x the DiT's layers over the XL's 32,
    then the VAE: the clip and the timbre reference encoded, the result decoded (by tiles), each latent at
    ENCODE_UNITS / DECODE_UNITS."""
    length = latents(request)
    denoise = request.get("steps") * _passes(spec, request) * (STEP_LATENTS + length + length**2 / ATTENTION_LATENTS)
    denoise *= dit_layers(spec) / XL_LAYERS
    encode = 0.0
    if request.get(MODE) in CLIP_MODES:
        encode += _encoded_latents(request.get("audio").seconds)
    if request.params.get("reference") is not None:
        encode += _encoded_latents(REFERENCE_S)
    return denoise + ENCODE_UNITS * encode + DECODE_UNITS * tiled(length, DECODE_TILE, DECODE_OVERLAP)


def working_bytes(spec: ModelSpec, request: Request, dtype_bytes: int) -> int:
    """The largest of what runs in turn: the lyric encoder over at most 2048 tokens, the DiT over the latents (the
    guided batch), the VAE encoding a clip and decoding the result (by tiles). Activations only live within a layer.

    The DiT's per token: about 8 hidden-wide and 4 MLP-wide vectors at once, plus the sliding-window layers' dense
    T x T mask. Measured on a 2-layer DiT of the XL's width (float32, CPU): 253 MB at 1,500 latents, 813 MB at 6,000
    (this formula: 244 and 813 with the 64 MB margin). The VAE's: 3 tensors of its widest channels at the audio rate,
    as for Stable Audio (measured there: about 6 MB a latent in float32).
    """
    dit = _config(spec, "transformer", XL)
    encoder = _config(spec, "condition_encoder", ENCODER)
    vae = cached_json(spec.repo_id, "vae/config.json") or {}
    batch = 2 if _guided(spec, request) else 1
    tokens = math.ceil(latents(request) / dit.get("patch_size", 2))
    denoise = batch * tokens * (8 * dit["hidden_size"] + 4 * dit["intermediate_size"]) * dtype_bytes \
        + batch * tokens**2 * dtype_bytes
    lyrics = MAX_LYRIC_TOKENS * (8 * encoder["hidden_size"] + 4 * encoder["intermediate_size"]) * dtype_bytes \
        + MAX_LYRIC_TOKENS**2 * dtype_bytes
    decoded = min(latents(request), DECODE_TILE + 2 * DECODE_OVERLAP)
    decode = 3 * vae.get("decoder_channels", 128) * decoded * HOP * 2 * dtype_bytes
    encode = 0
    clips = [request.get("audio").seconds] if request.get(MODE) in CLIP_MODES else []
    if request.params.get("reference") is not None:
        clips.append(REFERENCE_S)
    if clips:
        window = min(max(clips), ENCODE_TILE_S + 2 * ENCODE_OVERLAP_S) * SAMPLE_RATE
        encode = int(3 * vae.get("encoder_hidden_size", 128) * window * 2 * dtype_bytes)
    return int(max(denoise, lyrics, decode, encode) + 64 * 1024**2)


# With int8 (CPU): the DiT's matrices are 8-bit; the encoders, the audio tokenizers and the VAE stay float32 (the
# DiT is 72 % of the parameters and nearly all of a step's time).
INT8_PARTS = ("transformer",)


def components(spec: ModelSpec, dtype_bytes: int) -> dict[str, int]:
    sizes = component_bytes(spec.repo_id, dtype_bytes)
    if sizes:
        return sizes
    return {name: count * dtype_bytes for name, count in PUBLISHED.items()}


# -------------------------------------------------------------------------------------------- the run


class AceStepModel(DiffusersPipelineModel):
    def generate(self, request: Request, ctx: RunContext) -> Audio:
        import torch

        mode = request.get(MODE)
        task = TASKS[mode]
        vae = self.pipe.vae
        rate, channels = vae.config.sampling_rate, vae.config.audio_channels
        hop = math.prod(vae.config.downsampling_ratios)
        clip = request.get("audio") if mode in CLIP_MODES else None
        codes = request.get("audio_codes") if mode == "song" and request.get("audio_codes") else None
        length_s = seconds(request)
        # 1. The text as the encoder reads it, counted with the model's own tokenizer: refused rather than cut.
        bpm = None if request.get("bpm") == AUTO_BPM else request.get("bpm")
        key = None if request.get("key") == AUTO else request.get("key")
        beats = None if request.get("time_signature") == AUTO else request.get("time_signature")
        lyrics = request.get("lyrics") or INSTRUMENTAL
        count = self._tokens(lyric_text(lyrics, request.get("language")))
        _check_lyric_tokens(self.spec, count)
        _check_prompt_tokens(self.spec, self._tokens(prompt_text(request.prompt, "cover" if codes else task, bpm,
                                                                 key, beats, length_s)))
        arguments: dict[str, Any] = {}
        # 2. The clip at the VAE's rate and channels, padded to whole latents (the encoder drops a partial one).
        source = None
        if clip is not None:
            source = clip.conformed(rate, channels)
            padded = np.zeros((channels, math.ceil(source.shape[1] / hop) * hop), np.float32)
            padded[:, : source.shape[1]] = source
            arguments["src_audio"] = torch.from_numpy(padded)
        if mode == "repaint":
            start, end = repaint_range(request.params)
            arguments["repainting_start"] = start
            # The clip's end as None: the pipeline then repaints to the last (padded) latent (L765-768).
            arguments["repainting_end"] = None if request.get("repaint_end") == -1 else end
        if mode == "cover":
            arguments["audio_cover_strength"] = request.get("cover_strength")
        if request.get("reference") is not None:
            arguments["reference_audio"] = torch.from_numpy(request.get("reference").conformed(rate, channels))
        if codes:
            arguments["audio_codes"] = codes
        wanted = source.shape[1] if source is not None else round(length_s * rate)
        steps = request.get("steps")
        generator = seed_everything(request.seed)  # the noise; the VAE's posterior samples use the global seed
        ctx.check()
        # 3. Denoise with progress and cancel at every step; the latents come back for the studio to decode.
        with torch.inference_mode():
            result = self.pipe(
                prompt=request.prompt, lyrics=lyrics, vocal_language=request.get("language"),
                audio_duration=length_s, num_inference_steps=steps,
                guidance_scale=request.params.get("guidance_scale", 1.0), shift=request.get("shift"),
                bpm=bpm, keyscale=key, timesignature=beats, task_type=task, generator=generator,
                output_type="latent", callback_on_step_end=step_end_callback(ctx, steps), **arguments,
            ).audios
            # 4. Decode (by tiles: see load; the step callback said "decoding") and crop to the exact length.
            audio = vae.decode(result.transpose(1, 2).to(vae.dtype)).sample
            self.pipe.maybe_free_model_hooks()  # with CPU offload: the VAE goes back to RAM
        samples = audio[0].float().cpu().numpy().astype(np.float32)[:, :wanted]
        facts: dict[str, Any] = {"mode": mode}
        if mode == "repaint":
            # 5. Repaint: the clip outside the range, exactly; the model's audio inside, faded in and out.
            first, last = repainted_latents(self.pipe.latents_per_second, result.shape[1], start,
                                            arguments["repainting_end"])
            first, last = first * hop, min(wanted, last * hop)
            samples = keep_outside(source, samples, first, last, round(CROSSFADE_S * rate))
            facts["repainted_s"] = [round(first / rate, 4), round(last / rate, 4)]
        else:
            samples = loudest_at(samples, -1.0)
            if codes:
                facts["audio_codes"] = len(audio_codes(codes))
        if not request.get("lyrics").strip():
            facts["instrumental"] = True
        return Audio(samples, rate, info={"steps": steps, "latents": result.shape[1], "metadata": facts})

    def _tokens(self, text: str) -> int:
        return len(self.pipe.tokenizer(text)["input_ids"])


def repainted_latents(per_second: float, length: int, start: float, end: float | None) -> tuple[int, int]:
    """The latents the pipeline repaints for a range in seconds, as _build_chunk_mask computes them (L762-775)."""
    first = max(0, min(int(start * per_second), length - 1))
    last = int(end * per_second) if end is not None and end > 0 else length
    return first, max(first + 1, min(last, length))


def loudest_at(samples: np.ndarray, peak_db: float) -> np.ndarray:
    """Scaled to a peak of `peak_db` dBFS, as the pipeline leaves its output (L1276-1285: a peak over 1 divided
    down, then every clip brought to -1 dBFS, "matching" ACE-Step's own normalize_audio)."""
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    return samples * np.float32(10.0 ** (peak_db / 20.0) / max(peak, 1e-6))


def load(spec: ModelSpec, torch_device: str, dtype: str) -> AceStepModel:
    from diffusers import AceStepPipeline

    import torch

    int8 = dtype == "int8"
    if int8 and torch.device(torch_device).type != "cpu":
        raise InvalidInput(f"precision int8 runs {spec.label} on the CPU only; on {torch_device} choose bfloat16")
    # int8: loaded in float32, then the DiT's Linear layers become dynamic int8 (activations stay float32).
    pipe = AceStepPipeline.from_pretrained(spec.repo_id, dtype=torch_dtype("float32" if int8 else dtype), **SAFE_LOAD)
    if int8:
        quantize_int8(pipe, INT8_PARTS)
    check_tokenizer(spec, pipe.tokenizer, "tokenizer/", pipe.text_encoder.config.vocab_size)
    # The pipeline's comment says decode tiling is "enabled on pipeline init" (L1266-1267); in 0.42.1 nothing enables
    # it, and one pass over a 4-minute song would hold about 18 GB of bfloat16 activations. Tiles keep it bounded.
    pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    pipe.to(torch_device)
    return AceStepModel(spec, pipe, torch_device)


FAMILY = Family(
    name="ace_step", load=load, work_units=work_units, working_bytes=working_bytes, components=components,
    # Trained and published in bfloat16 (diffusers' docs load it so); float16's narrower range is not what it was
    # trained in. On a CPU the DiT in int8: a step of the realistic-size XL DiT ran 4.1-4.7x faster than float32 at
    # 0.5 % one-step error, 52.9 dB waveform SNR after a whole 8-step run, weights 16.7 -> 4.2 GB; bfloat16 was only
    # 2.7-2.9x and less exact (39.7 dB) (docs/benchmarks.md, music-dit, 2-core AMD EPYC with avx512_bf16).
    preferred_dtypes={"cuda": "bfloat16", "mps": "bfloat16", "cpu": "int8"},
    precisions=("float32", "float16", "bfloat16", "int8"), int8_parts=INT8_PARTS,
    probe_rows=math.ceil(10.0 * SAMPLE_RATE / HOP),  # the DiT's latents over 10 s (a turbo step: one pass)
    libraries=("torch", "transformers", "diffusers"),
    files=(("tokenizer/tokenizer.json",),),  # the Qwen tokenizer
    check=check, describe=describe,
    accepts=(Accepts("model_index.json", "_class_name", ("AceStepPipeline",)),),  # what AceStepPipeline.from_pretrained reads
)
