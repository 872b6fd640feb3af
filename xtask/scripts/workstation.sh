#!/usr/bin/env bash
# workstation.sh NAME: prints the path of workstation NAME's mount namespace, making it first if
# there is none.
#
# A test workstation is a network namespace. `ip netns exec` gives each command it runs a mount
# namespace of its own, so a file system the workstation's tether mounts (`intercept --mount`)
# would be seen by no other command. A real laptop has one mount namespace; this is it for a
# workstation: a persistent one (bound to /run/tether-ws/NAME.mnt) with the workstation's
# resolv.conf and sysfs, as `ip netns exec` sets them up. Commands run in it with
#   nsenter --net=/run/netns/NAME --mount=/run/tether-ws/NAME.mnt CMD
# `cargo xtask cluster down` removes it with the network namespace.
set -euo pipefail
name=${1:?usage: workstation.sh NAME}
dir=/run/tether-ws
file=$dir/$name.mnt
[ -e "/run/netns/$name" ] || {
  echo "no network namespace $name (\`cargo xtask cluster up\` makes the workstations)" >&2
  exit 1
}
mkdir -p "$dir"
exec 9>"$dir.lock"
flock 9
if nsenter --mount="$file" true 2>/dev/null; then
  echo "$file"
  exit 0
fi
# A namespace can only be bound onto a file in a private mount.
if ! findmnt --mountpoint "$dir" >/dev/null 2>&1; then
  mount --bind "$dir" "$dir"
fi
mount --make-private "$dir"
: >"$file"
nsenter --net="/run/netns/$name" unshare --mount="$file" --propagation slave sh -c "
  mount --bind /etc/netns/$name/resolv.conf /etc/resolv.conf
  umount -l /sys
  mount -t sysfs sysfs /sys"
echo "$file"
