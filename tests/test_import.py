"""`import muse_infer` stays light and works without GPU-only packages."""

import ast
import pathlib
import subprocess
import sys

GPU_ONLY = ("mamba_ssm", "causal_conv1d", "onnxruntime_gpu")
PACKAGE = pathlib.Path(__file__).parents[1] / "muse_infer"


def test_import_is_light_and_needs_no_gpu_package():
    code = (
        "import sys\n"
        "for name in ('mamba_ssm', 'causal_conv1d'): sys.modules[name] = None  # importing them now fails\n"
        "import muse_infer\n"
        "heavy = [m for m in ('torch', 'open_clip', 'triton', 'onnxruntime', 'av') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "model = muse_infer.load_model('tiny')\n"
        "import torch\n"
        "out = model.encode_video(torch.zeros(1, 2, 3, 224, 224), torch.ones(1, 2))\n"
        "assert out.shape == (1, 64)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_module_imports_a_gpu_only_package_at_top_level():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in GPU_ONLY]
    assert not offenders, offenders
