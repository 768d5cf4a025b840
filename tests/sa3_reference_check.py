"""By hand, not in the suite: the tiny original-format Stable Audio 3 checkpoint and the studio's conversion of it
against Stability's own implementation (github.com/Stability-AI/stable-audio-3).

    pip install einops          # the reference's one dependency the studio lacks; torchaudio is stubbed below
    python -m tests.sa3_reference_check /path/to/stable-audio-3    # a checkout of the reference

It builds the reference model from the tiny checkpoint's model_config.json, checks that its state dict has exactly
the tensor names and shapes of the tiny model.safetensors (so the tiny layout is the real one), loads them with the
reference's own loader, converts the checkpoint as the studio does, and compares conditioning, DiT and autoencoder.
Last run (reference at 636f906, diffusers 0.42.1): names and shapes identical; cross-attention context and global
conditioning equal; DiT velocity equal (0.0); decode 8.9e-7 of 1.8; encode 6e-8 of 0.74.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import types


def main(reference: str) -> None:
    home = tempfile.mkdtemp(prefix="sa3-reference-")
    os.environ["HF_HOME"], os.environ["HF_HUB_OFFLINE"] = home, "1"
    import torch
    from diffusers import StableAudio3Pipeline
    from safetensors.torch import load_file

    from tests import tiny_stable_audio_3 as tiny
    from tests.tiny_models import install_repo

    snapshot = install_repo(home, tiny.SA3_MEDIUM, tiny.SA3_BUILDERS[tiny.SA3_MEDIUM])
    config = json.loads((snapshot / "model_config.json").read_text())
    # torchaudio has no build for torch 2.13; the reference imports it for resampling, which nothing here uses.
    stub = types.ModuleType("torchaudio")
    stub.transforms = types.ModuleType("torchaudio.transforms")
    stub.transforms.Resample = type("Resample", (), {})
    sys.modules.update({"torchaudio": stub, "torchaudio.transforms": stub.transforms})
    sys.path.insert(0, reference)
    from stable_audio_3.factory import create_diffusion_cond_from_config
    from stable_audio_3.loading_utils import copy_state_dict
    from stable_audio_3.models.conditioners import T5GemmaConditioner

    T5GemmaConditioner.T5GEMMA_MODEL_DIMS["google/t5gemma-b-b-ul2"] = tiny.COND_DIM  # real: 768 = cond_dim
    model = create_diffusion_cond_from_config(config).eval()
    ours, theirs = load_file(str(snapshot / "model.safetensors")), model.state_dict()
    print("names only in the tiny checkpoint:", sorted(set(ours) - set(theirs)))
    print("names only in the reference:", sorted(set(theirs) - set(ours)))
    print("shapes that differ:", [k for k in set(ours) & set(theirs) if ours[k].shape != theirs[k].shape])
    copy_state_dict(model, ours)

    from models import sa3_convert

    pipe = StableAudio3Pipeline.from_pretrained(str(sa3_convert.convert(tiny.SA3_MEDIUM)))
    for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.duration_embedder):
        for param in module.parameters():  # aligned copies: memory-mapped tensors round matrix products apart
            param.data = param.data.clone()
    torch.manual_seed(0)
    with torch.inference_mode():
        inputs = model.get_conditioning_inputs(model.conditioner([{"prompt": "rain on a tin roof",
                                                                   "seconds_total": 2.0}], "cpu"))
        prompt, mask = pipe.encode_prompt("rain on a tin roof", "cpu", 1)
        duration = pipe.encode_duration(2.0, "cpu", 1, 1)
        context, context_mask = pipe.prepare_cross_attention(prompt, mask, duration)
        padded = torch.where(context_mask.bool().unsqueeze(-1), context, pipe.transformer.prompt_padding_embedding)
        print("cross-attention context:", (padded - inputs["cross_attn_cond"]).abs().max().item())
        print("global conditioning:", (duration - inputs["global_cond"]).abs().max().item())
        x, t, local = torch.randn(1, 8, 22), torch.tensor([0.7]), torch.randn(1, 9, 22)
        theirs_v = model.model.model._forward(x, t, cross_attn_cond=inputs["cross_attn_cond"],
                                              global_embed=inputs["global_cond"], local_add_cond=local)
        ours_v = pipe.transformer(x, t, encoder_hidden_states=context, global_hidden_states=duration,
                                  encoder_attention_mask=context_mask, local_add_cond=local).sample
        print("DiT velocity:", (theirs_v - ours_v).abs().max().item(), "of", ours_v.abs().max().item())
        z, audio = torch.randn(1, 8, 30), torch.randn(1, 2, 30 * tiny.LATENT_SAMPLES) * 0.3
        decoded = pipe.vae.decode(z).sample
        print("decode:", (model.pretransform.model.decode(z) - decoded).abs().max().item(), "of",
              decoded.abs().max().item())
        encoded = pipe.vae.encode(audio).latents
        print("encode:", (model.pretransform.model.encode(audio) - encoded).abs().max().item(), "of",
              encoded.abs().max().item())


if __name__ == "__main__":
    main(sys.argv[1])
