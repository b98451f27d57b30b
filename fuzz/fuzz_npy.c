/* fuzz_npy.c: libFuzzer target for the NumPy .npy reader. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_one(data, size, "npy", nm_npy_open, nm_npy_write);
}
