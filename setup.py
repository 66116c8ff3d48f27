from setuptools import find_packages, setup

setup(
    name="mtlrec",
    version="0.7.0",
    description="Multi-task CTR/CVR modeling for e-commerce ranking on Keras 3 and TensorFlow",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # mtlrec.defaults holds data only (the demo config), so find_packages does not see it
    packages=find_packages(include=["mtlrec", "mtlrec.*"]) + ["mtlrec.defaults"],
    package_dir={"": "."},  # the package at the root: an editable install is a plain path entry
    include_package_data=True,
    package_data={"mtlrec.defaults": ["*.yaml"]},
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "tensorflow-serving-api>=2.16,<2.22",  # PredictionLog protos of the warmup requests
        "keras>=3.3,<4",
        "numpy>=1.26,<3",
        "pandas>=2.0,<3",
        "pyarrow>=14,<24",
        "pyyaml>=6.0,<7",
        "pydantic>=2.7,<3",  # the config sections (mtlrec.training.config)
        "matplotlib>=3.7,<4",
        "tqdm>=4.60,<5",  # progress bars of train, evaluate and predict on a terminal
        "aiohttp>=3.9,<4",  # the HTTP server of `mtlrec serve`
    ],
    extras_require={
        "dev": [
            "pytest>=7.4,<10",
            "pytest-timeout>=2.1,<3",
            "pytest-xdist>=3.5,<4",
            "moto[server]>=5,<6",
            "scikit-learn>=1.3,<2",  # reference AUCs in the tests
            "jax>=0.4.30,<0.11",  # the layers' tests on a backend other than TensorFlow
        ],
        # the layers on PyTorch (make test-torch): about 2.7 GB of wheels from PyPI, CUDA included
        "torch": ["torch>=2.1,<3"],
        "deepctr": ["deepctr>=0.9.3,<0.10"],
    },
    entry_points={"console_scripts": ["mtlrec=mtlrec.cli:console_main"]},
)
