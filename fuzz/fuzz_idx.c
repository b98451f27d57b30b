/* fuzz_idx.c: libFuzzer target for the IDX reader (plain and gzip). */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_one(data, size, "idx", nm_idx_open, nm_idx_write);
}
