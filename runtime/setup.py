"""Build lineguard-runtime from ../src with only the modules an export needs at run time (see pyproject.toml).

One list, :data:`RUNTIME_MODULES`, says which they are; every other module of these packages needs PyTorch
and stays out, so an import of one fails at once instead of pulling torch in.
"""

import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py

RUNTIME_MODULES = {
    "lineguard": {"__init__"},
    "lineguard.export": {"__init__", "runtime", "spec"},
    "lineguard.io": {"__init__", "images"},
    "lineguard.scoring": {"__init__", "regions", "threshold"},
}


class RuntimeModulesOnly(build_py):
    def find_package_modules(self, package, package_dir):
        return [entry for entry in super().find_package_modules(package, package_dir)
                if entry[1] in RUNTIME_MODULES.get(package, ())]


# Build outside the tree: ../src is lineguard's, and a stale build/lib would bring back modules left out here.
scratch = tempfile.mkdtemp(prefix="lineguard-runtime-build-")
setup(cmdclass={"build_py": RuntimeModulesOnly},
      options={"build": {"build_base": scratch}, "egg_info": {"egg_base": scratch}})
