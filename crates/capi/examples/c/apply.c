/* Applies a delta with libdelta and prints its progress:
 *
 *   apply [--compare-zero-runs] OLD DELTA OUT      (OLD "-" for a full-image payload)
 *
 * (--compare-zero-runs: a block device's zero runs are read and compared
 * like data, as `delta apply --compare-zero-runs`.)
 * prints "progress STEP DONE/TOTAL" lines, then "applied OUT blake3 DIGEST";
 * on failure "error: MESSAGE" on stderr and the exit code the `delta`
 * command would give. Update log, journal and locks go into the temporary
 * folder $TMPDIR (default /tmp), so it runs without root. */
#include <delta.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_progress(void *user_data, uint32_t step, uint64_t done, uint64_t total,
                        const char *message) {
  FILE *out = user_data;
  fprintf(out, "progress %u %llu/%llu%s%s\n", step, (unsigned long long)done,
          (unsigned long long)total, message ? " " : "", message ? message : "");
}

int main(int argc, char **argv) {
  bool compare_zero_runs = argc > 1 && strcmp(argv[1], "--compare-zero-runs") == 0;
  if (compare_zero_runs) {
    argv++;
    argc--;
  }
  if (argc != 4) {
    fprintf(stderr, "usage: %s [--compare-zero-runs] OLD|- DELTA OUT\n", argv[0]);
    return 2;
  }
  if (delta_abi_version() != DELTA_ABI_VERSION) {
    fprintf(stderr, "error: libdelta ABI %u, built against %u\n", delta_abi_version(),
            DELTA_ABI_VERSION);
    return 1;
  }
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  char lock[4096], state[4096], none[4096];
  snprintf(lock, sizeof lock, "%s/delta-example.lock", tmp);
  snprintf(state, sizeof state, "%s", tmp);
  snprintf(none, sizeof none, "%s/delta-example-none", tmp);

  DeltaApplyOptions options;
  delta_apply_options_default(&options);
  options.no_log = true;
  options.instance_lock = lock;
  options.state_dir = state;
  options.lock_root = none;
  options.supervisor_config = none;
  options.compare_zero_runs = compare_zero_runs;
  options.progress = on_progress;
  options.user_data = stdout;

  const char *old = strcmp(argv[1], "-") == 0 ? NULL : argv[1];
  DeltaApplyResult result;
  DeltaError *err = NULL;
  int code = delta_apply(old, argv[2], argv[3], &options, &result, &err);
  if (code != DELTA_OK) {
    fprintf(stderr, "error: %s\n", delta_error_message(err));
    int exit_code = delta_error_exit_code(err);
    delta_error_free(err);
    return exit_code;
  }
  printf("applied %s: %llu bytes in %llu segments, blake3 %s\n", argv[3],
         (unsigned long long)result.new_len, (unsigned long long)result.segments,
         result.new_digest);
  return 0;
}
