package fuse_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// storeConnAt reports whether a store connection is mounted at dir.
func storeConnAt(dir string) bool {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		for i, x := range f {
			if x == "-" && i+1 < len(f) && f[i+1] == "fuse.arrayfs-store" && f[4] == dir {
				return true
			}
		}
	}
	return false
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// storeConnDataset is the daf arrays fixture with a store of 300
// documents written by the original in docs/.
func storeConnDataset(t *testing.T) (ds, store string) {
	t.Helper()
	ds = fixture(t, "daf/arrays")
	store = filepath.Join(ds, "docs")
	pyOriginal(t, origPrelude+`
dam = DocumentArrayMemmap(sys.argv[1])
for i in range(300):
    dam.append(Document(id='d%02d' % i, text='v0 %d' % i, tags={'i': i}))
dam.flush()
`, store)
	return ds, store
}

func docBytes(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, name := range readDir(t, dir) {
		if name == ".docarray" {
			continue
		}
		out[name] = mustRead(t, filepath.Join(dir, name))
	}
	return out
}

// TestStoreConnections: with store_connections, a read-only mount serves
// a store on a connection of its own (no OPEN, page cache kept) while
// its arrays still pass through, both reading what a plain mount reads,
// and changes the original makes beside the mount show up on both
// connections although the kernel keeps documents' names for an hour.
func TestStoreConnections(t *testing.T) {
	ds, store := storeConnDataset(t)
	m := mount(t, ds, "ro,store_connections")
	plain := mount(t, ds, "ro")
	want := docBytes(t, plain.Path("docs"))
	readDir(t, m.Path("docs")) // served by the main connection: it gets its own
	if !waitFor(5*time.Second, func() bool { return storeConnAt(m.Path("docs")) }) {
		t.Fatalf("no store connection mounted at %s after a listing", m.Path("docs"))
	}
	if storeConnAt(plain.Path("docs")) {
		t.Fatalf("a mount without store_connections mounted one")
	}
	// Twice: the second time from the page cache the connection keeps.
	for pass := 0; pass < 2; pass++ {
		got := docBytes(t, m.Path("docs"))
		if len(got) != 300 || len(got) != len(want) {
			t.Fatalf("pass %d: %d documents through the store connection, %d through a plain mount", pass, len(got), len(want))
		}
		for name, b := range want {
			if !bytes.Equal(got[name], b) {
				t.Fatalf("pass %d: %s differs from a plain mount's", pass, name)
			}
		}
	}
	marker := mustRead(t, m.Path("docs/.docarray"))
	if !bytes.Equal(marker, mustRead(t, plain.Path("docs/.docarray"))) {
		t.Errorf("the marker differs from a plain mount's: %q", marker)
	}
	var ds1, ds2 syscall.Stat_t
	syscall.Stat(m.Path("docs"), &ds1)
	syscall.Stat(m.Dir, &ds2)
	if ds1.Dev == ds2.Dev {
		t.Errorf("the store directory is not a mount of its own (st_dev %d both)", ds1.Dev)
	}

	// Arrays of the same mount still pass through (as root).
	arr := "cell,gene#X.array"
	if !bytes.Equal(mustRead(t, m.Path(arr)), mustRead(t, filepath.Join(ds, arr))) {
		t.Fatalf("%s differs from the backing file", arr)
	}
	if reads := m.stats().Reads.Array; os.Geteuid() == 0 && reads != 0 {
		t.Errorf("the daemon served %d READs of the array: no passthrough beside the store connection", reads)
	}

	// The original writes beside both mounts.
	before := mustRead(t, m.Path("docs/d02"))
	if _, err := os.Stat(m.Path("docs/new-o")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("new-o before the original wrote it: %v", err)
	}
	pyOriginal(t, origPrelude+`
orig_op(sys.argv[1], 'update')
orig_op(sys.argv[1], 'delete')
orig_op(sys.argv[1], 'append')
`, store)
	for _, mt := range []*Mount{m, plain} {
		dir := mt.Path("docs")
		ok := waitFor(5*time.Second, func() bool {
			b, err := os.ReadFile(filepath.Join(dir, "d02"))
			_, gone := os.Stat(filepath.Join(dir, "d04"))
			_, added := os.Stat(filepath.Join(dir, "new-o"))
			return err == nil && !bytes.Equal(b, before) && errors.Is(gone, os.ErrNotExist) && added == nil
		})
		if !ok {
			t.Fatalf("%s: the original's update, delete and append are not all seen after 5 s", dir)
		}
	}
	got, want := docBytes(t, m.Path("docs")), docBytes(t, plain.Path("docs"))
	if len(got) != len(want) || !bytes.Equal(got["d02"], want["d02"]) || !bytes.Equal(got["new-o"], want["new-o"]) {
		t.Fatalf("after the original's writes the connections differ: %d and %d documents", len(got), len(want))
	}
	if !bytes.Contains(got["d02"], []byte("o")) || bytes.Equal(got["d02"], before) {
		t.Fatalf("d02 is not the original's new version: %q", got["d02"])
	}

	// arrayfs umount takes the store connection down first.
	m.Unmount()
	if isMounted(m.Path("docs")) || isMounted(m.Dir) {
		t.Fatalf("mounts left after arrayfs umount")
	}

	// SIGTERM does too.
	m2 := mount(t, ds, "ro,store_connections")
	readDir(t, m2.Path("docs"))
	if !waitFor(5*time.Second, func() bool { return storeConnAt(m2.Path("docs")) }) {
		t.Fatalf("no store connection on the second mount")
	}
	m2.Signal(syscall.SIGTERM)
	if storeConnAt(m2.Path("docs")) || isMounted(m2.Dir) {
		t.Fatalf("mounts left after SIGTERM")
	}
	plain.Unmount()
}

// TestStoreConnectionsNeedReadOnly: a writer's close must reach the
// daemon, which a connection without OPEN and FLUSH never tells.
func TestStoreConnectionsNeedReadOnly(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	dir := t.TempDir()
	out, err := runTimeout(time.Minute, arrayfsBin, "mount", "--background", "-o", "store_connections", ds, dir)
	if err == nil {
		runTimeout(time.Minute, arrayfsBin, "umount", dir)
		t.Fatalf("a read-write mount with store_connections was accepted")
	}
	if !strings.Contains(out, "store_connections") || !strings.Contains(out, "read-only") {
		t.Fatalf("the refusal does not say why: %s", out)
	}
	if isMounted(dir) {
		t.Fatalf("something was mounted at %s", dir)
	}
}

// TestMemoryBudget: stats.json reports the daemon's memory budget,
// pool_bytes + 64 MiB + 64 bytes per document indexed, and the daemon
// stays within it while the kernel learns every document.
func TestMemoryBudget(t *testing.T) {
	ds := t.TempDir()
	pyOriginal(t, origPrelude+`
dam = DocumentArrayMemmap(sys.argv[1])
dam.extend(Document(id='m%04d' % i, text='x' * 500) for i in range(2000))
dam.flush()
`, filepath.Join(ds, "docs"))
	m := mount(t, ds, "pool_bytes=8M")
	if n := len(docBytes(t, m.Path("docs"))); n != 2000 {
		t.Fatalf("%d documents", n)
	}
	st := m.stats()
	if want := int64(8<<20 + 64<<20 + 64*2000); st.Memory.Budget != want {
		t.Errorf("memory budget %d, want %d (8M + 64M + 64 B x 2000 documents)", st.Memory.Budget, want)
	}
	status := readFile(filepath.Join("/proc", strconv.Itoa(m.PID), "status"))
	var anonKiB int64
	for _, line := range strings.Split(status, "\n") {
		if strings.HasPrefix(line, "RssAnon:") {
			anonKiB, _ = strconv.ParseInt(strings.Fields(line)[1], 10, 64)
		}
	}
	if anonKiB == 0 || anonKiB<<10 > st.Memory.Budget || st.Memory.Go <= 0 || st.Memory.Go > st.Memory.Budget {
		t.Errorf("RssAnon %d KiB, Go runtime %d bytes: not within the budget %d", anonKiB, st.Memory.Go, st.Memory.Budget)
	}
	m.Unmount()
}
