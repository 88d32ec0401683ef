#!/usr/bin/env bash
# One command from a fresh Debian 12 machine with Node 20 (as root, or with sudo) to a running
# virtmem: installs the Debian packages, the npm dependencies, builds virtmem and the built-in
# guest, then runs the demo.
#
#   bash scripts/setup.sh            install everything and run the demo
#   bash scripts/setup.sh --no-demo  install everything, no demo (CI)
#   bash scripts/setup.sh --dev      also the packages the test suite and benchmarks compare
#                                    against (libvirt: virsh, virt-xml-validate, libvirtd)
#                                    and Chromium for the dashboard's browser test
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
# virt-xml-validate (libvirt-clients) runs xmllint, which libvirt only recommends.
[ "$dev" -eq 1 ] && packages+=(libvirt-daemon-system libvirt-clients libxml2-utils)
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

node -e 'const [maj]=process.versions.node.split(".").map(Number); if (maj < 20) { console.error(`setup: Node ${process.version} is too old; virtmem needs Node 20 or later`); process.exit(1); }'

if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
npm run --silent build

# `virtmem` on PATH: a link to bin/virtmem (which finds the checkout through the link).
if [ "$(id -u)" -eq 0 ]; then bindir=/usr/local/bin; else bindir="$HOME/.local/bin"; mkdir -p "$bindir"; fi
ln -sfn "$PWD/bin/virtmem" "$bindir/virtmem"
case ":$PATH:" in *":$bindir:"*) ;; *) echo "setup: add $bindir to PATH to run virtmem by name" ;; esac

echo "setup: building the built-in guest (Debian cloud kernel + busybox initramfs)"
bin/virtmem guest-build

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
