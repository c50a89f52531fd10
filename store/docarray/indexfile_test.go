package docarray

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"
)

// indexedStore writes a store of n documents with a duplicate key and a
// bad record.
func indexedStore(t *testing.T, root string, n int) string {
	t.Helper()
	var keys []string
	var docs [][]byte
	for i := 0; i < n; i++ {
		keys = append(keys, fmt.Sprintf("doc-%05d", i))
		docs = append(docs, testDoc(keys[i], fmt.Sprint("text ", i)))
	}
	dir := filepath.Join(root, "s")
	writeDocs(t, dir, 36, keys, docs)
	h, _ := os.ReadFile(filepath.Join(dir, HeaderName))
	rs := docRecordSize(36)
	copy(h[3*rs:3*rs+144], h[4*rs:4*rs+144])           // duplicate key doc-00004
	binary.LittleEndian.PutUint64(h[7*rs+144:], 1<<40) // record 7 past the end of body.bin
	if err := os.WriteFile(filepath.Join(dir, HeaderName), h, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// storeState is what a store serves: every entry, in order, and each
// document's bytes.
func storeState(t *testing.T, s *Store) (entries []Entry, data map[string][]byte) {
	t.Helper()
	data = map[string][]byte{}
	for _, e := range s.List() {
		full, err := s.Lookup(e.Name)
		if err != nil {
			t.Fatalf("lookup %s: %v", e.Name, err)
		}
		full.Meta, full.Version = Meta{}, 0
		entries = append(entries, full)
		data[e.Name] = readAll(t, s, e.Name)
	}
	return entries, data
}

func waitIndexFile(t *testing.T, dir string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(filepath.Join(dir, IndexName)); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s saved", IndexName)
}

// TestSavedIndexServesTheSameStore: the index saved at the first open is
// read at the next, and the store then serves exactly what a parse of
// its records does (duplicates and bad records included); an index that
// is stale (header.bin changed) or corrupt is not used.
func TestSavedIndexServesTheSameStore(t *testing.T) {
	// The files were just written: their ctime is now, whatever their
	// mtime says. A timestamp's tick here is far shorter than the test.
	defer func(w time.Duration, c int) { indexRacyWindow, indexChunk = w, c }(indexRacyWindow, indexChunk)
	// Chunks of a few records: the index is written in many pieces.
	indexRacyWindow, indexChunk = 0, 7
	root := t.TempDir()
	dir := indexedStore(t, root, 3000)

	d := openTestDataset(t, root, testConfig{})
	s := d.docs.Store("s")
	if s == nil || s.indexLoaded {
		t.Fatalf("first open: store %v, loaded from a saved index: %v", s, s != nil && s.indexLoaded)
	}
	wantEntries, wantData := storeState(t, s)
	wantDups, wantLive := len(s.dups), s.live
	waitIndexFile(t, dir)
	d.Close()
	if wantDups != 1 || s.indexBad != 1 {
		t.Fatalf("the store has %d duplicate keys and %d bad records, want 1 and 1", wantDups, s.indexBad)
	}

	d = openTestDataset(t, root, testConfig{})
	s = d.docs.Store("s")
	if s == nil || !s.indexLoaded {
		t.Fatal("second open did not use the saved index")
	}
	gotEntries, gotData := storeState(t, s)
	if !reflect.DeepEqual(gotEntries, wantEntries) || !reflect.DeepEqual(gotData, wantData) {
		t.Fatal("the store served from the saved index differs from the parsed one")
	}
	if len(s.dups) != wantDups || s.live != wantLive || s.indexBad != 1 {
		t.Fatalf("saved index: %d dups, %d live, %d bad; parsed: %d, %d, 1", len(s.dups), s.live, s.indexBad, wantDups, wantLive)
	}
	// A document added through the store is found beside the loaded ones.
	mustNil(t, s.Commit2(t, "new-doc", testDoc("new-doc", "x")))
	if _, err := s.Lookup("new-doc"); err != nil {
		t.Fatal(err)
	}
	d.Close()

	// The write-back changed header.bin: the saved index is stale.
	d = openTestDataset(t, root, testConfig{})
	if s = d.docs.Store("s"); s == nil || s.indexLoaded {
		t.Fatal("a saved index of an older header.bin was used")
	}
	if _, err := s.Lookup("new-doc"); err != nil {
		t.Fatal(err)
	}
	d.Close()

	// A corrupt one is not used either.
	d = openTestDataset(t, root, testConfig{})
	d.docs.Store("s")
	waitIndexFile(t, dir)
	d.Close()
	b, err := os.ReadFile(filepath.Join(dir, IndexName))
	if err != nil {
		t.Fatal(err)
	}
	good := slices.Clone(b)
	b[len(b)/2] ^= 0xff
	os.WriteFile(filepath.Join(dir, IndexName), b, 0o644)
	d = openTestDataset(t, root, testConfig{})
	if s = d.docs.Store("s"); s == nil || s.indexLoaded {
		t.Fatal("a corrupt saved index was used")
	}
	d.Close()

	// Nor one whose checksum holds but whose key map names a record
	// past the header's end (made by hand, not by a crash).
	b = good
	x, ok := parseSavedIndex(b)
	if !ok {
		t.Fatal("the saved index does not parse")
	}
	for c := range x.cells {
		if binary.LittleEndian.Uint64(x.hashBytes[8*c:]) != 0 {
			binary.LittleEndian.PutUint32(x.cellBytes[4*c:], 1<<30)
			break
		}
	}
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
	os.WriteFile(filepath.Join(dir, IndexName), b, 0o644)
	d = openTestDataset(t, root, testConfig{})
	defer d.Close()
	if s = d.docs.Store("s"); s == nil || s.indexLoaded {
		t.Fatal("a saved index naming a record past the header was used")
	}
	if _, err := s.Lookup("doc-00004"); err != nil {
		t.Fatal(err)
	}
}

// changingWriter changes the store at its second write: the store is
// changed while its index is being saved.
type changingWriter struct {
	t      *testing.T
	s      *Store
	writes int
}

func (w *changingWriter) Write(p []byte) (int, error) {
	if w.writes++; w.writes == 2 {
		mustNil(w.t, w.s.Commit2(w.t, "new-doc", testDoc("new-doc", "x")))
	}
	return len(p), nil
}

// A save during which the store changes is abandoned: its file would
// hold the index half before and half after the change.
func TestSavedIndexAbandonedOnChange(t *testing.T) {
	defer func(c int) { indexChunk = c }(indexChunk)
	indexChunk = 100
	root := t.TempDir()
	indexedStore(t, root, 3000)
	d := openTestDataset(t, root, testConfig{})
	defer d.Close()
	s := d.docs.Store("s")
	if s == nil {
		t.Fatal("store not served")
	}
	sig, err := s.indexSig()
	mustNil(t, err)
	var whole countingWriter
	if err := s.writeIndex(&whole, sig, s.Version()); err != nil || whole < 3000*20 {
		t.Fatalf("save of an unchanged store: %v after %d bytes", err, whole)
	}
	w := &changingWriter{t: t, s: s}
	if err := s.writeIndex(w, sig, s.Version()); err != errIndexChanged || w.writes != 2 {
		t.Fatalf("save of a store changed after the first of its chunks: %v after %d writes, want %v after 2", err, w.writes, errIndexChanged)
	}
}

type countingWriter int

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}

// TestIndexAcrossWorkers: a header long enough to be parsed by several
// workers, with one key in the ranges of both, is indexed as a single
// worker does: the key's document at its first record's position, with
// its last record's bytes, and every other document once.
func TestIndexAcrossWorkers(t *testing.T) {
	for _, c := range []struct{ procs, n int }{
		{4, 140_000}, // two workers of 65,536 records or more, two regions
		{3, 200_000}, // three workers, two regions
	} {
		t.Run(fmt.Sprintf("%d CPUs, %d records", c.procs, c.n), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(c.procs))
			indexAcrossWorkers(t, c.n)
		})
	}
}

func indexAcrossWorkers(t *testing.T, n int) {
	keys, docs := make([]string, n), make([][]byte, n)
	for i := range n {
		keys[i] = fmt.Sprintf("k%07d", i)
		docs[i] = testDoc(keys[i], keys[i])
	}
	last := n - 1_000
	for j, i := range []int{5, 70_001, last} {
		keys[i] = "the-dup"
		docs[i] = testDoc("the-dup", fmt.Sprintf("version %d", j))
	}
	root := t.TempDir()
	mustNil(t, WriteStore(filepath.Join(root, "s"), DefaultKeyLength, keys, docs))
	d := openTestDataset(t, root, testConfig{})
	defer d.Close()
	s := d.docs.Store("s")
	if s == nil {
		t.Fatal("store not served")
	}
	if got := s.Len(); got != n-2 {
		t.Fatalf("%d documents, want %d", got, n-2)
	}
	list := s.List()
	if list[5].Name != "the-dup" || list[4].Name != "k0000004" || list[6].Name != "k0000006" {
		t.Fatalf("order around the duplicated key: %s %s %s", list[4].Name, list[5].Name, list[6].Name)
	}
	if got := readAll(t, s, "the-dup"); string(got) != string(docs[last]) {
		t.Errorf("the-dup serves %q, want its last record's bytes", got)
	}
	for _, i := range []int{0, 65_535, 65_536, 69_999, 70_000, n - 1} {
		if got := readAll(t, s, keys[i]); string(got) != string(docs[i]) {
			t.Errorf("%s serves %q, want %q", keys[i], got, docs[i])
		}
	}
	// Every key is found in the key map, at its record.
	s.mu.RLock()
	defer s.mu.RUnlock()
	for i, key := range keys {
		if key == "the-dup" {
			continue
		}
		if got := s.find(key); got != int32(i) {
			t.Fatalf("%s found at record %d, want %d", key, got, i)
		}
	}
}

// A bucketSorter's sort is a stable sort of its runs' concatenation,
// bucket after bucket with the memory it keeps.
func TestBucketSortTakesRunsInOrder(t *testing.T) {
	var bs bucketSorter
	for round := range 3 {
		bucketSortTakesRunsInOrder(t, &bs, uint64(round))
	}
	if got := bs.sort(0, [][]hashedRecord{nil, nil}); len(got) != 0 {
		t.Fatalf("sort of empty runs: %v", got)
	}
}

func bucketSortTakesRunsInOrder(t *testing.T, bs *bucketSorter, seed uint64) {
	rng := rand.New(rand.NewPCG(1, seed))
	var runs [][]hashedRecord
	var all []hashedRecord
	i := int32(0)
	for range 5 {
		run := make([]hashedRecord, rng.IntN(200*int(seed+1)))
		for k := range run {
			// Equal hashes across runs, and hashes equal in their top
			// half only (the insertion sort's part).
			run[k] = hashedRecord{h: uint64(rng.IntN(50))<<40 | uint64(rng.IntN(3)), i: i}
			i++
		}
		all = append(all, run...)
		runs = append(runs, run)
	}
	want := slices.Clone(all)
	slices.SortStableFunc(want, func(a, b hashedRecord) int { return cmp.Compare(a.h, b.h) })
	if got := bs.sort(0, runs); !slices.Equal(got, want) {
		t.Fatalf("round %d: not the stable sort of its runs", seed)
	}
}

// A store being opened counts in Indexed (the daemon's memory budget)
// while its records are parsed, and the hook hears of it before.
func TestIndexedCountsStoresBeingOpened(t *testing.T) {
	root := t.TempDir()
	indexedStore(t, root, 3000)
	d := openTestDataset(t, root, testConfig{})
	defer d.Close()
	var during []int
	d.docs.SetIndexingHook(func() { during = append(during, d.docs.Indexed()) })
	if s := d.docs.Store("s"); s == nil {
		t.Fatal("store not served")
	}
	if len(during) != 1 || during[0] != 3000 {
		t.Fatalf("Indexed when indexing started: %v, want [3000]", during)
	}
	if got := d.docs.Indexed(); got != 3000 {
		t.Fatalf("Indexed after the open: %d, want 3000 (counted once)", got)
	}
}
