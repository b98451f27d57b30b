#!/bin/sh
# Installs the Debian packages neuromic needs, only those that are missing.
set -e
# Extra packages may be named as arguments (the fuzz target adds clang).
need="$* liblua5.4-dev lua5.4 libopenblas-dev lua-busted zlib1g-dev libreadline-dev gnuplot-nox dataset-fashion-mnist pkg-config"
missing=""
for p in $need; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
