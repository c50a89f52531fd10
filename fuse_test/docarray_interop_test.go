package fuse_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tests with the original DocumentArrayMemmap (docarray 0.0.1, in
// ../shared/original) writing a store while it is mounted.

// origPrelude is Python shared by the tests: the original's store, and
// the sharing protocol (the store directory's flock around a reopen and
// a write, as the README asks of programs sharing a store with a mount).
const origPrelude = `
import fcntl, gc, json, os, sys, warnings
warnings.simplefilter('ignore')
from docarray import Document
from docarray.memmap import DocumentArrayMemmap

class session:
    """The original, reopened for one write; with lock, under the flock."""
    def __init__(self, path, lock=True):
        self.path, self.lock = path, lock
    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDONLY)
        if self.lock:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.dam = DocumentArrayMemmap(self.path)
        return self.dam
    def __exit__(self, *exc):
        self.dam.flush()
        del self.dam
        gc.collect()
        os.close(self.fd)

def dump(path):
    """(key, text) of every live document, in store order. Keys, not the
    documents' ids: a rename through the mount renames the key (dam['new']
    finds it) and leaves the document's bytes, its id among them, alone."""
    dam = DocumentArrayMemmap(path)
    out = [[k, dam[k].text] for k in dam._header_keys]
    del dam
    return out

def orig_op(path, op, lock=False):
    with session(path, lock) as dam:
        if op == 'append':
            dam.append(Document(id='new-o', text='o'))
        elif op == 'update':
            dam['d02'] = Document(id='d02', text='o')
        elif op == 'delete':
            del dam['d04']
        elif op == 'rename':
            # The original renames by giving position i a document with
            # another id (no tombstone comes before d06 here).
            i = [d.id for d in dam].index('d06')
            dam[i] = Document(id='q06', text='o')
        elif op.startswith('set:'):
            key, text = op[4:].split('=')
            dam[key] = Document(id=key, text=text)
`

var interopOps = []string{"append", "update", "delete", "rename"}

// mountOp applies a change through the mount (to keys the original's ops
// do not touch).
func mountOp(t *testing.T, dir, op string) {
	t.Helper()
	var err error
	switch op {
	case "append":
		err = os.WriteFile(filepath.Join(dir, "new-m"), pbDoc("new-m", "m"), 0o644)
	case "update":
		err = os.WriteFile(filepath.Join(dir, "d03"), pbDoc("d03", "m"), 0o644)
	case "delete":
		err = os.Remove(filepath.Join(dir, "d05"))
	case "rename":
		err = os.Rename(filepath.Join(dir, "d07"), filepath.Join(dir, "r07"))
	default:
		key, text, _ := strings.Cut(strings.TrimPrefix(op, "set:"), "=")
		err = os.WriteFile(filepath.Join(dir, key), pbDoc(key, text), 0o644)
	}
	if err != nil {
		t.Fatalf("%s through the mount: %v", op, err)
	}
}

// expectAfter is the store's content (id -> text) after both changes.
func expectAfter(mop, oop string) map[string]string {
	want := map[string]string{}
	for i := 0; i < 10; i++ {
		want[fmt.Sprintf("d%02d", i)] = "v0"
	}
	switch mop {
	case "append":
		want["new-m"] = "m"
	case "update":
		want["d03"] = "m"
	case "delete":
		delete(want, "d05")
	case "rename":
		want["r07"] = want["d07"]
		delete(want, "d07")
	}
	switch oop {
	case "append":
		want["new-o"] = "o"
	case "update":
		want["d02"] = "o"
	case "delete":
		delete(want, "d04")
	case "rename":
		delete(want, "d06")
		want["q06"] = "o"
	}
	return want
}

// lockStore takes the sharing protocol's lock of a store directory (in
// the test process) and returns its release.
func lockStore(t *testing.T, dir string) func() {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil; {
		if time.Now().After(deadline) {
			unix.Close(fd)
			t.Fatalf("%s: the store's lock stays held (by the mount?) for 30 s", dir)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return func() { unix.Close(fd) }
}

// TestOriginalWritesBesideTheMount: one change through the mount, one by
// the original DocumentArrayMemmap, then unmount: both are there, and
// the original reopens the store. Every combination of append, update,
// delete and rename, in both orders: the original's write while the
// mount's change is still pending (the test holds the store's lock, so
// the mount's write-back waits; then it finds the store changed, reloads
// and applies its change again on top), and the original's write first.
// Before, the write-back appended where body.bin ended when arrayfs last
// looked and wrote records at the positions it last saw: the original's
// document was overwritten, or the mount's deletion and rename undone.
// Where both change one document, the later change wins and the log
// names it.
func TestOriginalWritesBesideTheMount(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	type tcase struct{ store, mop, oop, order string }
	var cases []tcase
	var paths []string
	for _, order := range []string{"pending", "first"} {
		for _, mop := range interopOps {
			for _, oop := range interopOps {
				c := tcase{fmt.Sprintf("%s-%s-%s", order, mop, oop), mop, oop, order}
				cases = append(cases, c)
				paths = append(paths, filepath.Join(ds, c.store))
			}
		}
	}
	conflicts := []string{"conflict-theirs", "conflict-ours"}
	for _, c := range conflicts {
		paths = append(paths, filepath.Join(ds, c))
	}
	// Every store as the original writes them: d00..d09.
	pyOriginal(t, origPrelude+`
for path in sys.argv[1:]:
    dam = DocumentArrayMemmap(path)
    for i in range(10):
        dam.append(Document(id='d%02d' % i, text='v0'))
    dam.flush()
    del dam
`, paths...)
	m := mount(t, ds)
	for _, p := range paths {
		readDir(t, m.Path(filepath.Base(p))) // the mount knows each store
	}

	// The original first, with nothing of the mount's pending.
	var first []string
	for _, c := range cases {
		if c.order == "first" {
			first = append(first, filepath.Join(ds, c.store)+"="+c.oop)
		}
	}
	pyOriginal(t, origPrelude+`
for arg in sys.argv[1:]:
    path, op = arg.rsplit('=', 1)
    orig_op(path, op)
`, first...)
	for _, c := range cases {
		if c.order == "first" {
			mountOp(t, m.Path(c.store), c.mop)
		}
	}

	// The mount's change pending while the original writes.
	var releases []func()
	for _, c := range cases {
		if c.order == "pending" {
			releases = append(releases, lockStore(t, filepath.Join(ds, c.store)))
			mountOp(t, m.Path(c.store), c.mop)
		}
	}
	// Same key: the mount first, the original later (theirs wins)...
	releases = append(releases, lockStore(t, filepath.Join(ds, "conflict-theirs")))
	mountOp(t, m.Path("conflict-theirs"), "set:d01=m")
	time.Sleep(50 * time.Millisecond)
	var pending []string
	for _, c := range cases {
		if c.order == "pending" {
			pending = append(pending, filepath.Join(ds, c.store)+"="+c.oop)
		}
	}
	pending = append(pending, filepath.Join(ds, "conflict-theirs")+"=set:d01=o")
	// ... and the original first, the mount later (ours wins).
	releases = append(releases, lockStore(t, filepath.Join(ds, "conflict-ours")))
	pending = append(pending, filepath.Join(ds, "conflict-ours")+"=set:d01=o")
	pyOriginal(t, origPrelude+`
for arg in sys.argv[1:]:
    path, op = arg.split('=', 1)
    orig_op(path, op)
`, pending...)
	time.Sleep(50 * time.Millisecond)
	mountOp(t, m.Path("conflict-ours"), "set:d01=m")
	for _, release := range releases {
		release()
	}
	m.Unmount()

	// The original reopens every store, and finds both changes.
	out := pyOriginal(t, origPrelude+`
print(json.dumps({p: dump(p) for p in sys.argv[1:]}))
`, paths...)
	var got map[string][][2]string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	check := func(store string, want map[string]string) {
		t.Helper()
		have := map[string]string{}
		for _, d := range got[filepath.Join(ds, store)] {
			if _, dup := have[d[0]]; dup {
				t.Errorf("%s: %s listed twice", store, d[0])
			}
			have[d[0]] = d[1]
		}
		if a, b := jsonString(have), jsonString(want); a != b {
			t.Errorf("%s: the original reads\n  %s\nwant\n  %s", store, a, b)
		}
		if st := readDocStore(t, filepath.Join(ds, store), 36); !st.TailOK {
			t.Errorf("%s: the last record does not end at the end of body.bin: the original's next append would land on garbage", store)
		}
	}
	for _, c := range cases {
		check(c.store, expectAfter(c.mop, c.oop))
	}
	theirs, ours := expectAfter("", ""), expectAfter("", "")
	theirs["d01"], ours["d01"] = "o", "m"
	check("conflict-theirs", theirs)
	check("conflict-ours", ours)
	log := readFile(m.Log)
	for _, want := range []string{`conflict-theirs: header.bin or body.bin changed behind arrayfs's back`, `"d01": changed by both; the other program's change is later`,
		`"d01": changed by both; arrayfs's change is later`} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
}

// sortedKeys lists a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestOriginalAndMountWriteAtOnce: for 30 seconds the mount and the
// original both write one store, each to its own keys: the mount creates,
// updates, deletes and renames documents; the original, reopening the
// store under the store's lock before each write as the README asks,
// appends, updates and deletes. Every write either side had acknowledged
// is there at the end, and the original reopens the store.
//
// The original's own defects are worked around as they must be in any
// program using it: it updates only the last record, when no tombstone
// comes before it, and deletes only records before the last (updating an
// earlier one moves its append position onto live bytes; an update after
// a tombstone fails half done; deleting the last makes the store
// unopenable).
func TestOriginalAndMountWriteAtOnce(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	store := filepath.Join(ds, "shared")
	pyOriginal(t, origPrelude+`
dam = DocumentArrayMemmap(sys.argv[1])
for i in range(20):
    dam.append(Document(id='base%02d' % i, text='base'))
dam.flush()
`, store)
	m := mount(t, ds)
	dir := m.Path("shared")
	const runFor = 30 * time.Second

	// The original, in a process of its own, for runFor.
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := pyOriginalErr(t, origPrelude+`
import random, time
path, seconds = sys.argv[1], float(sys.argv[2])
random.seed(7)
mine = {}          # what the original acknowledged: key -> text
ops = {'append': 0, 'update': 0, 'delete': 0}
n, end = 0, time.time() + seconds
while time.time() < end:
    n += 1
    with session(path) as dam:
        keys = dam._header_keys
        last = keys[-1] if keys else None
        r = random.random()
        if r < 0.5 or not mine:
            k = 'p%05d' % n
            dam.append(Document(id=k, text='p%d' % n))
            mine[k] = 'p%d' % n
            ops['append'] += 1
        elif r < 0.75:
            k = random.choice(list(mine))
            if k == last and dam._str2int_id(last) == len(keys) - 1:
                dam[k] = Document(id=k, text='p%d' % n)
            else:
                # The original's update is only safe on the last record
                # with no tombstone before it (otherwise it indexes its
                # list of live keys with the record's index and fails
                # half done): elsewhere, delete and append again.
                del dam[k]
                dam.append(Document(id=k, text='p%d' % n))
            mine[k] = 'p%d' % n
            ops['update'] += 1
        else:
            cands = [k for k in mine if k != last]
            if cands:
                k = random.choice(cands)
                del dam[k]
                del mine[k]
                ops['delete'] += 1
    time.sleep(0.001)  # a program, not a lock hammer
print(json.dumps({'mine': mine, 'ops': ops}))
`, store, fmt.Sprint(runFor.Seconds()))
		done <- result{out, err}
	}()

	// The mount, meanwhile.
	mine := map[string]string{}
	var names []string
	counts := map[string]int{}
	deadline := time.Now().Add(runFor)
	for i := 0; time.Now().Before(deadline); i++ {
		key := fmt.Sprintf("m%05d", i)
		text := fmt.Sprintf("m%d", i)
		switch op := i % 4; {
		case op == 0 || len(names) < 3:
			if err := os.WriteFile(filepath.Join(dir, key), pbDoc(key, text), 0o644); err != nil {
				t.Fatalf("create %s: %v", key, err)
			}
			mine[key] = text
			names = append(names, key)
			counts["create"]++
		case op == 1:
			k := names[i%len(names)]
			if err := os.WriteFile(filepath.Join(dir, k), pbDoc(k, text), 0o644); err != nil {
				t.Fatalf("update %s: %v", k, err)
			}
			mine[k] = text
			counts["update"]++
		case op == 2:
			j := i % len(names)
			k := names[j]
			if err := os.Remove(filepath.Join(dir, k)); err != nil {
				t.Fatalf("rm %s: %v", k, err)
			}
			delete(mine, k)
			names = append(names[:j], names[j+1:]...)
			counts["rm"]++
		default:
			j := i % len(names)
			k := names[j]
			if err := os.Rename(filepath.Join(dir, k), filepath.Join(dir, key)); err != nil {
				t.Fatalf("mv %s %s: %v", k, key, err)
			}
			mine[key] = mine[k]
			delete(mine, k)
			names[j] = key
			counts["mv"]++
		}
		time.Sleep(2 * time.Millisecond)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("the original: %v\n%s", r.err, r.out)
	}
	var theirs struct {
		Mine map[string]string `json:"mine"`
		Ops  map[string]int    `json:"ops"`
	}
	if err := json.Unmarshal([]byte(r.out), &theirs); err != nil {
		t.Fatalf("%v: %s", err, r.out)
	}
	t.Logf("in %v: the mount %v, the original %v", runFor, counts, theirs.Ops)
	if counts["create"] < 50 || theirs.Ops["append"] < 50 {
		t.Fatalf("too little done to mean anything")
	}
	m.Unmount()

	want := map[string]string{}
	for i := 0; i < 20; i++ {
		want[fmt.Sprintf("base%02d", i)] = "base"
	}
	for k, v := range mine {
		want[k] = v
	}
	for k, v := range theirs.Mine {
		want[k] = v
	}
	out := pyOriginal(t, origPrelude+`
print(json.dumps(dump(sys.argv[1])))
`, store)
	var got [][2]string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	have := map[string]string{}
	for _, d := range got {
		have[d[0]] = d[1]
	}
	var missing, wrong, extra []string
	for _, k := range sortedKeys(want) {
		switch v, ok := have[k]; {
		case !ok:
			missing = append(missing, k)
		case v != want[k]:
			wrong = append(wrong, fmt.Sprintf("%s=%q (want %q)", k, v, want[k]))
		}
	}
	for _, k := range sortedKeys(have) {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(wrong)+len(extra) > 0 {
		t.Errorf("after both wrote at once: %d documents missing %v, %d wrong %v, %d undone deletions %v",
			len(missing), missing, len(wrong), wrong, len(extra), extra)
	}
	if st := readDocStore(t, store, 36); !st.TailOK {
		t.Error("the last record does not end at the end of body.bin")
	}
}
