package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newDirdb makes a dataset with a database db/ holding entry a (data and
// metadata) and opens it.
func newDirdb(t *testing.T, cfg Config) (*Dataset, string) {
	t.Helper()
	root := t.TempDir()
	db := filepath.Join(root, "db")
	if err := os.Mkdir(db, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(db, "a.pickle"), "\x80\x04old-a.")
	writeFile(t, filepath.Join(db, "a.json"), `{"a": 1}`)
	var logs []string
	var mu sync.Mutex
	cfg.Logf = func(f string, args ...any) {
		mu.Lock()
		logs = append(logs, fmt.Sprintf(f, args...))
		mu.Unlock()
	}
	d, err := Open(root, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, db
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func classifyDirdb(t *testing.T, d *Dataset, rel string) *DirdbFile {
	t.Helper()
	cls, err := d.Classify(rel)
	if err != nil {
		t.Fatal(err)
	}
	if cls.Dirdb == nil {
		t.Fatalf("%s: not classified as a dirdb member", rel)
	}
	return cls.Dirdb
}

func snapshotString(t *testing.T, f *DirdbFile) string {
	t.Helper()
	s, err := f.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	buf := make([]byte, s.Size())
	s.ReadAt(buf, 0)
	return string(buf)
}

func TestDirdbRecognition(t *testing.T) {
	d, db := newDirdb(t, Config{})
	if err := os.MkdirAll(filepath.Join(db, "sub", "subsub"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(d.Root(), "plain")
	os.Mkdir(plain, 0o755)
	writeFile(t, filepath.Join(plain, "x.json"), "not json")
	for _, c := range []struct {
		dir, name string
		unlisted  bool
	}{
		{"db", "a.lock", true},
		{"db", "gone.lock", true}, // dirdb leaves lock files of missing entries
		{"db/sub/subsub", "x.lock", true},
		{"db", "a.pickle", false},
		{"db", "a.json", false},
		{"plain", "x.lock", false},
		{"db", ".arrayfs-stage.a.pickle.123", true},
	} {
		if got := d.Hidden(c.dir, c.name) || d.Unlisted(c.dir, c.name); got != c.unlisted {
			t.Errorf("%s/%s: unlisted %v, want %v", c.dir, c.name, got, c.unlisted)
		}
	}
	for _, c := range []struct {
		rel   string
		dirdb bool
	}{
		{"db/a.pickle", true},
		{"db/a.json", true},
		{"db/sub/b.json", true},
		{"plain/x.json", false},
		{"plain/new.pickle", true}, // creating one makes plain a database
		{"db/.pickle", false},
		{"db/.a.pickle.Xy12Ab", false}, // rsync's temp name
	} {
		cls, err := d.Classify(c.rel)
		if err != nil {
			t.Fatal(err)
		}
		if (cls.Dirdb != nil) != c.dirdb {
			t.Errorf("Classify(%s).Dirdb = %v, want dirdb=%v", c.rel, cls.Dirdb, c.dirdb)
		}
		cls.Release()
	}
}

// TestDirdbDirCache checks that a database directory is listed once,
// not at every lookup, once its timestamps are old enough to be trusted,
// and listed again after it changes.
func TestDirdbDirCache(t *testing.T) {
	defer setVar(&racyWindow, 20*time.Millisecond)()
	d, db := newDirdb(t, Config{})
	time.Sleep(40 * time.Millisecond)
	for i := 0; i < 5; i++ {
		if !d.Unlisted("db", "a.lock") {
			t.Fatal("a.lock listed")
		}
	}
	if n := d.DirdbStats().DirListings; n != 1 {
		t.Errorf("%d listings for 5 lookups of an unchanged directory, want 1", n)
	}
	os.Remove(filepath.Join(db, "a.pickle"))
	if d.Unlisted("db", "a.lock") {
		t.Error("a.lock unlisted after the last pickle went: db is no database any more")
	}
}

func setVar[T any](p *T, v T) func() {
	old := *p
	*p = v
	return func() { *p = old }
}

// version is the content a simulated dirdb writer writes: a length, the
// version number, then a pattern of that number, so that any mix of two
// versions or a prefix of one is detected.
func version(k int) []byte {
	n := 3000 + (k%7)*5000
	b := make([]byte, n)
	binary.LittleEndian.PutUint32(b, uint32(n))
	binary.LittleEndian.PutUint32(b[4:], uint32(k))
	for i := 8; i < n; i++ {
		b[i] = byte(k*31 + i)
	}
	return b
}

func checkVersion(b []byte) (int, error) {
	if len(b) < 8 {
		return 0, fmt.Errorf("%d bytes: torn", len(b))
	}
	n := int(binary.LittleEndian.Uint32(b))
	k := int(binary.LittleEndian.Uint32(b[4:]))
	if n != len(b) || !bytes.Equal(b, version(k)) {
		return k, fmt.Errorf("version %d: %d bytes, header says %d, content mixed: torn", k, len(b), n)
	}
	return k, nil
}

// dirdbWriter does what a Python dirdb process does for every write of
// an entry: flock LOCK_EX on NAME.lock, then truncate and write NAME.pickle
// in place, here with a pause in the middle of the write.
func dirdbWriter(t *testing.T, dir, name string, stop <-chan struct{}, writes *atomic.Int64) {
	for k := 1; ; k++ {
		select {
		case <-stop:
			return
		default:
		}
		l, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Error(err)
			return
		}
		unix.Flock(int(l.Fd()), unix.LOCK_EX)
		f, err := os.OpenFile(filepath.Join(dir, name+".pickle"), os.O_WRONLY|os.O_TRUNC|os.O_CREATE, 0o644)
		if err != nil {
			t.Error(err)
			return
		}
		v := version(k)
		f.Write(v[:len(v)/2])
		time.Sleep(300 * time.Microsecond)
		f.Write(v[len(v)/2:])
		f.Close()
		l.Close()
		writes.Add(1)
		time.Sleep(200 * time.Microsecond)
	}
}

// TestDirdbSnapshotsAgainstInPlaceWriter reads an entry while another
// writer rewrites it in place under dirdb's lock: every snapshot is one
// whole version, from memory and from private files alike.
func TestDirdbSnapshotsAgainstInPlaceWriter(t *testing.T) {
	for _, memMax := range []int64{1 << 20, 4096} {
		t.Run(fmt.Sprintf("memMax=%d", memMax), func(t *testing.T) {
			defer setVar(&snapMemMax, memMax)()
			d, db := newDirdb(t, Config{})
			writeFile(t, filepath.Join(db, "e.pickle"), string(version(0)))
			f := classifyDirdb(t, d, "db/e.pickle")
			defer f.Release()
			stop := make(chan struct{})
			var writes atomic.Int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); dirdbWriter(t, db, "e", stop, &writes) }()
			var once sync.Once
			stopWriter := func() { once.Do(func() { close(stop); wg.Wait() }) }
			t.Cleanup(stopWriter)
			seen := map[int]bool{}
			for i := 0; i < 300; i++ {
				s, err := f.Snapshot(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, s.Size())
				s.ReadAt(buf, 0)
				// Reads of a snapshot stay whole while the writer goes on.
				time.Sleep(50 * time.Microsecond)
				again := make([]byte, s.Size())
				s.ReadAt(again, 0)
				s.Release()
				k, err := checkVersion(buf)
				if err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				if !bytes.Equal(buf, again) {
					t.Fatalf("read %d: the snapshot changed under its reader", i)
				}
				seen[k] = true
			}
			stopWriter()
			st := d.DirdbStats()
			t.Logf("%d writes, %d versions seen, stats %+v", writes.Load(), len(seen), st)
			if len(seen) < 3 || writes.Load() < 10 {
				t.Errorf("the writer did not run alongside: %d writes, %d versions seen", writes.Load(), len(seen))
			}
			if memMax == 4096 && st.SnapshotsFile == 0 {
				t.Error("no snapshot went to a private file")
			}
		})
	}
}

// TestDirdbSnapshotReuse: an unchanged entry is copied once; an in-place
// rewrite (same size) is seen at the next open.
func TestDirdbSnapshotReuse(t *testing.T) {
	defer setVar(&racyWindow, 20*time.Millisecond)()
	d, db := newDirdb(t, Config{})
	p := filepath.Join(db, "a.pickle")
	time.Sleep(40 * time.Millisecond)
	f := classifyDirdb(t, d, "db/a.pickle")
	defer f.Release()
	for i := 0; i < 3; i++ {
		if got := snapshotString(t, f); got != "\x80\x04old-a." {
			t.Fatalf("got %q", got)
		}
	}
	if st := d.DirdbStats(); st.SnapshotsMemory != 1 || st.SnapshotsReused != 2 {
		t.Errorf("3 opens of an unchanged entry: %d copies, %d reuses; want 1 and 2", st.SnapshotsMemory, st.SnapshotsReused)
	}
	of, _ := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	of.WriteString("\x80\x04new-a.")
	of.Close()
	if got := snapshotString(t, f); got != "\x80\x04new-a." {
		t.Fatalf("after an in-place rewrite: got %q", got)
	}
}

// TestDirdbLockTimeout: a lock held by another process for too long makes
// the open fail with EBUSY and a message naming the lock file; a snapshot
// of the unchanged entry taken before is served without the lock.
func TestDirdbLockTimeout(t *testing.T) {
	defer setVar(&racyWindow, 20*time.Millisecond)()
	d, db := newDirdb(t, Config{LockTimeout: 150 * time.Millisecond})
	writeFile(t, filepath.Join(db, "b.pickle"), "\x80\x04b.")
	time.Sleep(40 * time.Millisecond)
	a := classifyDirdb(t, d, "db/a.pickle")
	defer a.Release()
	snapshotString(t, a)
	held := holdLock(t, filepath.Join(db, "a.lock"))
	holdLock(t, filepath.Join(db, "b.lock"))
	if got := snapshotString(t, a); got != "\x80\x04old-a." {
		t.Errorf("cached snapshot: got %q", got)
	}
	b := classifyDirdb(t, d, "db/b.pickle")
	defer b.Release()
	start := time.Now()
	_, err := b.Snapshot(context.Background())
	if ErrnoOf(err) != syscall.EBUSY || !strings.Contains(err.Error(), "db/b.lock") {
		t.Fatalf("open of a locked entry: %v (errno %v), want EBUSY naming db/b.lock", err, ErrnoOf(err))
	}
	if el := time.Since(start); el < 150*time.Millisecond || el > 2*time.Second {
		t.Errorf("gave up after %v, timeout is 150ms", el)
	}
	// A write waits for the lock too, and leaves the entry alone.
	w, err := a.NewWriter(context.Background(), false, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(context.Background(), []byte("X"), 2); ErrnoOf(err) != syscall.EBUSY {
		t.Errorf("write at an offset of a locked entry: %v, want EBUSY", err)
	}
	held.Close()
	if _, err := w.WriteAt(context.Background(), []byte("X"), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.Release(context.Background())
	if got := readString(t, filepath.Join(db, "a.pickle")); got != "\x80\x04Xld-a." {
		t.Errorf("after the write: %q", got)
	}
}

func holdLock(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestDirdbLockFileUnlinkedWhileWaiting: a lock file removed (entry
// deleted) while arrayfs waits for it locks nothing; arrayfs must lock
// the file then at the path.
func TestDirdbLockFileUnlinkedWhileWaiting(t *testing.T) {
	d, db := newDirdb(t, Config{})
	p := filepath.Join(db, "a.lock")
	held := holdLock(t, p)
	got := make(chan *entryLock, 1)
	go func() {
		l, err := d.lockEntry(context.Background(), "db/a", "test")
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	time.Sleep(50 * time.Millisecond) // it opened the old file and polls
	os.Remove(p)
	held.Close()
	l := <-got
	defer l.release()
	var st unix.Stat_t
	unix.Fstat(int(l.f.Fd()), &st)
	var pst unix.Stat_t
	if err := unix.Stat(p, &pst); err != nil || st.Nlink != 1 || pst.Ino != st.Ino {
		t.Fatalf("locked inode %d (nlink %d), file at the path: %d (%v)", st.Ino, st.Nlink, pst.Ino, err)
	}
}

// TestDirdbWritePublishes: a write is staged, not visible on disk until
// the last writer closes; the timer and eviction (FlushAll) do not
// publish a version still open for writing; the close does, atomically.
func TestDirdbWritePublishes(t *testing.T) {
	d, db := newDirdb(t, Config{})
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
	if got := snapshotString(t, f); got != "\x80\x04new" {
		t.Errorf("a reader of the mount sees %q, want the pending version", got)
	}
	st, ok, err := d.DirdbStat("db/a.pickle")
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
	if d.Pool().Stats().Units != 0 {
		t.Errorf("pool still holds %d units", d.Pool().Stats().Units)
	}
	assertNoStage(t, db)
	if d.DirdbStats().Commits != 1 {
		t.Errorf("commits = %d, want 1", d.DirdbStats().Commits)
	}
}

func assertNoStage(t *testing.T, dir string) {
	t.Helper()
	names, _ := readDirNames(dir)
	for _, n := range names {
		if IsStageName(n) {
			t.Errorf("staged file left: %s", n)
		}
	}
}

// TestDirdbWriteAfterClosePublishedByPool: a change without an open
// writer (left by a close that could not take the lock) is published by
// the pool's write-back.
func TestDirdbWriteAfterClosePublishedByPool(t *testing.T) {
	d, db := newDirdb(t, Config{LockTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	f := classifyDirdb(t, d, "db/a.pickle")
	defer f.Release()
	w, _ := f.NewWriter(ctx, true, false)
	w.WriteAt(ctx, []byte("\x80\x04later."), 0)
	held := holdLock(t, filepath.Join(db, "a.lock"))
	if _, err := w.Flush(ctx); ErrnoOf(err) != syscall.EBUSY {
		t.Fatalf("close with the lock held elsewhere: %v, want EBUSY", err)
	}
	if got := readString(t, filepath.Join(db, "a.pickle")); got != "\x80\x04old-a." {
		t.Fatalf("published without the lock: %q", got)
	}
	held.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	w.Release(ctx)
	if got := readString(t, filepath.Join(db, "a.pickle")); got != "\x80\x04later." {
		t.Fatalf("after the write-back: %q", got)
	}
}

func TestDirdbJSONRefused(t *testing.T) {
	d, db := newDirdb(t, Config{})
	ctx := context.Background()
	f := classifyDirdb(t, d, "db/a.json")
	defer f.Release()
	w, _ := f.NewWriter(ctx, true, false)
	w.WriteAt(ctx, []byte(`{"a": 2,}`), 0)
	_, err := w.Flush(ctx)
	if ErrnoOf(err) != syscall.EINVAL || !strings.Contains(err.Error(), "db/a.json") {
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
	d, db := newDirdb(t, Config{})
	ctx := context.Background()
	w, st, ok, err := d.DirdbCreate(ctx, "db/n.pickle", syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL, 0o640, -1, -1)
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := os.Lstat(filepath.Join(db, "n.pickle")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("created on disk before its first publication: %v", err)
	}
	if p := d.DirdbPending("db"); p["n.pickle"].Ino != st.Ino {
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
	if _, _, _, err := d.DirdbCreate(ctx, "db/n.pickle", syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL, 0o640, -1, -1); err != syscall.EEXIST {
		t.Errorf("O_EXCL create of an existing entry: %v", err)
	}
}

func TestDirdbUnlinkAndRename(t *testing.T) {
	d, db := newDirdb(t, Config{})
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
	if err := d.Rename("db/.z.json.tmp", "db/z.json", 0); ErrnoOf(err) != syscall.EINVAL {
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
	if err := d.Unlink("db/z.pickle"); err != syscall.ENOENT && ErrnoOf(err) != syscall.ENOENT {
		t.Errorf("second unlink: %v", err)
	}
}

// TestDirdbRenameWithOpenWriter: a handle open on A keeps writing the
// entry once it is B; a handle open on B before B was replaced writes
// nowhere (ESTALE).
func TestDirdbRenameWithOpenWriter(t *testing.T) {
	d, db := newDirdb(t, Config{})
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
	if _, err := wb.WriteAt(ctx, []byte("B"), 2); ErrnoOf(err) != syscall.ESTALE {
		t.Errorf("write through a handle of the replaced b: %v, want ESTALE", err)
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

func TestDirdbCheck(t *testing.T) {
	_, db := newDirdb(t, Config{})
	writeFile(t, filepath.Join(db, "torn.pickle"), "\x80\x04\x95half")
	writeFile(t, filepath.Join(db, "torn.json"), `{"x": `)
	os.Mkdir(filepath.Join(db, "sub"), 0o755)
	writeFile(t, filepath.Join(db, "sub", "m.json"), `[1,`)
	problems, err := Check(filepath.Dir(db), Config{})
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

func TestValidateJSON(t *testing.T) {
	good := []string{`{}`, `[]`, ` {"a": [1, 2.5e-3, -0, true, false, null, "x\u00e9\n"]} `,
		`"caf` + "\u00e9" + `"`, `NaN`, `-Infinity`, `{"a": Infinity}`, `0`, "[\n]\n", `{"k":{"k":{"k":[[]]}}}`}
	bad := []string{``, ` `, `{`, `{"a" 1}`, `{"a": 1,}`, `[1,]`, `{} {}`, `01`, `1.`, `1e`, `-`,
		`nul`, `"\x01"`, `"\q"`, `"\u12"`, "\"\xff\"", "\xef\xbb\xbf{}", `{a: 1}`, `[1 2]`, `tru`, `"unterminated`}
	for _, s := range good {
		if err := validateJSON(strings.NewReader(s)); err != nil {
			t.Errorf("validateJSON(%q) = %v, want ok", s, err)
		}
	}
	for _, s := range bad {
		if err := validateJSON(strings.NewReader(s)); err == nil {
			t.Errorf("validateJSON(%q) accepted", s)
		}
	}
}
