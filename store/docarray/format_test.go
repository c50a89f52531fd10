package docarray

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"testing"
	"unicode/utf8"
)

// TestKeyDecodingMatchesRuneByRune: the two-at-a-time decoding of keys
// gives what decoding one code point at a time gives, for ASCII and
// other keys of every length, zeros inside them, and code units that are
// no character.
func TestKeyDecodingMatchesRuneByRune(t *testing.T) {
	const k = 36
	slow := func(rec []byte) ([]byte, bool) {
		n := k
		for n > 0 && binary.LittleEndian.Uint32(rec[4*(n-1):]) == 0 {
			n--
		}
		var out []byte
		for i := 0; i < n; i++ {
			c := binary.LittleEndian.Uint32(rec[4*i:])
			if c > utf8.MaxRune || (c >= 0xD800 && c <= 0xDFFF) {
				return out, false
			}
			out = utf8.AppendRune(out, rune(c))
		}
		return out, true
	}
	units := []uint32{0, 'a', 'Z', '0', 0x7f, 0x80, 0xe9, 0x4e2d, 0x1f600, 0xD800, 0x110000, 0xffffffff}
	rng := rand.New(rand.NewSource(1))
	rec := make([]byte, docRecordSize(k))
	for trial := 0; trial < 20000; trial++ {
		clear(rec)
		n := rng.Intn(k + 1)
		ascii := rng.Intn(2) == 0
		for i := 0; i < n; i++ {
			c := uint32('a' + rng.Intn(26))
			if !ascii || rng.Intn(8) == 0 {
				c = units[rng.Intn(len(units))]
			}
			binary.LittleEndian.PutUint32(rec[4*i:], c)
		}
		want, wantOK := slow(rec)
		got, ok := appendValidKey([]byte("x"), rec, k)
		if ok != wantOK || (ok && !bytes.Equal(got[1:], want)) {
			t.Fatalf("record %x: appendValidKey %q %v, want %q %v", rec[:4*k], got[1:], ok, want, wantOK)
		}
		if wantOK {
			if got := appendKey(nil, rec, k); !bytes.Equal(got, want) {
				t.Fatalf("record %x: appendKey %q, want %q", rec[:4*k], got, want)
			}
		}
	}
}
