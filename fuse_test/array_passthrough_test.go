package fuse_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestArrayPassthroughOnReadWriteMount: with array_passthrough, a reader
// of an array on a read-write mount is passed through to its data file
// (the daemon serves no READ of it) while no writer has it open. A writer
// that opens meanwhile waits for the readers: it is refused with ETXTBSY
// after a second if they stay open (the file unchanged, the log saying
// why), and opens once they close, also right after a close, whose
// RELEASE reaches the daemon later. While a writer is open, readers go
// through the daemon and see its writes at once; after it is closed, new
// readers pass through again and read what it wrote, as numpy does.
func TestArrayPassthroughOnReadWriteMount(t *testing.T) {
	// Passthrough needs CAP_SYS_ADMIN in the daemon; elsewhere readers
	// are served by the daemon and writers never wait.
	root := os.Geteuid() == 0
	ds := fixture(t, "daf/arrays")
	const name = "cell,gene#X.array"
	want := mustRead(t, ds+"/"+name)
	m := mount(t, ds, "rw,array_passthrough")
	p := m.Path(name)
	readAt := func(f *os.File, n int) []byte {
		t.Helper()
		b := make([]byte, n)
		if _, err := f.ReadAt(b, 0); err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		return b
	}

	r, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAt(r, len(want)); !bytes.Equal(got, want) {
		t.Fatal("a reader passed through reads other bytes than the backing file's")
	}
	if reads := m.stats().Reads.Array; root && reads != 0 {
		t.Fatalf("the daemon served %d READs of an array no writer has open", reads)
	}

	// A writer while the reader stays open.
	start := time.Now()
	w, err := os.OpenFile(p, os.O_RDWR, 0)
	if root {
		if !errors.Is(err, syscall.ETXTBSY) || time.Since(start) < 900*time.Millisecond {
			t.Fatalf("writer open while a reader is passed through: %v after %v, want ETXTBSY after a second", err, time.Since(start))
		}
		if log := readFile(m.Log); !strings.Contains(log, name) || !strings.Contains(log, "array_passthrough") {
			t.Fatalf("the refusal is not logged with the path and the reason:\n%s", log)
		}
	} else {
		if err != nil {
			t.Fatalf("writer open without passthrough: %v", err)
		}
		w.Close()
	}

	// A writer that opens while the reader closes.
	opened := make(chan error, 1)
	go func() {
		w, err := os.OpenFile(p, os.O_RDWR, 0)
		if err == nil {
			w.Close()
		}
		opened <- err
	}()
	time.Sleep(200 * time.Millisecond)
	r.Close()
	if err := <-opened; err != nil {
		t.Fatalf("writer waiting for a reader that closed: %v", err)
	}

	// A writer right after a reader's close, many times over.
	for i := 0; i < 20; i++ {
		r, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		readAt(r, 4096)
		r.Close()
		w, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatalf("writer open right after a reader's close (round %d): %v", i, err)
		}
		w.Close()
	}

	// Readers while a writer is open see its writes.
	w, err = os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	changed := []byte{0, 0, 0x28, 0x42, 0, 0, 0x2a, 0x42} // 42.0, 42.5 as <f4
	if _, err := w.WriteAt(changed, 0); err != nil {
		t.Fatal(err)
	}
	before := m.stats().Reads.Array
	r, err = os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAt(r, 8); !bytes.Equal(got, changed) {
		t.Fatalf("a reader while a writer is open reads %x, want %x", got, changed)
	}
	if reads := m.stats().Reads.Array; reads == before {
		t.Fatal("a reader while a writer is open was not served by the daemon")
	}
	r.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Once the writer's RELEASE has arrived, readers pass through again
	// and read what it wrote.
	deadline := time.Now().Add(5 * time.Second)
	for {
		before := m.stats().Reads.Array
		r, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		got := readAt(r, len(want))
		r.Close()
		if !bytes.Equal(got[:8], changed) || !bytes.Equal(got[8:], want[8:]) {
			t.Fatal("a reader after the writer's close does not read what it wrote")
		}
		if !root || m.stats().Reads.Array == before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("readers are not passed through again after the writer closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := pyRun(t, `
import numpy as np, sys
a = np.memmap(sys.argv[1], dtype='<f4', mode='r', shape=(1000, 64))
print(a[0, 0], a[0, 1])
`, p)
	if strings.TrimSpace(out) != "42.0 42.5" {
		t.Fatalf("numpy reads %q through the mount, want 42.0 42.5", out)
	}
	m.Unmount()
	if got := mustRead(t, ds+"/"+name); !bytes.Equal(got[:8], changed) || !bytes.Equal(got[8:], want[8:]) {
		t.Fatal("the backing file does not hold what the writer wrote")
	}
}
