package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestMappingViewsSurviveGrowth(t *testing.T) {
	f, m := mappedFile(t, []byte("hello"), true)
	v := m.View(0, 100)
	if string(v.Bytes) != "hello" {
		t.Fatalf("view = %q, clipped to the file size want hello", v.Bytes)
	}
	// Grow far past the headroom: the mapping is replaced, the old view
	// stays readable until released.
	big := bytes.Repeat([]byte("x"), 4<<20)
	if _, err := f.WriteAt(big, 5); err != nil {
		t.Fatal(err)
	}
	if err := m.Resize(5 + int64(len(big))); err != nil {
		t.Fatal(err)
	}
	if string(v.Bytes) != "hello" {
		t.Fatal("old view changed after remap")
	}
	v.Release()
	w := m.View(5+int64(len(big))-3, 10)
	defer w.Release()
	if string(w.Bytes) != "xxx" {
		t.Fatalf("tail view = %q", w.Bytes)
	}
	if m.Size() != 5+int64(len(big)) {
		t.Fatalf("size %d", m.Size())
	}
}

func TestMappingGrowthWithinHeadroomSeesAppends(t *testing.T) {
	f, m := mappedFile(t, nil, true)
	if v := m.View(0, 10); v.Bytes != nil {
		t.Fatal("view of an empty file is not empty")
	}
	f.WriteAt([]byte("abc"), 0)
	m.Resize(3)
	buf := make([]byte, 10)
	n, err := m.ReadAt(buf, 0)
	if err != nil || string(buf[:n]) != "abc" {
		t.Fatalf("ReadAt = %q, %v", buf[:n], err)
	}
}

func TestMappingReadAtFaultIsAnError(t *testing.T) {
	f, m := mappedFile(t, bytes.Repeat([]byte("y"), 3*4096), false)
	// Truncated behind the mapping's back: its pages are gone.
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadAt(make([]byte, 10), 8192); err == nil {
		t.Fatal("reading a vanished page did not fail")
	}
}

// TestMappingScanOfTruncatedFile: Scan reads the mapped bytes in place,
// and a page that vanished under the mapping (the file truncated behind
// its back) is an error, not a SIGBUS; ReadAt says the same.
func TestMappingScanOfTruncatedFile(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 16 pages
	f, m := mappedFile(t, data, false)
	var got []byte
	if err := m.Scan(0, len(data), func(b []byte) { got = append(got, b...) }); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("scan: %d bytes, %v; want the file's %d", len(got), err, len(data))
	}
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	sum := 0
	err := m.Scan(0, len(data), func(b []byte) {
		for _, c := range b {
			sum += int(c)
		}
	})
	if err == nil {
		t.Fatalf("a scan past the truncated end succeeded (sum %d)", sum)
	}
	if _, err := m.ReadAt(make([]byte, len(data)), 0); err == nil {
		t.Fatalf("a ReadAt past the truncated end succeeded")
	}
	// A panic of fn's own is fn's, not a fault.
	defer func() {
		if r := recover(); r != "mine" {
			t.Fatalf("recovered %v, want fn's own panic", r)
		}
	}()
	m.Scan(0, 10, func(b []byte) { panic("mine") })
}

// mappedFile is a new file holding data, open for writing (the test's
// side, which may change it behind the mapping's back), and its mapping.
func mappedFile(t *testing.T, data []byte, headroom bool) (*os.File, *Mapping) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m, err := OpenMapping(f, headroom)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return f, m
}
