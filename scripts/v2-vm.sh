#!/bin/sh
# Boots a throwaway Linux guest whose only cgroup hierarchy is v2 (with the memory and cpu
# controllers, as in an enclave) and runs one command in it as root. This machine's own cgroups
# are v1, so the service's v2 path can only be exercised for real in such a guest.
#
#   scripts/v2-vm.sh --fetch-kernel              # once, as root: Debian's kernel into the cache
#   scripts/v2-vm.sh --check                     # says what is missing, exits 1 if anything is
#   scripts/v2-vm.sh [-t SECONDS] DIR COMMAND [ARG...]
#
# The guest sees this machine's whole file system read-only (so node, npm and the project's
# workerd run there unchanged), with fresh tmpfs on /tmp, /run and /root; DIR stays visible
# wherever it is. COMMAND runs in DIR with only HOME, PATH (this shell's) and LANG set. Its output
# arrives on stdout as it is written (the guest's serial console), and its exit status is this
# script's. This script's own failures exit 125 (qemu or the kernel missing, the guest stopped
# before the command ended) or 124 (SECONDS, default 900, ran out); the guest is gone either way.
#
# The guest runs under TCG, qemu's software emulation, as KVM guests hang at boot on these
# machines: it boots in about 5 s, but everything in it runs tens of times slower than here (a
# workerd start takes seconds instead of 20 ms).
#
# Environment: V2_VM_CACHE (default /var/cache/oyster-serverless/v2-vm) holds the kernel and the
# few modules the guest needs, taken from Debian's linux-image package without installing it
# (the host's /boot stays untouched); V2_VM_MEMORY (MiB, default 2048), V2_VM_CPUS (default 1:
# each emulated CPU keeps a host core busy).
set -eu

cache=${V2_VM_CACHE:-/var/cache/oyster-serverless/v2-vm}
memory=${V2_VM_MEMORY:-2048}
cpus=${V2_VM_CPUS:-1}
qemu=qemu-system-x86_64
busybox=/bin/busybox
# Loaded in this order: each needs the ones before it. They give the guest the virtio-9p shares.
modules='virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p'

fail() { echo "v2-vm.sh: $*" >&2; exit 125; }

# Downloads Debian's current kernel package and keeps its vmlinuz and the modules above in
# $cache/<package>_<version>/, pointed to by $cache/current. Does nothing when that is there.
fetch_kernel() {
  command -v apt-get >/dev/null || fail "needs apt-get (Debian) to fetch the kernel"
  package=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1)
  [ -n "$package" ] || fail "apt-cache knows no linux-image-amd64: run apt-get update first"
  version=$(apt-cache show --no-all-versions "$package" | sed -n 's/^Version: //p' | head -n 1)
  name=${package}_$version
  if [ ! -f "$cache/$name/vmlinuz" ]; then
    mkdir -p "$cache"
    work=$(mktemp -d "$cache/.fetch.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    # apt-get download drops root for the download, and warns unless its _apt user may write there.
    chown _apt "$work" 2>/dev/null || true
    (cd "$work" && apt-get download -q "$package=$version")
    dpkg-deb -x "$work"/*.deb "$work/package"
    mkdir "$work/$name"
    cp "$work/package/boot/vmlinuz-${package#linux-image-}" "$work/$name/vmlinuz"
    for module in $modules; do
      found=$(find "$work/package/lib/modules" -name "$module.ko" | head -n 1)
      [ -n "$found" ] || fail "$package has no module $module.ko"
      cp "$found" "$work/$name/"
    done
    # Renamed into place whole, so an interrupted fetch never looks like a finished one.
    mv "$work/$name" "$cache/$name"
  fi
  ln -sfn "$name" "$cache/current"
  # Kernels that Debian has since replaced are not needed again.
  for old in "$cache"/linux-image-*; do
    [ "$old" = "$cache/$name" ] || rm -rf "$old"
  done
  echo "v2-vm.sh: kernel $name in $cache"
}

# Prints why a guest cannot be booted here, or nothing.
missing() {
  command -v "$qemu" >/dev/null || echo "$qemu is not installed (apt-get install qemu-system-x86)"
  [ -x "$busybox" ] || echo "$busybox is not there (apt-get install busybox-static)"
  [ -f "$cache/current/vmlinuz" ] || echo "no kernel in $cache (run scripts/v2-vm.sh --fetch-kernel as root)"
}

# One argument, quoted for sh.
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# A signal ends the script through its EXIT trap, which cleans up.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

case ${1:-} in
  --fetch-kernel) fetch_kernel; exit 0 ;;
  --check) reason=$(missing); [ -z "$reason" ] && exit 0; echo "$reason"; exit 1 ;;
esac
timeout_s=900
if [ "${1:-}" = -t ]; then timeout_s=$2; shift 2; fi
[ $# -ge 2 ] || { sed -n '6,8p' "$0" | cut -c 3- >&2; exit 2; }
dir=$(cd "$1" 2>/dev/null && pwd) || fail "no directory $1"
shift
reason=$(missing)
[ -z "$reason" ] || fail "cannot boot the v2 guest: $reason"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/v2-vm.XXXXXX")
runner=
cleanup() {
  status=$?
  # The qemu process (under timeout(1), which passes the signal on) never outlives this script.
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
    kill "$runner" 2>/dev/null || true
    wait "$runner" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT

# The share is the guest's only writable link to here: what to run, and its exit status.
share=$tmp/share
mkdir -p "$share" "$tmp/initramfs/bin" "$tmp/initramfs/lib"
printf '%s\n' "$dir" > "$share/dir"
printf '%s\n' "$PATH" > "$share/path"
{
  printf 'exec'
  for arg in "$@"; do printf ' %s' "$(quote "$arg")"; done
  printf '\n'
} > "$share/command"

# Runs as the guest's init once its root is this machine's: the command, then its status for the
# host, then power off (the kernel's own switch: no init system is running to ask). The command's
# output goes through a pipe, not straight to the console, so that programs do not take it for a
# terminal and draw progress bars on it.
cat > "$share/guest.sh" <<'EOF'
# The console is a serial line: without this every \n would arrive as \r\n.
stty -onlcr 2>/dev/null
{
  cd "$(cat /run/v2-vm/dir)" &&
    env -i HOME=/root PATH="$(cat /run/v2-vm/path)" LANG=C.UTF-8 /bin/sh /run/v2-vm/command </dev/null
  echo $? > /run/v2-vm/status
} 2>&1 | cat
/bin/busybox poweroff -f
EOF

# The initramfs: busybox and the 9p modules, enough to mount this machine's root from the share
# and hand over to it.
cp "$busybox" "$tmp/initramfs/bin/busybox"
for module in $modules; do cp "$cache/current/$module.ko" "$tmp/initramfs/lib/"; done
cat > "$tmp/initramfs/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
set -e
trap 'echo "v2-vm init: failed; powering off" >&2; poweroff -f' EXIT
mkdir -p /proc /sys /dev /newroot /share /dirbind
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for module in $modules; do insmod /lib/\$module.ko; done
# cache=loose: the root is read-only and nobody changes what the guest reads while it runs, so the
# guest may keep it cached (node_modules is read through this share).
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose root /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share /share
read -r dir < /share/dir
# DIR may lie under one of the tmpfs mounts below (a clone in /tmp or /root): keep it in sight.
mount --bind "/newroot\$dir" /dirbind
for fs in tmp run root; do mount -t tmpfs -o mode=1777 tmpfs /newroot/\$fs; done
mkdir -p /newroot/run/v2-vm "/newroot\$dir"
mount --move /dirbind "/newroot\$dir"
mount --move /share /newroot/run/v2-vm
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
# v2 only: the kernel is booted with cgroup_no_v1=all, so memory and cpu are here.
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
mount --move /dev /newroot/dev
mkdir -p /newroot/dev/shm /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
ip link set lo up
umount /proc
trap - EXIT
exec switch_root /newroot /bin/sh /run/v2-vm/guest.sh
EOF
chmod 755 "$tmp/initramfs/init"
(cd "$tmp/initramfs" && find . | "$busybox" cpio -o -H newc --quiet) > "$tmp/initramfs.cpio"

# No network device at all: the guest talks to nothing but its own loopback. panic=-1 and
# -no-reboot: if init dies, the kernel reboots and qemu exits instead of hanging. loglevel=3
# keeps the kernel's messages (an OOM kill's report, say) off the console, not its panics.
timeout --kill-after=10 "$timeout_s" "$qemu" \
  -accel tcg -cpu max -m "$memory" -smp "$cpus" \
  -nodefaults -no-reboot -display none -serial stdio \
  -kernel "$cache/current/vmlinuz" -initrd "$tmp/initramfs.cpio" \
  -append "console=ttyS0 loglevel=3 panic=-1 cgroup_no_v1=all mitigations=off" \
  -fsdev local,path=/,readonly=on,security_model=none,multidevs=remap,id=root \
  -device virtio-9p-pci,fsdev=root,mount_tag=root \
  -fsdev local,path="$share",security_model=none,id=share \
  -device virtio-9p-pci,fsdev=share,mount_tag=share \
  </dev/null &
runner=$!
set +e
wait "$runner"
ran=$?
set -e
runner=
[ "$ran" -ne 124 ] || { echo "v2-vm.sh: the guest did not finish within $timeout_s s; stopped it" >&2; exit 124; }
[ -f "$share/status" ] || fail "the guest stopped before the command ended (qemu exited with $ran; its console is above)"
exit "$(cat "$share/status")"
