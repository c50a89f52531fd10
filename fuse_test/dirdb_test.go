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
	data := mustRead(t, fixturePath(t, "dirdb/db.expected.json"))
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
