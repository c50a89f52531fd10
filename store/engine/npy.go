package engine

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// NpyHeader is the header of a .npy file (numpy's format, versions 1.0
// and 2.0) for data of numpy dtype descr ("<f4", "|u1") and shape, in C
// order or, with fortran, Fortran order. The header is padded with
// spaces so that the data after it starts 64-byte aligned, as numpy
// itself writes them, and np.load(mmap_mode='r') maps it in place.
// Version 2.0 is used only when the header does not fit 1.0's 16-bit
// length.
func NpyHeader(descr string, fortran bool, shape []int64) []byte {
	var dims []string
	for _, d := range shape {
		dims = append(dims, fmt.Sprint(d))
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	order := "False"
	if fortran {
		order = "True"
	}
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }", descr, order, tuple)
	for _, v := range []struct {
		major byte
		lenSz int
	}{{1, 2}, {2, 4}} {
		pre := 6 + 2 + v.lenSz // magic, version, header length
		total := pre + len(dict) + 1
		pad := (64 - total%64) % 64
		hlen := len(dict) + pad + 1
		if v.lenSz == 2 && hlen > 0xffff {
			continue
		}
		b := make([]byte, 0, pre+hlen)
		b = append(b, "\x93NUMPY"...)
		b = append(b, v.major, 0)
		if v.lenSz == 2 {
			b = binary.LittleEndian.AppendUint16(b, uint16(hlen))
		} else {
			b = binary.LittleEndian.AppendUint32(b, uint32(hlen))
		}
		b = append(b, dict...)
		b = append(b, strings.Repeat(" ", pad)...)
		return append(b, '\n')
	}
	panic("unreachable")
}
