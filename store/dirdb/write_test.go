package dirdb

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"
	"github.com/arrayfs/arrayfs/store/enginetest"
)

// TestDirdbWritePublishes: a write is staged, not visible on disk until
// the last writer closes; the timer and eviction (FlushAll) do not
// publish a version still open for writing; the close does, atomically.
func TestDirdbWritePublishes(t *testing.T) {
	d, db := newDirdb(t, enginetest.Config{})
	ctx := context.Background()
	f := classifyDirdb(t, d, "db/a.pickle")
	defer f.Release()
	w, err := f.NewWriter(ctx, true, false)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteAt(ctx, []byte("\x80\x04new"), 0)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, filepath.Join(db, "a.pickle")); got != "\x80\x04old-a." {
		t.Fatalf("published while still being written: %q", got)
	}
	// A version still being written is nobody else's to read: a reader
	// opening now sees the old content whole, never a prefix of the new.
	if got := snapshotString(t, f); got != "\x80\x04old-a." {
		t.Errorf("a reader of the mount sees %q while the new version is being written, want the old one", got)
	}
	st, _, ok, err := d.db.Stat("db/a.pickle")
	if !ok || err != nil || st.Size != 5 {
		t.Errorf("DirdbStat: size %d ok %v err %v, want the pending size 5", st.Size, ok, err)
	}
	w.WriteAt(ctx, []byte("-a."), 5)
	published, err := w.Flush(ctx)
	if err != nil || !published {
		t.Fatalf("close: published %v, %v", published, err)
	}
	w.Release(ctx)
	if got := readString(t, filepath.Join(db, "a.pickle")); got != "\x80\x04new-a." {
		t.Fatalf("after close: %q", got)
	}
	if got := snapshotString(t, f); got != "\x80\x04new-a." {
		t.Errorf("a reader after the close sees %q, want the new version", got)
	}
	if d.Pool.Stats().Units != 0 {
		t.Errorf("pool still holds %d units", d.Pool.Stats().Units)
	}
	assertNoStage(t, db)
	if d.db.Stats().Commits != 1 {
		t.Errorf("commits = %d, want 1", d.db.Stats().Commits)
	}
}

func assertNoStage(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if engine.IsStageName(e.Name()) {
			t.Errorf("staged file left: %s", e.Name())
		}
	}
}

// TestDirdbWriteAfterClosePublishedByPool: a change without an open
// writer (left by a close that could not take the lock) is published by
// the pool's write-back.
func TestDirdbWriteAfterClosePublishedByPool(t *testing.T) {
	d, db := newDirdb(t, enginetest.Config{LockTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	f := classifyDirdb(t, d, "db/a.pickle")
	defer f.Release()
	w, _ := f.NewWriter(ctx, true, false)
	w.WriteAt(ctx, []byte("\x80\x04later."), 0)
	// A write-back while the handle is open does not publish; the pool
	// lets go of the unit.
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	held := holdLock(t, filepath.Join(db, "a.lock"))
	if _, err := w.Flush(ctx); engine.ErrnoOf(err) != syscall.EBUSY {
		t.Fatalf("close with the lock held elsewhere: %v, want EBUSY", err)
	}
	if got := readString(t, filepath.Join(db, "a.pickle")); got != "\x80\x04old-a." {
		t.Fatalf("published without the lock: %q", got)
	}
	held.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, filepath.Join(db, "a.pickle")); got != "\x80\x04later." {
		t.Fatalf("after the write-back: %q", got)
	}
	w.Release(ctx)
}

func TestDirdbJSONRefused(t *testing.T) {
	d, db := newDirdb(t, enginetest.Config{})
	ctx := context.Background()
	f := classifyDirdb(t, d, "db/a.json")
	defer f.Release()
	w, _ := f.NewWriter(ctx, true, false)
	w.WriteAt(ctx, []byte(`{"a": 2,}`), 0)
	_, err := w.Flush(ctx)
	if engine.ErrnoOf(err) != syscall.EINVAL || !strings.Contains(err.Error(), "db/a.json") {
		t.Fatalf("close of invalid JSON: %v, want EINVAL naming db/a.json", err)
	}
	w.Release(ctx)
	if got := readString(t, filepath.Join(db, "a.json")); got != `{"a": 1}` {
		t.Errorf("old metadata not kept: %q", got)
	}
	assertNoStage(t, db)
	w, _ = f.NewWriter(ctx, true, false)
	w.WriteAt(ctx, []byte(`{"a": NaN, "b": [1, -Infinity]}`), 0)
	if _, err := w.Flush(ctx); err != nil {
		t.Fatalf("Python's json.dump of NaN refused: %v", err)
	}
	w.Release(ctx)
}

func TestDirdbCreate(t *testing.T) {
	d, db := newDirdb(t, enginetest.Config{})
	ctx := context.Background()
	w, st, ok, err := d.db.Create(ctx, "db/n.pickle", syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL, 0o640, -1, -1)
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := os.Lstat(filepath.Join(db, "n.pickle")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("created on disk before its first publication: %v", err)
	}
	if p := d.db.Pending("db"); p["n.pickle"].Ino != st.Ino {
		t.Errorf("pending listing %v lacks n.pickle", p)
	}
	w.WriteAt(ctx, []byte("\x80\x04n."), 0)
	if _, err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	w.Release(ctx)
	fi, err := os.Stat(filepath.Join(db, "n.pickle"))
	if err != nil || fi.Mode().Perm() != 0o640 || fi.Sys().(*syscall.Stat_t).Ino != st.Ino {
		t.Errorf("created file: %v %v, want mode 0640 and the inode shown at create", fi, err)
	}
	if _, _, _, err := d.db.Create(ctx, "db/n.pickle", syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL, 0o640, -1, -1); err != syscall.EEXIST {
		t.Errorf("O_EXCL create of an existing entry: %v", err)
	}
}

func TestDirdbUnlinkAndRename(t *testing.T) {
	d, db := newDirdb(t, enginetest.Config{})
	writeFile(t, filepath.Join(db, "b.pickle"), "\x80\x04b.")
	writeFile(t, filepath.Join(db, "b.json"), `{"b": 1}`)
	writeFile(t, filepath.Join(db, "c.pickle"), "\x80\x04c.")
	exists := func(name string) bool { return fileExists(filepath.Join(db, name)) }

	// An entry renamed onto another takes its metadata along, and the
	// target's old metadata goes.
	if err := d.Rename("db/a.pickle", "db/z.pickle", 0); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, filepath.Join(db, "z.json")); got != `{"a": 1}` || exists("a.pickle") || exists("a.json") || exists("a.lock") {
		t.Errorf("rename a → z: z.json %q, a.pickle %v a.json %v a.lock %v", got, exists("a.pickle"), exists("a.json"), exists("a.lock"))
	}
	if err := d.Rename("db/c.pickle", "db/b.pickle", 0); err != nil {
		t.Fatal(err)
	}
	if exists("b.json") || readString(t, filepath.Join(db, "b.pickle")) != "\x80\x04c." {
		t.Errorf("rename c → b: b.json left (%v) or wrong data", exists("b.json"))
	}
	// rsync's temp file renamed onto an entry.
	writeFile(t, filepath.Join(db, ".b.pickle.Ab12Cd"), "\x80\x04rsync.")
	if err := d.Rename("db/.b.pickle.Ab12Cd", "db/b.pickle", 0); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, filepath.Join(db, "b.pickle")); got != "\x80\x04rsync." {
		t.Errorf("after rsync's rename: %q", got)
	}
	// A temp file that is not JSON cannot become metadata.
	writeFile(t, filepath.Join(db, ".z.json.tmp"), "{bad")
	if err := d.Rename("db/.z.json.tmp", "db/z.json", 0); engine.ErrnoOf(err) != syscall.EINVAL {
		t.Errorf("rename of invalid JSON onto z.json: %v, want EINVAL", err)
	}
	if got := readString(t, filepath.Join(db, "z.json")); got != `{"a": 1}` {
		t.Errorf("z.json changed: %q", got)
	}
	// Unlinking the data deletes the entry.
	if err := d.Unlink("db/z.pickle"); err != nil {
		t.Fatal(err)
	}
	if exists("z.pickle") || exists("z.json") || exists("z.lock") {
		t.Errorf("unlink z.pickle left z.pickle %v z.json %v z.lock %v", exists("z.pickle"), exists("z.json"), exists("z.lock"))
	}
	if err := d.Unlink("db/z.pickle"); err != syscall.ENOENT && engine.ErrnoOf(err) != syscall.ENOENT {
		t.Errorf("second unlink: %v", err)
	}
}

// TestDirdbRenameWithOpenWriter: a handle open on A keeps writing the
// entry once it is B; a handle open on B before B was replaced keeps the
// old B, as an unlinked file (orphan.go): it reads and writes that, and
// publishes nothing.
func TestDirdbRenameWithOpenWriter(t *testing.T) {
	d, db := newDirdb(t, enginetest.Config{})
	ctx := context.Background()
	writeFile(t, filepath.Join(db, "b.pickle"), "\x80\x04b.")
	fa := classifyDirdb(t, d, "db/a.pickle")
	defer fa.Release()
	fb := classifyDirdb(t, d, "db/b.pickle")
	defer fb.Release()
	wa, _ := fa.NewWriter(ctx, false, false)
	wb, _ := fb.NewWriter(ctx, false, false)
	if err := d.Rename("db/a.pickle", "db/b.pickle", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := wa.WriteAt(ctx, []byte("A"), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := wb.WriteAt(ctx, []byte("B"), 2); err != nil {
		t.Errorf("write through a handle of the replaced b: %v", err)
	}
	buf := make([]byte, 16)
	if n, err := wb.ReadAt(ctx, buf, 0); err != nil || string(buf[:n]) != "\x80\x04B." {
		t.Errorf("the replaced b's handle reads %q, %v; want the old b with its write", buf[:n], err)
	}
	if st, err := wb.Stat(); err != nil || st.Nlink != 0 {
		t.Errorf("fstat of the replaced b's handle: nlink %d, %v; want 0", st.Nlink, err)
	}
	wa.Flush(ctx)
	wa.Release(ctx)
	wb.Flush(ctx)
	wb.Release(ctx)
	if got := readString(t, filepath.Join(db, "b.pickle")); got != "\x80\x04Ald-a." {
		t.Errorf("b.pickle = %q", got)
	}
	if fileExists(filepath.Join(db, "a.pickle")) {
		t.Error("a.pickle came back")
	}
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
