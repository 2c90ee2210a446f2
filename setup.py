"""Package discovery only; all metadata is in pyproject.toml."""

from setuptools import find_packages, setup

RESOURCE_PACKAGES = {
    "albench.methods": "methods",
    "albench._protocols": "protocols",
    "albench._cards": "datasets",
}

setup(
    packages=find_packages(include=["albench", "albench.*"]) + list(RESOURCE_PACKAGES),
    package_dir={"albench": "albench", **RESOURCE_PACKAGES},
)
