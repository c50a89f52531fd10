package fuse_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestDocKill9: the daemon killed with SIGKILL while documents are being
// written (a small pool, so write-backs run all the time): the store
// on disk is well formed (every record inside body.bin), and every
// document whose fsync returned is there with its bytes. A remount
// makes it safe for the original again.
func TestDocKill9(t *testing.T) {
	root := t.TempDir()
	m := mount(t, root, "pool_size=8", "writeback=0")
	if err := os.Mkdir(m.Path("s"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Path("s/.docarray"), []byte("key_length: 36\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := func(i, v int) storeDoc {
		k := fmt.Sprintf("k%04d", i)
		return storeDoc{k, pbDoc(k, fmt.Sprintf("version %d %s", v, strings.Repeat("z", (i*7+v)%200)))}
	}
	// acked[i] is the version of document i whose fsync returned.
	var acked []int
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for v := 0; !stop.Load(); v++ {
			for i := 0; i < 40 && !stop.Load(); i++ {
				d := doc(i, v)
				f, err := os.OpenFile(m.Path("s/"+d.Key), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
				if err != nil {
					return
				}
				f.Write(d.Data)
				synced := i%5 == 4 && f.Sync() == nil
				if f.Close() != nil {
					return
				}
				if synced {
					// An fsync of one document writes back the store:
					// every document closed before it is durable too.
					for len(acked) <= i {
						acked = append(acked, -1)
					}
					for j := 0; j <= i; j++ {
						acked[j] = v
					}
					for j := i + 1; j < len(acked); j++ {
						acked[j] = v - 1
					}
				}
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	m.Kill9()
	stop.Store(true)
	<-done
	st := readDocStore(t, filepath.Join(root, "s"), 36) // fails on a record outside body.bin
	got := map[string][]byte{}
	for _, d := range st.Docs {
		got[d.Key] = d.Data
	}
	checked := 0
	for i, v := range acked {
		if v < 0 {
			continue
		}
		// The document may be newer than the acknowledged version
		// (written back after), never older.
		d := doc(i, v)
		data, ok := got[d.Key]
		if !ok {
			t.Errorf("%s: acknowledged version %d is missing", d.Key, v)
			continue
		}
		newer := false
		for w := v; w < v+1000 && !newer; w++ {
			newer = bytes.Equal(data, doc(i, w).Data)
		}
		if !newer {
			t.Errorf("%s: holds %q, older than the acknowledged version %d", d.Key, data, v)
		}
		checked++
	}
	if checked < 20 {
		t.Fatalf("only %d acknowledged documents to check", checked)
	}
	t.Logf("%d documents on disk, %d acknowledged checked", len(st.Docs), checked)
	// And arrayfs mounts it again; the remount leaves the store as the
	// original can reopen and append to (the killed write-back may have
	// left bytes past the last record), its documents unchanged.
	m = mount(t, root)
	if n := len(readdirNames(t, m.Path("s"))); n != len(st.Docs)+1 {
		t.Errorf("remounted: %d entries, %d documents on disk", n, len(st.Docs))
	}
	m.Unmount()
	after := readDocStore(t, filepath.Join(root, "s"), 36)
	sameDocs(t, "after the remount", after.Docs, st.Docs)
	if !after.TailOK {
		t.Error("after a remount and a clean unmount the last record does not end at the end of body.bin")
	}
	pyOriginal(t, origPrelude+`
dam = DocumentArrayMemmap(sys.argv[1])
dam.append(Document(id='by-the-original', text='after the crash'))
dam.flush()
`, filepath.Join(root, "s"))
	final := readDocStore(t, filepath.Join(root, "s"), 36)
	if len(final.Docs) != len(st.Docs)+1 {
		t.Fatalf("after the original's append: %d documents, want %d", len(final.Docs), len(st.Docs)+1)
	}
	sameDocs(t, "after the original's append", final.Docs[:len(st.Docs)], st.Docs)
}
