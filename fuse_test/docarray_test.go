package fuse_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests of docarray stores through real mounts, with real tools; what
// lands on disk is checked with the independent readers of
// docarray_reader_test.go (Go, and numpy the way docarray reads).

// fixtureStore copies the docarray fixture store; it returns the dataset
// root (holding store/) and the store's documents as the independent
// reader sees them, checked against the original reader's list.
func fixtureStore(t *testing.T) (root string, docs []storeDoc) {
	t.Helper()
	dir := fixture(t, "docarray/store")
	st := readDocStore(t, dir, 36)
	want := expectedFixtureDocs(t)
	if len(st.Docs) != len(want) {
		t.Fatalf("fixture: %d documents, expected list has %d", len(st.Docs), len(want))
	}
	for i, e := range want {
		if st.Docs[i].Key != e.HeaderKey || sha256hex(st.Docs[i].Data) != e.RawSHA256 {
			t.Fatalf("fixture document %d: %q, expected %q", i, st.Docs[i].Key, e.HeaderKey)
		}
	}
	return filepath.Dir(dir), st.Docs
}

// readdirNames lists a directory in the order the file system gives.
func readdirNames(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// docsThroughMount reads every document of a store directory of a
// mount, in listing order (the marker, always last, excluded).
func docsThroughMount(t *testing.T, dir string) []storeDoc {
	t.Helper()
	names := readdirNames(t, dir)
	if len(names) == 0 || names[len(names)-1] != ".docarray" {
		t.Fatalf("%s: listing does not end with .docarray: %q", dir, names)
	}
	var out []storeDoc
	for _, n := range names[:len(names)-1] {
		out = append(out, storeDoc{Key: n, Data: mustRead(t, filepath.Join(dir, n))})
	}
	return out
}

// TestDocFixtureListing: the fixture store shows exactly its live
// documents, in store order, each with the bytes the original wrote.
func TestDocFixtureListing(t *testing.T) {
	root, docs := fixtureStore(t)
	h0, b0 := mustRead(t, filepath.Join(root, "store", "header.bin")), mustRead(t, filepath.Join(root, "store", "body.bin"))
	m := mount(t, root)
	want := expectedFixtureDocs(t)
	names := readdirNames(t, m.Path("store"))
	var keys []string
	for _, e := range want {
		keys = append(keys, e.HeaderKey)
	}
	if strings.Join(names, "\n") != strings.Join(append(keys, ".docarray"), "\n") {
		t.Fatalf("listing\n got %q\nwant %q", names, append(keys, ".docarray"))
	}
	// sha256sum, the real tool, over every document.
	var paths []string
	for _, k := range keys {
		paths = append(paths, m.Path("store/"+k))
	}
	out := run(t, "sha256sum", paths...)
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) < 2 || f[0] != want[i].RawSHA256 {
			t.Errorf("%s: %s, want %s", keys[i], line, want[i].RawSHA256)
		}
	}
	// The updated document at its new bytes, the deleted one absent, the
	// 58-character id under its truncated key (and reachable by its full
	// id too), the non-ASCII id.
	if _, err := os.Stat(m.Path("store/doc-006")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted doc-006: %v", err)
	}
	long := "a-very-long-document-identifier-that-exceeds-36-characters"
	if !bytes.Contains(mustRead(t, m.Path("store/a-very-long-document-identifier-that")), []byte(long)) {
		t.Error("the truncated key does not hold the document with the long id")
	}
	sameFile(t, m.Path("store/"+long), m.Path("store/a-very-long-document-identifier-that"))
	if got := sha256hex(mustRead(t, m.Path("store/doc-ü-✓-😀"))); got != want[5].RawSHA256 {
		t.Errorf("non-ASCII id: %s", got)
	}
	if out := run(t, "cat", m.Path("store/doc-002")); sha256hex([]byte(out)) != want[2].RawSHA256 {
		t.Error("cat doc-002: not the updated bytes")
	}
	// numpy/mmap readers map document files (MAP_SHARED, read-only).
	out = pyRun(t, "import mmap, sys, hashlib\nf = open(sys.argv[1], 'rb')\nm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\nprint(hashlib.sha256(m[:]).hexdigest())", m.Path("store/doc-008"))
	if strings.TrimSpace(out) != want[7].RawSHA256 {
		t.Errorf("mmap of doc-008: %s", out)
	}
	marker := string(mustRead(t, m.Path("store/.docarray")))
	if !strings.HasPrefix(marker, "key_length: 36\norder:\n- \"doc-000\"\n- \"a-very-long-document-identifier-that\"\n") {
		t.Errorf("marker:\n%s", marker)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(m.Path("store/doc-008"), &st); err != nil || st.Size != int64(len(mustRead(t, m.Path("store/doc-008")))) || st.Mode&0o777 != 0o644 {
		t.Errorf("stat doc-008: %+v %v", st, err)
	}
	m.Unmount()
	// Reading changed no document (TestDocUnsafeTailRepaired: the store
	// may have been made safe for the original's next append).
	storeUnchanged(t, filepath.Join(root, "store"), h0, b0, docs)
}

// TestDocRoundTrip: documents copied out with cp, a new store made in
// the mount with a .docarray marker, the documents copied back (in name
// order, not store order): after the unmount the new store, read
// independently, has the same keys in the same order with the same
// bytes, and docarray can reopen it.
func TestDocRoundTrip(t *testing.T) {
	root, want := fixtureStore(t)
	m := mount(t, root, "pool_size=8")
	out := t.TempDir()
	var src []string
	for _, d := range want {
		src = append(src, m.Path("store/"+d.Key))
	}
	run(t, "cp", append(append([]string{"-p"}, src...), out)...)
	if err := os.Mkdir(m.Path("copy"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "cp", m.Path("store/.docarray"), m.Path("copy/.docarray"))
	back, err := filepath.Glob(filepath.Join(out, "*"))
	if err != nil || len(back) != len(want) {
		t.Fatalf("copied out %d files (%v)", len(back), err)
	}
	sort.Strings(back)
	run(t, "cp", append(append([]string{"-p"}, back...), m.Path("copy"))...)
	sameDocs(t, "through the mount", docsThroughMount(t, m.Path("copy")), want)
	m.Unmount()
	got := readDocStore(t, filepath.Join(root, "copy"), 36)
	sameDocs(t, "new store", got.Docs, want)
	if !got.TailOK {
		t.Error("new store: the last record is not live or does not end at the end of body.bin")
	}
	pyDocs(t, filepath.Join(root, "copy"), 36, want)
}

// TestDocChangesSurviveRemount: overwrite (whole, and in place at an
// offset), delete, rename, rename over, create, escaped names; all
// there after unmount and remount, and on disk as docarray reads it.
func TestDocChangesSurviveRemount(t *testing.T) {
	root, docs := fixtureStore(t)
	m := mount(t, root)
	p := func(name string) string { return m.Path("store/" + name) }
	byKey := map[string][]byte{}
	for _, d := range docs {
		byKey[d.Key] = d.Data
	}
	run(t, "cp", p("doc-004"), p("doc-000"))
	longer := pbDoc("doc-012", strings.Repeat("written in place by dd ", 20))
	src := filepath.Join(t.TempDir(), "src")
	os.WriteFile(src, longer, 0o644)
	run(t, "dd", "if="+src, "of="+p("doc-012"), "conv=notrunc", "status=none")
	run(t, "rm", p("doc-008"))
	run(t, "mv", p("doc-010"), p("renamed-010"))
	run(t, "mv", "-f", p("doc-013"), p("doc-014"))
	if err := os.WriteFile(p("brand-new"), pbDoc("brand-new", "hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("a%2Fb%25"), pbDoc("a/b%", "escaped"), 0o644); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 891011121, time.UTC)
	if err := os.Chtimes(p("doc-000"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	var want []storeDoc
	for _, d := range docs {
		switch d.Key {
		case "doc-000":
			want = append(want, storeDoc{"doc-000", byKey["doc-004"]})
		case "doc-012":
			want = append(want, storeDoc{"doc-012", longer})
		case "doc-008", "doc-013":
		case "doc-010":
			want = append(want, storeDoc{"renamed-010", d.Data})
		case "doc-014":
			want = append(want, storeDoc{"doc-014", byKey["doc-013"]})
		default:
			want = append(want, d)
		}
	}
	want = append(want, storeDoc{"brand-new", pbDoc("brand-new", "hello")}, storeDoc{"a/b%", pbDoc("a/b%", "escaped")})
	names := func(ds []storeDoc) []storeDoc {
		out := append([]storeDoc(nil), ds...)
		out[len(out)-1].Key = "a%2Fb%25"
		return out
	}
	sameDocs(t, "before unmount", docsThroughMount(t, m.Path("store")), names(want))
	m.Unmount()
	st := readDocStore(t, filepath.Join(root, "store"), 36)
	sameDocs(t, "on disk", st.Docs, want)
	if !st.TailOK {
		t.Error("the last record is not live or does not end at the end of body.bin")
	}
	pyDocs(t, filepath.Join(root, "store"), 36, want)

	m = mount(t, root)
	sameDocs(t, "after remount", docsThroughMount(t, m.Path("store")), names(want))
	fi, err := os.Stat(m.Path("store/doc-000"))
	if err != nil || !fi.ModTime().Equal(mtime) {
		t.Errorf("mtime after remount: %v %v", fi.ModTime(), err)
	}
	if fi, err := os.Stat(m.Path("store/brand-new")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after remount: %v %v", fi.Mode(), err)
	}
	m.Unmount()
}

// TestDocPoolSize4Writes1000: a pool of 4 documents, 1000 writes (250
// documents written four times each), no write-back timer: evictions
// write back all the time and nothing is lost.
func TestDocPoolSize4Writes1000(t *testing.T) {
	root := t.TempDir()
	m := mount(t, root, "pool_size=4", "writeback=0")
	if err := os.Mkdir(m.Path("s"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Path("s/.docarray"), []byte("key_length: 36\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	latest := map[string][]byte{}
	for i := 0; i < 1000; i++ {
		key := fmt.Sprintf("w%04d", i%250)
		data := pbDoc(key, fmt.Sprintf("version %d of %s %s", i/250, key, strings.Repeat("#", i%37)))
		if err := os.WriteFile(m.Path("s/"+key), data, 0o644); err != nil {
			t.Fatal(err)
		}
		latest[key] = data
	}
	if s := m.stats(); s.Pool.Evictions == 0 || s.Pool.Units > 4 {
		t.Errorf("pool: %+v", s.Pool)
	}
	var want []storeDoc
	for i := 0; i < 250; i++ {
		key := fmt.Sprintf("w%04d", i)
		want = append(want, storeDoc{key, latest[key]})
	}
	sameDocs(t, "through the mount", docsThroughMount(t, m.Path("s")), want)
	m.Unmount()
	st := readDocStore(t, filepath.Join(root, "s"), 36)
	sameDocs(t, "on disk", st.Docs, want)
	if !st.TailOK {
		t.Error("tail")
	}
}

// storeUnchanged checks that a store holds the documents it held (its
// files as they were, h0 and b0), with nothing changed but a repair of
// its tail: the old records but the last in place, the old bytes kept,
// the last document appended again.
func storeUnchanged(t *testing.T, dir string, h0, b0 []byte, docs []storeDoc) {
	t.Helper()
	st := readDocStore(t, dir, 36)
	sameDocs(t, "the store after the session", st.Docs, docs)
	h, b := mustRead(t, filepath.Join(dir, "header.bin")), mustRead(t, filepath.Join(dir, "body.bin"))
	rs := 4*36 + 24
	if len(h) != len(h0) || !bytes.Equal(h[:len(h)-rs], h0[:len(h0)-rs]) || !bytes.HasPrefix(b, b0) {
		t.Errorf("the session changed more than the store's tail: header %d -> %d bytes, body %d -> %d", len(h0), len(h), len(b0), len(b))
	}
	if !st.TailOK {
		t.Error("tail")
	}
}

// TestDocSIGTERMWritesBack: SIGTERM with changes not yet written back
// writes them all back before exiting. They are held back (close, rm
// and mv write back within moments) by a Python process holding the
// store's lock, which it lets go after the signal.
func TestDocSIGTERMWritesBack(t *testing.T) {
	root, docs := fixtureStore(t)
	m := mount(t, root, "writeback=0")
	readDir(t, m.Path("store"))
	time.Sleep(200 * time.Millisecond) // the mount's own first write-back (a repair) is done
	lockFd, err := syscall.Open(filepath.Join(root, "store"), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(lockFd)
	if err := syscall.Flock(lockFd, syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	want := []storeDoc{{"doc-000", pbDoc("doc-000", "changed before SIGTERM")}}
	if err := os.WriteFile(m.Path("store/doc-000"), want[0].Data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range docs[1:] {
		if d.Key == "doc-002" {
			continue
		}
		want = append(want, d)
	}
	run(t, "rm", m.Path("store/doc-002"))
	for i := 0; i < 100; i++ {
		d := storeDoc{fmt.Sprintf("sig-%03d", i), pbDoc(fmt.Sprintf("sig-%03d", i), strings.Repeat("s", i))}
		if err := os.WriteFile(m.Path("store/"+d.Key), d.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		want = append(want, d)
	}
	if s := m.stats(); s.Pool.Units < 100 {
		t.Fatalf("expected a dirty pool, have %+v", s.Pool)
	}
	go func() {
		time.Sleep(500 * time.Millisecond)
		syscall.Flock(lockFd, syscall.LOCK_UN)
	}()
	m.Signal(syscall.SIGTERM)
	st := readDocStore(t, filepath.Join(root, "store"), 36)
	sameDocs(t, "after SIGTERM", st.Docs, want)
	if !st.TailOK {
		t.Error("tail")
	}
}

// TestDocNonProtobufRefused: bytes that are not a DocumentProto are
// refused at close with EINVAL, logged, and the store is unchanged.
func TestDocNonProtobufRefused(t *testing.T) {
	root, docs := fixtureStore(t)
	h0, b0 := mustRead(t, filepath.Join(root, "store", "header.bin")), mustRead(t, filepath.Join(root, "store", "body.bin"))
	m := mount(t, root)
	for _, name := range []string{"doc-000", "new-garbage"} {
		f, err := os.OpenFile(m.Path("store/"+name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("this is plain text, not a protobuf message\n")); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s: close: %v, want EINVAL", name, err)
		}
	}
	if !bytes.Equal(mustRead(t, m.Path("store/doc-000")), docs[0].Data) {
		t.Error("doc-000 changed")
	}
	if _, err := os.Stat(m.Path("store/new-garbage")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused new document exists: %v", err)
	}
	if out, err := runTimeout(time.Minute, "cp", "/etc/hostname", m.Path("store/hostname")); err == nil || !strings.Contains(out, "Invalid argument") {
		t.Errorf("cp of a text file: %v %s", err, out)
	}
	m.Unmount()
	storeUnchanged(t, filepath.Join(root, "store"), h0, b0, docs)
	if log := readFile(m.Log); !strings.Contains(log, "store/doc-000: close: refused: not a DocumentProto") {
		t.Errorf("no log line for the refusal:\n%s", log)
	}
}

// TestDocKeyLength20: a store written with key_length 20 (by this
// test, with docarray's layout) is detected, and read with the option.
func TestDocKeyLength20(t *testing.T) {
	for _, opts := range [][]string{nil, {"key_length=20"}} {
		t.Run(fmt.Sprint(opts), func(t *testing.T) {
			root := t.TempDir()
			var docs []storeDoc
			for i := 0; i < 25; i++ {
				k := fmt.Sprintf("k20-%03d", i)
				docs = append(docs, storeDoc{k, pbDoc(k, strings.Repeat("twenty ", i))})
			}
			docs = append(docs, storeDoc{"exactly-twenty-chars", pbDoc("exactly-twenty-chars", "20")},
				storeDoc{"this-id-is-longer-than-twenty", pbDoc("this-id-is-longer-than-twenty", "truncated")})
			writeDocStore(t, filepath.Join(root, "s20"), 20, docs)
			docs[len(docs)-1].Key = "this-id-is-longer-th"
			if got := readDocStore(t, filepath.Join(root, "s20"), 20); len(got.Docs) != len(docs) {
				t.Fatalf("independent reader: %d documents", len(got.Docs))
			}
			m := mount(t, root, opts...)
			sameDocs(t, "listing", docsThroughMount(t, m.Path("s20")), docs)
			if marker := string(mustRead(t, m.Path("s20/.docarray"))); !strings.HasPrefix(marker, "key_length: 20\n") {
				t.Errorf("marker: %s", marker)
			}
			added := storeDoc{"added-through-the-mount", pbDoc("added-through-the-mount", "!")}
			if err := os.WriteFile(m.Path("s20/"+added.Key), added.Data, 0o644); err != nil {
				t.Fatal(err)
			}
			m.Unmount()
			added.Key = added.Key[:20] // truncated to the key length
			st := readDocStore(t, filepath.Join(root, "s20"), 20)
			sameDocs(t, "on disk", st.Docs, append(docs, added))
			if !st.TailOK {
				t.Error("tail")
			}
			pyDocs(t, filepath.Join(root, "s20"), 20, append(docs, added))
		})
	}
}

// TestDocRsyncBackupRestore: rsync -a out of the mount and back into an
// empty directory of the mount restores the store: same documents, same
// order, same mtimes and modes, surviving a remount; a second rsync in
// either direction transfers no document.
func TestDocRsyncBackupRestore(t *testing.T) {
	root, docs := fixtureStore(t)
	m := mount(t, root)
	old := time.Date(2019, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(m.Path("store/doc-000"), old, old)
	os.Chmod(m.Path("store/doc-004"), 0o600)
	backup := t.TempDir()
	run(t, "rsync", "-a", m.Path("store")+"/", backup+"/")
	if out := run(t, "rsync", "-a", "--itemize-changes", m.Path("store")+"/", backup+"/"); strings.TrimSpace(out) != "" {
		t.Errorf("second backup run transferred:\n%s", out)
	}
	if err := os.Mkdir(m.Path("restored"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "rsync", "-a", backup+"/", m.Path("restored")+"/")
	if a, b := mustRead(t, m.Path("store/.docarray")), mustRead(t, m.Path("restored/.docarray")); !bytes.Equal(a, b) {
		t.Errorf("restored marker differs:\n%s\nvs\n%s", a, b)
	}
	sameDocs(t, "restored", docsThroughMount(t, m.Path("restored")), docs)
	checkAttrs := func(what string) {
		for _, d := range docs {
			a, err1 := os.Stat(m.Path("store/" + d.Key))
			b, err2 := os.Stat(m.Path("restored/" + d.Key))
			if err1 != nil || err2 != nil || !a.ModTime().Equal(b.ModTime()) || a.Mode() != b.Mode() {
				t.Errorf("%s: %s: %v %v / %v %v (%v %v)", what, d.Key, a.ModTime(), a.Mode(), b.ModTime(), b.Mode(), err1, err2)
			}
		}
	}
	checkAttrs("restored")
	out := run(t, "rsync", "-a", "--itemize-changes", backup+"/", m.Path("restored")+"/")
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" && !strings.HasSuffix(line, ".docarray") {
			t.Errorf("second restore run transferred a document: %s", line)
		}
	}
	m.Unmount()
	st := readDocStore(t, filepath.Join(root, "restored"), 36)
	sameDocs(t, "restored on disk", st.Docs, docs)
	if !st.TailOK {
		t.Error("tail")
	}
	m = mount(t, root)
	sameDocs(t, "restored after remount", docsThroughMount(t, m.Path("restored")), docs)
	checkAttrs("after remount")
	if out := run(t, "rsync", "-a", "--itemize-changes", "--exclude=.docarray", backup+"/", m.Path("restored")+"/"); strings.TrimSpace(out) != "" {
		t.Errorf("after remount, rsync would transfer:\n%s", out)
	}
	m.Unmount()
}

// TestDocChangedBehindBack: a store rewritten by another program while
// mounted is reloaded, and the kernel's cached pages and names of the
// changed documents are dropped.
func TestDocChangedBehindBack(t *testing.T) {
	root := t.TempDir()
	a1, b, c := pbDoc("a", "first a"), pbDoc("b", "b"), pbDoc("c", "c")
	writeDocStore(t, filepath.Join(root, "s"), 36, []storeDoc{{"a", a1}, {"b", b}, {"c", c}})
	m := mount(t, root)
	for i := 0; i < 2; i++ { // twice: the second read is from the kernel's cache
		if !bytes.Equal(mustRead(t, m.Path("s/a")), a1) {
			t.Fatal("a")
		}
	}
	a2 := pbDoc("a", "the second version of a, longer")
	writeDocStore(t, filepath.Join(root, "s"), 36, []storeDoc{{"a", a2}, {"c", c}, {"d", pbDoc("d", "d")}})
	time.Sleep(100 * time.Millisecond) // a store looks at its files at most every 50 ms
	if got := mustRead(t, m.Path("s/a")); !bytes.Equal(got, a2) {
		t.Errorf("a after the change: %q", got)
	}
	if _, err := os.Stat(m.Path("s/b")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("b: %v", err)
	}
	if names := readdirNames(t, m.Path("s")); strings.Join(names, ",") != "a,c,d,.docarray" {
		t.Errorf("listing %q", names)
	}
	m.Unmount()
	if log := readFile(m.Log); !strings.Contains(log, "changed behind arrayfs's back") {
		t.Errorf("no log line:\n%s", log)
	}
}

// TestDocMarkerRules: a bad marker leaves a directory plain; a store
// cannot be made over files that are not documents; documents already
// there become documents of the new store; rm -r removes a store.
func TestDocMarkerRules(t *testing.T) {
	root := t.TempDir()
	m := mount(t, root)
	os.Mkdir(m.Path("plain"), 0o755)
	if err := os.WriteFile(m.Path("plain/.docarray"), []byte("key_length: [not a number"), 0o644); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("bad marker: %v", err)
	}
	os.WriteFile(m.Path("plain/notes.txt"), []byte("hello"), 0o644)
	if names := readdirNames(t, m.Path("plain")); strings.Join(names, ",") != "notes.txt" {
		t.Errorf("plain dir: %q", names)
	}
	if err := os.WriteFile(m.Path("plain/.docarray"), []byte("key_length: 36\n"), 0o644); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Errorf("marker over a text file: %v", err)
	}
	// Again and again, at once: a refused marker's release, which comes
	// after close(2), must not take the claim of the next attempt.
	for i := 0; i < 50; i++ {
		if err := os.WriteFile(m.Path("plain/.docarray"), []byte("key_length: [x"), 0o644); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("bad marker, attempt %d: %v", i, err)
		}
		if err := os.WriteFile(m.Path("plain/.docarray"), []byte("key_length: 36\n"), 0o644); !errors.Is(err, syscall.ENOTEMPTY) {
			t.Fatalf("marker over a text file, attempt %d: %v", i, err)
		}
	}
	if _, err := os.Stat(m.Path("plain/.docarray")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused marker is still there: %v", err)
	}
	if _, err := os.Stat(m.Backing("plain/header.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused marker made a store: %v", err)
	}
	os.Mkdir(m.Path("pre"), 0o755)
	os.WriteFile(m.Path("pre/-first"), pbDoc("-first", "sorted before the marker"), 0o644)
	if err := os.WriteFile(m.Path("pre/.docarray"), []byte("key_length: 36\norder:\n- \"x\"\n- \"-first\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(m.Path("pre/x"), pbDoc("x", "x"), 0o644)
	if names := readdirNames(t, m.Path("pre")); strings.Join(names, ",") != "x,-first,.docarray" {
		t.Errorf("store made over a document: %q", names)
	}
	if err := os.Mkdir(m.Path("pre/sub"), 0o755); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir in a store: %v", err)
	}
	run(t, "rm", "-r", m.Path("pre"))
	if _, err := os.Stat(m.Backing("pre")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rm -r left the store: %v", err)
	}
	m.Unmount()
}
