package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/arrayfs/arrayfs/mountopts"
	"github.com/arrayfs/arrayfs/store"
	"github.com/arrayfs/arrayfs/store/daf"
	"github.com/arrayfs/arrayfs/store/engine"
)

// mountInProcess mounts dir in this process, so that the race detector
// sees the node tree and the engine together under concurrent use.
// fuse_test mounts the real binary; this is the -race net for fs.
func mountInProcess(t *testing.T, dir string, opts mountopts.Options) string {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if os.Getenv("ARRAYFS_REQUIRE_FUSE") == "1" {
			t.Fatalf("FUSE required: %v", err)
		}
		t.Skipf("no FUSE: %v", err)
	}
	ds, err := store.Open(dir, store.Config{PoolUnits: opts.PoolSize, PoolBytes: opts.PoolBytes, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(ds, opts, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	server, err := gofs.Mount(mnt, f.Root(), f.MountOptions(mnt))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		if err := ds.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return mnt
}

func writeArray(t *testing.T, dir, name string, n int) []byte {
	t.Helper()
	data := make([]byte, 4*n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := daf.WriteDenseArray(dir, name, "int32", []int64{int64(n)}, data); err != nil {
		t.Fatal(err)
	}
	return data
}

// Writers of disjoint ranges and whole-file readers at once, through a
// pool small enough to evict all the time.
func TestConcurrentArrayWritesAndReads(t *testing.T) {
	dir := t.TempDir()
	const n = 1 << 18 // 1 MiB of int32
	writeArray(t, dir, "a", n)
	opts := mountopts.Default()
	opts.PoolSize = 4
	mnt := mountInProcess(t, dir, opts)
	path := filepath.Join(mnt, "a.array")

	const writers, chunk = 4, 64 << 10
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			buf := bytes.Repeat([]byte{byte(0xA0 + w)}, chunk)
			for off := int64(w * chunk); off < 4*n; off += writers * chunk {
				if _, err := f.WriteAt(buf, off); err != nil {
					t.Error(err)
					return
				}
			}
			if err := f.Sync(); err != nil {
				t.Error(err)
			}
		}(w)
	}
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				data, err := os.ReadFile(path)
				if err != nil || len(data) != 4*n {
					t.Errorf("read: %d bytes, %v", len(data), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got, err := os.ReadFile(filepath.Join(dir, "a.array"))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(got); off += chunk {
		want := byte(0xA0 + (off/chunk)%writers)
		if got[off] != want || got[off+chunk-1] != want {
			t.Fatalf("chunk at %d: %#x, want %#x", off, got[off], want)
		}
	}
}

// Whole-file replacements (O_TRUNC, as cp does) while readers read. As
// on any file system, a reader of a file being rewritten with O_TRUNC
// may see it short; what must hold is that nothing fails, nothing
// races, and the last version is what ends up on disk.
func TestReplaceWhileReading(t *testing.T) {
	dir := t.TempDir()
	const n = 1 << 14
	writeArray(t, dir, "a", n)
	mnt := mountInProcess(t, dir, mountopts.Default())
	path := filepath.Join(mnt, "a.array")
	versions := make([][]byte, 4)
	for v := range versions {
		versions[v] = bytes.Repeat([]byte{byte(v + 1)}, 4*n)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				data, err := os.ReadFile(path)
				if err != nil {
					t.Error(err)
					return
				}
				if len(data) > 4*n {
					t.Errorf("read %d bytes, more than the array's %d", len(data), 4*n)
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		if err := os.WriteFile(path, versions[i%len(versions)], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	got, _ := os.ReadFile(filepath.Join(dir, "a.array"))
	if !bytes.Equal(got, versions[19%len(versions)]) {
		t.Fatal("the last replacement is not on disk")
	}
	names, _ := os.ReadDir(dir)
	for _, e := range names {
		if engine.IsStageName(e.Name()) {
			t.Fatalf("staged file left: %s", e.Name())
		}
	}
}

// TestTgidOf: a leader is its own group (the pidfd_open fast path), a
// thread of it is in the leader's group (read from /proc).
func TestTgidOf(t *testing.T) {
	if got := tgidOf(os.Getpid()); got != os.Getpid() {
		t.Fatalf("tgidOf(leader %d) = %d", os.Getpid(), got)
	}
	tids := make(chan int)
	release := make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			<-release
		}()
	}
	seenThread := false
	for range 4 {
		tid := <-tids
		if got := tgidOf(tid); got != os.Getpid() {
			t.Errorf("tgidOf(thread %d) = %d, want %d", tid, got, os.Getpid())
		}
		seenThread = seenThread || tid != os.Getpid()
	}
	close(release)
	if !seenThread {
		t.Fatalf("no thread other than the leader to test")
	}
	if got := tgidOf(1 << 30); got != 0 {
		t.Errorf("tgidOf(no such thread) = %d", got)
	}
}
