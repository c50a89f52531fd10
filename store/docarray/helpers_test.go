package docarray

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/arrayfs/arrayfs/store/engine"
	"github.com/arrayfs/arrayfs/store/enginetest"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
)

// Test helpers: an independent writer and reader of the docarray layout
// (written from the format spec, not with the store's own codec), and a
// DocumentProto builder.

// testDoc builds a small DocumentProto: id, text, mime_type.
func testDoc(id, text string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, id)
	b = protowire.AppendTag(b, 13, protowire.BytesType)
	b = protowire.AppendString(b, text)
	b = protowire.AppendTag(b, 10, protowire.BytesType)
	b = protowire.AppendString(b, "text/plain")
	return b
}

type rec struct {
	key        string
	p, r, end  int64
	tombstone  bool
	rawKeyUTF8 bool
}

// writeRawStore writes header.bin from records and body.bin as given.
func writeRawStore(t testing.TB, dir string, k int, recs []rec, body []byte) {
	t.Helper()
	var h []byte
	for _, r := range recs {
		e := make([]byte, 4*k+24)
		i := 0
		for _, c := range r.key {
			if i == k {
				break
			}
			binary.LittleEndian.PutUint32(e[4*i:], uint32(c))
			i++
		}
		p, rr, end := r.p, r.r, r.end
		if r.tombstone {
			p, rr, end = -1, -1, -1
		}
		binary.LittleEndian.PutUint64(e[4*k:], uint64(p))
		binary.LittleEndian.PutUint64(e[4*k+8:], uint64(rr))
		binary.LittleEndian.PutUint64(e[4*k+16:], uint64(end))
		h = append(h, e...)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "header.bin"), h, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "body.bin"), body, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeDocs writes a store the way docarray appends documents (G=4096).
func writeDocs(t testing.TB, dir string, k int, keys []string, docs [][]byte) {
	t.Helper()
	var body []byte
	var recs []rec
	for i, d := range docs {
		start := int64(len(body))
		p := start / 4096 * 4096
		recs = append(recs, rec{key: keys[i], p: p, r: start - p, end: start - p + int64(len(d))})
		body = append(body, d...)
	}
	writeRawStore(t, dir, k, recs, body)
}

type readDoc struct {
	key  string
	data []byte
}

// readStore reads a store as docarray's _load_header_body does: live
// records in order, a later record of a key replacing the value at the
// earlier position. It also returns the record count and whether the
// last record is live and ends at the end of body.bin.
func readStore(t testing.TB, dir string, k int) (docs []readDoc, nrec int, tailOK bool) {
	t.Helper()
	h, err := os.ReadFile(filepath.Join(dir, "header.bin"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(filepath.Join(dir, "body.bin"))
	if err != nil {
		t.Fatal(err)
	}
	rs := 4*k + 24
	if len(h)%rs != 0 {
		t.Fatalf("header.bin is %d bytes, not a multiple of %d", len(h), rs)
	}
	pos := map[string]int{}
	var lastP, lastEnd int64
	for i := 0; i < len(h)/rs; i++ {
		e := h[i*rs : (i+1)*rs]
		var runes []rune
		for j := 0; j < k; j++ {
			runes = append(runes, rune(binary.LittleEndian.Uint32(e[4*j:])))
		}
		for len(runes) > 0 && runes[len(runes)-1] == 0 {
			runes = runes[:len(runes)-1]
		}
		key := string(runes)
		p := int64(binary.LittleEndian.Uint64(e[4*k:]))
		r := int64(binary.LittleEndian.Uint64(e[4*k+8:]))
		end := int64(binary.LittleEndian.Uint64(e[4*k+16:]))
		lastP, lastEnd = p, end
		if p == -1 && r == -1 && end == -1 {
			continue
		}
		if p+end > int64(len(body)) {
			t.Fatalf("record %d (%q) points past body.bin: %d > %d", i, key, p+end, len(body))
		}
		data := body[p+r : p+end]
		if j, ok := pos[key]; ok {
			docs[j].data = data
		} else {
			pos[key] = len(docs)
			docs = append(docs, readDoc{key, data})
		}
	}
	nrec = len(h) / rs
	tailOK = nrec == 0 || (lastP != -1 && lastP+lastEnd == int64(len(body)))
	return docs, nrec, tailOK
}

// testConfig is what the tests set of a dataset's options.
type testConfig struct {
	PoolUnits int
	KeyLength int
	Logf      func(format string, args ...any)
}

// testDataset is a dataset of document stores alone.
type testDataset struct {
	*enginetest.Dataset
	docs *Stores
}

func openTestDataset(t testing.TB, root string, cfg testConfig) *testDataset {
	t.Helper()
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	d := &testDataset{}
	d.Dataset, d.docs = enginetest.Open(t, root, enginetest.Config{PoolUnits: cfg.PoolUnits, Logf: cfg.Logf},
		func(env engine.Env) *Stores { return NewStores(env, cfg.KeyLength) })
	return d
}

// copyFixture copies the docarray fixture store to root/name.
func copyFixture(t testing.TB, root, name string) string {
	t.Helper()
	dst := filepath.Join(root, name)
	if out, err := exec.Command("cp", "-r", filepath.Join(enginetest.FixtureDir(t, "docarray"), "store"), dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	if out, err := exec.Command("chmod", "-R", "u+w", dst).CombinedOutput(); err != nil {
		t.Fatalf("chmod: %v %s", err, out)
	}
	return dst
}

type expectedDoc struct {
	HeaderIndex int    `json:"header_index"`
	HeaderKey   string `json:"header_key"`
	ID          string `json:"id"`
	RawSHA256   string `json:"raw_sha256"`
	Length      int64  `json:"length"`
}

func expectedDocs(t testing.TB) []expectedDoc {
	f, err := os.Open(filepath.Join(enginetest.FixtureDir(t, "docarray"), "store.expected.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []expectedDoc
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e expectedDoc
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func readAll(t testing.TB, s *Store, name string) []byte {
	t.Helper()
	r, _, err := s.Open(name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer r.Release()
	b, err := r.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	v := r.View(0, int(r.Size()))
	defer v.Release()
	if !bytes.Equal(v.Bytes, b) {
		t.Fatalf("%s: view and copy differ", name)
	}
	return b
}

// checkStoreDir runs the store checker on directory dir, shown as rel.
func checkStoreDir(t *testing.T, dir, rel string) []engine.Problem {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	return checkDocStore(fd, rel, 0)
}
