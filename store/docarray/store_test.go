package docarray

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

func TestDocNames(t *testing.T) {
	for _, key := range []string{"doc-1", "", ".", "..", "a/b", "50%", "%2F", "nul\x00in", "%", ".x", "ü✓😀",
		".docarray", ".arrayfs", ".arrayfs-docmeta.jsonl", ".arrayfs-stage.x", ".arrayfs-%", ".docarrayx", "%2Edocarray",
		strings.Repeat("é", 200), strings.Repeat("/", 120), strings.Repeat("a%", 100)} {
		name := NameOfKey(key)
		if len(name) > 255 || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." || name == "" {
			t.Errorf("DocName(%q) = %q: not a file name", key, name)
		}
		if name == MarkerName || name == ".arrayfs" || strings.HasPrefix(name, ".arrayfs-") {
			t.Errorf("DocName(%q) = %q: a name the store keeps for itself", key, name)
		}
		if isHashedName(name) {
			if len(key)*1 <= 85 {
				t.Errorf("short key %q got a hashed name", key)
			}
			continue
		}
		back, ok := KeyOfName(name)
		if !ok || back != key {
			t.Errorf("DocKey(DocName(%q) = %q) = %q, %v", key, name, back, ok)
		}
	}
	if got := NameOfKey(".docarray"); got != "%2Edocarray" {
		t.Errorf("DocName(.docarray) = %q", got)
	}
	for _, bad := range []string{"50%off", "%2e", "%2Ex", "a%2", "\xff", ".docarray", ".arrayfs-x", "%2E.docarray"} {
		if k, ok := KeyOfName(bad); ok {
			t.Errorf("DocKey(%q) accepted (%q)", bad, k)
		}
	}
}

func TestValidateDocument(t *testing.T) {
	if err := ValidateDocument(testDoc("x", "hello")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{
		[]byte("key_length: 36\norder: []\n"),
		[]byte("hello world, not protobuf"),
		{0x0a, 0x10, 'a'},              // length past the end
		{0x68, 0x01},                   // field 13 (text) as a varint
		{0x0a, 0x02, 0xff, 0xfe},       // id not UTF-8
		{0x22, 0x02, 0x6a, 0x01},       // chunk holding text as a varint
		{0x00},                         // field 0
		{0x8a, 0x01, 0x02, 0x08, 0x01}, // tags (Struct) with a field entry as varint
	} {
		if err := ValidateDocument(bad); err == nil {
			t.Errorf("%q validated", bad)
		} else {
			t.Logf("%q: %v", bad, err)
		}
	}
	if _, err := parseMarker([]byte("key_length: 36\norder: []\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := parseMarker(testDoc("x", "y")); err == nil {
		t.Fatal("a document parsed as a marker")
	}
}

// TestDocStoreFixture opens the store docarray wrote and checks every
// document against the original reader's expectations.
func TestDocStoreFixture(t *testing.T) {
	root := t.TempDir()
	copyFixture(t, root, "store")
	d := openTestDataset(t, root, testConfig{})
	defer d.Close()
	s := d.docs.Store("store")
	if s == nil {
		t.Fatal("fixture not recognised as a store")
	}
	if s.KeyLength() != 36 {
		t.Fatalf("key length %d", s.KeyLength())
	}
	want := expectedDocs(t)
	list := s.List()
	if len(list) != len(want) {
		t.Fatalf("%d documents listed, want %d", len(list), len(want))
	}
	for i, e := range want {
		if list[i].Key != e.HeaderKey {
			t.Errorf("document %d: key %q, want %q", i, list[i].Key, e.HeaderKey)
		}
		b := readAll(t, s, list[i].Name)
		if sha(b) != e.RawSHA256 {
			t.Errorf("%s: sha256 %s, want %s", e.HeaderKey, sha(b), e.RawSHA256)
		}
		if err := ValidateDocument(b); err != nil {
			t.Errorf("%s: %v", e.HeaderKey, err)
		}
		if id, _ := DocumentID(b); id != e.ID {
			t.Errorf("%s: id %q, want %q", e.HeaderKey, id, e.ID)
		}
	}
	if _, err := s.Lookup("doc-006"); err != syscall.ENOENT {
		t.Errorf("deleted doc-006: %v", err)
	}
	// The 58-character id resolves through its full name too.
	e, err := s.Lookup("a-very-long-document-identifier-that-exceeds-36-characters")
	if err != nil || e.Key != "a-very-long-document-identifier-that" {
		t.Errorf("long id: %+v %v", e, err)
	}
	if p := checkStoreDir(t, filepath.Join(root, "store"), "store"); len(p) != 0 {
		t.Errorf("check of the fixture: %v", p)
	}
}

// TestDocStoreWriteReopen changes a copy of the fixture and reads it back
// with the independent reader: same keys, order and bytes, and a tail
// docarray can reopen.
func TestDocStoreWriteReopen(t *testing.T) {
	root := t.TempDir()
	dir := copyFixture(t, root, "store")
	d := openTestDataset(t, root, testConfig{PoolUnits: 3})
	s := d.docs.Store("store")
	before, _, _ := readStore(t, dir, 36)
	mustNil(t, s.Commit2(t, "new-1", testDoc("new-1", "first")))
	mustNil(t, s.Commit2(t, "doc-000", testDoc("doc-000", "rewritten")))
	mustNil(t, s.Remove("doc-007"))
	mustNil(t, s.Rename("doc-008", "doc-008-renamed", 0))
	mustNil(t, s.Rename("doc-004", "doc-009", 0)) // over an existing one
	mustNil(t, s.Commit2(t, NameOfKey("a/b%c"), testDoc("a/b%c", "escaped")))
	if err := s.Commit2(t, "junk", []byte("not protobuf")); engine.ErrnoOf(err) != syscall.EINVAL {
		t.Fatalf("junk: %v", err)
	}
	for i := 0; i < 50; i++ {
		mustNil(t, s.Commit2(t, fmt.Sprintf("bulk-%02d", i), testDoc(fmt.Sprintf("bulk-%02d", i), strings.Repeat("x", i))))
	}
	mustNil(t, d.Close())

	after, _, tailOK := readStore(t, dir, 36)
	if !tailOK {
		t.Error("last record is not live or does not end at the end of body.bin")
	}
	var want []readDoc
	for _, doc := range before {
		switch doc.key {
		case "doc-000":
			want = append(want, readDoc{doc.key, testDoc("doc-000", "rewritten")})
		case "doc-007", "doc-004":
		case "doc-008":
			want = append(want, readDoc{"doc-008-renamed", doc.data})
		case "doc-009":
			for _, d4 := range before {
				if d4.key == "doc-004" {
					want = append(want, readDoc{"doc-009", d4.data})
				}
			}
		default:
			want = append(want, doc)
		}
	}
	want = append(want, readDoc{"new-1", testDoc("new-1", "first")}, readDoc{"a/b%c", testDoc("a/b%c", "escaped")})
	for i := 0; i < 50; i++ {
		want = append(want, readDoc{fmt.Sprintf("bulk-%02d", i), testDoc(fmt.Sprintf("bulk-%02d", i), strings.Repeat("x", i))})
	}
	compareDocs(t, after, want)

	// And arrayfs reads the same after a reopen.
	d = openTestDataset(t, root, testConfig{})
	defer d.Close()
	s = d.docs.Store("store")
	list := s.List()
	if len(list) != len(want) {
		t.Fatalf("reopened: %d documents, want %d", len(list), len(want))
	}
	for i, w := range want {
		if list[i].Key != w.key || !bytes.Equal(readAll(t, s, list[i].Name), w.data) {
			t.Errorf("reopened %d: %q", i, list[i].Key)
		}
	}
}

// Commit2 creates (if needed) and commits a document, as the file
// system does on create, write and close.
func (s *Store) Commit2(t testing.TB, name string, data []byte) error {
	e, _, err := s.Create(name, Meta{Mode: 0o644}, false)
	if err != nil {
		return err
	}
	err = s.Commit(name, e.Ino, data)
	if err != nil {
		s.Abandon(name, e.Ino)
	}
	return err
}

func mustNil(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func compareDocs(t testing.TB, got, want []readDoc) {
	t.Helper()
	if len(got) != len(want) {
		var gk, wk []string
		for _, g := range got {
			gk = append(gk, g.key)
		}
		for _, w := range want {
			wk = append(wk, w.key)
		}
		t.Fatalf("%d documents, want %d:\n got %q\nwant %q", len(got), len(want), gk, wk)
	}
	for i := range want {
		if got[i].key != want[i].key || !bytes.Equal(got[i].data, want[i].data) {
			t.Errorf("document %d: %q (%d bytes), want %q (%d bytes)", i, got[i].key, len(got[i].data), want[i].key, len(want[i].data))
		}
	}
}

// TestDocStoreKeyLength20 detects K=20 from the records, and takes it
// from the option.
func TestDocStoreKeyLength20(t *testing.T) {
	root := t.TempDir()
	var keys []string
	var docs [][]byte
	for i := 0; i < 30; i++ {
		k := fmt.Sprintf("k20-%03d", i)
		keys = append(keys, k)
		docs = append(docs, testDoc(k, strings.Repeat("t", i*7)))
	}
	keys[3] = "exactly-twenty-chars"
	docs[3] = testDoc(keys[3], "twenty")
	writeDocs(t, filepath.Join(root, "s20"), 20, keys, docs)
	for _, cfg := range []testConfig{{}, {KeyLength: 20}} {
		d := openTestDataset(t, root, cfg)
		s := d.docs.Store("s20")
		if s == nil || s.KeyLength() != 20 {
			t.Fatalf("cfg %+v: store %v", cfg, s)
		}
		list := s.List()
		for i, e := range list {
			if e.Key != keys[i] || !bytes.Equal(readAll(t, s, e.Name), docs[i]) {
				t.Errorf("cfg %+v: doc %d is %q", cfg, i, e.Key)
			}
		}
		mustNil(t, s.Commit2(t, "added-by-test", testDoc("added-by-test", "!")))
		mustNil(t, d.Close())
		got, _, tail := readStore(t, filepath.Join(root, "s20"), 20)
		if !tail || got[len(got)-1].key != "added-by-test" {
			t.Errorf("cfg %+v: after a write: tail %v, last %q", cfg, tail, got[len(got)-1].key)
		}
		if err := os.Remove(filepath.Join(root, "s20", MetaName)); err != nil {
			t.Fatal(err)
		}
		writeDocs(t, filepath.Join(root, "s20"), 20, keys, docs)
	}
	// With the wrong K given, the store is not served.
	d := openTestDataset(t, root, testConfig{KeyLength: 36})
	defer d.Close()
	if s := d.docs.Store("s20"); s != nil && len(s.List()) == 30 {
		t.Error("K=36 read a K=20 store")
	}
}

func TestDocStoreNoKeyFits(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "junk")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "header.bin"), bytes.Repeat([]byte{0xff}, 168*3), 0o644)
	os.WriteFile(filepath.Join(dir, "body.bin"), []byte("x"), 0o644)
	var logged []string
	d := openTestDataset(t, root, testConfig{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
	defer d.Close()
	if s := d.docs.Store("junk"); s != nil {
		t.Fatal("a store with no fitting key length was served")
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "no key length fits") {
		t.Errorf("logged %q", logged)
	}
}

// TestDocStoreBadRecords: a store with broken records still opens and
// serves the good ones; check lists the broken ones.
func TestDocStoreBadRecords(t *testing.T) {
	root := t.TempDir()
	var keys []string
	var docs [][]byte
	for i := 0; i < 40; i++ {
		keys = append(keys, fmt.Sprintf("d%02d", i))
		docs = append(docs, testDoc(keys[i], "x"))
	}
	dir := filepath.Join(root, "bad")
	writeDocs(t, dir, 36, keys, docs)
	h, _ := os.ReadFile(filepath.Join(dir, "header.bin"))
	rs := 168
	binary.LittleEndian.PutUint64(h[5*rs+144:], 1<<20)         // past EOF
	binary.LittleEndian.PutUint64(h[7*rs+152:], uint64(1<<63)) // negative r
	binary.LittleEndian.PutUint32(h[9*rs:], 0xD800)            // surrogate in the key
	copy(h[11*rs:11*rs+144], h[12*rs:12*rs+144])               // duplicate key d12
	body, _ := os.ReadFile(filepath.Join(dir, "body.bin"))
	body[int(binary.LittleEndian.Uint64(h[13*rs+144:]))+int(binary.LittleEndian.Uint64(h[13*rs+152:]))] = 0xff // d13 does not parse
	os.WriteFile(filepath.Join(dir, "header.bin"), h, 0o644)
	os.WriteFile(filepath.Join(dir, "body.bin"), body, 0o644)

	problems := checkStoreDir(t, dir, "bad")
	text := fmt.Sprint(problems)
	for _, want := range []string{"record 5", "past the end", "record 7", "negative", "record 9", "UTF-32", "duplicate key \"d12\"", "record 13", "does not parse"} {
		if !strings.Contains(text, want) {
			t.Errorf("check does not say %q: %s", want, text)
		}
	}
	d := openTestDataset(t, root, testConfig{})
	defer d.Close()
	s := d.docs.Store("bad")
	if s == nil {
		t.Fatal("store with bad records not served")
	}
	var names []string
	for _, e := range s.List() {
		names = append(names, e.Key)
	}
	if len(names) != 36 || strings.Contains(strings.Join(names, ","), "d05") || strings.Contains(strings.Join(names, ","), "d11") {
		t.Errorf("served %q", names)
	}
}

// TestDocStoreOrderAdoption: a marker's order is adopted for documents
// that arrive in any order.
func TestDocStoreOrderAdoption(t *testing.T) {
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "r"), 0o755)
	d := openTestDataset(t, root, testConfig{PoolUnits: 4})
	order := []string{"z", "a", "m", "b", "q"}
	s, _, err := d.docs.Create("r", renderMarker(36, order), Meta{Mode: 0o644}, "")
	mustNil(t, err)
	// rsync's way: a temp name per document, renamed into place, in
	// name order, plus one document the order does not list.
	for _, k := range []string{"a", "b", "extra", "m", "q", "z"} {
		tmp := "." + k + ".XyZ123"
		mustNil(t, s.Commit2(t, tmp, testDoc(k, k)))
		mustNil(t, s.Rename(tmp, k, 0))
	}
	m, _ := s.Marker()
	if !bytes.Contains(m, []byte("- \"z\"\n- \"a\"\n- \"m\"\n- \"b\"\n- \"q\"\n- \"extra\"\n")) {
		t.Errorf("marker:\n%s", m)
	}
	mustNil(t, d.Close())
	got, _, tail := readStore(t, filepath.Join(root, "r"), 36)
	var keys []string
	for _, g := range got {
		keys = append(keys, g.key)
	}
	if strings.Join(keys, ",") != "z,a,m,b,q,extra" || !tail {
		t.Errorf("order %q, tail %v", keys, tail)
	}
	// Adopting an order with documents present reorders them.
	d = openTestDataset(t, root, testConfig{})
	s = d.docs.Store("r")
	mustNil(t, s.WriteMarker(renderMarker(36, []string{"extra", "q", "b"}), nil))
	mustNil(t, d.Close())
	got, _, tail = readStore(t, filepath.Join(root, "r"), 36)
	keys = keys[:0]
	for _, g := range got {
		keys = append(keys, g.key)
	}
	if strings.Join(keys, ",") != "extra,q,b,z,a,m" || !tail {
		t.Errorf("reordered %q, tail %v", keys, tail)
	}
}

func TestDocStorePrune(t *testing.T) {
	root := t.TempDir()
	dir := copyFixture(t, root, "store")
	d := openTestDataset(t, root, testConfig{})
	s := d.docs.Store("store")
	mtime := int64(1_600_000_000_123_456_789)
	_, err := s.SetAttr("doc-007", AttrChange{Mtime: &mtime})
	mustNil(t, err)
	for i := 0; i < 5; i++ {
		mustNil(t, s.Commit2(t, "doc-000", testDoc("doc-000", strings.Repeat("v", 1000*i))))
		mustNil(t, s.Sync())
	}
	mustNil(t, s.Remove("doc-010"))
	before, _, _ := readStore(t, dir, 36)
	ino := mustLookup(t, s, "doc-012").Ino
	mustNil(t, s.Rename("doc-012", "doc-012b", 0))
	mustNil(t, s.Sync())
	before, _, _ = readStore(t, dir, 36)
	var calls int
	stats, err := s.Prune(func(done, total int64) { calls++ })
	mustNil(t, err)
	t.Logf("prune: %+v (%d progress calls)", stats, calls)
	if stats.BytesAfter >= stats.BytesBefore {
		t.Errorf("prune did not shrink the store: %+v", stats)
	}
	after, _, tail := readStore(t, dir, 36)
	compareDocs(t, after, before)
	if !tail {
		t.Error("pruned store's tail")
	}
	if e := mustLookup(t, s, "doc-007"); e.Meta.Mtime != mtime {
		t.Errorf("mtime after prune %d", e.Meta.Mtime)
	}
	if e := mustLookup(t, s, "doc-012b"); e.Ino != ino {
		t.Errorf("inode after rename+prune %x, want %x", e.Ino, ino)
	}
	mustNil(t, s.Commit2(t, "after-prune", testDoc("after-prune", "z")))
	mustNil(t, d.Close())
	ents, _ := os.ReadDir(root)
	if len(ents) != 1 {
		t.Errorf("left in the parent: %v", ents)
	}
	d = openTestDataset(t, root, testConfig{})
	defer d.Close()
	s = d.docs.Store("store")
	if e := mustLookup(t, s, "doc-007"); e.Meta.Mtime != mtime {
		t.Errorf("mtime after remount %d", e.Meta.Mtime)
	}
	if e := mustLookup(t, s, "doc-012b"); e.Ino != ino {
		t.Errorf("inode after remount %x, want %x", e.Ino, ino)
	}
}

func mustLookup(t testing.TB, s *Store, name string) Entry {
	t.Helper()
	e, err := s.Lookup(name)
	if err != nil {
		t.Fatalf("lookup %s: %v", name, err)
	}
	return e
}

// TestDocStoreReload: a change made behind arrayfs's back is picked up
// and reported.
func TestDocStoreReload(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "s")
	writeDocs(t, dir, 36, []string{"a", "b"}, [][]byte{testDoc("a", "1"), testDoc("b", "2")})
	d := openTestDataset(t, root, testConfig{})
	defer d.Close()
	got := make(chan []Change, 1)
	d.docs.SetNotify(func(rel string, ch []Change) { got <- ch })
	s := d.docs.Store("s")
	if n := len(s.List()); n != 2 {
		t.Fatal(n)
	}
	mtime := int64(1_500_000_000_000_000_000)
	_, err := s.SetAttr("a", AttrChange{Mtime: &mtime})
	mustNil(t, err)
	// The new file is a different key order: a's record moves.
	writeDocs(t, dir, 36, []string{"c", "a"}, [][]byte{testDoc("c", "3"), testDoc("a", "changed")})
	time.Sleep(2 * refreshEvery)
	if d.docs.Store("s") != s {
		t.Fatal("store object replaced")
	}
	ch := <-got
	text := fmt.Sprintf("%+v", ch)
	if len(ch) != 2 || !strings.Contains(text, "{Name:a Ino:") || !strings.Contains(text, "Name:c") || !strings.Contains(text, "Added:true") {
		t.Errorf("changes %s", text)
	}
	if _, err := s.Lookup("b"); err != syscall.ENOENT {
		t.Errorf("b after reload: %v", err)
	}
	if !bytes.Equal(readAll(t, s, "a"), testDoc("a", "changed")) {
		t.Error("a not reloaded")
	}
	if e := mustLookup(t, s, "a"); e.Meta.Mtime != mtime {
		t.Errorf("a's mtime after the reload: %d", e.Meta.Mtime)
	}
	if e := mustLookup(t, s, "c"); e.Meta.Mtime == mtime {
		t.Error("c took a's mtime")
	}
}

func TestRenderMarkerRoundTrip(t *testing.T) {
	keys := []string{"plain", "quote\"back\\slash", "nul\x00", "ctl\x01\x7f", "line\u2028sep", "ü✓😀", "- dash", "#x", "123", "true", ""}
	spec, err := parseMarker(renderMarker(7, keys))
	mustNil(t, err)
	if spec.k != 7 || len(spec.order) != len(keys) {
		t.Fatalf("%+v", spec)
	}
	for i := range keys {
		if spec.order[i] != keys[i] {
			t.Errorf("%q came back as %q", keys[i], spec.order[i])
		}
	}
	if !utf8.Valid(renderMarker(36, keys)) {
		t.Error("not UTF-8")
	}
}

// TestWriteFileAtKeepsMtime: arrayfs's own files (sidecar, rewritten
// header) do not move the store directory's mtime (rsync would see a
// change that is not the user's).
func TestDocWriteFileAtKeepsMtime(t *testing.T) {
	d := t.TempDir()
	old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	os.Chtimes(d, old, old)
	fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	mustNil(t, err)
	defer unix.Close(fd)
	mustNil(t, writeFileAt(fd, "x", []byte("y"), 0o644))
	if st, _ := os.Stat(d); !st.ModTime().Equal(old) {
		t.Fatalf("mtime %v, want %v", st.ModTime(), old)
	}
}

// Key-length detection accepts a store with one bad record among a few
// good ones, and one whose header.bin ends in a torn record (a crash in
// the middle of an append); before, it tried only lengths dividing the
// size and needed nine records in ten valid.
func TestDetectKeyLengthBadAndTornRecords(t *testing.T) {
	for _, k := range []int{20, 36, 64} {
		dir := t.TempDir()
		var docs [][]byte
		var keys []string
		for i := 0; i < 4; i++ {
			keys = append(keys, fmt.Sprintf("doc-%d", i))
			docs = append(docs, testDoc(keys[i], "x"))
		}
		writeDocs(t, dir, k, keys, docs)
		h, err := os.ReadFile(filepath.Join(dir, "header.bin"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := os.ReadFile(filepath.Join(dir, "body.bin"))
		rs := docRecordSize(k)
		detect := func(h []byte) int {
			return detectKeyLength(int64(len(h)), int64(len(body)), func(p []byte, off int64) error {
				copy(p, h[off:])
				return nil
			}).k
		}
		oneBad := append([]byte{}, h...)
		binary.LittleEndian.PutUint64(oneBad[rs+4*k+16:], 1<<40) // record 1 ends far past body.bin
		torn := append(append([]byte{}, h...), h[2*rs:2*rs+rs/2]...)
		if got := detect(oneBad); got != k {
			t.Errorf("K=%d, one bad record of four: detected %d", k, got)
		}
		if got := detect(torn); got != k {
			t.Errorf("K=%d, a torn record at the end: detected %d", k, got)
		}
	}
}
