"""Installation of spfluo, a Scipion plugin for single particle reconstruction in 3D
fluorescence microscopy (distribution ``scipion-fluo-spfluo``, import package ``spfluo``)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="scipion-fluo-spfluo",
    version="0.1.0",
    description="Single particle reconstruction in 3D fluorescence microscopy, as a Scipion plugin",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["spfluo", "spfluo.*"]),
    include_package_data=True,
    package_data={
        "spfluo": ["protocols.conf", "templates/*.json.template"],
        "spfluo.catalog": ["migrations/*.py", "migrations/*.mako", "migrations/versions/*.py",
                           "alembic.ini"],
    },
    install_requires=[
        # pyworkflow pins numpy, matplotlib and pillow: let it choose them.
        "scipion-pyworkflow==3.11.7",
        "numpy",
        "matplotlib",
        "scipy>=1.11",
        "scikit-image>=0.22",
        "scikit-learn>=1.3",
        "tifffile>=2023.7.10",
        "mrcfile>=1.4",
        "psfmodels>=0.3",
        "sqlalchemy>=2.0",
        "alembic>=1.12",
        "dask[distributed]>=2024.1",
        "psutil",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2.1", "pytest-xdist>=3.5", "hypothesis>=6",
                 "psycopg[binary]>=3.1"],
        "gpu": ["cupy-cuda12x>=13"],
    },
    entry_points={
        "pyworkflow.plugin": ["spfluo = spfluo"],
        "console_scripts": ["spfluo = spfluo.cli:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Image Processing",
    ],
)
