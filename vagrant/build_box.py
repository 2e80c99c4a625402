#!/usr/bin/env python3
"""Build halab's local Vagrant box (libvirt, qcow2) from Debian packages.

Where no box can be downloaded (no Vagrant Cloud) and there is no usable KVM,
the Vagrant route runs on qemu without KVM with a box built here, natively,
with mmdebstrap (no VM involved):

    rootfs (mmdebstrap) -> mkfs.ext4 -d rootfs (sparse, DISK_GIB) -> qemu-img convert -O qcow2
    + vmlinuz, initrd.img (direct kernel boot) + an embedded Vagrantfile + metadata.json
    -> one .box file (tar), cached under /var/cache/halab/boxes/<key>/ where <key>
       is a hash of the recipe (packages, apt sources, this script's hooks ...)

    vagrant/build_box.py            # build if needed; print the .box path
    vagrant/build_box.py --key      # print the recipe key only
    vagrant/build_box.py --rebuild  # build even if cached

Baked in, so provisioning under TCG (about five times slower than native)
does not spend its time in apt: every package the roles install. Their
services are disabled in the image; each role enables what its node needs.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The same Debian packages and apt sources as the nspawn lab's node image, one recipe cache.
from lab import image  # noqa: E402
from lab.cache import RecipeCache  # noqa: E402
from lab.errors import LabError  # noqa: E402
from lab.paths import CACHE_DIR  # noqa: E402
from lab.run import run  # noqa: E402

CACHE = CACHE_DIR / "boxes"
SUITE = image.SUITE
DISK_GIB = 8  # sparse: the qcow2 holds only what is written
BOX_NAME = "halab/bookworm-local"
BOX_FILE = "halab-bookworm-local.box"

# What makes a Vagrant box boot and answer: the node image's packages (systemd,
# sshd, python3 ...), plus a kernel to boot, time sync and DHCP that a VM needs.
BASE = (
    *image.PACKAGES,
    "linux-image-amd64", "initramfs-tools", "systemd-timesyncd", "isc-dhcp-client", "kmod", "zstd",
)
# What the roles install: baked in.
ROLES = image.ROLE_PACKAGES
# Installed but not enabled: the roles enable what each node runs
# (node exporter stays on: every node runs it).
DISABLED = (
    "nginx", "redis-server", "prometheus", "prometheus-alertmanager",
    "prometheus-redis-exporter", "prometheus-nginx-exporter",
)

INTERFACES = """\
# halab box: eth0 on DHCP (Vagrant's management network); Vagrant adds the rest.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
"""

FSTAB = "/dev/vda / ext4 rw,errors=remount-ro 0 0\n"  # no fsck pass: the box has no e2fsprogs

# A small initramfs: only what a libvirt VM's root needs (MODULES=most packs
# every storage driver: 30 MB that qemu without KVM unpacks on every boot).
INITRAMFS_CONF = "MODULES=list\n"
INITRAMFS_MODULES = "virtio_pci\nvirtio_blk\nvirtio_net\next4\ncrc32c_generic\n"

# No graphical console: fbcon drawing on an emulated VGA costs CPU under TCG.
MODPROBE_NOFB = "blacklist cirrus\nblacklist bochs\nblacklist bochs_drm\n"

# Background jobs that have no place on a lab VM (apt-daily would even take
# the dpkg lock in the middle of provisioning).
TIMERS_OFF = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer")

# The image ships without SSH host keys (each VM gets its own at first boot).
HOSTKEYS_UNIT = """\
[Unit]
Description=Generate this machine's SSH host keys (first boot of a halab box)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
# ed25519 and ecdsa only: an RSA host key takes long to generate without KVM.
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N "" -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=multi-user.target
"""

BOX_VAGRANTFILE = """\
# Embedded in the halab/bookworm-local box: direct kernel boot on libvirt,
# qemu without KVM by default (the project's Vagrantfile may override driver).
Vagrant.configure("2") do |config|
  # Five VMs booting at once without KVM on two cores take minutes, not seconds.
  config.vm.boot_timeout = 1800
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
    # A plain CPU model: vagrant-libvirt's default (host-model) hands the guest
    # 5-level paging, AVX and friends, which TCG emulates several times slower.
    libvirt.cpu_mode = "custom"
    libvirt.cpu_model = "qemu64"
    libvirt.kernel = File.expand_path("vmlinuz", __dir__)
    libvirt.initrd = File.expand_path("initrd.img", __dir__)
    libvirt.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
  end
end
"""

NEEDS = {
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "qemu-img": "qemu-utils",
}


def die(msg: str) -> NoReturn:
    print(f"build_box: {msg}", file=sys.stderr)
    sys.exit(1)


def vagrant_pub() -> Path:
    keys = sorted(glob.glob("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub"))
    if not keys:
        die("Vagrant's insecure public key not found (apt-get install vagrant)")
    return Path(keys[-1])


def stage(staging: Path) -> None:
    """The files the hooks copy into the image."""
    (staging / "interfaces").write_text(INTERFACES)
    (staging / "fstab").write_text(FSTAB)
    (staging / "halab.conf").write_text(INITRAMFS_CONF)
    (staging / "modules").write_text(INITRAMFS_MODULES)
    (staging / "halab-nofb.conf").write_text(MODPROBE_NOFB)
    (staging / "halab-ssh-hostkeys.service").write_text(HOSTKEYS_UNIT)
    shutil.copy(vagrant_pub(), staging / "authorized_keys")


def hooks(staging: Path) -> list[str]:
    """mmdebstrap customize hooks: users, network, services (the recipe's core)."""
    return [
        f'copy-in {staging}/interfaces /etc/network/',
        f'copy-in {staging}/fstab /etc/',
        f'copy-in {staging}/halab.conf /etc/initramfs-tools/conf.d/',
        f'copy-in {staging}/modules /etc/initramfs-tools/',
        f'copy-in {staging}/halab-nofb.conf /etc/modprobe.d/',
        'chroot "$1" update-initramfs -u -k all',
        f'copy-in {staging}/halab-ssh-hostkeys.service /etc/systemd/system/',
        'chroot "$1" systemctl enable halab-ssh-hostkeys.service ssh.service networking.service systemd-timesyncd.service',
        'chroot "$1" systemctl disable ' + " ".join(DISABLED + TIMERS_OFF),
        'echo halab-box > "$1/etc/hostname"',
        'printf "127.0.0.1 localhost\\n::1 localhost ip6-localhost ip6-loopback\\n" > "$1/etc/hosts"',
        'chroot "$1" useradd --create-home --shell /bin/bash vagrant',
        'echo "vagrant ALL=(ALL) NOPASSWD:ALL" > "$1/etc/sudoers.d/vagrant" && chmod 0440 "$1/etc/sudoers.d/vagrant"',
        'install -d -m 0700 "$1/home/vagrant/.ssh"',
        f'install -m 0600 {staging}/authorized_keys "$1/home/vagrant/.ssh/authorized_keys"',
        'chroot "$1" chown -R vagrant:vagrant /home/vagrant/.ssh',
        # Each VM gets its own machine-id and host keys at first boot.
        'truncate -s 0 "$1/etc/machine-id"',
        'rm -f "$1/var/lib/dbus/machine-id" "$1"/etc/ssh/ssh_host_*',
        'rm -f "$1"/var/cache/apt/archives/*.deb',
    ]


def recipe() -> dict[str, object]:
    return {
        "suite": SUITE,
        "base": BASE,
        "roles": ROLES,
        "disabled": DISABLED,
        "hooks": hooks(Path("STAGING")),
        "files": [INTERFACES, FSTAB, INITRAMFS_CONF, INITRAMFS_MODULES, MODPROBE_NOFB, HOSTKEYS_UNIT, BOX_VAGRANTFILE],
        "vagrant_pub": vagrant_pub().read_text(),
        **image.apt_recipe(),
        "disk_gib": DISK_GIB,
        "version": 3,
    }


def cache() -> RecipeCache:
    return RecipeCache(CACHE, recipe())


def build(boxes: RecipeCache) -> Path:
    missing = sorted({pkg for tool, pkg in NEEDS.items() if shutil.which(tool) is None})
    if missing:
        die("missing host packages: apt-get install " + " ".join(missing))
    if os.geteuid() != 0:
        die("building the box needs root (mmdebstrap in root mode, a chroot)")
    started = time.monotonic()
    with boxes.build() as build:
        partial = build.dir
        staging = partial / "staging"
        staging.mkdir()
        rootfs = partial / "rootfs"
        log = partial / "build.log"
        print(f"building the box {BOX_NAME} ({boxes.key}), log in {log} ...", file=sys.stderr, flush=True)
        stage(staging)
        run(image.mmdebstrap_command(rootfs, BASE + ROLES, hooks(staging), keep_apt_cache=False), log=log)
        mmdebstrap_s = time.monotonic() - started
        package(partial, rootfs, log)
        shutil.rmtree(staging)
        build.note = f"mmdebstrap {mmdebstrap_s:.0f}s"
    boxes.prune()  # boxes of earlier recipes: 1.2 GB each, never used again
    took = time.monotonic() - started
    box = boxes.dir / BOX_FILE
    size = box.stat().st_size / 2**20
    print(f"box built in {took:.0f} s (mmdebstrap {mmdebstrap_s:.0f} s), {size:.0f} MiB", file=sys.stderr, flush=True)
    return box


def package(partial: Path, rootfs: Path, log: Path) -> None:
    """rootfs -> kernel, initrd, qcow2 disk, Vagrantfile and metadata, in one .box (tar) in partial."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        die(f"no kernel/initrd in {rootfs}/boot (is linux-image-amd64 installed?)")
    out = partial / "box"
    out.mkdir()
    shutil.copy(kernels[-1], out / "vmlinuz")
    shutil.copy(initrds[-1], out / "initrd.img")
    (out / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    (out / "metadata.json").write_text(json.dumps({"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GIB}))
    raw = partial / "rootfs.ext4"
    run(["truncate", "-s", f"{DISK_GIB}G", str(raw)], log=log)
    run(["mkfs.ext4", "-q", "-F", "-L", "halab-root", "-d", str(rootfs), str(raw)], log=log)
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / "box.img")], log=log)
    raw.unlink()
    shutil.rmtree(rootfs)
    with tarfile.open(partial / BOX_FILE, "w") as tar:  # uncompressed: qcow2 is already compact
        for name in ("metadata.json", "Vagrantfile", "vmlinuz", "initrd.img", "box.img"):
            tar.add(out / name, arcname=name)
    shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--key", action="store_true", help="print the recipe key and exit")
    parser.add_argument("--rebuild", action="store_true", help="build even if a box for this recipe is cached")
    args = parser.parse_args()
    try:
        boxes = cache()
        if args.key:
            print(boxes.key)
            return
        if args.rebuild or not boxes.complete():
            build(boxes)
    except LabError as exc:
        die(str(exc))
    print(boxes.dir / BOX_FILE)


if __name__ == "__main__":
    main()
