package fuse_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestDocStatDuringOverwritesNoDeadlock: one process overwrites
// documents (open O_RDWR, pwrite, close) while another stats them. Both
// used to hang within seconds, in D state, with the mount dead: Getattr
// took the document node's lock and then its writer's, the writer's
// close the two in the other order. The mix runs for 30 seconds; a
// watchdog fails the test (and aborts the connection) if either side
// stops making progress.
func TestDocStatDuringOverwritesNoDeadlock(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	const n = 8
	var docs []storeDoc
	for i := 0; i < n; i++ {
		docs = append(docs, storeDoc{fmt.Sprintf("d%d", i), pbDoc(fmt.Sprintf("d%d", i), fmt.Sprintf("version %06d", 0))})
	}
	writeDocStore(t, filepath.Join(ds, "docs"), 36, docs)
	m := mount(t, ds)
	dir := m.Path("docs")

	var writes, stats atomic.Int64
	var failed atomic.Value
	w := newWorkers()
	w.loop(func(v int) bool { // the writer: same-length versions, so each close commits
		name := fmt.Sprintf("d%d", v%n)
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
		if err == nil {
			_, err = f.WriteAt(pbDoc(name, fmt.Sprintf("version %06d", v%1000000)), 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			failed.Store(fmt.Sprintf("overwrite of %s: %v", name, err))
			return false
		}
		writes.Add(1)
		return true
	})
	w.loop(func(i int) bool { // the stat-er
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, fmt.Sprintf("d%d", i%n)), &st); err != nil {
			failed.Store(fmt.Sprintf("stat: %v", err))
			return false
		}
		stats.Add(1)
		return true
	})

	deadline := time.Now().Add(30 * time.Second)
	lastW, lastS, lastProgress := int64(-1), int64(-1), time.Now()
	for time.Now().Before(deadline) && failed.Load() == nil {
		time.Sleep(250 * time.Millisecond)
		nw, ns := writes.Load(), stats.Load()
		if nw != lastW && ns != lastS {
			lastW, lastS, lastProgress = nw, ns, time.Now()
		} else if time.Since(lastProgress) > 10*time.Second {
			m.Abort()
			w.halt()
			t.Fatalf("no progress for 10s (%d overwrites, %d stats): deadlocked; connection aborted", nw, ns)
		}
	}
	w.halt()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}
	if writes.Load() < 100 || stats.Load() < 100 {
		t.Fatalf("too little done to mean anything: %d overwrites, %d stats", writes.Load(), stats.Load())
	}
	t.Logf("30s: %d overwrites, %d stats", writes.Load(), stats.Load())
	m.Unmount()
	got := readDocStore(t, filepath.Join(ds, "docs"), 36)
	if len(got.Docs) != n || !got.TailOK {
		t.Errorf("after the mix: %d documents, tail ok %v", len(got.Docs), got.TailOK)
	}
}
