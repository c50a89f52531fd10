package fuse_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckFindsBrokenContent: check looked only at sizes and at a
// pickle's last byte, so it passed a sparse array whose indptr goes
// backwards or whose indices point past the last column (scipy and daf
// then read out of bounds or fail), and a pickle that ends in '.' but is
// not one (a torn write followed by a dot, any text ending in a dot).
// Each is reported with its position; the fixtures written by the
// original code still pass.
func TestCheckFindsBrokenContent(t *testing.T) {
	ds := t.TempDir()
	for dst, src := range map[string]string{"monotonic": "daf/arrays", "columns": "daf/arrays", "db": "dirdb/db"} {
		run(t, "cp", "-r", fixturePath(t, src), filepath.Join(ds, dst))
	}
	run(t, "chmod", "-R", "u+w", ds)
	if out, err := runTimeout(time.Minute, arrayfsBin, "check", ds); err != nil || out != "" {
		t.Fatalf("check of the fixtures: %v\n%s", err, out)
	}

	sparse := "cell,gene#sparse"
	patch := func(rel string, off int, v uint32) {
		p := filepath.Join(ds, rel)
		b := mustRead(t, p)
		binary.LittleEndian.PutUint32(b[off:], v)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	patch("monotonic/"+sparse+".indptr", 4*5, 2) // indptr[5] = 2 < indptr[4] = 13
	patch("columns/"+sparse+".indices", 4*9, 64) // index 9 (row 2) is column 64 of 64
	pickle := mustRead(t, filepath.Join(ds, "db/set-000.pickle"))
	os.WriteFile(filepath.Join(ds, "db/set-000.pickle"), append(pickle[:len(pickle)/2:len(pickle)/2], '.'), 0o644)
	os.WriteFile(filepath.Join(ds, "db/set-001.pickle"), []byte("a note, not a pickle."), 0o644)

	out, err := runTimeout(time.Minute, arrayfsBin, "check", ds)
	if exit, ok := err.(interface{ ExitCode() int }); !ok || exit.ExitCode() != 1 {
		t.Fatalf("check exit: %v\n%s", err, out)
	}
	for _, want := range []string{
		"monotonic/" + sparse + ".indptr: not monotonic: indptr[5] = 2 is less than indptr[4] = 13",
		"columns/" + sparse + ".indices: index 9 (row 2) is column 64, outside [0, 64)",
		"db/set-000.pickle: not a valid pickle",
		"db/set-001.pickle: not a valid pickle",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != 4 {
		t.Errorf("%d problems reported, want 4:\n%s", n, out)
	}
}
