package fuse_test

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSmokeMirror mounts the daf fixture and reads every file back.
func TestSmokeMirror(t *testing.T) {
	ds := fixture(t, "daf/arrays")
	m := mount(t, ds)
	entries, err := os.ReadDir(ds)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("empty fixture")
	}
	for _, e := range entries {
		sameFile(t, filepath.Join(ds, e.Name()), m.Path(e.Name()))
	}
	m.Unmount()
}
