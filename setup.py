"""Build script: compiles every csrc/<name>.pyx into the extension minifm.kernels._<name>.

Templates first: every csrc/<file>.tp (Tempita, shipped with Cython) is expanded into csrc/<file>
(today only _common.pxd.tp -> _common.pxd, the float and double vector primitives written once).
The expanded files are build products, ignored by git (csrc/.gitignore); edit the .tp.

Environment switches:
  MINIFM_NO_CYTHON=1      build no extension; minifm then runs on its NumPy reference path.
  MINIFM_DEBUG_BUILD=1    turn Cython's bounds and wraparound checks back on (slow, for debugging).
  MINIFM_BUILD_ONLY=a,b   compile only csrc/a.pyx and csrc/b.pyx (development convenience).
  MINIFM_NO_NATIVE=1      do not pass -march=native (for wheels meant for other machines).

Every kernel compiles with -fno-trapping-math, so that its exp loops vectorise (see _extensions).

OpenMP is used when the compiler accepts -fopenmp; otherwise the kernels build single-threaded.
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy
from setuptools import Extension, setup

HERE = Path(__file__).parent.resolve()


def _compiler_accepts(flags: list[str], source: str) -> bool:
    """Return True when the C compiler compiles and links `source` with `flags`."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(source)
        result = subprocess.run(
            [compiler, *flags, str(src), "-o", str(Path(tmp) / "probe")],
            capture_output=True,
        )
        return result.returncode == 0


# Extra flags for single kernels. adam: sqrt without errno, so GCC can vectorise the update loop
# (the moments are never negative; no kernel reads errno).
PER_KERNEL_COMPILE_ARGS = {"adam": ["-fno-math-errno"]}


def expand_templates(source_dir: Path) -> list[Path]:
    """Expand every Tempita template source_dir/<file>.tp into source_dir/<file>; return the outputs.

    A file is rewritten only when its text changes, so an unchanged template triggers no rebuild.
    """
    from Cython import Tempita  # optional: a MINIFM_NO_CYTHON=1 build needs no Cython

    outputs = []
    for template in sorted(source_dir.glob("*.tp")):
        output = template.with_suffix("")
        text = Tempita.Template(template.read_text(), name=str(template)).substitute()
        if not output.exists() or output.read_text() != text:
            output.write_text(text)
        outputs.append(output)
    return outputs


def _extensions():
    if os.environ.get("MINIFM_NO_CYTHON") == "1":
        print("minifm: MINIFM_NO_CYTHON=1, building the pure NumPy package", file=sys.stderr)
        return []
    from Cython.Build import cythonize  # optional: a MINIFM_NO_CYTHON=1 build needs no Cython

    expand_templates(HERE / "csrc")

    debug = os.environ.get("MINIFM_DEBUG_BUILD") == "1"
    compile_args = ["-O3"] if not debug else ["-O0", "-g"]
    # Without it GCC treats every float comparison as able to trap (-ftrapping-math, its default), so it
    # will not turn the clamps and NaN checks of _common.pxd's exp into vector selects, and every loop
    # calling exp (softmax, cross-entropy, GELU, attention) stays scalar. The kernels never enable FP
    # traps, and the flag changes no result of an operation (only which instructions compute it).
    compile_args.append("-fno-trapping-math")
    if os.environ.get("MINIFM_NO_NATIVE") != "1" and _compiler_accepts(
        ["-march=native"], "int main(void){return 0;}"
    ):
        compile_args.append("-march=native")
    link_args = []
    openmp_probe = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}"
    if _compiler_accepts(["-fopenmp"], openmp_probe):
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
        macros = [("MINIFM_OPENMP", "1")]
    else:
        print("minifm: compiler lacks OpenMP, kernels build single-threaded", file=sys.stderr)
        macros = [("MINIFM_OPENMP", "0")]
    macros.append(("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"))

    only = {n for n in os.environ.get("MINIFM_BUILD_ONLY", "").split(",") if n}
    sources = sorted((HERE / "csrc").glob("*.pyx"))
    extensions = [
        Extension(
            f"minifm.kernels._{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            include_dirs=[numpy.get_include(), str(HERE / "csrc")],
            extra_compile_args=compile_args + PER_KERNEL_COMPILE_ARGS.get(pyx.stem, []),
            extra_link_args=link_args,
            define_macros=macros,
        )
        for pyx in sources
        if not only or pyx.stem in only
    ]
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "cdivision": True,
        "initializedcheck": debug,
        "embedsignature": True,
    }
    return cythonize(extensions, compiler_directives=directives, annotate=False)


setup(ext_modules=_extensions())
