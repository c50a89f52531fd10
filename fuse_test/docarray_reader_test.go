package fuse_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// An independent reader and writer of the DocumentArrayMemmap layout,
// written from the format spec for these tests (they never use the
// store package), and a tiny DocumentProto encoder.

// pbDoc encodes a DocumentProto with an id (field 1), a text (13) and a
// mime_type (10): tags and lengths by hand.
func pbDoc(id, text string) []byte {
	var b []byte
	field := func(num int, s string) {
		b = appendVarint(b, uint64(num<<3|2))
		b = appendVarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	field(1, id)
	field(13, text)
	field(10, "text/plain")
	return b
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

type storeDoc struct {
	Key  string
	Data []byte
}

// storeState is what a store holds, read the way docarray's
// _load_header_body reads it.
type storeState struct {
	Docs    []storeDoc
	Records int
	Body    int64
	// TailOK: the last record is live and ends exactly at the end of
	// body.bin, so docarray can reopen the store safely.
	TailOK bool
}

func (s storeState) keys() []string {
	var out []string
	for _, d := range s.Docs {
		out = append(out, d.Key)
	}
	return out
}

func readDocStore(t *testing.T, dir string, k int) storeState {
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
		t.Fatalf("%s: header.bin is %d bytes, not a multiple of %d", dir, len(h), rs)
	}
	st := storeState{Records: len(h) / rs, Body: int64(len(body))}
	pos := map[string]int{}
	for i := 0; i < st.Records; i++ {
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
		live := !(p == -1 && r == -1 && end == -1)
		if i == st.Records-1 {
			st.TailOK = live && p+end == int64(len(body))
		}
		if !live {
			continue
		}
		if p < 0 || r < 0 || end < r || p+end > int64(len(body)) {
			t.Fatalf("%s: record %d (%q) has bad offsets p=%d r=%d end=%d (body %d bytes)", dir, i, key, p, r, end, len(body))
		}
		data := body[p+r : p+end]
		if j, ok := pos[key]; ok {
			st.Docs[j].Data = data
		} else {
			pos[key] = len(st.Docs)
			st.Docs = append(st.Docs, storeDoc{key, data})
		}
	}
	if st.Records == 0 {
		st.TailOK = true
	}
	return st
}

// writeDocStore writes a store as docarray appends documents.
func writeDocStore(t *testing.T, dir string, k int, docs []storeDoc) {
	t.Helper()
	var h, body []byte
	for _, d := range docs {
		e := make([]byte, 4*k+24)
		i := 0
		for _, c := range d.Key {
			if i == k {
				break
			}
			binary.LittleEndian.PutUint32(e[4*i:], uint32(c))
			i++
		}
		start := int64(len(body))
		p := start / 4096 * 4096
		binary.LittleEndian.PutUint64(e[4*k:], uint64(p))
		binary.LittleEndian.PutUint64(e[4*k+8:], uint64(start-p))
		binary.LittleEndian.PutUint64(e[4*k+16:], uint64(start-p+int64(len(d.Data))))
		h = append(h, e...)
		body = append(body, d.Data...)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// New files renamed into place, as a careful writer would.
	for name, data := range map[string][]byte{"body.bin": body, "header.bin": h} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// expectedFixtureDocs is store.expected.jsonl: the live documents of the
// fixture in header order, as the original reader saw them.
type expectedFixtureDoc struct {
	HeaderKey string `json:"header_key"`
	ID        string `json:"id"`
	RawSHA256 string `json:"raw_sha256"`
}

func expectedFixtureDocs(t *testing.T) []expectedFixtureDoc {
	t.Helper()
	f, err := os.Open(fixturePath(t, "docarray/store.expected.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []expectedFixtureDoc
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e expectedFixtureDoc
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sameDocs fails unless got has exactly want's keys, in order, with the
// same bytes.
func sameDocs(t *testing.T, what string, got, want []storeDoc) {
	t.Helper()
	if strings.Join(docKeys(got), "\n") != strings.Join(docKeys(want), "\n") {
		t.Fatalf("%s: keys\n got %q\nwant %q", what, docKeys(got), docKeys(want))
	}
	for i := range want {
		if !bytes.Equal(got[i].Data, want[i].Data) {
			t.Errorf("%s: %q: %d bytes (sha %s), want %d bytes (sha %s)", what, want[i].Key,
				len(got[i].Data), sha256hex(got[i].Data)[:12], len(want[i].Data), sha256hex(want[i].Data)[:12])
		}
	}
}

func docKeys(ds []storeDoc) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Key)
	}
	return out
}

// pyReadStore reads a store with numpy exactly as docarray's
// _load_header_body does and prints, per live document in order, its
// key and the sha256 of its bytes; then whether docarray could reopen
// it (its append position is the end of body.bin).
const pyReadStore = `
import sys, os, hashlib, collections, numpy as np
d, k = sys.argv[1], int(sys.argv[2])
h = open(os.path.join(d, 'header.bin'), 'rb').read()
body = open(os.path.join(d, 'body.bin'), 'rb').read()
tmp = np.frombuffer(h, dtype=[('', (np.str_, k)), ('', np.int64), ('', np.int64), ('', np.int64)])
m = collections.OrderedDict()
for idx, r in enumerate(tmp):
    if not np.array_equal((r[1], r[2], r[3]), (-1, -1, -1)):
        m[r[0]] = (idx, r[1], r[2], r[3])
for key, (idx, p, r, e) in m.items():
    print(repr(key), hashlib.sha256(body[p + r:p + e]).hexdigest())
start = 0
if m:
    start = tmp[-1][1] + tmp[-1][3]
print('START', start, 'BODY', len(body))
`

// pyDocs runs pyReadStore and checks it against want.
func pyDocs(t *testing.T, dir string, k int, want []storeDoc) {
	t.Helper()
	out := pyRun(t, pyReadStore, dir, strconv.Itoa(k))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(want)+1 {
		t.Fatalf("numpy reader: %d lines for %d documents:\n%s", len(lines), len(want), out)
	}
	for i, w := range want {
		var key string
		f := strings.LastIndexByte(lines[i], ' ')
		if err := json.Unmarshal([]byte(pyReprToJSON(lines[i][:f])), &key); err != nil || key != w.Key || lines[i][f+1:] != sha256hex(w.Data) {
			t.Errorf("numpy reader line %d: %s, want %q %s", i, lines[i], w.Key, sha256hex(w.Data))
		}
	}
	last := strings.Fields(lines[len(lines)-1])
	if len(last) != 4 || last[1] != last[3] {
		t.Errorf("docarray would not append at the end of body.bin: %s", lines[len(lines)-1])
	}
}

// pyReprToJSON turns a Python repr of a str into a JSON string (enough
// for the keys of these tests: quotes and backslash escapes).
func pyReprToJSON(r string) string {
	if len(r) >= 2 && r[0] == '\'' {
		inner := r[1 : len(r)-1]
		inner = strings.ReplaceAll(inner, `\'`, `'`)
		inner = strings.ReplaceAll(inner, `"`, `\"`)
		return `"` + inner + `"`
	}
	return r
}

// renameExchange swaps two paths (renameat2 RENAME_EXCHANGE).
func renameExchange(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}
