"""Precision per run: auto picks per hardware, int8 on the CPU quantizes the language models, estimates follow."""

from __future__ import annotations

import numpy as np
import pytest

from studio.errors import InvalidInput

MUSIC, BARK, MMS = "facebook/musicgen-small", "suno/bark-small", "facebook/mms-tts-eng"
MB = 1024**2


def _music(studio, precision=None, duration=0.5, seed=5):
    params = {"duration": duration, "guidance_scale": 1.0}
    if precision is not None:
        params["precision"] = precision
    return studio.request(None, MUSIC, "lofi", seed=seed, params=params)


def test_auto_picks_int8_on_the_cpu_for_the_language_models_and_float32_elsewhere(make_studio):
    studio = make_studio()
    assert studio.estimate(_music(studio)).dtype == "int8"
    assert studio.estimate(studio.request(None, BARK, "Hi.", seed=1, params={"max_chunk_seconds": 0.5})).dtype == "int8"
    assert studio.estimate(studio.request(None, MMS, "Hi.", seed=1)).dtype == "float32"
    result = studio.manager.run(_music(studio))
    assert result.dtype == "int8" and result.audio.samples.shape[-1] == 16000


def test_every_choice_runs_and_int8_matrices_take_a_quarter(make_studio):
    from studio.weights import module_bytes

    studio = make_studio()
    decoder_bytes = {}
    outputs = {}
    for precision in ("float32", "bfloat16", "int8"):
        result = studio.manager.run(_music(studio, precision))
        assert result.dtype == precision
        samples = result.audio.samples
        assert samples.dtype == np.float32 and np.isfinite(samples).all() and np.abs(samples).max() > 0
        outputs[precision] = samples
        with studio.manager.acquire(_music(studio, precision)) as lease:
            decoder_bytes[precision] = module_bytes([lease.model.model.decoder, lease.model.model.text_encoder])
    # A change of precision reloads: the model is held once, in the last precision asked for.
    rows = [r for r in studio.manager.snapshot()["models"] if r["id"] == MUSIC]
    assert len(rows) == 1 and rows[0]["dtype"] == "int8"
    assert decoder_bytes["int8"] <= decoder_bytes["float32"] / 3  # int8 rows + a float scale per row
    # Same seed, same precision: the same audio.
    again = studio.manager.run(_music(studio, "int8")).audio.samples
    assert np.array_equal(again, outputs["int8"])


def test_int8_loads_through_float32_and_the_plan_counts_it(make_studio, catalog, monkeypatch):
    import dataclasses

    # The tiny model's working memory (a fixed 32 MB allowance) dwarfs its weights; take it out so the
    # float32 pass of an int8 load is what decides.
    family = catalog.family(catalog.get(MUSIC))
    monkeypatch.setitem(catalog._families, "musicgen", dataclasses.replace(family, working_bytes=lambda *a: 0))
    probe = make_studio()
    int8, float32 = probe.estimate(_music(probe, "int8")), probe.estimate(_music(probe, "float32"))
    assert int8.weights_bytes < float32.weights_bytes
    budget = (int8.weights_bytes + float32.weights_bytes) // 2  # room for the int8 weights, not the float32 pass
    studio = make_studio(budget)
    estimate = studio.estimate(_music(studio, "int8"))
    assert estimate.placement == "cpu"  # not on the device: the float32 pass would not fit there
    studio = make_studio(float32.weights_bytes + MB)
    assert studio.estimate(_music(studio, "int8")).placement == "device"
    device = studio.manager.device
    claims = []
    place = device.place
    monkeypatch.setattr(device, "place", lambda tag, nbytes: (claims.append(nbytes), place(tag, nbytes))[1])
    studio.manager.run(_music(studio, "int8"))
    assert claims[0] == float32.weights_bytes  # the float32 pass was claimed before loading, within budget
    # Then only the int8 weights stay (exact now: the header figure missed the sinusoidal position buffer).
    assert studio.manager.used_bytes() == studio.estimate(_music(studio, "int8")).weights_bytes < float32.weights_bytes


def test_int8_is_estimated_faster_before_any_run(make_studio):
    studio = make_studio()
    assert studio.estimate(_music(studio, "int8")).compute_seconds < studio.estimate(
        _music(studio, "float32")).compute_seconds


def test_bad_precisions_name_the_choices(make_studio, catalog):
    studio = make_studio()
    with pytest.raises(InvalidInput, match=r"precision 'int4' is not available.*auto, float32, float16, bfloat16, int8"):
        _music(studio, "int4")
    with pytest.raises(InvalidInput, match=r"has no setting 'precision'"):
        studio.request(None, MMS, "Hi.", seed=1, params={"precision": "int8"})


@pytest.mark.parametrize("device, message", [
    ("mps", r"int8 runs on the CPU and on CUDA GPUs; on mps choose float16 or float32"),
    ("cuda", r"int8 on a CUDA GPU needs bitsandbytes: `pip install bitsandbytes`, or choose float16"),
])
def test_int8_where_it_cannot_run_says_what_to_do(catalog, device, message):
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401
        if device == "cuda":
            pytest.skip("bitsandbytes is installed here")
    except ImportError:
        pass
    from models.common import load_pretrained

    with pytest.raises(InvalidInput, match=message):
        load_pretrained(object, catalog.get(MUSIC), device, "int8")


def test_int8_linears_are_torchs_packed_the_same_without_a_full_size_placeholder(monkeypatch):
    # models.common's Int8Linear: the same quantized weights and outputs as torch's from_float, and no [out, in]
    # placeholder packed first (torch packs one per layer: 2.4 s of CPU of musicgen-small's decoder, models/common.py).
    import copy

    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.nn.quantized.modules.linear import LinearPackedParams
    from torch.ao.quantization import quantize_dynamic

    from models.common import quantize_int8

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.part = torch.nn.Sequential(torch.nn.Linear(48, 80), torch.nn.ReLU(), torch.nn.Linear(80, 24, bias=False))
    reference = copy.deepcopy(model.part)
    quantize_dynamic(reference, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    packed = []
    original = LinearPackedParams.set_weight_bias
    monkeypatch.setattr(LinearPackedParams, "set_weight_bias",
                        lambda self, weight, bias: packed.append(tuple(weight.shape)) or original(self, weight, bias))
    quantize_int8(model, ("part",))
    assert packed.count((80, 48)) == packed.count((24, 80)) == 1 and set(packed) <= {(1, 1), (80, 48), (24, 80)}
    x = torch.randn(5, 48)
    assert torch.equal(model.part(x), reference(x))
    for ours, theirs in zip((model.part[0], model.part[2]), (reference[0], reference[2])):
        assert isinstance(ours, DynamicLinear) and (ours.in_features, ours.out_features) == (theirs.in_features,
                                                                                            theirs.out_features)
        (w, b), (w_ref, b_ref) = ours._weight_bias(), theirs._weight_bias()
        assert torch.equal(w.int_repr(), w_ref.int_repr()) and w.q_scale() == w_ref.q_scale()
        assert (b is None and b_ref is None) or torch.equal(b, b_ref)
