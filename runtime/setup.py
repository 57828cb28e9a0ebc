"""Build lineguard-runtime from ../src (see pyproject.toml), outside the tree: ../src is lineguard's, and a stale
build/lib there would bring modules left out here back in."""

import tempfile

from setuptools import setup

scratch = tempfile.mkdtemp(prefix="lineguard-runtime-build-")
setup(options={"build": {"build_base": scratch}, "egg_info": {"egg_base": scratch}})
