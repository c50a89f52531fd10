package fuse_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// dirdbExpected is db.expected.json: sha256 of every file of the fixture.
func dirdbExpected(t *testing.T) map[string]string {
	t.Helper()
	var want map[string]string
	data := mustRead(t, filepath.Join(fixturesDir(t), "dirdb", "db.expected.json"))
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	return want
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	sum := sha256.Sum256(mustRead(t, p))
	return hex.EncodeToString(sum[:])
}

// listFiles walks dir and returns every regular file's relative path
// and every directory's (with a trailing slash).
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if e.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestDirdbFixture mounts a copy of the original dirdb fixture: every
// .pickle and .json is byte-identical (sha256 of db.expected.json), no
// .lock is listed or reachable, the sub-database is listed, every entry
// unpickles through the mount with numpy, and an rsync backup of the
// mount copies no lock file and nothing on a second run.
func TestDirdbFixture(t *testing.T) {
	ds := fixture(t, "dirdb/db")
	m := mount(t, ds)
	want := dirdbExpected(t)

	var wantListed []string
	for rel := range want {
		if !strings.HasSuffix(rel, ".lock") {
			wantListed = append(wantListed, rel)
		}
	}
	wantListed = append(wantListed, "nested/")
	sort.Strings(wantListed)
	got := listFiles(t, m.Dir)
	if strings.Join(got, "\n") != strings.Join(wantListed, "\n") {
		t.Errorf("listing of the mount:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantListed, "\n"))
	}
	for _, rel := range got {
		if strings.HasSuffix(rel, "/") {
			continue
		}
		if sum := sha256File(t, m.Path(rel)); sum != want[rel] {
			t.Errorf("%s: sha256 %s, db.expected.json says %s", rel, sum, want[rel])
		}
	}
	// Lock files are not listed, but a dirdb process working through
	// the mount reaches them by name: lock, read, unlock.
	if st, err := os.Lstat(m.Path("set-000.lock")); err != nil || st.Size() != 0 {
		t.Errorf("stat of a lock file by name through the mount: %v", err)
	}
	state := pyRun(t, dirdbPyState, m.Dir)
	if n := strings.Count(state, "\n"); n != 12 || strings.Contains(state, "ERROR") {
		t.Errorf("dirdb's own reading protocol through the mount:\n%s", state)
	}

	// Every entry unpickles through the mount to what the backing file
	// holds, numpy arrays included; a shared mapping reads the same bytes.
	out := pyRun(t, `
import glob, json, mmap, os, pickle, sys
import numpy as np
mnt, backing = sys.argv[1], sys.argv[2]
def eq(a, b):
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(eq(a[k], b[k]) for k in b)
    if isinstance(b, (list, tuple)):
        return type(a) == type(b) and len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b))
    return a == b
n = arrays = 0
for p in sorted(glob.glob(os.path.join(mnt, '**', '*.pickle'), recursive=True)):
    rel = os.path.relpath(p, mnt)
    with open(p, 'rb') as f:
        v = pickle.load(f)
    with open(os.path.join(backing, rel), 'rb') as f:
        w = pickle.load(f)
    assert eq(v, w), (rel, v, w)
    arrays += isinstance(v, np.ndarray)
    n += 1
for p in glob.glob(os.path.join(mnt, '**', '*.json'), recursive=True):
    with open(p) as f:
        json.load(f)
p = os.path.join(mnt, 'set-000.pickle')
with open(p, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
    assert mm[:] == open(p, 'rb').read()
print(n, arrays)
`, m.Dir, ds)
	if strings.TrimSpace(out) != "13 7" {
		t.Errorf("unpickled (entries, numpy arrays) = %q, want 13 7", out)
	}

	// A backup copies the entries and no lock file; a second run nothing.
	backup := filepath.Join(t.TempDir(), "backup")
	run(t, "rsync", "-a", m.Dir+"/", backup+"/")
	if got := listFiles(t, backup); strings.Join(got, "\n") != strings.Join(wantListed, "\n") {
		t.Errorf("rsync backup of the mount holds:\n%s", strings.Join(got, "\n"))
	}
	if again := run(t, "rsync", "-ai", m.Dir+"/", backup+"/"); strings.TrimSpace(again) != "" {
		t.Errorf("second rsync copied:\n%s", again)
	}
	m.Unmount()
}

// dirdbPyWriter does exactly what dirdb does to write an entry, in a
// loop until the stop file appears: filelock's lock (open NAME.lock
// O_RDWR|O_CREAT|O_TRUNC, flock LOCK_EX|LOCK_NB retried every 50 ms),
// then NAME.pickle opened 'wb' (truncated) and written in place, here
// with a pause in the middle of the write. Values are arange(n)*k with n
// changing, so that sizes change too. It prints how many it wrote.
const dirdbPyWriter = `
import fcntl, os, pickle, sys, time
import numpy as np
path, stop = sys.argv[1], sys.argv[2]
lock = path[:-len('.pickle')] + '.lock'
k = 0
while not os.path.exists(stop):
    k += 1
    data = pickle.dumps(np.arange(1000 + 4000 * (k % 5), dtype=np.float64) * k, protocol=4)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
        f.flush()
        time.sleep(0.002)
        f.write(data[len(data) // 2:])
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    time.sleep(0.005)
print(k)
`

// dirdbPyReader reads an entry N times (open, read all, unpickle) and
// checks each value is a whole arange(n)*k. With strict it fails at the
// first bad read; otherwise it counts them. Prints reads, distinct
// versions seen, bad reads.
const dirdbPyReader = `
import pickle, sys, time
import numpy as np
path, n, strict, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3] == 'strict', float(sys.argv[4])
seen, bad, reads = set(), 0, 0
deadline = time.time() + limit
for i in range(n):
    if time.time() > deadline:
        break
    reads += 1
    try:
        with open(path, 'rb') as f:
            data = f.read()
        v = pickle.loads(data)
        k = v[1]
        assert v.dtype == np.float64 and np.array_equal(v, np.arange(len(v), dtype=np.float64) * k), 'mixed values'
        seen.add(k)
    except Exception as e:
        if strict:
            sys.exit('read %d of %s: %d bytes: %r' % (i, path, len(data), e))
        bad += 1
        if bad >= 3:
            break
print(reads, len(seen), bad)
`

// TestDirdbReadWhilePythonRewrites: while a Python process rewrites an
// entry in place exactly as dirdb does, with a pause in the middle of
// each write, another process reads it through the mount 1000 times and
// every read unpickles to a whole value. The same reads made directly
// on the backing file, without the lock, do see torn files: the writer
// really exposes them, so the mount's reads would have caught one.
func TestDirdbReadWhilePythonRewrites(t *testing.T) {
	ds := fixture(t, "dirdb/db")
	m := mount(t, ds)
	stop := filepath.Join(t.TempDir(), "stop")
	writer := exec.Command(python, "-c", dirdbPyWriter, m.Backing("set-003.pickle"), stop)
	var wout strings.Builder
	writer.Stdout, writer.Stderr = &wout, &wout
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	defer func() {
		if !waited {
			os.WriteFile(stop, nil, 0o644)
			writer.Wait()
		}
	}()
	time.Sleep(200 * time.Millisecond)

	start := time.Now()
	out := pyRun(t, dirdbPyReader, m.Path("set-003.pickle"), "1000", "strict", "100")
	elapsed := time.Since(start)
	var reads, versions, bad int
	if _, err := fmt.Sscan(out, &reads, &versions, &bad); err != nil || reads != 1000 || bad != 0 {
		t.Fatalf("reads through the mount: %q (%v)", out, err)
	}
	if versions < 5 {
		t.Errorf("the reads saw %d versions: the writer did not run alongside", versions)
	}
	control := pyRun(t, dirdbPyReader, m.Backing("set-003.pickle"), "1000000", "count", "10")
	var cReads, cVersions, cBad int
	fmt.Sscan(control, &cReads, &cVersions, &cBad)
	os.WriteFile(stop, nil, 0o644)
	waited = true
	if err := writer.Wait(); err != nil {
		t.Fatalf("writer: %v\n%s", err, wout.String())
	}
	t.Logf("1000 reads through the mount in %v, %d versions seen; writer wrote %s times; "+
		"unlocked reads of the backing file: %d torn in %d", elapsed.Round(time.Millisecond), versions,
		strings.TrimSpace(wout.String()), cBad, cReads)
	if cBad == 0 {
		t.Errorf("control: %d unlocked reads of the backing file saw no torn file; the test cannot tell", cReads)
	}
	t.Logf("stats: %s", statsDirdb(t, m))
	m.Unmount()
}

func statsDirdb(t *testing.T, m *Mount) string {
	var s struct {
		Dirdb json.RawMessage `json:"dirdb"`
	}
	json.Unmarshal(mustRead(t, m.Path(".arrayfs/stats.json")), &s)
	return string(s.Dirdb)
}

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
	run(t, "cp", filepath.Join(src, "over.pickle"), filepath.Join(mdb, "set-004.pickle"))
	run(t, "cp", filepath.Join(src, "cp-new.pickle"), filepath.Join(mdb, "cp-new.pickle"))
	run(t, "rsync", "-a", filepath.Join(src, "rs")+"/", mdb+"/")

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

	out := pyRun(t, dirdbPyVerify, db, filepath.Join(fixturesDir(t), "dirdb", "db"), src)
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

// TestDirdbLargeEntry reads a 64 MiB pickle through the mount three
// times: it is snapshotted once, to a private file (not to memory: the
// daemon's anonymous memory does not grow by the entry's size), and the
// next opens of the unchanged entry reuse that snapshot without copying.
func TestDirdbLargeEntry(t *testing.T) {
	ds := fixture(t, "dirdb/db")
	pyRun(t, `
import pickle, sys
import numpy as np
with open(sys.argv[1], 'wb') as f:
    pickle.dump(np.arange(8 << 20, dtype=np.float64), f, protocol=4)
`, filepath.Join(ds, "big.pickle"))
	// A file changed less than 2 s ago may change again unseen (coarse
	// timestamps): its snapshots are not reused. Let it age.
	time.Sleep(2100 * time.Millisecond)
	m := mount(t, ds)
	before := rssAnonKB(t, m.PID)
	start := time.Now()
	out := pyRun(t, `
import pickle, sys
import numpy as np
for i in range(3):
    with open(sys.argv[1], 'rb') as f:
        v = pickle.load(f)
    assert np.array_equal(v, np.arange(8 << 20, dtype=np.float64))
print('ok')
`, m.Path("big.pickle"))
	elapsed := time.Since(start)
	after := rssAnonKB(t, m.PID)
	if strings.TrimSpace(out) != "ok" {
		t.Fatalf("reads: %s", out)
	}
	var s struct {
		Dirdb struct {
			SnapshotsFile   int `json:"snapshots_file"`
			SnapshotsMemory int `json:"snapshots_memory"`
			SnapshotsReused int `json:"snapshots_reused"`
		} `json:"dirdb"`
	}
	json.Unmarshal(mustRead(t, m.Path(".arrayfs/stats.json")), &s)
	t.Logf("3 reads of a 64 MiB entry in %v (%.0f MB/s with unpickling); daemon RssAnon %d → %d KiB; stats %+v",
		elapsed.Round(time.Millisecond), 3*64*1.048576/elapsed.Seconds(), before, after, s.Dirdb)
	if s.Dirdb.SnapshotsFile != 1 || s.Dirdb.SnapshotsReused != 2 || s.Dirdb.SnapshotsMemory != 0 {
		t.Errorf("3 opens of an unchanged 64 MiB entry: %+v, want 1 file snapshot and 2 reuses", s.Dirdb)
	}
	if after-before > 32<<10 {
		t.Errorf("the daemon's anonymous memory grew by %d KiB reading a 64 MiB entry", after-before)
	}
	m.Unmount()
}

func rssAnonKB(t *testing.T, pid int) int {
	t.Helper()
	for _, line := range strings.Split(readFile(fmt.Sprintf("/proc/%d/status", pid)), "\n") {
		var kb int
		if n, _ := fmt.Sscanf(line, "RssAnon: %d kB", &kb); n == 1 {
			return kb
		}
	}
	t.Fatalf("no RssAnon for pid %d", pid)
	return 0
}
