// Command delta-go-example generates, inspects and applies deltas through
// libdelta's C ABI with cgo, as a device agent in Go would:
//
//	delta-go-example gen [-replace] [-no-lzma] OLD NEW OUT
//	delta-go-example info DELTA
//	delta-go-example apply [-cancel-on-step N] [-compare-zero-runs] OLD|- DELTA OUT
//
// gen refuses an existing OUT unless -replace is given, as delta gen does
// without --force.
//
// apply prints "progress STEP DONE/TOTAL" lines from the progress callback
// and "applied OUT: N bytes, blake3 DIGEST"; Ctrl-C (or -cancel-on-step)
// sets the cancel flag, and running it again resumes. Failures print
// "error: MESSAGE" and exit with the code the delta command would give.
//
// Build against the static library: CGO_LDFLAGS=-L<folder with libdelta.a>
// go build (see run.sh).
package main

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #cgo LDFLAGS: -ldelta -lm -ldl -lpthread
// #include <stdint.h>
// #include <stdlib.h>
// #include <delta.h>
// int apply_with_progress(const char *old, const char *delta, const char *target,
//     const DeltaApplyOptions *options, uintptr_t handle, const int *cancel,
//     DeltaApplyResult *result, DeltaError **err);
import "C"

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/cgo"
	"sync/atomic"
	"unsafe"
)

// applyState is what the progress callback reaches through its user data.
type applyState struct {
	cancel       *int32
	cancelOnStep int
}

//export goProgress
func goProgress(userData unsafe.Pointer, step C.uint32_t, done, total C.uint64_t, message *C.char) {
	state := cgo.Handle(uintptr(userData)).Value().(*applyState)
	line := fmt.Sprintf("progress %d %d/%d", step, done, total)
	if message != nil {
		line += " " + C.GoString(message)
	}
	fmt.Println(line)
	if int(step) == state.cancelOnStep {
		atomic.StoreInt32(state.cancel, 1)
	}
}

// failure prints the library's error and exits as the delta command would.
func failure(err *C.DeltaError) {
	fmt.Fprintf(os.Stderr, "error: %s\n", C.GoString(C.delta_error_message(err)))
	code := int(C.delta_error_exit_code(err))
	C.delta_error_free(err)
	os.Exit(code)
}

// cString is a C copy of s (NULL for "-"), freed by the caller.
func cString(s string) *C.char {
	if s == "-" {
		return nil
	}
	return C.CString(s)
}

func gen(args []string) {
	flags := flag.NewFlagSet("gen", flag.ExitOnError)
	replace := flags.Bool("replace", false, "replace an existing OUT")
	noLzma := flags.Bool("no-lzma", false, "compress every segment with zstd (no LZMA segments)")
	flags.Parse(args)
	if flags.NArg() != 3 {
		usage()
	}
	oldPath, newPath, out := flags.Arg(0), flags.Arg(1), flags.Arg(2)
	cOld, cNew, cOut := cString(oldPath), cString(newPath), cString(out)
	defer C.free(unsafe.Pointer(cOld))
	defer C.free(unsafe.Pointer(cNew))
	defer C.free(unsafe.Pointer(cOut))
	var options C.DeltaGenOptions
	C.delta_gen_options_default(&options)
	options.replace = C.bool(*replace)
	options.lzma = C.bool(!*noLzma)
	var result C.DeltaGenResult
	var err *C.DeltaError
	if C.delta_generate(cOld, cNew, cOut, &options, &result, &err) != C.DELTA_OK {
		failure(err)
	}
	fmt.Printf("generated %s: %d bytes, %d segments\n", out, result.delta_len, result.segments)
}

func info(delta string) {
	cDelta := C.CString(delta)
	defer C.free(unsafe.Pointer(cDelta))
	var info C.DeltaInfo
	var err *C.DeltaError
	if C.delta_info(cDelta, &info, &err) != C.DELTA_OK {
		failure(err)
	}
	fmt.Printf("format %d, new image %d bytes, blake3 %s, %d segments\n",
		info.format_version, info.new_len, C.GoString(&info.new_digest[0]), info.segment_count)
}

func apply(args []string) {
	flags := flag.NewFlagSet("apply", flag.ExitOnError)
	cancelOnStep := flags.Int("cancel-on-step", -1, "set the cancel flag when this step is reported")
	compareZeroRuns := flags.Bool("compare-zero-runs", false, "read and compare zero runs on a block device")
	flags.Parse(args)
	if flags.NArg() != 3 {
		usage()
	}
	oldPath, delta, out := flags.Arg(0), flags.Arg(1), flags.Arg(2)

	// Locks, journal and no log under the temporary folder, so that the
	// example runs without root; a device keeps the defaults.
	tmp := os.TempDir()
	strings := []*C.char{
		cString(oldPath), C.CString(delta), C.CString(out),
		C.CString(filepath.Join(tmp, "delta-go-example.lock")),
		C.CString(tmp),
		C.CString(filepath.Join(tmp, "delta-go-example-none")),
	}
	for _, s := range strings {
		defer C.free(unsafe.Pointer(s))
	}
	var options C.DeltaApplyOptions
	C.delta_apply_options_default(&options)
	options.no_log = C.bool(true)
	options.instance_lock = strings[3]
	options.state_dir = strings[4]
	options.lock_root = strings[5]
	options.supervisor_config = strings[5]
	options.compare_zero_runs = C.bool(*compareZeroRuns)

	// The cancel flag lives in C memory: the library reads it from its
	// own thread while Go code may store to it from any goroutine.
	cancel := (*C.int)(C.malloc(C.sizeof_int))
	defer C.free(unsafe.Pointer(cancel))
	*cancel = 0
	state := &applyState{cancel: (*int32)(unsafe.Pointer(cancel)), cancelOnStep: *cancelOnStep}
	interrupt := make(chan os.Signal, 1)
	signal.Notify(interrupt, os.Interrupt)
	go func() {
		<-interrupt
		atomic.StoreInt32(state.cancel, 1)
	}()
	handle := cgo.NewHandle(state)
	defer handle.Delete()

	var result C.DeltaApplyResult
	var err *C.DeltaError
	code := C.apply_with_progress(strings[0], strings[1], strings[2], &options,
		C.uintptr_t(handle), cancel, &result, &err)
	if code != C.DELTA_OK {
		failure(err)
	}
	fmt.Printf("applied %s: %d bytes, blake3 %s\n", out, result.new_len,
		C.GoString(&result.new_digest[0]))
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: delta-go-example gen [-replace] [-no-lzma] OLD NEW OUT | info DELTA | apply [-cancel-on-step N] [-compare-zero-runs] OLD|- DELTA OUT")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	if C.delta_abi_version() != C.DELTA_ABI_VERSION {
		fmt.Fprintf(os.Stderr, "error: libdelta %s has ABI %d, this program was built for %d\n",
			C.GoString(C.delta_version()), C.delta_abi_version(), C.DELTA_ABI_VERSION)
		os.Exit(1)
	}
	args := os.Args[2:]
	switch {
	case os.Args[1] == "gen":
		gen(args)
	case os.Args[1] == "info" && len(args) == 1:
		info(args[0])
	case os.Args[1] == "apply":
		apply(args)
	default:
		usage()
	}
}
