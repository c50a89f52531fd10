package daf

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/arrayfs/arrayfs/store/engine"
	"github.com/arrayfs/arrayfs/store/enginetest"
)

var copyFixtureDir = enginetest.CopyFixtureDir

// testDataset is a dataset of daf arrays alone.
type testDataset struct {
	*enginetest.Dataset
	arrays *Arrays
}

func openDataset(t *testing.T, dir string) (*testDataset, *enginetest.Log) {
	t.Helper()
	log := &enginetest.Log{}
	d := &testDataset{}
	d.Dataset, d.arrays = enginetest.Open(t, dir, enginetest.Config{Logf: log.Logf}, NewArrays)
	t.Cleanup(func() { d.Close() })
	return d, log
}

func mustArray(t *testing.T, d *testDataset, rel string) *ArrayFile {
	t.Helper()
	a, err := d.arrays.arrayFile(rel)
	if err != nil {
		t.Fatal(err)
	}
	if a == nil {
		t.Fatalf("%s is not served as an array", rel)
	}
	t.Cleanup(a.Release)
	return a
}

func TestArrayFileServesMapping(t *testing.T) {
	dir := copyFixtureDir(t, "daf/arrays")
	d, _ := openDataset(t, dir)
	for _, rel := range []string{"cell,gene#X.array", "cell#i64.array", "cell#flag.array", "cell,gene#u8.array",
		"cell,gene#sparse.data", "cell,gene#sparse.indices", "cell,gene#sparse.indptr"} {
		a := mustArray(t, d, rel)
		want, _ := os.ReadFile(filepath.Join(dir, rel))
		if a.Size() != int64(len(want)) {
			t.Fatalf("%s: size %d want %d", rel, a.Size(), len(want))
		}
		v := a.View(0, len(want)+100)
		if !bytes.Equal(v.Bytes, want) {
			t.Errorf("%s: view differs from the file", rel)
		}
		v.Release()
	}
	for _, rel := range []string{"cell,gene#X.yaml", "nothing.array"} {
		a, err := d.arrays.arrayFile(rel)
		if err != nil || a != nil {
			t.Errorf("%s classified as array (%v)", rel, err)
		}
	}
}

func TestArrayWritesInPlaceAndRefusesGrowth(t *testing.T) {
	dir := copyFixtureDir(t, "daf/arrays")
	d, _ := openDataset(t, dir)
	a := mustArray(t, d, "cell#i64.array")
	if _, err := a.WriteAt([]byte{1, 2, 3, 4, 5, 6, 7, 8}, 8); err != nil {
		t.Fatal(err)
	}
	if d.Pool.Stats().Units != 1 {
		t.Fatalf("write did not reach the pool: %+v", d.Pool.Stats())
	}
	_, err := a.WriteAt([]byte{9, 9}, a.Size()-1)
	if !errors.Is(err, syscall.EFBIG) || !strings.Contains(err.Error(), "cell#i64.array") {
		t.Fatalf("oversize write: %v, want EFBIG naming the file", err)
	}
	if err := a.CheckTruncate(10); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("truncate: %v, want EINVAL", err)
	}
	if err := a.CheckTruncate(a.Size()); err != nil {
		t.Fatalf("truncate to the same size: %v", err)
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	if d.Pool.Stats().Units != 0 {
		t.Fatal("Sync left units")
	}
	got, _ := os.ReadFile(filepath.Join(dir, "cell#i64.array"))
	if len(got) != 8000 || !bytes.Equal(got[8:16], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("file after write: %d bytes, %v", len(got), got[8:16])
	}
}

func TestArrayReplace(t *testing.T) {
	dir := copyFixtureDir(t, "daf/arrays")
	d, _ := openDataset(t, dir)
	a := mustArray(t, d, "cell#flag.array")
	path := filepath.Join(dir, "cell#flag.array")
	old, _ := os.ReadFile(path)

	short, err := a.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	if !a.Staging() {
		t.Fatal("a stage is open but the array does not say so")
	}
	short.File().Write([]byte{1, 1, 1})
	if _, err := a.Replace(short); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("short replacement: %v, want EINVAL", err)
	}
	if a.Staging() {
		t.Fatal("a consumed stage still counts")
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, old) {
		t.Fatal("refused replacement changed the file")
	}
	v := a.View(0, 1000) // a reader in the middle of the replacement

	full, _ := a.NewStage()
	full.File().Write(bytes.Repeat([]byte{1}, 1000))
	na, err := a.Replace(full)
	if err != nil {
		t.Fatal(err)
	}
	defer na.Release()
	if !bytes.Equal(v.Bytes, old) {
		t.Fatal("a view taken before the replacement changed")
	}
	v.Release()
	// A handle opened before keeps the version it opened (a new inode
	// replaced it); the ArrayFile returned serves the new content.
	ov := a.View(0, 1000)
	if !bytes.Equal(ov.Bytes, old) {
		t.Fatal("the old ArrayFile does not serve the version it opened")
	}
	ov.Release()
	w := na.View(0, 1000)
	defer w.Release()
	if !bytes.Equal(w.Bytes, bytes.Repeat([]byte{1}, 1000)) {
		t.Fatal("the array does not serve the new content")
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, bytes.Repeat([]byte{1}, 1000)) {
		t.Fatal("the backing file is not the new content")
	}
	names, _ := engine.ReadDirSorted(d.Back, "")
	for _, n := range names {
		if engine.IsStageName(n) {
			t.Fatalf("staged file %s left behind", n)
		}
	}
}

func TestArrayRecognisedWhenYamlArrives(t *testing.T) {
	dir := t.TempDir()
	d, _ := openDataset(t, dir)
	os.WriteFile(filepath.Join(dir, "v.array"), make([]byte, 16), 0o644)
	if a, _ := d.arrays.arrayFile("v.array"); a != nil {
		t.Fatal("array without yaml")
	}
	os.WriteFile(filepath.Join(dir, "v.yaml"), []byte("dtype: int32\nshape: [4]\nversion: [1, 0]\n"), 0o644)
	a := mustArray(t, d, "v.array")
	if a.Size() != 16 {
		t.Fatal(a.Size())
	}
	// The yaml changes shape: the old ArrayFile is retired, the item is
	// now inconsistent and plain.
	os.WriteFile(filepath.Join(dir, "v.yaml"), []byte("dtype: int32\nshape: [5]\nversion: [1, 0]\n"), 0o644)
	if a, _ := d.arrays.arrayFile("v.array"); a != nil {
		t.Fatal("size mismatch still served as an array")
	}
}

func TestRenameRefusesWrongSizeOntoArray(t *testing.T) {
	dir := copyFixtureDir(t, "daf/arrays")
	d, _ := openDataset(t, dir)
	os.WriteFile(filepath.Join(dir, "tmp"), []byte("short"), 0o644)
	err := d.Rename("tmp", "cell#flag.array", 0)
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("rename: %v, want EINVAL", err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "cell#flag.array")); st.Size() != 1000 {
		t.Fatal("refused rename replaced the file")
	}
	os.WriteFile(filepath.Join(dir, "tmp"), make([]byte, 1000), 0o644)
	if err := d.Rename("tmp", "cell#flag.array", 0); err != nil {
		t.Fatal(err)
	}
}
