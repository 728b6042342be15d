#!/usr/bin/env bash
# Installs Mesa's software Vulkan driver (lavapipe) at version 25 or newer, which onnxruntime-node's WebGPU
# provider (Dawn) accepts; Debian 12's own Mesa 22 is refused by Dawn. Debian 12 gets Mesa 25 from its
# bookworm-backports suite. The mirror is read from this machine's own apt sources (no host name here).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

have_mesa() {
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 25 && dpkg -s libvulkan1 >/dev/null 2>&1
}
if have_mesa; then
  echo "lavapipe: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) already installed"
  exit 0
fi

. /etc/os-release
codename=${VERSION_CODENAME:-bookworm}
if [ "$codename" = bookworm ]; then
  # The first configured Debian archive URI (deb822 "URIs:" or one-line "deb URI suite") whose suites name
  # this release (not its -security suite).
  mirror=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror=$(awk -v c="$codename" '
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) ok = 1 }
      /^$/ { if (ok && uri != "") { print uri; exit } uri = ""; ok = 0 }
      END { if (ok && uri != "") print uri }' "$f" | head -1)
    [ -n "$mirror" ] && break
  done
  if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk -v c="$codename" '$1 == "deb" && $3 == c { print $2; exit }')
  fi
  if [ -z "$mirror" ]; then
    echo "lavapipe: no Debian '$codename' entry in the apt sources to derive a bookworm-backports mirror from" >&2
    exit 1
  fi
  list=/etc/apt/sources.list.d/gemma-tuner-backports.list
  echo "deb $mirror ${codename}-backports main" > "$list"
  echo "lavapipe: using $mirror ${codename}-backports"
  apt-get update -qq -o Dir::Etc::sourcelist="$list" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0
  apt-get install -y -qq -t "${codename}-backports" mesa-vulkan-drivers libvulkan1 >/dev/null
else
  apt-get update -qq
  apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
have_mesa || { echo "lavapipe: mesa-vulkan-drivers >= 25 is not available for $codename" >&2; exit 1; }
echo "lavapipe: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) installed"
