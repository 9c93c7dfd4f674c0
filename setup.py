"""Install muse-infer: the package, its `muse-infer` console script, the C++ scan kernel and the frame fit.

The C++ kernel (csrc/) is compiled with torch's extension tools, so torch must be installed first and
the build must see it: `pip install --no-build-isolation -e .` (see README.md).
"""

import glob
import os

from setuptools import Extension, find_packages, setup

CPU_REQUIREMENTS = [
    "torch>=2.4",
    "open_clip_torch>=2.24",
    "numpy",
    "click>=8",
    "triton",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "safetensors",
    "av",
    "pillow",
    "tqdm",
    "faiss-cpu>=1.8",  # the approximate index (muse_infer.index.ann)
    "pyarrow>=14",  # row metadata in Parquet (muse_infer.index.store)
    "tokenizers",  # SigLIP's and xlm-roberta's tokenizers from their tokenizer.json (muse_infer.tokenizer)
]
GPU_REQUIREMENTS = ["mamba-ssm", "causal-conv1d", "onnxruntime-gpu"]
# Hugging Face text towers (xlm-roberta-*-ViT-*, nllb-clip-*): open_clip builds them with transformers.
MULTILINGUAL_REQUIREMENTS = ["transformers"]
RAY_REQUIREMENTS = ["ray[data]>=2.60"]  # encode-videos --engine ray (muse_infer.jobs.ray_engine)
# `muse-infer serve`: Starlette on uvicorn. FileResponse answers HTTP Range requests since 0.39; 1.5.1
# fixes its Range parsing DoS (CVE-2025-62727, capped at 100 ranges) and the request.url advisories of 1.3.x.
WEB_REQUIREMENTS = ["starlette>=1.5.1", "uvicorn>=0.30"]
# encode-videos --cuts shots (muse_infer.video.shots): PySceneDetect 0.7 with headless OpenCV bundled.
SCENES_REQUIREMENTS = ["scenedetect-headless>=0.7,<0.8"]
DEV_REQUIREMENTS = [
    "pytest",
    "ruff",
    "matplotlib",
    "httpx",
    *WEB_REQUIREMENTS,
    *RAY_REQUIREMENTS,
    *SCENES_REQUIREMENTS,
    *MULTILINGUAL_REQUIREMENTS,
]  # httpx: Starlette's TestClient; transformers: the multilingual towers' tests


def scan_extensions():
    """The C++ CPU kernel of `muse::selective_scan` and the frame fit's resampling, or nothing when MUSE_SKIP_CPP_BUILD=1."""
    if os.environ.get("MUSE_SKIP_CPP_BUILD") == "1":
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        raise SystemExit(
            "muse-infer compiles its C++ scan kernel against torch: install torch first "
            "(pip install torch), then: pip install --no-build-isolation -e ."
        ) from None

    extension = CppExtension(
        name="muse_infer._C",
        sources=sorted(glob.glob("csrc/*.cpp")),
        extra_compile_args={
            "cxx": ["-O3", "-fopenmp", "-march=x86-64-v2", "-ffast-math", "-fno-finite-math-only"]
        },
        extra_link_args=["-fopenmp"],
    )
    # The frame fit's resampling (video.frames.fit_frame): no torch (decode workers load it, never
    # torch); no fast-math and no FMA contraction, so that its coefficients round as Pillow's do.
    fit = Extension(
        name="muse_infer._fit",
        sources=["csrc/fit/fit_resample.cpp"],
        extra_compile_args=["-O3", "-ffp-contract=off"],
    )
    return [extension, fit], {"build_ext": BuildExtension.with_options(no_python_abi_suffix=True)}


ext_modules, cmdclass = scan_extensions()

setup(
    name="muse-infer",
    version="0.1.0",
    description="Text-video retrieval with MUSE (multi-scale Mamba over CLIP features): encode, search, export.",
    packages=find_packages(
        include=["muse_infer", "muse_infer.*", "export", "export.*", "training", "training.*"]
    ),
    package_data={
        "muse_infer": ["configs/*.json", "configs/open_clip/*.json", "weights/*.safetensors", "web/assets/*"]
    },
    python_requires=">=3.10",
    install_requires=CPU_REQUIREMENTS,
    extras_require={
        "gpu": GPU_REQUIREMENTS,
        "web": WEB_REQUIREMENTS,
        "ray": RAY_REQUIREMENTS,
        "scenes": SCENES_REQUIREMENTS,
        "multilingual": MULTILINGUAL_REQUIREMENTS,
        "dev": DEV_REQUIREMENTS,
    },
    entry_points={
        "console_scripts": ["muse-infer=muse_infer.cli:main"],
        # Commands of the packages built on muse_infer; muse_infer itself never imports them.
        "muse_infer.commands": ["export = export.cli:export_command", "train = training.cli:train_command"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
