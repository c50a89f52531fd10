package fuse_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// memoryStats is the memory part of stats.json.
type memoryStats struct {
	Budget      int64 `json:"budget"`
	Go          int64 `json:"go"`
	KnownNodes  int   `json:"known_nodes"`
	PrunedNodes int64 `json:"pruned_nodes"`
}

// nodeBytes is what the daemon counts a node the kernel knows to keep
// (fs/memory.go).
const nodeBytes = 500

// TestKnownNodesPrunedUnderPressure: once the kernel holds more inodes
// of documents than the memory budget has room for (an ls -l of a store
// of 120,000 documents, about 60 MB of go-fuse nodes against a budget
// of 73 MB), the daemon hands the coldest back to the kernel instead of
// collecting garbage without pause; the documents still read and write
// as before, and the daemon stays within its budget.
func TestKnownNodesPrunedUnderPressure(t *testing.T) {
	const n = 120_000
	ds := t.TempDir()
	docs := make([]storeDoc, n)
	for i := range docs {
		key := fmt.Sprintf("k%06d", i)
		// A DocumentProto: id (field 1) and buffer (field 3).
		text := bytes.Repeat([]byte{byte('a' + i%26)}, 40)
		data := append([]byte{0x0a, byte(len(key))}, key...)
		data = append(append(data, 0x1a, byte(len(text))), text...)
		docs[i] = storeDoc{key, data}
	}
	writeDocStore(t, filepath.Join(ds, "docs"), 36, docs)
	m := mount(t, ds, "pool_bytes=1M")
	run(t, "ls", "-l", m.Path("docs"))

	var mem memoryStats
	deadline := time.Now().Add(20 * time.Second)
	for {
		mem = m.stats().Memory
		if mem.PrunedNodes > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("after ls -l of %d documents: %+v", n, mem)
	if mem.PrunedNodes == 0 {
		t.Fatalf("no node handed back to the kernel after ls -l of %d documents: %+v", n, mem)
	}
	if mem.KnownNodes >= n {
		t.Errorf("the daemon still holds %d nodes after pruning %d", mem.KnownNodes, mem.PrunedNodes)
	}
	// The pruned documents (the first listed, the coldest) and the
	// others read as the store holds them, and stat with their size.
	for i := 0; i < n; i += 997 {
		p := m.Path("docs/" + docs[i].Key)
		if got := mustRead(t, p); !bytes.Equal(got, docs[i].Data) {
			t.Fatalf("%s: read %q, want %q", p, got, docs[i].Data)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() != int64(len(docs[i].Data)) {
			t.Fatalf("%s: stat %v, %v", p, fi, err)
		}
	}
	// A pruned document is rewritten and read back, through a new node.
	p := m.Path("docs/" + docs[1].Key)
	want := append([]byte{0x0a, byte(len(docs[1].Key))}, docs[1].Key...)
	want = append(want, 0x1a, 3, 'n', 'e', 'w')
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, p); !bytes.Equal(got, want) {
		t.Fatalf("%s after rewrite: %q, want %q", p, got, want)
	}
	// What the nodes keep fits in the budget: pruning aims at 5/8 of
	// the soft limit, 16 MiB below it. (The daemon's RssAnon is no
	// measure here: the test binary is built with -race, whose shadow
	// memory is anonymous too.)
	mem = m.stats().Memory
	if int64(mem.KnownNodes)*nodeBytes > mem.Budget/2 {
		t.Errorf("%d nodes known (%d bytes each) are more than half of the budget %d", mem.KnownNodes, nodeBytes, mem.Budget)
	}
	m.Unmount()
	if got := mustRead(t, mount(t, ds).Path("docs/"+docs[1].Key)); !bytes.Equal(got, want) {
		t.Fatalf("after remount %s holds %q, want %q", docs[1].Key, got, want)
	}
}

// TestKnownNodesCountedOnce: a name looked up again (plain files'
// entries last a second) is answered with the node the kernel has, so
// the daemon's list of known nodes holds each file once.
func TestKnownNodesCountedOnce(t *testing.T) {
	const n = 500
	ds := t.TempDir()
	for i := range n {
		if err := os.WriteFile(filepath.Join(ds, fmt.Sprintf("f%03d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := mount(t, ds)
	before := m.stats().Memory.KnownNodes
	for pass := range 3 {
		if pass > 0 {
			time.Sleep(1100 * time.Millisecond) // past the entry timeout
		}
		for i := range n {
			if _, err := os.Stat(m.Path(fmt.Sprintf("f%03d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := m.stats().Memory.KnownNodes - before; got != n {
		t.Errorf("%d nodes known after 3 passes of stat over %d files (want %d)", got, n, n)
	}
	m.Unmount()
}
