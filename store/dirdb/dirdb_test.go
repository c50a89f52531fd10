package dirdb

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"
	"github.com/arrayfs/arrayfs/store/enginetest"

	"golang.org/x/sys/unix"
)

// testDataset is a dataset of dirdb databases alone.
type testDataset struct {
	*enginetest.Dataset
	db *Databases
}

// newDirdb makes a dataset with a database db/ holding entry a (data and
// metadata) and opens it.
func newDirdb(t *testing.T, cfg enginetest.Config) (*testDataset, string) {
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
	d := &testDataset{}
	d.Dataset, d.db = enginetest.Open(t, root, cfg, NewDatabases)
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

func classifyDirdb(t *testing.T, d *testDataset, rel string) *File {
	t.Helper()
	f, ok := d.db.dirdbFile(rel)
	if !ok {
		t.Fatalf("%s: not classified as a dirdb member", rel)
	}
	return f
}

func snapshotString(t *testing.T, f *File) string {
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
	d, db := newDirdb(t, enginetest.Config{})
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
		f, err := d.Classify(c.rel)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := f.(*File); ok != c.dirdb {
			t.Errorf("Classify(%s) = %v, want dirdb=%v", c.rel, f, c.dirdb)
		}
		if f != nil {
			f.Release()
		}
	}
}

// TestDirdbDirCache checks that a database directory is listed once,
// not at every lookup, once its timestamps are old enough to be trusted,
// and listed again after it changes.
func TestDirdbDirCache(t *testing.T) {
	defer setVar(&racyWindow, 20*time.Millisecond)()
	d, db := newDirdb(t, enginetest.Config{})
	time.Sleep(40 * time.Millisecond)
	for i := 0; i < 5; i++ {
		if !d.Unlisted("db", "a.lock") {
			t.Fatal("a.lock listed")
		}
	}
	if n := d.db.Stats().DirListings; n != 1 {
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
			d, db := newDirdb(t, enginetest.Config{})
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
			st := d.db.Stats()
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
	d, db := newDirdb(t, enginetest.Config{})
	p := filepath.Join(db, "a.pickle")
	time.Sleep(40 * time.Millisecond)
	f := classifyDirdb(t, d, "db/a.pickle")
	defer f.Release()
	for i := 0; i < 3; i++ {
		if got := snapshotString(t, f); got != "\x80\x04old-a." {
			t.Fatalf("got %q", got)
		}
	}
	if st := d.db.Stats(); st.SnapshotsMemory != 1 || st.SnapshotsReused != 2 {
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
	d, db := newDirdb(t, enginetest.Config{LockTimeout: 150 * time.Millisecond})
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
	// While an open waits for the lock, stat of the entry does not.
	go func() {
		time.Sleep(30 * time.Millisecond)
		start := time.Now()
		if _, _, ok, err := d.db.Stat("db/b.pickle"); !ok || err != nil || time.Since(start) > 50*time.Millisecond {
			t.Errorf("stat while an open waits for the lock: %v %v after %v", ok, err, time.Since(start))
		}
	}()
	start := time.Now()
	_, err := b.Snapshot(context.Background())
	if engine.ErrnoOf(err) != syscall.EBUSY || !strings.Contains(err.Error(), "db/b.lock") {
		t.Fatalf("open of a locked entry: %v (errno %v), want EBUSY naming db/b.lock", err, engine.ErrnoOf(err))
	}
	if el := time.Since(start); el < 150*time.Millisecond || el > 2*time.Second {
		t.Errorf("gave up after %v, timeout is 150ms", el)
	}
	// A write waits for the lock too, and leaves the entry alone.
	w, err := a.NewWriter(context.Background(), false, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(context.Background(), []byte("X"), 2); engine.ErrnoOf(err) != syscall.EBUSY {
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
	d, db := newDirdb(t, enginetest.Config{})
	p := filepath.Join(db, "a.lock")
	held := holdLock(t, p)
	got := make(chan *entryLock, 1)
	go func() {
		l, err := d.db.lockEntry(context.Background(), "db/a", "test")
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
