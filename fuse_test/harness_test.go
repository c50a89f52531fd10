// Package fuse_test mounts real arrayfs file systems, built from this
// repository, and uses them the way users do: cat, cp, dd, rsync, numpy.
//
// Each mount runs the arrayfs binary as its own process (built with -race
// so that a data race in the daemon fails the test that provoked it),
// which is also what lets tests kill it, signal it and unmount it from
// outside.
package fuse_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	// arrayfsBin is the binary under test, built once by TestMain.
	arrayfsBin string
	// fuseMissing says why FUSE tests cannot run here, if they cannot.
	fuseMissing string
	// repoRoot is the repository root (fixtures are at ../shared from it).
	repoRoot string
)

// python is Debian's python3, which has numpy (the one on PATH may not).
const python = "/usr/bin/python3"

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Dir(filepath.Dir(file))
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fuseMissing = "/dev/fuse is missing"
	}
	dir, err := os.MkdirTemp("", "arrayfs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	arrayfsBin = filepath.Join(dir, "arrayfs")
	build := exec.Command("go", "build", "-race", "-o", arrayfsBin, "./cmd/arrayfs")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building arrayfs:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireFUSE skips a test that needs FUSE where there is none, unless
// ARRAYFS_REQUIRE_FUSE=1 (CI), where that is a failure.
func requireFUSE(t *testing.T) {
	t.Helper()
	if fuseMissing == "" {
		return
	}
	if os.Getenv("ARRAYFS_REQUIRE_FUSE") == "1" {
		t.Fatalf("FUSE is required (ARRAYFS_REQUIRE_FUSE=1) but %s", fuseMissing)
	}
	t.Skipf("no FUSE here: %s", fuseMissing)
}

// Mount is one running arrayfs mount.
type Mount struct {
	t       *testing.T
	Dataset string // the backing directory
	Dir     string // the mount point
	Log     string // the daemon's log file
	PID     int
	done    bool
}

// fixture copies ../shared/fixtures/<rel> to a new temp directory and
// returns the copy's path (fixtures are read-only ground truth).
func fixture(t *testing.T, rel string) string {
	t.Helper()
	src := fixturePath(t, rel)
	dst := filepath.Join(t.TempDir(), filepath.Base(rel))
	run(t, "cp", "-r", src, dst)
	run(t, "chmod", "-R", "u+w", dst)
	return dst
}

// fixturePath finds ../shared/fixtures/<rel> from the repository (a git
// worktree sits one level deeper than the main checkout).
func fixturePath(t *testing.T, rel string) string {
	t.Helper()
	for _, up := range []string{"..", "../.."} {
		p := filepath.Join(repoRoot, up, "shared", "fixtures", rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("fixture %s not found beside %s", rel, repoRoot)
	return ""
}

// mount mounts dataset with the given -o options and returns once the
// mount is ready. The mount is unmounted at the end of the test, whatever
// happens, and the test fails if the daemon logged a data race or a panic.
func mount(t *testing.T, dataset string, opts ...string) *Mount {
	t.Helper()
	requireFUSE(t)
	base := t.TempDir()
	m := &Mount{t: t, Dataset: dataset, Dir: filepath.Join(base, "mnt"), Log: filepath.Join(base, "arrayfs.log")}
	if err := os.Mkdir(m.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"mount", "--background", "--log", m.Log}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	args = append(args, dataset, m.Dir)
	out, err := runTimeout(60*time.Second, arrayfsBin, args...)
	if err != nil {
		t.Fatalf("arrayfs mount: %v\n%s\nlog:\n%s", err, out, readFile(m.Log))
	}
	t.Cleanup(m.cleanup)
	m.PID = m.stats().PID
	return m
}

// Stats reads /.arrayfs/stats.json.
type Stats struct {
	PID  int `json:"pid"`
	Pool struct {
		Units      int   `json:"units"`
		Bytes      int64 `json:"bytes"`
		WriteBacks int64 `json:"write_backs"`
		Evictions  int64 `json:"evictions"`
	} `json:"pool"`
}

func (m *Mount) stats() Stats {
	m.t.Helper()
	var s Stats
	data, err := os.ReadFile(filepath.Join(m.Dir, ".arrayfs", "stats.json"))
	if err != nil {
		m.t.Fatalf("reading stats.json: %v", err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		m.t.Fatalf("stats.json: %v: %s", err, data)
	}
	return s
}

// Path is the path of rel inside the mount.
func (m *Mount) Path(rel string) string { return filepath.Join(m.Dir, rel) }

// Backing is the path of rel in the backing dataset.
func (m *Mount) Backing(rel string) string { return filepath.Join(m.Dataset, rel) }

// Unmount unmounts with `arrayfs umount`, which waits for the daemon to
// finish writing back and exit.
func (m *Mount) Unmount() {
	m.t.Helper()
	out, err := runTimeout(2*time.Minute, arrayfsBin, "umount", m.Dir)
	if err != nil {
		m.t.Fatalf("arrayfs umount: %v\n%s\nlog:\n%s", err, out, readFile(m.Log))
	}
	m.finish()
}

// Signal sends sig to the daemon and waits until it has exited and the
// mount is gone.
func (m *Mount) Signal(sig syscall.Signal) {
	m.t.Helper()
	if err := syscall.Kill(m.PID, sig); err != nil {
		m.t.Fatalf("kill %v: %v", sig, err)
	}
	m.waitGone(time.Minute)
	m.finish()
}

// Kill9 kills the daemon with SIGKILL (nothing written back by it) and
// cleans up the dead mount.
func (m *Mount) Kill9() {
	m.t.Helper()
	syscall.Kill(m.PID, syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && syscall.Kill(m.PID, 0) == nil {
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Unmount(m.Dir, syscall.MNT_DETACH)
	m.done = true
}

// Abort aborts the mount's FUSE connection (as `echo 1 >
// /sys/fs/fuse/connections/N/abort` does): every request waiting on the
// daemon fails at once. It is what gets a test out of a deadlocked
// daemon, whose process then cannot even be killed.
func (m *Mount) Abort() {
	m.t.Helper()
	abortConnection(m.Dir)
}

func abortConnection(dir string) {
	var st syscall.Stat_t
	if syscall.Stat(dir, &st) != nil {
		return
	}
	conns := "/sys/fs/fuse/connections"
	if ents, _ := os.ReadDir(conns); len(ents) == 0 {
		syscall.Mount("fusectl", conns, "fusectl", 0, "")
	}
	minor := st.Dev&0xff | (st.Dev>>12)&0xfff00
	os.WriteFile(fmt.Sprintf("%s/%d/abort", conns, minor), []byte("1"), 0)
}

// waitGone waits for the daemon to exit and the mount to disappear.
func (m *Mount) waitGone(timeout time.Duration) {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if syscall.Kill(m.PID, 0) != nil && !isMounted(m.Dir) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.t.Fatalf("arrayfs (pid %d) did not exit within %v\nlog:\n%s", m.PID, timeout, readFile(m.Log))
}

// finish checks the daemon's log once it has exited.
func (m *Mount) finish() {
	m.t.Helper()
	m.done = true
	log := readFile(m.Log)
	for _, bad := range []string{"DATA RACE", "panic", "goroutine "} {
		if strings.Contains(log, bad) {
			m.t.Errorf("daemon log contains %q:\n%s", bad, log)
			return
		}
	}
}

// cleanup never leaves a mount behind, even when the test failed midway.
func (m *Mount) cleanup() {
	if m.done {
		return
	}
	if isMounted(m.Dir) {
		runTimeout(time.Minute, arrayfsBin, "umount", m.Dir)
	}
	if isMounted(m.Dir) {
		// A daemon stuck on its own mount ignores SIGKILL until its
		// connection is aborted.
		abortConnection(m.Dir)
		syscall.Kill(m.PID, syscall.SIGKILL)
		syscall.Unmount(m.Dir, syscall.MNT_DETACH)
	}
	m.finish()
	if m.t.Failed() {
		m.t.Logf("daemon log:\n%s", readFile(m.Log))
	}
}

func isMounted(dir string) bool {
	data, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == dir {
			return true
		}
	}
	return false
}

// run runs a command and fails the test if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runTimeout(2*time.Minute, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// runTimeout runs a command with a time limit, so that a hung FUSE call
// cannot hang the test run, and returns its combined output.
func runTimeout(d time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// A daemonizing child must not keep our pipes: give it files.
	err := cmd.Run()
	if ctx.Err() != nil {
		return out.String(), fmt.Errorf("timed out after %v", d)
	}
	return out.String(), err
}

// pyRun runs a Python program with Debian's python3 and numpy.
func pyRun(t *testing.T, program string, args ...string) string {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s is missing: scripts/test installs python3-numpy", python)
	}
	return run(t, python, append([]string{"-c", program}, args...)...)
}

func readFile(p string) string {
	data, _ := os.ReadFile(p)
	return string(data)
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	da, _ := io.ReadAll(fa)
	db, _ := io.ReadAll(fb)
	if !bytes.Equal(da, db) {
		t.Errorf("%s (%d bytes) differs from %s (%d bytes)", a, len(da), b, len(db))
	}
}

// workers runs loops side by side until halted: the scaffolding of the
// stress tests.
type workers struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func newWorkers() *workers { return &workers{stop: make(chan struct{})} }

// loop calls f(0), f(1), ... in a goroutine of its own until the workers
// are halted or f returns false.
func (w *workers) loop(f func(i int) bool) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			if !f(i) {
				return
			}
		}
	}()
}

// halt stops every loop and waits for them.
func (w *workers) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}
