package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestMappingViewsSurviveGrowth(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := OpenMapping(f, true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
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
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, nil, 0o644)
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer f.Close()
	m, err := OpenMapping(f, true)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
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
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, bytes.Repeat([]byte("y"), 3*4096), 0o644)
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	defer f.Close()
	m, err := OpenMapping(f, false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// Truncated behind the mapping's back: its pages are gone.
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadAt(make([]byte, 10), 8192); err == nil {
		t.Fatal("reading a vanished page did not fail")
	}
}
