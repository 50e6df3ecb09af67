// The C side of the progress callback: libdelta calls trampoline, which
// calls the exported Go function goProgress (a //export file's preamble may
// hold declarations only, so the definitions live here).
#include <stdint.h>

#include "_cgo_export.h"
#include "delta.h"

static void trampoline(void *user_data, uint32_t step, uint64_t done, uint64_t total,
                       const char *message) {
  goProgress(user_data, step, done, total, (char *)message);
}

int apply_with_progress(const char *old, const char *delta, const char *target,
                        const DeltaApplyOptions *options, uintptr_t handle, const int *cancel,
                        DeltaApplyResult *result, DeltaError **err) {
  DeltaApplyOptions with = *options;
  with.progress = trampoline;
  with.user_data = (void *)handle;
  with.cancel = cancel;
  return delta_apply(old, delta, target, &with, result, err);
}
