"""Minimal reference scripts: each model called through transformers/diffusers directly, as their docs show.

Each `load_*` returns a callable `(prompt, params, seed) -> numpy audio` that does the same work as the studio
for the same validated request params (`Request.params`): same lengths, steps, guidance, sampling settings and
seed. Nothing here knows about the studio; the bench only translates the settings.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

Runner = Callable[[str, Mapping[str, Any], int], np.ndarray]


def musicgen_steps(duration: float, frame_rate: float = 50.0, codebooks: int = 4) -> int:
    """Decoder steps for `duration` seconds: one per frame plus the delay pattern's extra steps."""
    return max(1, math.ceil(duration * frame_rate)) + codebooks - 1


def load_mms_tts(repo: str) -> tuple[Runner, list]:
    """https://huggingface.co/docs/transformers/model_doc/mms#speech-synthesis-tts"""
    import torch
    from transformers import AutoTokenizer, VitsModel

    model = VitsModel.from_pretrained(repo)
    tokenizer = AutoTokenizer.from_pretrained(repo)

    def run(text: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        model.noise_scale = params["noise_scale"]
        model.speaking_rate = params["speaking_rate"]
        inputs = tokenizer(text, return_tensors="pt")
        torch.manual_seed(seed)
        with torch.no_grad():
            output = model(**inputs).waveform
        return output[0].numpy()

    return run, [model]


def load_musicgen(repo: str) -> tuple[Runner, list]:
    """https://huggingface.co/docs/transformers/model_doc/musicgen#text-conditional-generation; with
    `params["audio"]` (a file path), a continuation: the clip as `input_values` (#audio-prompted-generation)."""
    import torch
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    processor = AutoProcessor.from_pretrained(repo)
    model = MusicgenForConditionalGeneration.from_pretrained(repo)
    rate = model.config.audio_encoder.sampling_rate

    def run(prompt: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        inputs = processor(text=[prompt], padding=True, return_tensors="pt")
        prompt_samples = 0
        if params.get("audio"):
            clip = read_clip_at(params["audio"], rate)  # (channels, samples)
            inputs["input_values"] = torch.from_numpy(clip[None])
            prompt_samples = clip.shape[-1]
        torch.manual_seed(seed)
        audio_values = model.generate(
            **inputs, do_sample=True, guidance_scale=params["guidance_scale"],
            max_new_tokens=musicgen_steps(params["duration"]), temperature=params["temperature"],
            top_k=params["top_k"] or None, top_p=params["top_p"] if 0 < params["top_p"] < 1 else None,
        )
        wanted = prompt_samples + round(params["duration"] * rate)  # a continuation comes after its prompt
        return audio_values[0, 0, :wanted].numpy()

    return run, [model]


def read_clip_at(path: str, rate: int) -> np.ndarray:
    """float32 (channels, samples) of an audio file recorded at `rate` (the bench writes its clips so)."""
    import soundfile as sf

    data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    if file_rate != rate:
        raise ValueError(f"{path} is at {file_rate} Hz; this reference takes clips at the model's {rate} Hz")
    return np.ascontiguousarray(data.T)


def load_bark(repo: str) -> tuple[Runner, list]:
    """https://huggingface.co/docs/transformers/model_doc/bark#usage-tips (with `semantic_max_new_tokens`)."""
    import torch
    from transformers import AutoProcessor, BarkModel

    processor = AutoProcessor.from_pretrained(repo)
    model = BarkModel.from_pretrained(repo)

    def run(text: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        inputs = processor(text, voice_preset=params["voice"])
        torch.manual_seed(seed)
        audio = model.generate(
            **inputs,
            semantic_max_new_tokens=max(1, round(params["max_chunk_seconds"] * 49.9)),
            semantic_do_sample=True, semantic_temperature=params["text_temperature"],
            coarse_do_sample=True, coarse_temperature=params["waveform_temperature"],
            fine_temperature=params["waveform_temperature"],
        )
        return audio.cpu().numpy().squeeze()

    return run, [model]


def load_audioldm2(repo: str) -> tuple[Runner, list]:
    """https://huggingface.co/docs/diffusers/api/pipelines/audioldm2, with the GPT2LMHeadModel workaround
    for diffusers issue #12630 (the repos store a bare GPT2Model)."""
    import torch
    from diffusers import AudioLDM2Pipeline, DDIMScheduler, DPMSolverMultistepScheduler
    from transformers import GPT2LMHeadModel

    language_model = GPT2LMHeadModel.from_pretrained(repo, subfolder="language_model")
    pipe = AudioLDM2Pipeline.from_pretrained(repo, language_model=language_model)
    schedulers = {"DDIM": pipe.scheduler,
                  "DPM-Solver++": DPMSolverMultistepScheduler.from_config(pipe.scheduler.config,
                                                                          algorithm_type="dpmsolver++")}
    assert isinstance(pipe.scheduler, DDIMScheduler)
    pipe.set_progress_bar_config(disable=True)

    def run(prompt: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        pipe.scheduler = schedulers[params["scheduler"]]
        generator = torch.Generator().manual_seed(seed)
        audio = pipe(prompt, negative_prompt=params["negative_prompt"] or None,
                     num_inference_steps=params["steps"], audio_length_in_s=params["duration"],
                     guidance_scale=params["guidance_scale"], num_waveforms_per_prompt=params["waveforms"],
                     generator=generator).audios
        return np.asarray(audio[0], dtype=np.float32)

    return run, [pipe.components[name] for name in pipe.components if isinstance(pipe.components[name],
                                                                                  torch.nn.Module)]


def load_stable_audio(repo: str) -> tuple[Runner, list]:
    """https://huggingface.co/docs/diffusers/api/pipelines/stable_audio"""
    import torch
    from diffusers import StableAudioPipeline

    pipe = StableAudioPipeline.from_pretrained(repo)
    pipe.set_progress_bar_config(disable=True)

    def run(prompt: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        audio = pipe(prompt, negative_prompt=params["negative_prompt"] or None,
                     num_inference_steps=params["steps"], audio_end_in_s=params["duration"],
                     guidance_scale=params["guidance_scale"], num_waveforms_per_prompt=1,
                     generator=generator).audios
        samples = audio[0].float().cpu().numpy()
        return samples[:, : round(params["duration"] * pipe.vae.sampling_rate)]

    return run, [pipe.components[name] for name in pipe.components if isinstance(pipe.components[name],
                                                                                  torch.nn.Module)]





def load_ace_step(repo: str, *, borrow=None) -> tuple[Runner, list]:
    """https://huggingface.co/docs/diffusers/api/pipelines/ace_step (the docs' text-to-music call).

    `borrow`: modules of an already loaded pipeline to build this one from (`AceStepPipeline(**components)`, the
    class's own code over the same tensors) instead of loading a second copy: a second float32 copy of the XL build
    does not fit the bench's memory share."""
    import torch
    from diffusers import AceStepPipeline

    pipe = AceStepPipeline(**borrow) if borrow is not None else AceStepPipeline.from_pretrained(repo)
    pipe.set_progress_bar_config(disable=True)

    def run(prompt: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        auto = (None, "", "auto", -1)  # the studio's "let the model choose": the pipeline's None
        audio = pipe(prompt=prompt, lyrics=params.get("lyrics", ""), audio_duration=params["duration"],
                     vocal_language=params.get("language", "en"), num_inference_steps=params["steps"],
                     shift=params.get("shift", 3.0), bpm=None if params.get("bpm") in auto else params["bpm"],
                     keyscale=None if params.get("key") in auto else params["key"],
                     timesignature=None if params.get("time_signature") in auto else params["time_signature"],
                     generator=generator).audios
        return audio[0].float().cpu().numpy()

    return run, [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


def load_stable_audio_3(repo: str, *, borrow=None) -> tuple[Runner, list]:
    """https://huggingface.co/docs/diffusers/api/pipelines/stable_audio_3 (the docs' text-to-audio call on the
    converted folder); `borrow` as for ACE-Step."""
    import torch
    from diffusers import StableAudio3Pipeline

    pipe = StableAudio3Pipeline(**borrow) if borrow is not None else StableAudio3Pipeline.from_pretrained(repo)
    pipe.set_progress_bar_config(disable=True)

    def run(prompt: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed)
        audio = pipe(prompt, duration=params["duration"], num_inference_steps=params["steps"],
                     generator=generator).audios
        return audio[0].float().cpu().numpy()

    return run, [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


def load_pocket_tts(repo: str) -> tuple[Runner, list]:
    """The model card's use of transformers' Pocket TTS port (model_doc/pocket_tts; processing_pocket_tts's
    docstrings): a shipped voice's latents from the repo's voices/ folder, the chat template's prompt, generate(),
    the processor's decode. The frame cap is the studio's (its `max_new_tokens` for a chunk of the same text):
    random weights never end a chunk early, so both sides make exactly that many frames."""
    import torch
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file
    from transformers import PocketTTSForConditionalGeneration, PocketTTSProcessor

    from models.pocket_tts import frame_cap  # the setting's translation: the studio's cap for this text

    processor = PocketTTSProcessor.from_pretrained(repo)
    model = PocketTTSForConditionalGeneration.from_pretrained(repo).eval()

    def run(text: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        voice = load_file(hf_hub_download(repo, f"voices/{params['voice']}.safetensors"))["audio_prompt_latents"]
        conversation = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": text}]}]
        inputs = processor(text=processor.apply_chat_template(conversation),
                           audio_prompt_latents=[voice.reshape(-1, model.config.latent_dim).float()],
                           return_tensors="pt")
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=frame_cap(text), do_sample=params["temperature"] > 0,
                                 temperature=params["temperature"] or None, num_flow_steps=params["num_flow_steps"],
                                 eos_threshold=params["eos_threshold"], return_dict_in_generate=True)
            wave = processor.decode(out.audio_latents, out.audio_latents_mask)[0]
        return wave.float().cpu().numpy().reshape(-1)

    return run, [model, processor.audio_tokenizer]


def load_dia(repo: str) -> tuple[Runner, list]:
    """https://huggingface.co/docs/transformers/model_doc/dia#generation-with-text (processor, generate with the
    sampling settings, batch_decode). `max_new_tokens` is the studio's cap for the script (models/dia.py plan:
    `ceil(max(1 s, spoken characters / 8) x 86.13)` frames + the delay tail): random weights never end a run early
    (the bench's build, bench/checkpoints.py), so both sides make exactly that many frames."""
    import torch
    from transformers import DiaForConditionalGeneration, DiaProcessor

    from models.dia import CAP_CHARS_PER_SECOND, DELAY, FRAME_RATE, MIN_CAP_S, parse_script, spoken_chars

    processor = DiaProcessor.from_pretrained(repo)
    model = DiaForConditionalGeneration.from_pretrained(repo).eval()

    def run(text: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        frames = math.ceil(max(MIN_CAP_S, spoken_chars(parse_script(text)) / CAP_CHARS_PER_SECOND) * FRAME_RATE)
        inputs = processor(text=[text], padding=True, return_tensors="pt")
        torch.manual_seed(seed)
        with torch.inference_mode():
            codes = model.generate(**inputs, max_new_tokens=frames + 1 + max(DELAY), do_sample=True,
                                   guidance_scale=params["guidance_scale"], temperature=params["temperature"],
                                   top_p=params["top_p"], top_k=params["top_k"])
            wave = processor.batch_decode(codes)[0]
        return wave.float().cpu().numpy().reshape(-1)

    return run, [model, processor.audio_tokenizer]


def load_csm(repo: str, *, borrow=None) -> tuple[Runner, list]:
    """https://huggingface.co/docs/transformers/model_doc/csm (the docs' text-only call: one message through the
    processor's chat template, then generate(output_audio=True), which decodes with the model's Mimi).

    The studio's settings, translated inline: a turn's cap from its text (random weights never sample the EOS frame:
    at 8 characters a second, a second at least, 12.5 frames a second: models/csm.py turn_cap), the same temperature
    and top-k for both heads, and Mimi's undecodable codes 2048-2050 suppressed in both (a random model samples
    them). `borrow`: {"model", "processor"} of an already loaded copy (bench.runner.borrowed_components)."""
    import torch
    from transformers import AutoProcessor, CsmForConditionalGeneration

    if borrow is not None:
        model, processor = borrow["model"], borrow["processor"]
    else:
        processor = AutoProcessor.from_pretrained(repo)
        model = CsmForConditionalGeneration.from_pretrained(repo)
    specials = [2048, 2049, 2050]

    def run(text: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        conversation = [{"role": "0", "content": [{"type": "text", "text": text}]}]
        inputs = processor.apply_chat_template(conversation, tokenize=True, return_dict=True)
        frames = math.ceil(max(1.0, len(text) / 8.0) * 12.5)
        torch.manual_seed(seed)
        audio = model.generate(
            **inputs, output_audio=True, max_new_tokens=frames, do_sample=True, temperature=params["temperature"],
            top_k=params["top_k"], suppress_tokens=specials, depth_decoder_do_sample=True,
            depth_decoder_temperature=params["temperature"], depth_decoder_top_k=params["top_k"],
            depth_decoder_suppress_tokens=specials,
        )
        return audio[0].float().cpu().numpy()

    return run, [model]


def load_vibevoice(repo: str, *, borrow=None) -> tuple[Runner, list]:
    """https://huggingface.co/docs/transformers/model_doc/vibevoice#text-to-speech-tts (a one-message chat template
    through the processor, generate() returning the audio), with the studio's cap (random weights never end a script:
    at 8 characters a second, a second at least, 7.5 frames a second: models/vibevoice.py plan), guidance and
    diffusion steps. `borrow`: {"model", "processor"} of the studio's float32 copy: a second copy of the tokenizers
    alone is 4.1 GB."""
    import torch
    from transformers import AutoProcessor, VibeVoiceForConditionalGeneration

    if borrow is not None:
        model, processor = borrow["model"], borrow["processor"]
    else:
        processor = AutoProcessor.from_pretrained(repo)
        model = VibeVoiceForConditionalGeneration.from_pretrained(repo)

    def run(text: str, params: Mapping[str, Any], seed: int) -> np.ndarray:
        conversation = [{"role": "0", "content": [{"type": "text", "text": text}]}]
        # return_tensors: this version's processor returns lists without it (MODELS.md, the gotchas).
        inputs = processor.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt")
        frames = math.ceil(max(1.0, len(text) / 8.0) * 7.5)
        torch.manual_seed(seed)
        audio = model.generate(**inputs, max_new_tokens=frames, guidance_scale=params["guidance_scale"],
                               num_diffusion_steps=params["num_diffusion_steps"])
        return audio[0].reshape(-1).float().cpu().numpy()

    return run, [model]


LOADERS: dict[str, Callable[..., tuple[Runner, list]]] = {
    "mms_tts": load_mms_tts,
    "musicgen": load_musicgen,
    "bark": load_bark,
    "audioldm2": load_audioldm2,
    "stable_audio": load_stable_audio,
    "ace_step": load_ace_step,
    "stable_audio_3": load_stable_audio_3,
    "pocket_tts": load_pocket_tts,
    "dia": load_dia,
    "csm": load_csm,
    "vibevoice": load_vibevoice,
}
