"""The node image: a Debian 12 root file system built once with mmdebstrap.

The image is cached under the cache directory and keyed by a hash of its
recipe (suite, packages, the host's apt sources and the init shim), so a
change to any of them builds a new image and an unchanged recipe reuses it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

from .errors import LabError
from .paths import CACHE_DIR

SUITE = "bookworm"

# What every node needs before Ansible can manage it: systemd as init, sshd,
# python3 (and python3-apt for the apt module), ifupdown for a static address.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "ifupdown",
    "iproute2",
    "iputils-ping",
    "sudo",
    "ca-certificates",
    "procps",
    "less",
)

# Downloaded (not installed) into the image's apt cache so that provisioning
# installs them without fetching them again on every `make lab`; the roles
# still install them, exactly as on a VM.
PREFETCH = (
    "nginx",
    "redis-server",
    "redis-tools",
    "nftables",
    "python3-venv",
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
    "prometheus-redis-exporter",
    "prometheus-nginx-exporter",
    "curl",
    "jq",
)

# PID 1 of a node. nspawn mounts the cgroup v1 memory hierarchy read-only,
# which leaves MemoryMax= unenforced inside the node; remounting it
# read-write before systemd starts makes the kernel enforce unit limits.
INIT_SHIM = """#!/bin/sh
# halab node init: make the memory controller writable, then become systemd.
if mountpoint -q /sys/fs/cgroup/memory; then
    umount /sys/fs/cgroup/memory &&
        mount -t cgroup -o rw,nosuid,nodev,noexec,memory cgroup /sys/fs/cgroup/memory
fi
exec /lib/systemd/systemd "$@"
"""

INIT_PATH = "/usr/local/sbin/halab-init"

HOST_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))


def _host_sources() -> Path:
    for candidate in HOST_SOURCES:
        if candidate.is_file() and candidate.read_text().strip():
            return candidate
    raise LabError("no Debian apt sources on this host (looked at " + ", ".join(map(str, HOST_SOURCES)) + ")")


def _host_apt_options() -> list[Path]:
    """apt.conf.d files of the host that tune how archives are fetched.

    Some hosts use a snapshot mirror whose Release files are past their
    Valid-Until date; the nodes need the same settings to use that mirror.
    """
    conf_dir = Path("/etc/apt/apt.conf.d")
    if not conf_dir.is_dir():
        return []
    return sorted(p for p in conf_dir.iterdir() if p.is_file() and "Acquire::Check" in p.read_text(errors="ignore"))


def recipe() -> dict[str, object]:
    sources = _host_sources()
    return {
        "suite": SUITE,
        "packages": PACKAGES,
        "prefetch": PREFETCH,
        "init": INIT_SHIM,
        "sources": sources.read_text(),
        "apt_options": {p.name: p.read_text() for p in _host_apt_options()},
        "version": 3,
    }


def recipe_key() -> str:
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def image_dir() -> Path:
    return CACHE_DIR / "images" / recipe_key()


def rootfs() -> Path:
    return image_dir() / "rootfs"


def ensure_image(log: object = print) -> Path:
    """Return the cached rootfs, building it first if the recipe is new."""
    target = image_dir()
    root = target / "rootfs"
    if (target / "complete").exists():
        return root
    if shutil.which("mmdebstrap") is None:
        raise LabError("mmdebstrap is missing: apt-get install mmdebstrap")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    sources = _host_sources()
    started = time.monotonic()
    log(f"building the node image {target.name} (Debian {SUITE}, cached for next time) ...")  # type: ignore[operator]
    hooks = [f"--setup-hook=copy-in {p} /etc/apt/apt.conf.d/" for p in _host_apt_options()]
    shim = partial / "halab-init"
    shim.write_text(INIT_SHIM)
    customize = [
        f"--customize-hook=copy-in {shim} /usr/local/sbin/",
        f'--customize-hook=chmod 0755 "$1{INIT_PATH}"',
        # Each node gets its own machine-id and host keys when it is created.
        '--customize-hook=truncate -s 0 "$1/etc/machine-id"',
        '--customize-hook=rm -f "$1"/etc/ssh/ssh_host_*',
        '--customize-hook=chroot "$1" apt-get install --download-only -y -q ' + " ".join(PREFETCH),
    ]
    cmd = [
        "mmdebstrap",
        "--variant=minbase",
        "--include=" + ",".join(PACKAGES),
        "--skip=cleanup/apt/lists",
        "--skip=cleanup/apt/cache",
        *hooks,
        *customize,
        SUITE,
        str(partial / "rootfs"),
        str(sources),
    ]
    logfile = partial / "build.log"
    with logfile.open("w") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-25:])
        raise LabError(f"building the node image failed (mmdebstrap exit {result.returncode}):\n{tail}")
    shim.unlink()
    (partial / "recipe.json").write_text(json.dumps(recipe(), sort_keys=True, indent=2))
    (partial / "complete").write_text(f"{time.monotonic() - started:.0f}s\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    log(f"node image built in {time.monotonic() - started:.0f} s")  # type: ignore[operator]
    return root
