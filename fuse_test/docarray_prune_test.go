package fuse_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func storeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, f := range []string{"header.bin", "body.bin"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// writeSynced writes a document through the mount and fsyncs it, so
// that every version reaches body.bin (and becomes garbage later).
func writeSynced(t *testing.T, p string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPruneMountedAndOffline: arrayfs prune compacts a store through the
// mount (documents, order, inode numbers, mtimes and modes kept, the
// store smaller, docarray-readable), refuses the backing path of a
// mounted store, and prunes an unmounted one.
func TestPruneMountedAndOffline(t *testing.T) {
	root, _ := fixtureStore(t)
	backing := filepath.Join(root, "store")
	m := mount(t, root)
	for i := 1; i <= 5; i++ {
		writeSynced(t, m.Path("store/doc-000"), pbDoc("doc-000", strings.Repeat("version ", 200*i)))
	}
	run(t, "rm", m.Path("store/doc-004"))
	os.Chmod(m.Path("store/doc-010"), 0o600)
	mtime := time.Date(2022, 2, 2, 2, 2, 2, 2, time.UTC)
	os.Chtimes(m.Path("store/doc-010"), mtime, mtime)
	run(t, "mv", m.Path("store/doc-011"), m.Path("store/renamed-011"))
	want := docsThroughMount(t, m.Path("store"))
	var st0 syscall.Stat_t
	if err := syscall.Stat(m.Path("store/renamed-011"), &st0); err != nil {
		t.Fatal(err)
	}
	before := storeBytes(t, backing)

	out := run(t, arrayfsBin, "prune", m.Path("store"))
	if !strings.Contains(out, fmt.Sprintf("%d documents", len(want))) {
		t.Errorf("prune said: %s", out)
	}
	after := storeBytes(t, backing)
	if after >= before {
		t.Errorf("prune did not shrink the store: %d -> %d bytes", before, after)
	}
	sameDocs(t, "after prune, through the mount", docsThroughMount(t, m.Path("store")), want)
	var st1 syscall.Stat_t
	if err := syscall.Stat(m.Path("store/renamed-011"), &st1); err != nil || st1.Ino != st0.Ino {
		t.Errorf("inode number after prune: %d, was %d (%v)", st1.Ino, st0.Ino, err)
	}
	if fi, err := os.Stat(m.Path("store/doc-010")); err != nil || !fi.ModTime().Equal(mtime) || fi.Mode().Perm() != 0o600 {
		t.Errorf("doc-010 after prune: %v %v %v", fi.ModTime(), fi.Mode(), err)
	}
	disk := readDocStore(t, backing, 36)
	var wantDisk []storeDoc
	for _, d := range want {
		wantDisk = append(wantDisk, d)
	}
	sameDocs(t, "after prune, on disk", disk.Docs, wantDisk)
	if !disk.TailOK {
		t.Error("pruned store: tail")
	}
	pyDocs(t, backing, 36, wantDisk)
	// Beside the mount, a second writer: refused, naming the mount.
	if out, err := runTimeout(time.Minute, arrayfsBin, "prune", backing); err == nil || !strings.Contains(out, "the arrayfs mount at "+m.Dir) || !strings.Contains(out, "prune it through that mount") {
		t.Errorf("prune of a mounted store's backing path: %v %s", err, out)
	}
	// The store keeps working after the swap.
	writeSynced(t, m.Path("store/after-prune"), pbDoc("after-prune", "!"))
	want = append(want, storeDoc{"after-prune", pbDoc("after-prune", "!")})
	m.Unmount()

	cmd := exec.Command(arrayfsBin, "prune", backing)
	cmd.Env = append(os.Environ(), "ARRAYFS_PROGRESS=1") // as on a terminal
	var stderr strings.Builder
	cmd.Stderr = &stderr
	outb, err := cmd.Output()
	if err != nil {
		t.Fatalf("offline prune: %v\n%s", err, stderr.String())
	}
	t.Logf("offline prune: %s", outb)
	if !strings.Contains(stderr.String(), "] 100% ") {
		t.Errorf("no progress bar: %q", stderr.String())
	}
	sameDocs(t, "after offline prune", readDocStore(t, backing, 36).Docs, want)
	if ents, _ := os.ReadDir(root); len(ents) != 1 {
		t.Errorf("left beside the store: %v", ents)
	}
	run(t, arrayfsBin, "check", root)
}

// TestPruneKill: a prune killed (SIGKILL) at any moment leaves a store
// that opens with every live document; the next prune cleans up.
func TestPruneKill(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "big")
	var docs []storeDoc
	for i := 0; i < 20000; i++ {
		k := fmt.Sprintf("doc-%05d", i)
		docs = append(docs, storeDoc{k, pbDoc(k, strings.Repeat(string(rune('a'+i%26)), 200+i%300))})
	}
	// First versions of some documents, then all of them: the first
	// versions are garbage for prune to drop (docarray reads the later
	// record of a key, at the earlier position).
	var first []storeDoc
	for i := 0; i < len(docs); i += 7 {
		first = append(first, storeDoc{docs[i].Key, pbDoc(docs[i].Key, "an older version")})
	}
	writeDocStore(t, dir, 36, append(first, docs...))
	want := readDocStore(t, dir, 36).Docs
	start := time.Now()
	run(t, arrayfsBin, "prune", dir)
	full := time.Since(start)
	t.Logf("a full prune of %d documents takes %v (race build)", len(docs), full)
	sameDocs(t, "after a full prune", readDocStore(t, dir, 36).Docs, want)
	for i := 0; i < 12; i++ {
		cmd := exec.Command(arrayfsBin, "prune", dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(full))))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		st := readDocStore(t, dir, 36)
		sameDocs(t, fmt.Sprintf("after kill %d", i), st.Docs, want)
		if !st.TailOK {
			t.Errorf("after kill %d: tail", i)
		}
	}
	run(t, arrayfsBin, "prune", dir)
	if ents, _ := os.ReadDir(root); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
	m := mount(t, root)
	if n := len(readdirNames(t, m.Path("big"))); n != len(docs)+1 {
		t.Errorf("mounted after kills: %d entries", n)
	}
	m.Unmount()
}

// TestCheckStores: arrayfs check reports each kind of bad record; the
// store still mounts and serves the good documents.
func TestCheckStores(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "bad")
	var docs []storeDoc
	for i := 0; i < 40; i++ {
		k := fmt.Sprintf("d%02d", i)
		docs = append(docs, storeDoc{k, pbDoc(k, "x")})
	}
	writeDocStore(t, dir, 36, docs)
	h := mustRead(t, filepath.Join(dir, "header.bin"))
	body := mustRead(t, filepath.Join(dir, "body.bin"))
	const rs = 168
	binary.LittleEndian.PutUint64(h[5*rs+144:], 1<<20)         // p past the end of body.bin
	binary.LittleEndian.PutUint64(h[7*rs+152:], uint64(1<<63)) // negative r
	binary.LittleEndian.PutUint32(h[9*rs:], 0xD800)            // a surrogate in the key
	copy(h[11*rs:11*rs+144], h[12*rs:12*rs+144])               // d12 twice
	start := binary.LittleEndian.Uint64(h[13*rs+144:]) + binary.LittleEndian.Uint64(h[13*rs+152:])
	body[start] = 0xff // d13 does not parse
	os.WriteFile(filepath.Join(dir, "header.bin"), h, 0o644)
	os.WriteFile(filepath.Join(dir, "body.bin"), body, 0o644)

	out, err := runTimeout(time.Minute, arrayfsBin, "check", root)
	if err == nil {
		t.Errorf("check passed a broken store:\n%s", out)
	}
	for _, want := range []string{"record 5 (key \"d05\"): past the end of body.bin", "record 7 (key \"d07\"): negative offset",
		"record 9: key is not valid UTF-32", "record 12: duplicate key \"d12\"", "record 13 (key \"d13\"): the document does not parse"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	m := mount(t, root)
	names := readdirNames(t, m.Path("bad"))
	if len(names) != 36+1 {
		t.Errorf("served %d entries: %q", len(names), names)
	}
	m.Unmount()
	if log := readFile(m.Log); !strings.Contains(log, "cannot be served and are skipped") {
		t.Errorf("mount log:\n%s", log)
	}
}
