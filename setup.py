"""ss4d: native 4D generation (SS4D) on a TRELLIS-compatible 3D core (trellis_ext)."""
from setuptools import find_packages, setup

CORE = [
    "numpy>=1.24",
    "safetensors>=0.4",
    "tqdm>=4.60",
    "einops>=0.7",
    "plyfile>=1.0",
    "imageio>=2.30",
    "imageio-ffmpeg>=0.4",
    "pillow>=9",
    "trimesh>=4",
    "scipy>=1.10",
]

# --export glb/obj/ply-mesh/splat: TSDF marching cubes (scikit-image), decimation, glTF writer.
EXPORT = ["scikit-image>=0.22", "fast-simplification>=0.1.7", "pygltflib>=1.16"]

EXTRAS = {
    # GPU backends; installed only on machines with CUDA (see Makefile). spconv-cu120 has no
    # Python 3.12 wheel, spconv-cu126 does. flash-attn has no wheel on PyPI, so it is not listed.
    # torchao: the opt-in FP8 matmuls (ss4d-generate --fp8, CUDA compute capability >= 8.9)
    "cuda": ["spconv-cu126>=2.3.8", "gsplat>=1.5", "packaging", "torchao>=0.13"],
    # scikit-image: the independent SSIM reference of tests/test_eval_metrics.py
    "dev": ["pytest>=7", "pytest-timeout", "scikit-image>=0.21"],
    "pipeline": ["transformers>=4.48", "accelerate>=0.30"],
    # data toolkit (ss4d-build-dataset): DINOv2-with-registers lives in transformers>=4.48; webdataset
    # writes and streams the packed shards (ss4d-pack-dataset). Blender
    # (bpy==5.0.1, numpy<2, cp311) cannot share this environment: `make setup-blender`.
    "data": ["transformers>=4.48", "webdataset>=0.2.86"],
    # `ss4d-build-dataset --executor ray` (a Ray cluster of many GPU machines; docs/data.md)
    "ray": ["ray>=2.9"],
    # ss4d-eval: torchmetrics ships the LPIPS v0.1 linear heads (no torchvision needed); CLIP-S reads a
    # local transformers CLIP folder
    "eval": ["torchmetrics>=1.4", "transformers>=4.48"],
    "export": EXPORT,
    # ss4d-app (gradio page); it offers the exports above.
    "app": ["gradio>=5.0"] + EXPORT,
    # the app's browser test drives Debian's chromium through chromium-driver (apt), never a downloaded browser
    "browser": ["selenium>=4.20"],
}

setup(
    name="ss4d",
    version="0.1.0",
    description="SS4D: native 4D generation via structured spacetime latents, on a TRELLIS-compatible core",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ss4d", "ss4d.*", "trellis_ext", "trellis_ext.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.1"] + CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["ss4d-generate = ss4d.cli:main",
                                    "ss4d-build-dataset = ss4d.data.build:main",
                                    "ss4d-pack-dataset = ss4d.data.shards:main",
                                    "ss4d-eval = ss4d.evaluation.cli:main",
                                    "ss4d-app = ss4d.app:main",
                                    "ss4d-train = ss4d.training.cli:main",
                                    "ss4d-export-pipeline = ss4d.training.export:main"]},
    license="MIT",
)
