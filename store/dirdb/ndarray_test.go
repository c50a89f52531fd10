package dirdb

import (
	"bytes"
	"encoding/binary"
	"os"
	"slices"
	"testing"
)

func parseBytes(b []byte) (*ndArrayInfo, string) {
	return parseNdArray(bytes.NewReader(b), int64(len(b)))
}

func TestParseNdArrayOfNumpysPickles(t *testing.T) {
	for _, c := range []struct {
		file    string
		descr   string
		shape   []int64
		fortran bool
	}{
		{"small-array", "<i8", []int64{5}, false},
		{"array-fortran-p2", "<i2", []int64{2, 3}, true}, // _codecs.encode(latin1) data
		{"array-fortran-p5", "<i2", []int64{2, 3}, true}, // _frombuffer(bytearray)
	} {
		b, err := os.ReadFile("testdata/pickles/" + c.file + ".pickle")
		if err != nil {
			t.Fatal(err)
		}
		a, why := parseBytes(b)
		if a == nil {
			t.Fatalf("%s: not an ndarray: %s", c.file, why)
		}
		if a.descr != c.descr || !slices.Equal(a.shape, c.shape) || a.fortran != c.fortran {
			t.Errorf("%s: %s %v fortran=%v, want %s %v %v", c.file, a.descr, a.shape, a.fortran, c.descr, c.shape, c.fortran)
		}
		data := a.data
		if data == nil {
			data = b[a.off : a.off+a.n]
		}
		if c.descr == "<i2" {
			// Fortran order: 0 3 1 4 2 5.
			for i, want := range []uint16{0, 3, 1, 4, 2, 5} {
				if got := binary.LittleEndian.Uint16(data[2*i:]); got != want {
					t.Errorf("%s: element %d is %d, want %d", c.file, i, got, want)
				}
			}
		}
	}
}

func TestParseNdArrayRefusesOthers(t *testing.T) {
	for name, b := range map[string][]byte{
		// os.system('touch x'): a call is recorded, never made, and is not numpy's.
		"code":  []byte("cos\nsystem\n(S'touch x'\ntR."),
		"dict":  []byte("\x80\x04}\x94."),
		"torn":  []byte("\x80\x04\x95\x10"),
		"empty": nil,
	} {
		if a, why := parseBytes(b); a != nil || why == "" {
			t.Errorf("%s: taken for an ndarray (%+v)", name, a)
		}
	}
	for name, b := range pickleFiles(t) {
		a, _ := parseBytes(b)
		if a != nil && !bytes.Contains(b, []byte("_reconstruct")) && !bytes.Contains(b, []byte("_frombuffer")) {
			t.Errorf("%s: taken for an ndarray", name)
		}
	}
}
