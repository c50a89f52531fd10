package docarray

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// writeBigStore writes a store of n small documents (ids like uuid1 hex,
// as docarray makes them) with key length 36, the way docarray appends.
func writeBigStore(tb testing.TB, dir string, n int) {
	tb.Helper()
	os.MkdirAll(dir, 0o755)
	hf, err := os.Create(filepath.Join(dir, "header.bin"))
	if err != nil {
		tb.Fatal(err)
	}
	bf, err := os.Create(filepath.Join(dir, "body.bin"))
	if err != nil {
		tb.Fatal(err)
	}
	hw, bw := bufio.NewWriterSize(hf, 4<<20), bufio.NewWriterSize(bf, 4<<20)
	rec := make([]byte, 168)
	var off int64
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("%032x", uint64(i)*0x9E3779B97F4A7C15)
		doc := testDoc(key, fmt.Sprintf("document number %d", i))
		clear(rec)
		for j, c := range key {
			binary.LittleEndian.PutUint32(rec[4*j:], uint32(c))
		}
		p := off / 4096 * 4096
		binary.LittleEndian.PutUint64(rec[144:], uint64(p))
		binary.LittleEndian.PutUint64(rec[152:], uint64(off-p))
		binary.LittleEndian.PutUint64(rec[160:], uint64(off-p+int64(len(doc))))
		hw.Write(rec)
		bw.Write(doc)
		off += int64(len(doc))
	}
	for _, w := range []*bufio.Writer{hw, bw} {
		if err := w.Flush(); err != nil {
			tb.Fatal(err)
		}
	}
	hf.Close()
	bf.Close()
}

// BenchmarkDocStoreOpen1M opens a store of a million documents (header
// read and indexed once, sidecar written on first sight) and reads the
// first and the last document. Run with -benchtime=3x; the store is
// made once (and its sidecar and saved index removed before each open,
// so that each open is a first sight). Reported: ns/op, and the heap the
// index holds. ARRAYFS_BENCH_DOCS=N opens a store of N documents instead
// (ten million: 1.7 GB of header; set TMPDIR to a disk that has room).
func BenchmarkDocStoreOpen1M(b *testing.B) {
	n := 1_000_000
	if v, _ := strconv.Atoi(os.Getenv("ARRAYFS_BENCH_DOCS")); v > 0 {
		n = v
	}
	root := b.TempDir()
	dir := filepath.Join(root, "big")
	t0 := time.Now()
	writeBigStore(b, dir, n)
	b.Logf("wrote %d documents in %v", n, time.Since(t0))
	var heap uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		os.Remove(filepath.Join(dir, MetaName))
		os.Remove(filepath.Join(dir, IndexName)) // saved once header.bin is 2 s old
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		d := openTestDataset(b, root, testConfig{Logf: b.Logf})
		s := d.docs.Store("big")
		if s == nil || s.Len() != n {
			b.Fatalf("store %v", s)
		}
		for _, key := range []string{fmt.Sprintf("%032x", uint64(0)), lastKey(n)} {
			r, _, err := s.Open(key)
			if err != nil {
				b.Fatal(err)
			}
			v := r.View(0, 4096)
			if len(v.Bytes) == 0 {
				b.Fatal("empty read")
			}
			v.Release()
			r.Release()
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		heap = after.HeapAlloc - before.HeapAlloc
		d.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(heap)/float64(n), "heap-bytes/doc")
}

func lastKey(n int) string {
	i := uint64(n - 1)
	return fmt.Sprintf("%032x", i*0x9E3779B97F4A7C15)
}

// BenchmarkDocStoreOpen1MSaved opens a store of a million documents
// whose saved index (indexfile.go) is valid: what a second mount costs.
func BenchmarkDocStoreOpen1MSaved(b *testing.B) {
	const n = 1_000_000
	defer func(w time.Duration) { indexRacyWindow = w }(indexRacyWindow)
	indexRacyWindow = 0
	root := b.TempDir()
	dir := filepath.Join(root, "big")
	writeBigStore(b, dir, n)
	d := openTestDataset(b, root, testConfig{Logf: b.Logf})
	if s := d.docs.Store("big"); s == nil || s.Len() != n {
		b.Fatal("store not served")
	}
	d.Close()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(filepath.Join(dir, IndexName)); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := openTestDataset(b, root, testConfig{Logf: b.Logf})
		s := d.docs.Store("big")
		if s == nil || !s.indexLoaded || s.Len() != n {
			b.Fatalf("store %v not opened from its saved index", s)
		}
		b.StopTimer()
		d.Close()
		b.StartTimer()
	}
}
