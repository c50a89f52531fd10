package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arrayfs/arrayfs/store/daf"
	"github.com/arrayfs/arrayfs/store/engine"
	"github.com/arrayfs/arrayfs/store/enginetest"
)

// corruptDataset writes one item per kind of corruption beside valid ones.
func corruptDataset(t *testing.T) string {
	dir := enginetest.CopyFixtureDir(t, "daf/arrays")
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
	w(engine.StagePrefix+"x.array.123", "leftover")
	return dir
}

var corruptWant = map[string]string{
	"baddtype.yaml":                    "unknown dtype",
	"badversion.yaml":                  "unsupported format version",
	"mismatch.array":                   "size mismatch",
	"both.yaml":                        "conflict",
	"unreadable.yaml":                  "unreadable yaml",
	engine.StagePrefix + "x.array.123": "interrupted write",
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
	clean, _ := Check(enginetest.FixtureDir(t, "daf/example"), Config{})
	if len(clean) != 0 {
		t.Errorf("the daf example dataset has problems: %v", clean)
	}
}

func TestCorruptItemsServedPlainAndLoggedOnce(t *testing.T) {
	dir := corruptDataset(t)
	log := &enginetest.Log{}
	d, err := Open(dir, Config{Logf: log.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i := 0; i < 3; i++ {
		for _, rel := range []string{"baddtype.array", "badversion.array", "mismatch.array", "both.array", "both.data", "unreadable.array"} {
			item, err := d.Classify(rel)
			if err != nil || item != nil {
				t.Fatalf("%s: %+v %v, want plain", rel, item, err)
			}
		}
	}
	for _, sub := range []string{"baddtype.yaml: unknown dtype", "mismatch.array: size mismatch", "unreadable.yaml: unreadable yaml", "both.yaml: conflict"} {
		if n := log.Count(sub); n != 1 {
			t.Errorf("%q logged %d times, want once", sub, n)
		}
	}
	// Valid items are still served.
	item, err := d.Classify("cell,gene#X.array")
	if _, ok := item.(*daf.ArrayFile); !ok || err != nil {
		t.Fatalf("cell,gene#X.array: %+v %v, want an array", item, err)
	}
	item.Release()
}

func TestDirdbCheck(t *testing.T) {
	root := t.TempDir()
	db := filepath.Join(root, "db")
	os.Mkdir(db, 0o755)
	writeFile := func(t *testing.T, p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(db, "a.json"), `{"a": 1}`)
	writeFile(t, filepath.Join(db, "a.pickle"), "\x80\x04\x95\x09\x00\x00\x00\x00\x00\x00\x00\x8c\x05old-a\x94.") // pickle.dumps('old-a')
	writeFile(t, filepath.Join(db, "torn.pickle"), "\x80\x04\x95half")
	writeFile(t, filepath.Join(db, "torn.json"), `{"x": `)
	os.Mkdir(filepath.Join(db, "sub"), 0o755)
	writeFile(t, filepath.Join(db, "sub", "m.json"), `[1,`)
	problems, err := Check(root, Config{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.Path)
	}
	want := []string{"db/sub/m.json", "db/torn.json", "db/torn.pickle"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("problems %v, want on %v", problems, want)
	}
}
