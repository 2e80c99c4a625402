#!/usr/bin/env python3
"""Build a wheelhouse for the NODES' Python/platform: our wheel + binary-only deps.

Run by the todo_api role on the controller (delegate_to: localhost), with the project's
recipe cache (lab/cache.py, as the node image and the Vagrant box): DEST is built aside and
renamed into place only when complete, so an interrupted build is redone; the role names
DEST by a hash of the sources, the lock and this script. DEST/app-wheel names the app's own
wheel for the nodes. Versions come from the lock when it exists, else from the wheel's own
metadata (the pyproject's dependencies).

pip download --python-version X.Y.Z picks wheels for that Python but evaluates environment
markers against the controller's interpreter (python_full_version < "3.11.3" is false on a
3.11.7 controller, true on Debian 12's 3.11.2). So the closure is completed here: every wheel's
Requires-Dist is evaluated for the target and whatever is missing is downloaded too."""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from lab.cache import RecipeCache


def wheel_requires(path: str) -> list[str]:
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    return [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Requires-Dist:")]


def missing(dest: str, env: dict[str, str]) -> list[str]:
    have = {canonicalize_name(parse_wheel_filename(os.path.basename(w))[0])
            for w in glob.glob(os.path.join(dest, "*.whl"))}
    need: list[str] = []
    for w in glob.glob(os.path.join(dest, "*.whl")):
        for line in wheel_requires(w):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            if canonicalize_name(req.name) not in have:
                req.marker = None
                need.append(str(req))
    return sorted(set(need))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--source", required=True)
    p.add_argument("--lock", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--python-version", required=True, help="X.Y.Z of the nodes")
    p.add_argument("--machine", required=True, help="platform_machine of the nodes")
    p.add_argument("--platform", action="append", required=True)
    a = p.parse_args()
    major_minor = ".".join(a.python_version.split(".")[:2])
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env.update(python_full_version=a.python_version, python_version=major_minor,
               implementation_name="cpython", implementation_version=a.python_version,
               platform_python_implementation="CPython", platform_machine=a.machine,
               sys_platform="linux", platform_system="Linux", os_name="posix")
    dest = Path(a.dest)
    recipe = {"python_version": a.python_version, "machine": a.machine, "platforms": a.platform}
    cache = RecipeCache(dest.parent, recipe, name=dest.name)
    if not cache.complete():
        with cache.build() as build:
            build_into(str(build.dir), a, env, major_minor)
    # One tarball to ship: a single file copies (and checksums) far faster than 20 wheels.
    archive = shutil.make_archive(a.dest + ".tmp", "tar", root_dir=dest.parent, base_dir=dest.name)
    os.rename(archive, a.dest + ".tar")
    return 0


def build_into(tmp: str, a: argparse.Namespace, env: dict[str, str], major_minor: str) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # Build from a clean copy: the source tree may hold a stale build/ or *.egg-info that
    # setuptools would reuse.
    src_copy = tmp + ".src"
    shutil.rmtree(src_copy, ignore_errors=True)
    shutil.copytree(a.source, src_copy, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".venv", "tests", "bench"))
    subprocess.run([*pip, "wheel", "--no-deps", "-w", tmp, src_copy], check=True)
    shutil.rmtree(src_copy, ignore_errors=True)
    ours = glob.glob(os.path.join(tmp, "*.whl"))
    if len(ours) != 1:
        raise SystemExit(f"expected one wheel of the app, got {ours}")
    target = ["--only-binary=:all:", "--python-version", a.python_version,
              "--implementation", "cp", "--abi", "cp" + major_minor.replace(".", "")]
    for plat in a.platform:
        target += ["--platform", plat]
    if os.path.isfile(a.lock):
        reqs = ["-r", a.lock, ours[0]]
        shutil.copy(a.lock, os.path.join(tmp, "requirements.txt"))
    else:
        reqs = [ours[0]]
        with open(os.path.join(tmp, "requirements.txt"), "w") as f:
            f.write("# no requirements.lock: deps resolved from the pyproject\n")
    subprocess.run([*pip, "download", *target, "-d", tmp, *reqs], check=True)
    for _ in range(10):
        extra = missing(tmp, env)
        if not extra:
            break
        print("for the nodes' Python also:", " ".join(extra))
        subprocess.run([*pip, "download", *target, "--no-deps", "-d", tmp, *extra], check=True)
    else:
        raise SystemExit("dependency closure did not converge")
    with open(os.path.join(tmp, "app-wheel"), "w") as f:
        f.write(os.path.basename(ours[0]) + "\n")


if __name__ == "__main__":
    sys.exit(main())
