"""Builds bagua_ravnest; CMake does the compiling.

    pip install --no-build-isolation -e .

--no-build-isolation matters: the extension must be compiled against the
torch that is installed, not one pip would fetch into a build environment.
"""

import os
import shutil
import subprocess
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        try:
            import torch  # noqa: F401
        except ImportError:
            sys.exit("bagua_ravnest needs torch installed first (pip install torch==2.13.0), then "
                     "pip install --no-build-isolation -e .")
        # CMake always writes the module into the source tree (the Makefile's
        # builds share this build directory); setuptools gets a copy where it
        # expects one (a temporary build dir for wheels and editable installs).
        in_tree = os.path.join(ROOT, "bagua_ravnest")
        build_dir = os.environ.get("BAGUA_BUILD_DIR", os.path.join(ROOT, "build", "ext"))
        os.makedirs(build_dir, exist_ok=True)
        configure = [
            "cmake", ROOT,
            "-DBAGUA_BUILD_TESTS=OFF",
            f"-DBAGUA_EXT_OUTPUT_DIR={in_tree}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        if os.environ.get("BAGUA_CUDA"):  # AUTO (default), ON or OFF: the CUDA codec kernels
            configure.append(f"-DBAGUA_CUDA={os.environ['BAGUA_CUDA']}")
        if shutil.which("ninja") and not os.path.exists(os.path.join(build_dir, "Makefile")):
            configure += ["-G", "Ninja"]
        subprocess.check_call(configure, cwd=build_dir)
        jobs = os.environ.get("BAGUA_BUILD_JOBS", str(os.cpu_count() or 2))
        subprocess.check_call(["cmake", "--build", ".", "-j", jobs], cwd=build_dir)
        target = os.path.abspath(self.get_ext_fullpath(ext.name))
        built = os.path.join(in_tree, os.path.basename(target))
        if os.path.abspath(built) != target:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(built, target)


setup(
    name="bagua_ravnest",
    version="0.1.0",
    description="A torch.distributed backend and DDP for slow and uneven networks",
    packages=find_packages(include=["bagua_ravnest", "bagua_ravnest.*"]),
    ext_modules=[CMakeExtension("bagua_ravnest._C")],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.10",
    zip_safe=False,
)
