package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"strings"
	"testing"
)

func TestNpyHeader(t *testing.T) {
	for _, c := range []struct {
		descr   string
		fortran bool
		shape   []int64
		dict    string
	}{
		{"<f4", false, []int64{1000, 64}, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 64), }"},
		{"|u1", true, []int64{7}, "{'descr': '|u1', 'fortran_order': True, 'shape': (7,), }"},
		{"<f8", false, nil, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }"},
	} {
		h := NpyHeader(c.descr, c.fortran, c.shape)
		if len(h)%64 != 0 || !bytes.HasPrefix(h, []byte("\x93NUMPY\x01\x00")) || h[len(h)-1] != '\n' {
			t.Errorf("%v: header %q: not 64-aligned .npy 1.0", c.shape, h)
		}
		if n := int(binary.LittleEndian.Uint16(h[8:])); n != len(h)-10 {
			t.Errorf("%v: length field %d, header %d", c.shape, n, len(h)-10)
		}
		if got := strings.TrimRight(string(h[10:]), " \n"); got != c.dict {
			t.Errorf("dict %q, want %q", got, c.dict)
		}
	}
	// A header past 64 KiB (a shape of many dimensions) needs version 2.0.
	shape := make([]int64, 30000)
	for i := range shape {
		shape[i] = 1
	}
	h := NpyHeader("<f4", false, shape)
	if !bytes.HasPrefix(h, []byte("\x93NUMPY\x02\x00")) || len(h)%64 != 0 || int(binary.LittleEndian.Uint32(h[8:])) != len(h)-12 {
		t.Errorf("a large header is not a 64-aligned .npy 2.0")
	}
}

func TestLineIndexReadsAnyRange(t *testing.T) {
	const n = 5000
	gen := func(from int64, fn func(k int64, line []byte) bool) error {
		for k := from; k < n; k++ {
			if !fn(k, fmt.Appendf(nil, "line %d %s\n", k, strings.Repeat("x", int(k%17)))) {
				return nil
			}
		}
		return nil
	}
	var want []byte
	want = append(want, "head\n"...)
	gen(0, func(k int64, l []byte) bool { want = append(want, l...); return true })
	ix, err := IndexLines([]byte("head\n"), gen)
	if err != nil || ix.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d (%v)", ix.Size(), len(want), err)
	}
	c := NewLineContent(ix, func() LineGen { return gen }, nil)
	for i := 0; i < 2000; i++ {
		off := rand.Int63n(int64(len(want)) + 10)
		l := rand.Intn(20000) + 1
		v, err := c.View(off, l)
		end := min(off+int64(l), int64(len(want)))
		if err != nil || (off < int64(len(want)) && !bytes.Equal(v.Bytes, want[off:end])) {
			t.Fatalf("[%d, +%d): wrong bytes (%v)", off, l, err)
		}
	}
}

type bytesSource []byte

func (b bytesSource) View(off int64, n int) View { return View{Bytes: b[off : off+int64(n)]} }

func TestHeadedContent(t *testing.T) {
	src := bytesSource("0123456789abcdef")
	c := NewHeadedContent([]byte("HEAD"), src, 4, 8, nil)
	want := "HEAD456789ab"
	for off := 0; off < len(want); off++ {
		for n := 1; n <= len(want)-off+2; n++ {
			v, _ := c.View(int64(off), n)
			if string(v.Bytes) != want[off:min(off+n, len(want))] {
				t.Fatalf("[%d,+%d) = %q", off, n, v.Bytes)
			}
		}
	}
}

func TestFixedLinesReadsAnyRange(t *testing.T) {
	const n, size = 3000, 12
	gen := func(from int64, fn func(k int64, line []byte) bool) error {
		for k := from; k < n; k++ {
			if !fn(k, fmt.Appendf(nil, "%011d\n", k)) {
				return nil
			}
		}
		return nil
	}
	want := []byte("HEADER")
	gen(0, func(k int64, l []byte) bool { want = append(want, l...); return true })
	ix := FixedLines([]byte("HEADER"), n, size)
	c := NewLineContent(ix, func() LineGen { return gen }, nil)
	if c.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", c.Size(), len(want))
	}
	for i := 0; i < 2000; i++ {
		off := rand.Int63n(int64(len(want)))
		l := rand.Intn(5000) + 1
		v, _ := c.View(off, l)
		if !bytes.Equal(v.Bytes, want[off:min(off+int64(l), int64(len(want)))]) {
			t.Fatalf("[%d, +%d): wrong bytes", off, l)
		}
	}
}
