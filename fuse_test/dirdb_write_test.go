package fuse_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dirdbPyStream rewrites three entries through the mount, round robin,
// until it fails (the daemon is killed): each value is an int64 arange
// whose first element says which write it is (i * 1e6), written in 32
// KiB pieces so that a write spans many FUSE requests. It logs "start
// NAME i" before opening and "done NAME i" once close returned.
const dirdbPyStream = `
import os, pickle, sys
import numpy as np
mnt, log = sys.argv[1], sys.argv[2]
names = ['set-000', 'set-003', 'set-007']
with open(log, 'a', buffering=1) as lg:
    i = 0
    try:
        while True:
            i += 1
            name = names[i % len(names)]
            data = pickle.dumps(np.arange(20000 + 5000 * (i % 4), dtype=np.int64) + i * 1000000, protocol=4)
            lg.write('start %s %d\n' % (name, i))
            with open(os.path.join(mnt, name + '.pickle'), 'wb', buffering=0) as f:
                for off in range(0, len(data), 32768):
                    f.write(data[off:off + 32768])
            lg.write('done %s %d\n' % (name, i))
    except OSError as e:
        lg.write('error %r\n' % e)
`

// dirdbPyState reads every entry of a database the way dirdb does (its
// lock, then the pickle) and prints one line per entry: name, sha256 of
// the data file, and the write number of a streamed value (-1 for any
// other value), or the error that stopped it from unpickling.
const dirdbPyState = `
import fcntl, hashlib, os, pickle, sys
import numpy as np
d = sys.argv[1]
for n in sorted(os.listdir(d)):
    if not n.endswith('.pickle') or n.startswith('.'):
        continue
    name = n[:-len('.pickle')]
    fd = os.open(os.path.join(d, name + '.lock'), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with open(os.path.join(d, n), 'rb') as f:
        data = f.read()
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    try:
        v = pickle.loads(data)
        i = -1
        if isinstance(v, np.ndarray) and v.dtype == np.int64 and v.ndim == 1:
            i = int(v[0] // 1000000)
            assert np.array_equal(v, np.arange(len(v), dtype=np.int64) + i * 1000000), 'mixed'
        print(name, hashlib.sha256(data).hexdigest(), i)
    except Exception as e:
        print(name, hashlib.sha256(data).hexdigest(), 'ERROR', repr(e).replace(' ', '_'))
`

// TestDirdbKill9DuringRewrites kills arrayfs with SIGKILL in the middle
// of a stream of entry rewrites made through the mount (while a write
// is staged), then checks the backing files the way dirdb reads them and
// through a new mount: every entry unpickles and is either its last
// acknowledged value or the one being written, never a torn file; the
// staged file the crash left is neither shown nor kept.
func TestDirdbKill9DuringRewrites(t *testing.T) {
	ds := fixture(t, "dirdb/db")
	want := dirdbExpected(t)
	// A small pool and a fast timer: eviction and periodic write-back
	// run all along the stream, and must not publish a version still
	// being written.
	m := mount(t, ds, "pool_bytes=64K", "writeback=20ms")
	log := filepath.Join(t.TempDir(), "stream.log")
	writer := exec.Command(python, "-c", dirdbPyStream, m.Dir, log)
	var wout strings.Builder
	writer.Stdout, writer.Stderr = &wout, &wout
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { writer.Wait(); close(exited) }()
	defer func() {
		writer.Process.Kill()
		<-exited
	}()
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(readFile(log), "done ") < 9 {
		if time.Now().After(deadline) {
			t.Fatalf("the stream of writes did not get going:\n%s\n%s", readFile(log), wout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// staged returns the size of the largest staged file (-1: none).
	staged := func() int64 {
		size := int64(-1)
		names, _ := os.ReadDir(ds)
		for _, e := range names {
			if strings.HasPrefix(e.Name(), ".arrayfs-stage.") {
				if st, err := os.Stat(filepath.Join(ds, e.Name())); err == nil {
					size = max(size, st.Size())
				}
			}
		}
		return size
	}
	// Kill in the middle of a write: more than 100 KB of a new value
	// (160 to 260 KB) written, past where a small pool evicts.
	caught := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && !caught; {
		caught = staged() > 100_000
	}
	m.Kill9()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the writer did not stop after the daemon died")
	}
	if !caught {
		t.Errorf("no write was half done at the time of the kill; the test did not test")
	}

	// What each entry may hold: its last acknowledged value, or the one
	// in flight (published, but the daemon died before close returned).
	allowed := map[string][]int{}
	for _, line := range strings.Split(readFile(log), "\n") {
		var what, name string
		var i int
		if n, _ := fmt.Sscan(line, &what, &name, &i); n != 3 {
			continue
		}
		switch what {
		case "start":
			allowed[name] = append(allowed[name][:min(1, len(allowed[name]))], i)
		case "done":
			allowed[name] = []int{i}
		}
	}
	check := func(where, out string) {
		t.Helper()
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 3 || f[2] == "ERROR" {
				t.Errorf("%s: entry does not unpickle: %s", where, line)
				continue
			}
			name, sum := f[0], f[1]
			var i int
			fmt.Sscan(f[2], &i)
			ok, okSet := allowed[name]
			switch {
			case !okSet:
				if sum != want[name+".pickle"] {
					t.Errorf("%s: %s changed, nothing wrote it", where, name)
				}
			case !containsInt(ok, i):
				t.Errorf("%s: %s holds write %d, want one of %v (last done, in flight)", where, name, i, ok)
			}
		}
	}
	after := pyRun(t, dirdbPyState, ds)
	check("backing files after the kill", after)
	t.Logf("after the kill (allowed %v):\n%s", allowed, after)

	m2 := mount(t, ds)
	entries, err := os.ReadDir(m2.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".arrayfs-stage.") || strings.HasSuffix(e.Name(), ".lock") {
			t.Errorf("listed after the remount: %s", e.Name())
		}
	}
	if staged() >= 0 {
		t.Error("the staged file left by the kill is still there after a listing of the new mount")
	}
	through := pyRun(t, dirdbPyState, m2.Dir)
	if through != after {
		t.Errorf("through the new mount:\n%s\nbacking files:\n%s", through, after)
	}
	m2.Unmount()
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// dirdbPySources writes the files the next test copies into the mount.
const dirdbPySources = `
import json, os, pickle, sys
src = sys.argv[1]
os.makedirs(os.path.join(src, 'rs'))
def dump(v, *p):
    with open(os.path.join(src, *p), 'wb') as f:
        pickle.dump(v, f, protocol=4)
dump({'over': 4}, 'over.pickle')
dump({'cp': 'new'}, 'cp-new.pickle')
dump([1, 2, 3], 'rs', 'rs-new.pickle')
dump('rsync-5', 'rs', 'set-005.pickle')
with open(os.path.join(src, 'rs', 'set-005.json'), 'w') as f:
    json.dump({'rs': 5}, f)
dump('first', 'first.pickle')
`

// dirdbPyChanges changes entries through the mount with Python: a whole
// overwrite (O_TRUNC), new metadata, and a write at an offset inside a
// numpy array's data.
const dirdbPyChanges = `
import json, os, pickle, sys
import numpy as np
db = sys.argv[1]
with open(os.path.join(db, 'set-000.pickle'), 'wb') as f:
    pickle.dump(np.full((7, 3), 2.5), f, protocol=4)
with open(os.path.join(db, 'set-000.json'), 'w') as f:
    json.dump({'overwritten': True}, f)
p = os.path.join(db, 'set-011.pickle')
data = open(p, 'rb').read()
v = pickle.loads(data)
at = data.find(v.tobytes())
assert at > 0
new = v.copy()
new.flat[0:2] = [42, 43]
with open(p, 'r+b') as f:
    f.seek(at)
    f.write(new.tobytes()[:2 * v.itemsize])
`

// dirdbPyVerify reads the backing database the way dirdb does (lock,
// unpickle, json) and checks it against what the test did, taking the
// original values from the read-only fixture.
const dirdbPyVerify = `
import fcntl, json, os, pickle, sys
import numpy as np
db, orig, src = sys.argv[1:4]
def entry(d, name):
    fd = os.open(os.path.join(d, name + '.lock'), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with open(os.path.join(d, name + '.pickle'), 'rb') as f:
            data = pickle.load(f)
        meta = None
        if os.path.exists(os.path.join(d, name + '.json')):
            with open(os.path.join(d, name + '.json')) as f:
                meta = json.load(f)
        return data, meta
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
def original(name):  # the fixture is read-only: no lock
    data = pickle.load(open(os.path.join(orig, name + '.pickle'), 'rb'))
    m = os.path.join(orig, name + '.json')
    return data, (json.load(open(m)) if os.path.exists(m) else None)
def eq(a, b):
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(eq(a[k], b[k]) for k in b)
    if isinstance(b, (list, tuple)):
        return type(a) == type(b) and len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b))
    return a == b
# Gone entries: checked before reading anything creates lock files.
names = set(os.listdir(db))
for gone in ['set-001', 'set-002', 'set-006', 'set-008']:
    for ext in ('.pickle', '.json', '.lock'):
        assert gone + ext not in names, gone + ext + ' left behind'
assert not [n for n in names if n.startswith('.arrayfs-stage.')], names
assert not [n for n in os.listdir(os.path.join(db, 'nested')) if n.startswith('inner.')]
assert 'set-010.json' not in names and 'set-010.pickle' in names
m11 = original('set-011')[0].copy()
m11.flat[0:2] = [42, 43]
want = {
    'set-000': (np.full((7, 3), 2.5), {'overwritten': True}),
    'set-003': original('set-002'),
    'set-004': ({'over': 4}, original('set-004')[1]),
    'set-005': ('rsync-5', {'rs': 5}),
    'set-007': (original('set-006')[0], None),
    'set-009': original('set-009'),
    'set-010': (original('set-010')[0], None),
    'set-011': (m11, original('set-011')[1]),
    'moved': original('set-001'),
    'cp-new': ({'cp': 'new'}, None),
    'rs-new': ([1, 2, 3], None),
    'inner-moved': original(os.path.join('nested', 'inner')),
}
got_names = sorted(n[:-7] for n in names if n.endswith('.pickle'))
assert got_names == sorted(want), (got_names, sorted(want))
for name, (data, meta) in want.items():
    gd, gm = entry(db, name)
    assert eq(gd, data), (name, gd, data)
    assert gm == meta, (name, gm, meta)
# Metadata moved or kept is byte for byte the original.
for name, o in [('set-003', 'set-002'), ('set-004', 'set-004'), ('moved', 'set-001'), ('set-011', 'set-011')]:
    assert open(os.path.join(db, name + '.json'), 'rb').read() == open(os.path.join(orig, o + '.json'), 'rb').read(), name
print('ok', len(want))
`

// TestDirdbWritesAreWhatDirdbReads changes a database through the mount
// in every way a user does (Python overwrite and write at an offset, new
// metadata, cp of new and existing entries, rsync's temp file + rename,
// mv of an entry onto a new name, onto an entry with and without
// metadata and into another database, rm of an entry and of metadata
// alone, a pickle copied into a plain directory), unmounts, then reads
// the backing files with dirdb's own protocol: they are what dirdb
// would read, with each entry's metadata following it.
func TestDirdbWritesAreWhatDirdbReads(t *testing.T) {
	db := fixture(t, "dirdb/db")
	root := filepath.Dir(db)
	plain := filepath.Join(root, "plain")
	os.Mkdir(plain, 0o755)
	os.WriteFile(filepath.Join(plain, "x.lock"), nil, 0o644)
	os.WriteFile(filepath.Join(plain, "notes.txt"), []byte("not a database\n"), 0o644)
	src := filepath.Join(t.TempDir(), "src")
	pyRun(t, dirdbPySources, src)
	m := mount(t, root)
	mdb := m.Path("db")

	pyRun(t, dirdbPyChanges, mdb)
	// An overwrite keeps the entry's extended attributes (the new version
	// is a new inode); cp -p of a new entry sets its time and ACL before
	// the entry exists on disk.
	run(t, "setfattr", "-n", "user.origin", "-v", "fixture", m.Backing("db/set-004.pickle"))
	run(t, "cp", filepath.Join(src, "over.pickle"), filepath.Join(mdb, "set-004.pickle"))
	if out := run(t, "getfattr", "--absolute-names", "--only-values", "-n", "user.origin", m.Backing("db/set-004.pickle")); out != "fixture" {
		t.Errorf("user.origin of set-004.pickle after an overwrite: %q", out)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(src, "cp-new.pickle"), old, old)
	run(t, "cp", "-p", filepath.Join(src, "cp-new.pickle"), filepath.Join(mdb, "cp-new.pickle"))
	if st, err := os.Stat(m.Backing("db/cp-new.pickle")); err != nil || !st.ModTime().Equal(old) {
		t.Errorf("cp -p of a new entry: %v, mtime %v, want %v", err, st.ModTime(), old)
	}
	run(t, "rsync", "-a", filepath.Join(src, "rs")+"/", mdb+"/")
	if again := run(t, "rsync", "-ai", filepath.Join(src, "rs")+"/", mdb+"/"); strings.TrimSpace(again) != "" {
		t.Errorf("a second rsync into the mount copied:\n%s", again)
	}

	// The kernel may hold the names of the metadata that a rename or an
	// unlink of the data moves along: it is told, not left to time out.
	gone := func(rel string) {
		t.Helper()
		for end := time.Now().Add(500 * time.Millisecond); ; {
			if _, err := os.Lstat(m.Path(rel)); os.IsNotExist(err) {
				return
			}
			if time.Now().After(end) {
				t.Errorf("%s still shown after its entry was renamed or deleted", rel)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, rel := range []string{"db/set-001.json", "db/set-007.json", "db/set-008.json", "db/nested/inner.json"} {
		if _, err := os.Lstat(m.Path(rel)); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "mv", filepath.Join(mdb, "set-001.pickle"), filepath.Join(mdb, "moved.pickle"))
	gone("db/set-001.json")
	run(t, "mv", filepath.Join(mdb, "set-002.pickle"), filepath.Join(mdb, "set-003.pickle"))
	run(t, "mv", filepath.Join(mdb, "set-006.pickle"), filepath.Join(mdb, "set-007.pickle"))
	gone("db/set-007.json")
	run(t, "mv", filepath.Join(mdb, "nested", "inner.pickle"), filepath.Join(mdb, "inner-moved.pickle"))
	gone("db/nested/inner.json")
	run(t, "rm", filepath.Join(mdb, "set-008.pickle"))
	gone("db/set-008.json")
	run(t, "rm", filepath.Join(mdb, "set-010.json"))

	// A plain directory becomes a database with its first pickle.
	if ls := run(t, "ls", m.Path("plain")); !strings.Contains(ls, "x.lock") {
		t.Errorf("plain directory: ls shows %q, want its x.lock", ls)
	}
	run(t, "cp", filepath.Join(src, "first.pickle"), m.Path("plain/first.pickle"))
	if ls := strings.Fields(run(t, "ls", m.Path("plain"))); strings.Join(ls, " ") != "first.pickle notes.txt" {
		t.Errorf("plain/ after its first pickle: ls shows %v, want first.pickle notes.txt", ls)
	}

	wantListed := []string{"cp-new.pickle", "inner-moved.json", "inner-moved.pickle", "moved.json", "moved.pickle",
		"nested/", "rs-new.pickle", "set-000.json", "set-000.pickle", "set-003.json", "set-003.pickle",
		"set-004.json", "set-004.pickle", "set-005.json", "set-005.pickle", "set-007.pickle", "set-009.pickle",
		"set-010.pickle", "set-011.json", "set-011.pickle"}
	if got := listFiles(t, mdb); strings.Join(got, " ") != strings.Join(wantListed, " ") {
		t.Errorf("listing of db/ through the mount:\n%v\nwant\n%v", got, wantListed)
	}
	t.Logf("stats: %s", statsDirdb(t, m))
	m.Unmount()

	out := pyRun(t, dirdbPyVerify, db, fixturePath(t, "dirdb/db"), src)
	if strings.TrimSpace(out) != "ok 12" {
		t.Errorf("dirdb's reading of the backing files: %s", out)
	}
	if got := mustRead(t, filepath.Join(plain, "first.pickle")); string(got) != string(mustRead(t, filepath.Join(src, "first.pickle"))) {
		t.Error("plain/first.pickle differs from its source")
	}
}

// TestDirdbJSONRefused: metadata that is not JSON is refused with
// EINVAL at close (Python's write, cp) or at rename (mv of a temp file),
// with a log line naming the file, and the old metadata stays; Python's
// json.dump output, NaN included, is accepted.
func TestDirdbJSONRefused(t *testing.T) {
	ds := fixture(t, "dirdb/db")
	want := dirdbExpected(t)
	m := mount(t, ds)
	out := pyRun(t, `
import errno, json, sys
try:
    with open(sys.argv[1], 'w') as f:
        f.write('{"k": 1, oops}')
    print('accepted')
except OSError as e:
    print('refused', errno.errorcode[e.errno])
with open(sys.argv[2], 'w') as f:
    json.dump({'x': float('nan'), 'y': [1, 2]}, f)
`, m.Path("set-001.json"), m.Path("set-005.json"))
	if strings.TrimSpace(out) != "refused EINVAL" {
		t.Errorf("Python write of invalid JSON: %q, want refused EINVAL", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte("[1, 2"), 0o644)
	if out, err := runTimeout(time.Minute, "cp", bad, m.Path("set-002.json")); err == nil || !strings.Contains(out, "Invalid argument") {
		t.Errorf("cp of invalid JSON onto set-002.json: %v %s", err, out)
	}
	run(t, "cp", bad, m.Path(".set-004.json.tmp")) // a plain file, not metadata
	// (mv words rename's EINVAL as "a subdirectory of itself": ask Python.)
	out = pyRun(t, `
import errno, os, sys
try:
    os.rename(sys.argv[1], sys.argv[2])
    print('renamed')
except OSError as e:
    print('refused', errno.errorcode[e.errno])
`, m.Path(".set-004.json.tmp"), m.Path("set-004.json"))
	if strings.TrimSpace(out) != "refused EINVAL" {
		t.Errorf("rename of invalid JSON onto set-004.json: %q, want refused EINVAL", out)
	}
	for _, rel := range []string{"set-001.json", "set-002.json", "set-004.json"} {
		if sum := sha256File(t, m.Backing(rel)); sum != want[rel] {
			t.Errorf("%s changed on disk after a refused write", rel)
		}
		if sum := sha256File(t, m.Path(rel)); sum != want[rel] {
			t.Errorf("%s reads differently through the mount after a refused write", rel)
		}
	}
	if got := string(mustRead(t, m.Backing("set-005.json"))); got != `{"x": NaN, "y": [1, 2]}` {
		t.Errorf("set-005.json = %q", got)
	}
	m.Unmount()
	if log := readFile(m.Log); !strings.Contains(log, "set-001.json: write: refused: not valid JSON") {
		t.Errorf("no log line for the refused write:\n%s", log)
	}
}

// TestDirdbRenamesDurableAtFsync: a version published at close(2) is in
// the backing file at once, and the rename that put it there is made
// durable by the next fsync(2) of any handle (also one open for
// reading), a directory's fsync, or the periodic write-back; never
// later than those.
func TestDirdbRenamesDurableAtFsync(t *testing.T) {
	ds := fixture(t, "dirdb/db")
	m := mount(t, ds, "writeback=1h")
	if n := m.stats().UnsyncedDirs; n != 0 {
		t.Fatalf("unsynced_dirs = %d right after mount, want 0", n)
	}
	value := func(i int) []byte { return []byte{0x80, 0x04, 'K', byte(i), '.'} } // pickle of int i
	write := func(name string, i int) {
		t.Helper()
		if err := os.WriteFile(m.Path(name), value(i), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, m.Backing(name)); string(got) != string(value(i)) {
			t.Fatalf("%s on disk after close = %q, want %q", name, got, value(i))
		}
	}
	unsynced := func(when string, want int) {
		t.Helper()
		if n := m.stats().UnsyncedDirs; n != want {
			t.Errorf("%s: unsynced_dirs = %d, want %d", when, n, want)
		}
	}

	write("set-000.pickle", 1)
	write("set-003.pickle", 2)
	unsynced("after two closes in one directory", 1)
	f, err := os.Open(m.Path("set-000.pickle"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync through a descriptor open for reading: %v", err)
	}
	f.Close()
	unsynced("after fsync of a reader", 0)

	// fsync of the writer itself, before its close: nothing left after.
	w, err := os.OpenFile(m.Path("set-003.pickle"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(value(3)); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatalf("fsync of the writer: %v", err)
	}
	unsynced("after fsync of the writer", 0)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	unsynced("after the close of a writer with nothing new since its fsync", 0)

	write("set-007.pickle", 4)
	unsynced("after a close", 1)
	d, err := os.Open(m.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatalf("fsync of the mount's root: %v", err)
	}
	d.Close()
	unsynced("after fsync of a directory", 0)
	m.Unmount()

	// The periodic write-back does it too.
	m = mount(t, ds, "writeback=50ms")
	write("set-000.pickle", 5)
	deadline := time.Now().Add(10 * time.Second)
	for m.stats().UnsyncedDirs != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the periodic write-back left a published rename not durable for 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
