"""Precision (fp32 / bf16 / fp16) and the uint8 device path of the torch backend.

bf16 and fp16 embeddings are compared with fp32 ones by cosine: the tiny model with opened gates (so the
Mamba blocks change the output) and the packaged demo model, through the SDK and through the CLI
(encode-videos, then search). The uint8 clips normalised by the backend must give fp32 embeddings
bit-identical to the host's float path. GPU tests are marked ``gpu``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import muse_infer
from export import ExportError, export_checkpoint
from export.verify import default_tolerance
from muse_infer.cli import main
from muse_infer.cli.common import PRECISION_CHOICE
from muse_infer.data.writer import write_video
from muse_infer.errors import BackendError
from muse_infer.loading.convert import to_authors_state_dict
from muse_infer.model import bimamba
from muse_infer.model import precision as model_precision
from muse_infer.runtime import PRECISION_CHOICES, load_backend, resolve_precision
from muse_infer.runtime.torch_backend import normalise_pixels, pixel_constants
from muse_infer.video.frames import clip_inputs, clip_pixels, normalise

sys.path.insert(0, str(Path(__file__).parent))
from test_export import open_gates  # noqa: E402

COSINE = 0.999  # bf16 / fp16 against fp32, SDK
CLI_COSINE = 0.995  # the bound through encode-videos + search


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def gated_checkpoint(tmp_path_factory) -> Path:
    """The tiny model with opened gates, saved in the authors' layout and converted by `muse-infer convert`."""
    folder = tmp_path_factory.mktemp("precision")
    authors = folder / "pytorch_model.bin.1"
    torch.save(to_authors_state_dict(open_gates(muse_infer.load_model("tiny"), seed=3)), authors)
    path = folder / "tiny_converted.safetensors"
    _cli("convert", "--from", "clip4clip", str(authors), "--out", str(path))
    return path


def random_clips(size: int, lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8) for t in lengths]


def test_precision_names_agree_and_auto_follows_the_device():
    assert tuple(PRECISION_CHOICE.choices) == PRECISION_CHOICES
    assert PRECISION_CHOICES[1:] == model_precision.PRECISIONS
    assert resolve_precision(None, "cuda:1") == "bf16"
    assert resolve_precision("auto", "cpu", cpu_bf16=False) == "fp32"
    assert resolve_precision("auto", "cpu", cpu_bf16=True) == "bf16"
    assert (
        resolve_precision("fp16", "cpu") == "fp16"
        and resolve_precision("fp32", "cpu", cpu_bf16=True) == "fp32"
    )
    with pytest.raises(BackendError, match="'int8' is not one of"):
        resolve_precision("int8", "cpu")


def test_auto_on_the_cpu_is_bf16_where_the_cpu_computes_bf16_natively(tmp_path):
    """cpu_has_native_bf16 reads the kernel's CPU flags: avx512_bf16 or amx_bf16 -> bf16; else fp32."""
    from muse_infer.runtime.precision import cpu_has_native_bf16

    flags = "fpu vme sse sse2 avx2 avx512f avx512bw"
    cases = {
        "plain": (flags, False),
        "avx512": (flags + " avx512_bf16", True),
        "amx": (flags + " amx_bf16 amx_tile", True),
    }
    for name, (line, expected) in cases.items():
        info = tmp_path / name
        info.write_text(f"processor\t: 0\nflags\t\t: {line}\n\nprocessor\t: 1\nflags\t\t: {line}\n")
        assert cpu_has_native_bf16(str(info)) is expected, name
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False  # no such file (macOS, Windows): fp32
    on_this_machine = cpu_has_native_bf16()
    assert resolve_precision("auto", "cpu") == ("bf16" if on_this_machine else "fp32")
    assert muse_infer.ModelSpec.resolve(
        "tiny", clip_weights="random", device="cpu"
    ).on_device().precision == ("bf16" if on_this_machine else "fp32")


def test_cast_keeps_layernorms_and_scan_parameters_in_fp32():
    model = model_precision.cast_for_inference(open_gates(muse_infer.load_model("tiny"), seed=1), "bf16")
    kept = set()
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            kept |= {f"{module_name}.{n}" for n, _ in module.named_parameters()}
        if isinstance(module, bimamba.ScanDirection):
            kept |= {f"{module_name}.{n}" for n in model_precision.SCAN_PARAMETERS_KEPT_FP32}
    assert any(".A_log" in k for k in kept) and any("ln_post" in k for k in kept)
    for name, parameter in model.named_parameters():
        assert parameter.dtype == (torch.float32 if name in kept else torch.bfloat16), name
    assert model.compute_dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(3, 7, 33), (1, 613, 512), (12, 50, 768), (5, 1), (2, 9, 4, 17)])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_a_kept_fp32_layernorm_reads_reduced_inputs_as_its_cast_form_computes(dtype, shape, layout):
    """The eager CPU path (the reduced input into the float32 LayerNorm) against the cast form it
    replaces (input to float32, LayerNorm, output rounded): equal up to one step of the output's dtype
    (the float32 sums run in another order), nearly all values equal."""
    generator = torch.Generator().manual_seed(sum(shape))
    width = shape[-1]
    norm = torch.nn.LayerNorm(width)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(width, generator=generator))
        norm.bias.copy_(0.1 * torch.randn(width, generator=generator))
    model_precision.cast_for_inference(norm, "bf16" if dtype == torch.bfloat16 else "fp16")
    x = (3 * torch.randn(shape, generator=generator) + 1).to(dtype)
    if layout == "transposed" and x.dim() > 2:
        x = x.transpose(0, -2)
    assert model_precision.layer_norm_reads_reduced(x)
    with torch.no_grad():
        fast = norm(x)
        reference = torch.nn.functional.layer_norm(x.float(), (width,), norm.weight, norm.bias).to(dtype)
    assert fast.dtype == dtype and fast.shape == x.shape
    step = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10  # one step of the dtype, relative
    torch.testing.assert_close(fast.float(), reference.float(), rtol=step, atol=1e-5)
    assert (fast != reference).float().mean().item() < 1e-3


def test_a_kept_fp32_layernorm_casts_where_a_graph_is_recorded_or_a_gradient_needed():
    norm = model_precision.cast_for_inference(torch.nn.LayerNorm(8), "bf16")
    x = torch.randn(2, 3, 8).to(torch.bfloat16)
    assert model_precision.layer_norm_reads_reduced(x)
    assert not model_precision.layer_norm_reads_reduced(x.float())
    assert not model_precision.layer_norm_reads_reduced(x.clone().requires_grad_())
    graph = str(torch.jit.trace(norm, x).graph)
    assert "aten::layer_norm" in graph and graph.count("aten::to") >= 2  # the explicit casts
    assert norm(x).dtype == torch.bfloat16


@pytest.mark.parametrize("model_name", ["gated", "demo"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_embeddings_are_close_to_fp32(model_name, precision, gated_checkpoint):
    model = str(gated_checkpoint) if model_name == "gated" else "demo"
    fp32 = load_backend(model, device="cpu", precision="fp32")
    reduced = load_backend(model, device="cpu", precision=precision)
    assert (fp32.precision, reduced.precision) == ("fp32", precision)
    frames = fp32.max_frames
    clips = random_clips(fp32.image_size, [frames, max(1, frames // 2), 1], seed=4)
    video32 = fp32.submit_clips(clips, frames).result()
    video = reduced.submit_clips(clips, frames).result()
    ids = np.zeros((3, fp32.max_words), dtype=np.int64)
    ids[:, 0], ids[:, 1:4], ids[:, 4] = 49406, [[320, 1929, 530], [1237, 2368, 1125], [7, 8, 9]], 49407
    text32, text = fp32.encode_text_tokens(ids), reduced.encode_text_tokens(ids)
    assert video.dtype == text.dtype == np.float32
    assert not np.array_equal(video, video32)  # it did compute in another precision
    assert cosines(video, video32).min() >= COSINE
    assert cosines(text, text32).min() >= COSINE


def test_device_normalisation_is_the_host_normalisation_bit_for_bit():
    positions = np.arange(4 * 16 * 16 * 16)
    channels = [(positions * step + offset) % 256 for step, offset in ((1, 0), (7, 3), (13, 200))]
    pixels = np.stack(channels, -1).astype(np.uint8).reshape(4, 16, 16, 16, 3)  # every byte, each channel
    mask = np.ones(pixels.shape[:2], dtype=np.int64)
    mask[1, 9:] = 0
    device = normalise_pixels(
        torch.from_numpy(pixels), torch.from_numpy(mask), pixel_constants("cpu")
    ).numpy()
    host = normalise(pixels)
    host[mask == 0] = 0.0
    assert np.array_equal(device, host)
    assert all(np.unique(pixels[..., c]).size == 256 for c in range(3))


@pytest.mark.parametrize("lengths", [[12], [12, 5, 1, 7], [3]])
def test_uint8_clips_give_the_float_path_embeddings_exactly(gated_checkpoint, lengths):
    backend = load_backend(gated_checkpoint, device="cpu")
    clips = random_clips(backend.image_size, lengths, seed=len(lengths))
    expected = backend.encode_video(*clip_inputs(clips, backend.max_frames))
    assert np.array_equal(backend.submit_clips(clips, backend.max_frames).result(), expected)


def test_clip_pixels_pads_with_zeros_and_checks_its_buffers():
    clips = random_clips(8, [3, 1], seed=2)
    out = (np.full((2, 4, 8, 8, 3), 255, np.uint8), np.full((2, 4), 7, np.int64))
    pixels, mask = clip_pixels(clips, 4, out=out)
    assert pixels is out[0] and mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert np.array_equal(pixels[0, :3], clips[0]) and not pixels[0, 3:].any() and not pixels[1, 1:].any()
    with pytest.raises(ValueError, match="out must be uint8"):
        clip_pixels(clips, 4, out=(np.zeros((2, 4, 8, 8, 3), np.float32), mask))


class _Decoded:
    def __init__(self, index: int, pixels=None, error=None):
        self.index, self.path, self.pixels, self.error = index, f"v{index}.mp4", pixels, error
        self.facts = None


def test_pipelined_batches_equal_unpipelined_ones(gated_checkpoint):
    """``ahead=1`` (what a GPU backend gets) yields the same groups, in order, as ``ahead=0``."""
    encoder = muse_infer.VideoEncoder(str(gated_checkpoint), device="cpu")
    size, frames = encoder.backend.image_size, encoder.frame_settings.max_frames
    clips = random_clips(size, [frames, 2, 1, frames, 4, 3, 1], seed=5)
    items = [_Decoded(i, pixels=c) for i, c in enumerate(clips)]
    items.insert(2, _Decoded(99, error="broken"))
    plain = list(encoder._batched(iter(items), 2, ahead=0))
    ahead = list(encoder._batched(iter(items), 2, ahead=1))
    assert [[r.index for r in g] for g in plain] == [[r.index for r in g] for g in ahead]
    assert [len(g) for g in plain] == [2, 3, 2, 1]
    for group_a, group_b in zip(plain, ahead, strict=True):
        for a, b in zip(group_a, group_b, strict=True):
            assert a.error == b.error and (a.error is not None or np.array_equal(a.embedding, b.embedding))


def test_a_loaded_backend_refuses_another_precision(gated_checkpoint):
    backend = load_backend(gated_checkpoint, device="cpu", precision="bf16")
    assert muse_infer.TextEncoder(backend, precision="auto").backend is backend
    with pytest.raises(BackendError, match="loaded in bf16"):
        muse_infer.VideoEncoder(backend, precision="fp32")


@pytest.fixture(scope="module")
def noise_videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("noise_videos")
    rng = np.random.default_rng(11)
    for i in range(5):
        size = (48 + 8 * i, 64)
        write_video(folder / f"clip_{i}.mp4", rng.integers(0, 256, (6, *size, 3), dtype=np.uint8), fps=2)
    return folder


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_cli_bf16_index_and_queries_stay_close_to_fp32(gated_checkpoint, noise_videos, tmp_path):
    common = ["--model", str(gated_checkpoint), "--device", "cpu", "--workers", "0", "-q"]
    indexes = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"emb_{precision}.npy"
        _cli("encode-videos", str(noise_videos), "--out", str(out), "--precision", precision, *common)
        assert json.loads(out.with_suffix(".json").read_text())["precision"] == precision
        indexes[precision] = np.load(out)
    assert not np.array_equal(indexes["bf16"], indexes["fp32"])
    assert cosines(indexes["bf16"], indexes["fp32"]).min() >= CLI_COSINE
    scores = {}
    for index_precision in ("fp32", "bf16"):  # either precision's queries search either index
        for query_precision in ("fp32", "bf16"):
            text = _cli(
                "search", "a red square", "noise", "--index", str(tmp_path / f"emb_{index_precision}.npy"),
                "--device", "cpu", "--precision", query_precision, "--json", "--top-k", "5",
            )  # fmt: skip
            rows = json.loads(text)
            scores[index_precision, query_precision] = {(r["query"], r["path"]): r["score"] for r in rows}
    reference = scores["fp32", "fp32"]
    assert len(reference) == 10
    for found in scores.values():
        assert found.keys() == reference.keys()
        assert max(abs(found[k] - reference[k]) for k in reference) <= 1 - CLI_COSINE


def test_cli_rejects_an_unknown_precision(noise_videos, tmp_path):
    result = CliRunner().invoke(
        main, ["encode-videos", str(noise_videos), "--out", str(tmp_path / "e.npy"), "--precision", "int8"]
    )
    assert result.exit_code == 2 and "'int8' is not one of" in result.output


def test_unknown_compile_mode_is_refused(gated_checkpoint):
    with pytest.raises(BackendError, match="compile_backbone 'fast' is not one of"):
        load_backend(gated_checkpoint, device="cpu", compile_backbone="fast")


@pytest.mark.slow
def test_compiled_backbone_gives_the_eager_embeddings(gated_checkpoint):
    """torch.compile on the image tower (the option the GPU check measures) changes no result (CPU,
    inductor; about a minute to compile on 2 cores)."""
    eager = load_backend(gated_checkpoint, device="cpu", precision="fp32")
    compiled = load_backend(gated_checkpoint, device="cpu", precision="fp32", compile_backbone="compile")
    clips = random_clips(eager.image_size, [eager.max_frames, 3], seed=8)
    expected = eager.submit_clips(clips, eager.max_frames).result()
    assert np.abs(compiled.submit_clips(clips, eager.max_frames).result() - expected).max() <= 1e-5


@pytest.fixture(scope="module")
def bf16_export(gated_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bf16_export") / "tiny_bf16"
    return export_checkpoint(gated_checkpoint, out, ("torchscript", "pt2"), precision="bf16")


def test_bf16_export_verifies_and_runs_close_to_fp32(bf16_export, gated_checkpoint):
    assert set(bf16_export.errors) == {
        "text_encoder.pt", "video_encoder.pt", "video_encoder.portable.pt", "text_encoder.pt2", "video_encoder.pt2"
    }  # fmt: skip
    assert 0 < max(bf16_export.errors.values()) <= default_tolerance("bf16")
    manifest = json.loads((bf16_export.directory / "manifest.json").read_text())
    assert manifest["precision"] == "bf16"
    assert manifest["encoders"]["video"]["inputs"][0]["dtype"] == "float32"
    eager = load_backend(gated_checkpoint, device="cpu", precision="fp32")
    clips = random_clips(eager.image_size, [eager.max_frames, 4, 1], seed=6)
    frames, mask = clip_inputs(clips, eager.max_frames)
    expected = eager.encode_video(frames, mask)
    for runtime in ("torchscript", "pt2"):
        backend = load_backend(bf16_export.directory, backend=runtime, device="cpu")
        assert backend.precision == "bf16"
        embeddings = backend.encode_video(frames, mask)
        assert embeddings.dtype == np.float32 and cosines(embeddings, expected).min() >= COSINE
    with pytest.raises(BackendError, match="exported in bf16, not fp32.*--precision fp32"):
        load_backend(bf16_export.directory, backend="pt2", device="cpu", precision="fp32")


def test_bf16_onnx_is_refused_with_the_reason(gated_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="--format onnx cannot be exported in bf16.*torchscript,pt2"):
        export_checkpoint(gated_checkpoint, tmp_path / "x", ("onnx", "pt2"), precision="bf16")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_fp16_export_of_every_format_verifies(gated_checkpoint, tmp_path):
    result = export_checkpoint(
        gated_checkpoint, tmp_path / "fp16", ("onnx", "torchscript", "pt2"), precision="fp16"
    )
    assert len(result.errors) == 7 and max(result.errors.values()) <= default_tolerance("fp16")
    assert json.loads((result.directory / "manifest.json").read_text())["precision"] == "fp16"


@pytest.mark.gpu
def test_gpu_normalisation_is_the_host_normalisation_bit_for_bit():
    pixels = np.random.default_rng(0).integers(0, 256, (3, 4, 32, 32, 3), dtype=np.uint8)
    mask = np.ones((3, 4), dtype=np.int64)
    mask[2, 1:] = 0
    device = normalise_pixels(
        torch.from_numpy(pixels).cuda(), torch.from_numpy(mask).cuda(), pixel_constants("cuda")
    ).cpu()
    host = normalise(pixels)
    host[mask == 0] = 0.0
    assert np.array_equal(device.numpy(), host)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_reduced_precision_matches_fp32(gated_checkpoint, precision):
    fp32 = load_backend(gated_checkpoint, device="cuda", precision="fp32")
    reduced = load_backend(gated_checkpoint, device="cuda", precision=precision)
    assert reduced.asynchronous and load_backend(gated_checkpoint, device="cuda").precision == "bf16"
    clips = random_clips(fp32.image_size, [12, 6, 1, 12], seed=9)
    expected = fp32.encode_video(*clip_inputs(clips, fp32.max_frames))
    pending = reduced.submit_clips(clips, fp32.max_frames)  # queued; the float path runs meanwhile
    floats = reduced.encode_video(*clip_inputs(clips, fp32.max_frames))
    embeddings = pending.result()
    assert np.abs(embeddings - floats).max() <= 1e-6  # device normalisation == host normalisation
    assert cosines(embeddings, expected).min() >= COSINE
