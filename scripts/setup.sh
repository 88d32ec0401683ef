#!/usr/bin/env bash
# One command from a fresh Debian 12 machine with Node 20 (as root, or with sudo) to a running
# virtmem: installs the Debian packages, the npm dependencies, builds virtmem and the built-in
# guest, then runs the demo.
#
#   bash scripts/setup.sh            install everything and run the demo
#   bash scripts/setup.sh --no-demo  install everything, no demo (CI)
#   bash scripts/setup.sh --dev      also the packages the test suite and benchmarks compare
#                                    against (libvirt: virsh, virt-xml-validate, libvirtd), the
#                                    Debian 12 test guest (debootstrap, needs root) and Chromium
#                                    and Prometheus for the dashboard and metrics tests
set -euo pipefail
cd "$(dirname "$0")/.."

demo=1
dev=0
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    --dev) dev=1 ;;
    *) echo "setup.sh: unknown option '$arg'" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# QEMU and the tools that build the guest's initramfs (busybox, cpio, gcc for the test helper).
packages=(qemu-system-x86 qemu-utils busybox-static cpio kmod gcc libc6-dev)
# libvirt is the reference the tests record against and the benchmarks compare with;
# virt-xml-validate (libvirt-clients) runs xmllint, which libvirt only recommends; python3-libvirt
# is libvirt's own C client, which the libvirt RPC tests and benchmark check ours against.
[ "$dev" -eq 1 ] && packages+=(libvirt-daemon-system libvirt-clients libxml2-utils python3-libvirt)
# The Debian 12 test guest (test/integration/distro-guest.test.ts): debootstrap, mke2fs -d.
[ "$dev" -eq 1 ] && packages+=(debootstrap e2fsprogs)
# The dashboard's browser test drives Debian's Chromium through playwright-core (which downloads no browser).
[ "$dev" -eq 1 ] && packages+=(chromium)
# The metrics test runs Debian's real Prometheus server against the daemon's /metrics.
[ "$dev" -eq 1 ] && packages+=(prometheus)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  # The guest build resolves the current kernel through apt's lists.
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ] || as_root apt-get update -qq
fi

# /dev/kvm as udev would leave it (root:kvm 0660), where no udev ran (containers, microVM
# hosts: the device comes 0600 root:root). libvirt probes QEMU's capabilities with
# CAP_DAC_OVERRIDE but checks its cache as libvirt-qemu without it; while the two disagree about
# KVM it throws the cache away and probes again (~4 s) on every lookup: ~40 s per define. Only
# the group and mode udev's own rule sets; a device udev already handled is left as it is.
if [ "$dev" -eq 1 ] && [ -c /dev/kvm ] && [ "$(stat -c '%G %a' /dev/kvm)" = "root 600" ]; then
  getent group kvm >/dev/null || as_root groupadd --system kvm
  as_root chgrp kvm /dev/kvm
  as_root chmod 0660 /dev/kvm
  echo "setup: /dev/kvm had no udev rule applied: gave it udev's group and mode (root:kvm 0660)"
fi

# The libvirt driver's tests and the benchmarks talk to the machine's libvirtd; without systemd
# (containers, CI) start it and its log daemon here. Idempotent: a running one is left alone.
if [ "$dev" -eq 1 ] && [ ! -S /var/run/libvirt/libvirt-sock -o -z "$(pgrep -x libvirtd || true)" ]; then
  pgrep -x virtlogd >/dev/null || as_root virtlogd -d
  pgrep -x libvirtd >/dev/null || as_root libvirtd -d
fi

# libvirt must keep its QEMU capability cache: the first domcapabilities probes QEMU, a second
# one must come from the cache. When it does not, every define takes tens of seconds and the
# tests time out far from the cause: say what is wrong here instead.
if [ "$dev" -eq 1 ]; then
  for _ in $(seq 1 100); do [ -S /var/run/libvirt/libvirt-sock ] && break; sleep 0.1; done
  as_root timeout 120 virsh -c qemu:///system domcapabilities >/dev/null
  t0=$(date +%s%N)
  as_root timeout 120 virsh -c qemu:///system domcapabilities >/dev/null
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if [ "$ms" -gt 1000 ]; then
    echo "setup: libvirt re-probes QEMU on every capability lookup (a second domcapabilities took ${ms} ms; it should answer from its cache in well under a second)." >&2
    echo "setup: every virsh define would take tens of seconds. /dev/kvm is $(stat -c '%U:%G %a' /dev/kvm 2>/dev/null || echo absent); libvirt-qemu is $(id libvirt-qemu 2>/dev/null || echo 'not a user')." >&2
    echo "setup: look for 'but it is not available now' in libvirtd's log (log_filters=\"1:qemu\" in /etc/libvirt/libvirtd.conf) to see which check disagrees." >&2
    exit 1
  fi
  echo "setup: libvirt answers capability lookups from its cache (${ms} ms)"
fi

node -e 'const [maj]=process.versions.node.split(".").map(Number); if (maj < 20) { console.error(`setup: Node ${process.version} is too old; virtmem needs Node 20 or later`); process.exit(1); }'

if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
npm run --silent build

# `virtmem` on PATH: a link to bin/virtmem (which finds the checkout through the link).
if [ "$(id -u)" -eq 0 ]; then bindir=/usr/local/bin; else bindir="$HOME/.local/bin"; mkdir -p "$bindir"; fi
ln -sfn "$PWD/bin/virtmem" "$bindir/virtmem"
case ":$PATH:" in *":$bindir:"*) ;; *) echo "setup: add $bindir to PATH to run virtmem by name" ;; esac

echo "setup: building the built-in guest (Debian cloud kernel + busybox initramfs)"
bin/virtmem guest-build
if [ "$dev" -eq 1 ]; then
  echo "setup: building the Debian 12 test guest (debootstrap from apt's mirror; about a minute or two, cached)"
  as_root bin/virtmem guest-build --distro debian12
fi

# The daemon as a systemd service, only where systemd runs (elsewhere: `virtmem daemon` in the foreground).
if [ "$(id -u)" -eq 0 ] && [ -d /run/systemd/system ]; then
  sed "s|@VIRTMEM@|$PWD/bin/virtmem|" scripts/virtmemd.service > /etc/systemd/system/virtmemd.service
  systemctl daemon-reload
  systemctl enable --now virtmemd.service
  echo "setup: virtmemd runs as a systemd service (API on /var/lib/virtmem/virtmemd.sock)"
else
  echo "setup: no systemd here: run \`virtmem daemon\` in the foreground for the API, dashboard and metrics"
fi

# Whether KVM really runs guests here (a /dev/kvm that opens is not proof); cached per boot.
bin/virtmem capabilities

if [ "$demo" -eq 1 ]; then
  bin/virtmem demo
fi
