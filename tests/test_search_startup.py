"""Search start-up: a query needs the text tower alone, built without open_clip (no torchvision import),
its weights read alone (or drawn by name when random); the same text embeddings as the whole model, bit
for bit; CLIP's BPE tokeniser without open_clip, the same ids as open_clip's."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import muse_infer
from muse_infer.loading.reference import parse_clip_weights, resolve_model
from muse_infer.loading.text import load_text_model
from muse_infer.model.precision import cast_for_inference
from muse_infer.tokenizer import tokenize

AWKWARD = [
    "a dog catches a frisbee",
    "  Two   small RED squares&amp;amp; move left!!  ",
    "café naïve résumé 東京 🐱 it's we're I'll",
    "<start_of_text> hello <end_of_text>",
    "",
    "x" * 300,
    "1234567890 3.14 $%^&*()",
    "Ångström e\u0301 ﬁ ligature",
    "\t\nnew\nlines\r\n",
    "l'été à Paris — «guillemets» ‘quotes’ ＦＵＬＬ ｗｉｄｔｈ",
]


def test_the_bpe_gives_open_clips_ids_on_awkward_texts():
    from open_clip.tokenizer import SimpleTokenizer

    from muse_infer.clip_bpe import ClipBpe

    ours, theirs = ClipBpe(), SimpleTokenizer()
    rng = random.Random(7)
    alphabet = string.printable + "éüßçø東京🙂—…ﬁ\u0301\x00\x7f\u200b"
    texts = AWKWARD + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(500)]
    for text in texts:
        assert ours.encode(text) == theirs.encode(text), repr(text)
    assert (ours.sot_token_id, ours.eot_token_id) == (theirs.sot_token_id, theirs.eot_token_id)


def test_the_merges_read_in_part_are_the_files_first_merges():
    """``read_merges`` decompresses only as far as CLIP's merges go, in chunks that may end inside a
    line or a UTF-8 character: the same merges as the whole file read and split, for the default chunk,
    awkward ones, one larger than the file, and one whose last chunk ends inside a character."""
    import gzip

    from muse_infer.clip_bpe import MERGES, read_merges, vocabulary_path

    with gzip.open(vocabulary_path()) as handle:
        raw = handle.read()
    whole = raw.decode("utf-8").split("\n")[1 : MERGES + 1]
    assert len(whole) == MERGES
    splitting = next(size for size in range(4096, 1 << 16) if _last_chunk_splits_a_character(raw, size))
    for chunk_bytes in (1 << 17, 4099, 65_537, 1 << 22, splitting):
        assert read_merges(vocabulary_path(), chunk_bytes) == whole, chunk_bytes


def _last_chunk_splits_a_character(raw: bytes, chunk_bytes: int) -> bool:
    """Whether reading ``raw`` in ``chunk_bytes`` chunks until CLIP's merges are in stops inside a
    UTF-8 character (the byte after the stop is a continuation byte)."""
    from muse_infer.clip_bpe import MERGES

    end = len(b"\n".join(raw.split(b"\n", MERGES + 1)[: MERGES + 1]))  # the line break after the last
    stop = (end // chunk_bytes + 1) * chunk_bytes
    return stop < len(raw) and 0x80 <= raw[stop] <= 0xBF


def test_a_vocabulary_file_short_of_clips_merges_is_refused_by_name(tmp_path):
    import gzip

    from muse_infer.clip_bpe import ClipBpe, vocabulary_path
    from muse_infer.errors import ConfigError

    with gzip.open(vocabulary_path()) as handle:
        lines = handle.read().split(b"\n")
    short = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    short.write_bytes(gzip.compress(b"\n".join(lines[:1000])))
    with pytest.raises(ConfigError, match="bpe_simple_vocab_16e6.txt.gz: holds 999 BPE merges"):
        ClipBpe(str(short))


def test_texts_taken_as_left_alone_by_ftfy_are():
    """``clip_bpe.clean`` skips ftfy for texts ``LEFT_AS_IS_BY_FTFY`` matches: ftfy must return each
    unchanged (random texts of that alphabet, every character of it, and its edges), and texts just
    outside it (one other character added) must not match, so that ftfy sees them."""
    import ftfy

    from muse_infer.clip_bpe import LEFT_AS_IS_BY_FTFY

    plain = "\t\n" + "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "&")
    rng = random.Random(11)
    texts = ["", plain, " " * 5, "\n\n", "\t", "a <b> c", "x" * 5000, "'s 'll ;-) ~`^|"]
    texts += ["".join(rng.choice(plain) for _ in range(rng.randint(1, 300))) for _ in range(3000)]
    for text in texts:
        assert LEFT_AS_IS_BY_FTFY.fullmatch(text), repr(text)
        assert ftfy.fix_text(text) == text, repr(text)
    outside = "&\r\x1b\x00\x0b\x0c\x7f\x85\xa0é\u2028\u201c\ufb01\uff21"
    for char in outside:
        assert not LEFT_AS_IS_BY_FTFY.fullmatch("a dog" + char + "runs"), repr(char)
    # ASCII texts ftfy does change: the alphabet must leave each of these to it
    for text in ("a &amp; b", "a\r\nb", "a\rb", "a \x1b[31mred\x1b[0m", "a\x00b", "a\x0bb", "a\x7fb"):
        assert ftfy.fix_text(text) != text and not LEFT_AS_IS_BY_FTFY.fullmatch(text), repr(text)


def test_a_plain_query_is_tokenised_without_ftfy():
    code = (
        "import sys; from muse_infer.tokenizer import tokenize\n"
        "ids = tokenize(['a dog catches a frisbee (2 dogs!)'])\n"
        "print('FTFY', 'ftfy' in sys.modules)\n"
        "tokenize(['caf\\u00e9'])\n"
        "print('FTFY', 'ftfy' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["FTFY", "False", "FTFY", "True"], result.stdout + result.stderr[-2000:]


def write_clip_weights(tmp_path: Path, name: str) -> dict[str, Path]:
    """A model's random CLIP weights saved as open_clip files: .safetensors and a torch .bin."""
    from safetensors.torch import save_file

    state = {
        k: v.contiguous()
        for k, v in muse_infer.load_model(name, clip_weights="random").backbone.clip.state_dict().items()
    }
    safetensors, pickle_free = tmp_path / "clip.safetensors", tmp_path / "clip.bin"
    save_file({k: v.clone() for k, v in state.items()}, str(safetensors))
    torch.save({f"clip.{k}": v for k, v in state.items()}, pickle_free)
    return {"safetensors": safetensors, "bin": pickle_free}


@pytest.mark.parametrize(
    "name, weights", [("tiny", "random"), ("ViT-B-32", "random"), ("demo", None), ("tiny", "file")]
)
def test_the_text_tower_alone_gives_the_whole_models_text_embeddings(name, weights, tmp_path):
    """fp32 and bf16 (as cast for inference), bit for bit: named models with random weights, a
    checkpoint, and CLIP weights files (.safetensors and .bin)."""
    sources = [weights]
    if weights == "file":
        files = write_clip_weights(tmp_path, name)
        sources = [str(files["safetensors"]), str(files["bin"])]
    ids = tokenize(AWKWARD, 32)
    for source in sources:
        full = muse_infer.load_model(name, clip_weights=source)
        alone = load_text_model(resolve_model(name), parse_clip_weights(source))
        assert alone is not None and not hasattr(alone, "backbone")
        for precision in ("fp32", "bf16"):
            cast_for_inference(full, precision)
            cast_for_inference(alone, precision)
            with torch.inference_mode():
                assert torch.equal(full.encode_text_tokens(ids), alone.encode_text_tokens(ids)), (
                    source,
                    precision,
                )


def test_random_text_weights_are_drawn_by_name_and_seed():
    from muse_infer.model.text_tower import random_text_weights

    config = muse_infer.MuseConfig.from_dict(
        json.loads(Path(muse_infer.__file__).with_name("configs").joinpath("tiny.json").read_text())
    )
    first, again, other = (random_text_weights(config.clip, seed) for seed in (0, 0, 1))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["token_embedding.weight"], other["token_embedding.weight"])
    table = first["token_embedding.weight"]
    assert len(torch.unique(table, dim=0)) == len(table)  # no two tokens share an embedding
    assert abs(float(table.std()) - 0.02) < 0.002


def test_a_search_imports_neither_open_clip_nor_torchvision(tmp_path):
    """`muse-infer search` on a ViT-B-32 index with random CLIP weights: the text tower alone."""
    from muse_infer import ModelSpec
    from muse_infer.index import write_index

    rows = np.random.default_rng(0).standard_normal((50, 512)).astype(np.float32)
    out = tmp_path / "emb.npy"
    write_index(
        out,
        rows,
        [f"v{i}.mp4" for i in range(50)],
        model=ModelSpec.resolve("ViT-B-32", clip_weights="random"),
        root=str(tmp_path),
    )
    code = (
        "import sys; from muse_infer.cli import main\n"
        f"sys.argv = ['muse-infer', 'search', 'a cat', '--index', {str(out)!r}, '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('IMPORTED', sorted(m for m in ('open_clip', 'torchvision', 'timm') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "IMPORTED []" in result.stdout, result.stdout[-500:] + result.stderr[-2000:]
    hits = json.loads(result.stdout[: result.stdout.rindex("IMPORTED")])
    assert len(hits) == 10
    # the same ranking as the whole model's text tower gives
    full = muse_infer.TextEncoder(
        muse_infer.VideoEncoder("ViT-B-32", clip_weights="random", device="cpu", precision="fp32").backend
    )
    scores = rows / np.linalg.norm(rows, axis=1, keepdims=True) @ full.encode("a cat")[0]
    assert [h["row"] for h in hits] == list(np.argsort(-scores, kind="stable")[:10])


def test_a_text_encoders_backend_gives_a_video_encoder_of_the_whole_model(tmp_path):
    """A text encoder loaded for queries has no video tower; a VideoEncoder made from its backend loads
    the whole model (once) and encodes as any VideoEncoder of that model does."""
    sys.path.insert(0, str(Path(__file__).parent))
    from video_factory import make_video

    make_video(tmp_path / "a.mp4", 6, 4)
    text = muse_infer.TextEncoder("tiny", clip_weights="random", device="cpu", precision="fp32")
    assert text.backend.text_only
    video = muse_infer.VideoEncoder(text.backend)
    assert not video.backend.text_only and video.identity == text.identity
    whole = muse_infer.VideoEncoder("tiny", clip_weights="random", device="cpu", precision="fp32")
    np.testing.assert_array_equal(
        video.encode([tmp_path / "a.mp4"], workers=0), whole.encode([tmp_path / "a.mp4"], workers=0)
    )
