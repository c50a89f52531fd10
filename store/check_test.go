package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var sprintf = fmt.Sprintf

// corruptDataset writes one item per kind of corruption beside valid ones.
func corruptDataset(t *testing.T) string {
	dir := copyFixtureDir(t, "daf/arrays")
	w := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w("baddtype.yaml", "dtype: complex128\nshape: [2]\nversion: [1, 0]\n")
	w("baddtype.array", strings.Repeat("x", 32))
	w("badversion.yaml", "dtype: int8\nshape: [2]\nversion: [3, 0]\n")
	w("badversion.array", "xx")
	w("mismatch.yaml", "dtype: int32\nshape: [10]\nversion: [1, 0]\n")
	w("mismatch.array", "only 12 byte")
	w("both.yaml", "dtype: int8\nshape: [2]\nversion: [1, 0]\n")
	w("both.array", "xx")
	w("both.data", "xx")
	w("unreadable.yaml", "dtype: [int8\n  shape: {{\n")
	w("unreadable.array", "xx")
	w("scalar.yaml", "2022-07-06 16:49:44\n") // a daf scalar: fine
	w("notes.txt", "plain")
	w(StagePrefix+"x.array.123", "leftover")
	return dir
}

var corruptWant = map[string]string{
	"baddtype.yaml":             "unknown dtype",
	"badversion.yaml":           "unsupported format version",
	"mismatch.array":            "size mismatch",
	"both.yaml":                 "conflict",
	"unreadable.yaml":           "unreadable yaml",
	StagePrefix + "x.array.123": "interrupted write",
}

func TestCheckReportsEachCorruptItem(t *testing.T) {
	dir := corruptDataset(t)
	problems, err := Check(dir, Config{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range problems {
		got[p.Path] += p.Reason
	}
	for path, reason := range corruptWant {
		if !strings.Contains(got[path], reason) {
			t.Errorf("%s: reported %q, want %q", path, got[path], reason)
		}
		delete(got, path)
	}
	for path, reason := range got {
		t.Errorf("unexpected problem %s: %s", path, reason)
	}
	clean, _ := Check(fixtureDir(t, "daf/example"), Config{})
	if len(clean) != 0 {
		t.Errorf("the daf example dataset has problems: %v", clean)
	}
}

func TestCorruptItemsServedPlainAndLoggedOnce(t *testing.T) {
	dir := corruptDataset(t)
	d, log := openDataset(t, dir)
	for i := 0; i < 3; i++ {
		for _, rel := range []string{"baddtype.array", "badversion.array", "mismatch.array", "both.array", "both.data", "unreadable.array"} {
			cls, err := d.Classify(rel)
			if err != nil || cls.Array != nil {
				t.Fatalf("%s: %+v %v, want plain", rel, cls, err)
			}
		}
	}
	for _, sub := range []string{"baddtype.yaml: unknown dtype", "mismatch.array: size mismatch", "unreadable.yaml: unreadable yaml", "both.yaml: conflict"} {
		if n := log.count(sub); n != 1 {
			t.Errorf("%q logged %d times, want once", sub, n)
		}
	}
	mustArray(t, d, "cell,gene#X.array") // valid items still served
}
