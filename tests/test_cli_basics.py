"""The command line's own edges: listing models, start-up without torch, one-line errors."""

import json
import subprocess
import sys

from click.testing import CliRunner

from muse_infer.cli import main


def test_models_says_what_each_model_is():
    result = CliRunner().invoke(main, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert {"ViT-B-32", "tiny", "demo"} <= set(rows)
    assert rows["ViT-B-32"]["embed_dim"] == 512 and rows["ViT-B-32"]["frames"] == 12
    assert "--clip-weights" in rows["ViT-B-32"]["weights"]  # how to supply CLIP weights offline
    assert rows["demo"]["weights"].startswith("packaged") and "synthetic" in rows["demo"]["weights"]
    assert rows["ViT-B-32-meanP"]["kind"] == "meanP baseline"
    text = CliRunner().invoke(main, ["models"]).output
    assert all(name in text for name in rows) and "64-d embeddings" in text


def test_help_models_and_usage_errors_do_not_import_torch():
    code = (
        "import sys\n"
        "from muse_infer.cli import main\n"
        "for args in (['--help'], ['models'], ['search'], ['encode-videos', '--help'], ['export', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'open_clip', 'onnx', 'av') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
