package dirdb

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arrayfs/arrayfs/store/enginetest"
)

func validatePickleBytes(b []byte) error {
	return validatePickle(bytes.NewReader(b), int64(len(b)))
}

// pickleFiles are pickles written by Python (protocols 0 to 5, numpy
// arrays, recursive and shared objects, frames) and by the original
// dirdb.
func pickleFiles(t testing.TB) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	db := enginetest.FixtureDir(t, "dirdb/db")
	for _, pattern := range []string{"testdata/pickles/*.pickle", filepath.Join(db, "*.pickle"), filepath.Join(db, "*", "*.pickle")} {
		names, _ := filepath.Glob(pattern)
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			files[n] = b
		}
	}
	if len(files) < 10 {
		t.Fatalf("only %d pickles found", len(files))
	}
	return files
}

func TestValidatePickleAcceptsPythonsPickles(t *testing.T) {
	for name, b := range pickleFiles(t) {
		if err := validatePickleBytes(b); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Every torn write (a prefix, alone or padded with the zeros a crash
// can leave) is refused, and so is each way of ending in '.' without
// being a pickle.
func TestValidatePickleRefusesTornAndForeignFiles(t *testing.T) {
	for name, b := range pickleFiles(t) {
		step := 1
		if len(b) > 4096 {
			step = 97
		}
		for n := 0; n < len(b); n += step {
			if validatePickleBytes(b[:n]) == nil {
				t.Fatalf("%s: the first %d of %d bytes pass", name, n, len(b))
			}
			padded := append(append([]byte{}, b[:n]...), make([]byte, len(b)-n)...)
			if validatePickleBytes(padded) == nil {
				t.Fatalf("%s: the first %d of %d bytes, padded with zeros, pass", name, n, len(b))
			}
		}
	}
	for _, c := range []struct{ data, want string }{
		{"", "empty"},
		{"hello world.", "memo entry 101 was never set"},
		{"Hello world.", "byte 0x48 (no opcode)"},
		{`{"json": "with a dot."}`, "not an opcode of any pickle protocol"},
		{"\x80\x04.", "needs 1 objects on the stack"},
		{"\x80\x09K\x01.", "unsupported protocol 9"},
		{"(K\x01d.", "odd number"},
		{"\x80\x04h\x05.", "memo entry 5 was never set"},
		{"\x80\x04K\x01t.", "no MARK"},
		{"\x80\x04X\xff\x00\x00\x00abc.", "runs past the end"},
		{"\x80\x04\x8c\x02\xc3(\x94.", "not UTF-8"},
		{"\x80\x04K\x01.K\x02.", "bytes after the end of the pickle"},
		{"\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00K\x01.", "frame of 255 bytes"},
		{"I12x\n.", "not an integer"},
		{"P1\n.", "persistent id"},
	} {
		err := validatePickleBytes([]byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.data, err, c.want)
		}
	}
}
