#!/usr/bin/env bash
# Install the Debian/Ubuntu font packages of the glyph dataset (sage_jax/data/glyphs.py,
# docs/glyphs.md): the list in scripts/font_packages.txt (one package a line, # comments).
# Idempotent: packages already installed are left alone; prints what it installed.
#   scripts/install_fonts.sh            # uses sudo unless run as root
#   scripts/install_fonts.sh --dry-run  # prints the packages it would install
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
list="${FONT_PACKAGES:-$here/font_packages.txt}"
dry=0
[[ "${1:-}" == "--dry-run" ]] && dry=1

if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  echo "install_fonts.sh: needs apt-get and dpkg-query (Debian/Ubuntu); install the packages of $list by hand" >&2
  exit 1
fi

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list" | grep -v '^$')
missing=()
for p in "${wanted[@]}"; do
  if [[ "$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null || true)" != "installed" ]]; then
    missing+=("$p")
  fi
done

if (( ${#missing[@]} == 0 )); then
  echo "all ${#wanted[@]} font packages of $list are installed; nothing to do"
  exit 0
fi
echo "to install (${#missing[@]} of ${#wanted[@]}): ${missing[*]}"
(( dry )) && exit 0

sudo=()
if (( EUID != 0 )); then
  command -v sudo >/dev/null || { echo "install_fonts.sh: not root and no sudo" >&2; exit 1; }
  sudo=(sudo)
fi
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

echo "installed:"
dpkg-query -W -f '  ${Package} ${Version}\n' "${missing[@]}"
