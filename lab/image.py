"""The node image: a Debian 12 root file system built once with mmdebstrap.

The image is cached under the cache directory and keyed by a hash of its
recipe (suite, packages, the host's apt sources and the init shim: lab/cache.py),
so a change to any of them builds a new image and an unchanged recipe reuses it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from .cache import RecipeCache
from .errors import Log, die
from .paths import CACHE_DIR
from .run import run

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

# What the roles install. The node image has them downloaded (not installed)
# in its apt cache, so that provisioning does not fetch them again on every
# `make lab` and the roles still install them, exactly as on a VM; the Vagrant
# box (vagrant/build_box.py) has them installed.
ROLE_PACKAGES = (
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


def host_sources() -> Path:
    """The host's Debian apt sources: the images are built from the same archive."""
    for candidate in HOST_SOURCES:
        if candidate.is_file() and candidate.read_text().strip():
            return candidate
    die("no Debian apt sources on this host (looked at " + ", ".join(map(str, HOST_SOURCES)) + ")")


def host_apt_options() -> list[Path]:
    """apt.conf.d files of the host that tune how archives are fetched.

    Some hosts use a snapshot mirror whose Release files are past their
    Valid-Until date; the images need the same settings to use that mirror.
    """
    conf_dir = Path("/etc/apt/apt.conf.d")
    if not conf_dir.is_dir():
        return []
    return sorted(p for p in conf_dir.iterdir() if p.is_file() and "Acquire::Check" in p.read_text(errors="ignore"))


def apt_recipe() -> dict[str, object]:
    """The part of an image's recipe that comes from the host's apt configuration."""
    return {
        "sources": host_sources().read_text(),
        "apt_options": {p.name: p.read_text() for p in host_apt_options()},
    }


def mmdebstrap_command(rootfs: Path, include: Iterable[str], customize: Iterable[str], keep_apt_cache: bool) -> list[str]:
    """mmdebstrap of SUITE (minbase) from the host's own apt sources and fetch settings."""
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--include=" + ",".join(include),
        # Keep the apt lists: the roles' apt tasks (cache_valid_time) then skip `apt update`.
        "--skip=cleanup/apt/lists",
        *(["--skip=cleanup/apt/cache"] if keep_apt_cache else []),
        *(f"--setup-hook=copy-in {p} /etc/apt/apt.conf.d/" for p in host_apt_options()),
        *(f"--customize-hook={hook}" for hook in customize),
        SUITE,
        str(rootfs),
        str(host_sources()),
    ]


def recipe() -> dict[str, object]:
    return {
        "suite": SUITE,
        "packages": PACKAGES,
        "prefetch": ROLE_PACKAGES,
        "init": INIT_SHIM,
        **apt_recipe(),
        "version": 3,
    }


def cache() -> RecipeCache:
    return RecipeCache(CACHE_DIR / "images", recipe())


def image_dir() -> Path:
    return cache().dir


def ensure_image(log: Log = print) -> Path:
    """Return the cached rootfs, building it first if the recipe is new."""
    images = cache()
    if images.complete():
        return images.dir / "rootfs"
    if shutil.which("mmdebstrap") is None:
        die("mmdebstrap is missing: apt-get install mmdebstrap")
    started = time.monotonic()
    log(f"building the node image {images.key} (Debian {SUITE}, cached for next time) ...")
    with images.build() as build:
        shim = build.dir / "halab-init"
        shim.write_text(INIT_SHIM)
        customize = [
            f"copy-in {shim} /usr/local/sbin/",
            f'chmod 0755 "$1{INIT_PATH}"',
            # Each node gets its own machine-id and host keys when it is created.
            'truncate -s 0 "$1/etc/machine-id"',
            'rm -f "$1"/etc/ssh/ssh_host_*',
            'chroot "$1" apt-get install --download-only -y -q ' + " ".join(ROLE_PACKAGES),
        ]
        run(
            mmdebstrap_command(build.dir / "rootfs", PACKAGES, customize, keep_apt_cache=True),
            log=build.dir / "build.log",
            what="building the node image (mmdebstrap)",
        )
        shim.unlink()
    # Images of earlier recipes: no node uses them (`up` builds only with no lab running).
    images.prune()
    log(f"node image built in {time.monotonic() - started:.0f} s")
    return images.dir / "rootfs"
