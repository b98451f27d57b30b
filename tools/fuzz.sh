#!/bin/sh
# tools/fuzz.sh [SECONDS]: builds the libFuzzer targets of the IDX and .npy
# readers (fuzz/*.c) with AddressSanitizer and UndefinedBehaviorSanitizer
# into build-fuzz/, then runs each for SECONDS (default 60) from a small
# generated seed corpus. Exits non-zero when a run finds a crash, a leak, a
# sanitizer report or a timeout; the input is kept as build-fuzz/crash_*.
set -eu
seconds=${1:-60}
cc=${FUZZ_CC:-clang}
out=build-fuzz
command -v "$cc" >/dev/null 2>&1 || { echo "fuzz.sh: $cc not found (libFuzzer needs clang)" >&2; exit 2; }
mkdir -p "$out/seeds_idx" "$out/seeds_npy" "$out/corpus_idx" "$out/corpus_npy"

flags="-std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wall -Wextra -Wpedantic -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wvla -Icsrc/core"
for t in idx npy; do
  echo "== building $out/fuzz_$t"
  # shellcheck disable=SC2086
  $cc $flags "fuzz/fuzz_$t.c" csrc/core/nm_io.c csrc/core/nm_sys.c -lz -lm -ldl -o "$out/fuzz_$t"
done

# Seeds: one small valid file per element type, plus gzip copies.
s="$out/seeds_idx"
printf '\000\000\010\002\000\000\000\002\000\000\000\003\001\002\003\004\005\377' > "$s/ubyte"
printf '\000\000\011\001\000\000\000\003\200\000\177' > "$s/sbyte"
printf '\000\000\013\001\000\000\000\002\200\000\177\377' > "$s/short"
printf '\000\000\014\001\000\000\000\001\200\000\000\001' > "$s/int"
printf '\000\000\015\002\000\000\000\001\000\000\000\002\077\200\000\000\300\000\000\000' > "$s/float"
printf '\000\000\016\000\077\360\000\000\000\000\000\000' > "$s/double"
printf '\000\000\010\003\000\000\000\002\000\000\000\002\000\000\000\002\001\002\003\004\005\006\007\010' > "$s/cube"
gzip -c "$s/ubyte" > "$s/ubyte.gz"
gzip -c "$s/cube" > "$s/cube.gz"
# Inputs that crashed or misled the readers (issue 18): an empty shape
# whose other dimensions overflowed the strides (plain, and gzip of odd
# and even size), a 12-byte header declaring 512 MB (read through a pipe
# it allocated 2 GB), gzip followed by garbage, a flipped CRC, a truncated
# gzip stream and two gzip members.
printf '\000\000\010\003\000\000\000\000\377\377\377\377\377\377\377\377' > "$s/empty_huge"
gzip -n -c "$s/empty_huge" > "$s/empty_huge.gz"
{ cat "$s/empty_huge.gz"; printf 'x'; } > "$s/empty_huge_odd.gz"
printf '\000\000\010\002\000\000\200\000\000\000\100\000' > "$s/declares_512m"
gzip -n -c "$s/declares_512m" > "$s/declares_512m.gz"
{ cat "$s/ubyte.gz"; printf 'garbage'; } > "$s/trailing_garbage.gz"
head -c $(( $(wc -c < "$s/cube.gz") - 8 )) "$s/cube.gz" > "$s/bad_crc.gz"
printf '\377\377\377\377' >> "$s/bad_crc.gz"
tail -c 4 "$s/cube.gz" >> "$s/bad_crc.gz"
head -c 20 "$s/cube.gz" > "$s/truncated.gz"
{ printf '\000\000\010\001\000\000\000\004\001\002' | gzip -n -c; printf '\003\004' | gzip -n -c; } > "$s/two_members.gz"

# .npy seed: npy FILE DESCR SHAPE PAYLOAD (printf format)
npy() {
  dict="{'descr': '$2', 'fortran_order': False, 'shape': $3, }"
  len=${#dict}
  hlen=$(( (10 + len + 1 + 63) / 64 * 64 - 10 ))
  {
    printf '\223NUMPY\001\000'
    printf "\\$(printf %03o $((hlen % 256)))\\$(printf %03o $((hlen / 256)))"
    printf '%s' "$dict"
    printf "%$((hlen - len - 1))s\n" ""
    printf "$4"
  } > "$1"
}
s="$out/seeds_npy"
npy "$s/f4" '<f4' '(2,)' '\000\000\200\077\000\000\000\300'
npy "$s/f8" '<f8' '()' '\000\000\000\000\000\000\360\077'
npy "$s/u1" '|u1' '(2, 3)' '\001\002\003\004\005\377'
npy "$s/i4" '<i4' '(1, 2)' '\001\000\000\000\377\377\377\377'
npy "$s/i8" '<i8' '(1,)' '\377\377\377\377\377\377\377\377'
npy "$s/b1" '|b1' '(1, 1, 1, 2)' '\001\000'
gzip -c "$s/u1" > "$s/u1.gz"
# issue 18: a NUL inside the dtype string, 64-bit values with and without
# an exact float64, an empty shape with huge other sizes, gzip + garbage.
npy "$s/f4_x" '<f4X' '(2,)' '\000\000\200\077\000\000\000\300'
tr 'X' '\000' < "$s/f4_x" > "$s/f4_nul" && rm "$s/f4_x"
npy "$s/u8_big" '<u8' '(2,)' '\000\000\000\000\000\000\000\200\377\377\377\377\377\377\377\377'
npy "$s/i8_odd" '<i8' '(1,)' '\001\000\000\000\000\000\040\000'
npy "$s/empty_huge" '<f8' '(0, 4294967295, 4294967295)' ''
{ cat "$s/u1.gz"; printf 'garbage'; } > "$s/u1_garbage.gz"
cat > "$out/npy.dict" <<'DICT'
"\x93NUMPY"
"'descr'"
"'fortran_order'"
"'shape'"
"True"
"False"
"'<f4'"
"'<f8'"
"'|u1'"
"'<i4'"
"'<i8'"
"'<u8'"
"'>f4'"
"(1,)"
"(0, 2)"
"3L"
"\x1f\x8b\x08"
DICT

status=0
for t in idx npy; do
  dict=""
  [ "$t" = npy ] && dict="-dict=$out/npy.dict"
  echo "== fuzz_$t for ${seconds}s (log: $out/fuzz_$t.log)"
  # shellcheck disable=SC2086
  if "$out/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
       -artifact_prefix="$out/crash_$t-" -print_final_stats=1 $dict \
       "$out/corpus_$t" "$out/seeds_$t" > "$out/fuzz_$t.log" 2>&1; then
    grep -E '^Done|stat::number_of_executed_units|stat::new_units_added' "$out/fuzz_$t.log" || true
  else
    echo "fuzz_$t FAILED:" >&2
    tail -n 60 "$out/fuzz_$t.log" >&2
    status=1
  fi
done
exit $status
