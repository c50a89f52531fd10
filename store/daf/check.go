package daf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// checkSparseContent validates what the sizes cannot tell of a CSR
// array (formats/daf.md): indptr starts at 0, never decreases and ends
// at nnz; every column index is in [0, columns). Only check reads the
// whole of .indptr and .indices: serving an array never does.
func checkSparseContent(back *engine.Backing, dirRel, base string, m *Meta) *engine.Problem {
	for _, c := range []struct{ ext, dtype string }{{ExtIndptr, m.IndptrDType}, {ExtIndices, m.IndicesDType}} {
		if !isIntDType(c.dtype) {
			return &engine.Problem{Path: base + ExtYAML, Reason: fmt.Sprintf("%s of a sparse array is %s, not an integer type", c.ext[1:]+"_dtype", c.dtype)}
		}
	}
	indptr, err := openIntReader(back, filepath.Join(dirRel, base+ExtIndptr), m.IndptrDType)
	if err != nil {
		return &engine.Problem{Path: base + ExtIndptr, Reason: engine.UnwrapPath(err).Error()}
	}
	defer indptr.close()
	indices, err := openIntReader(back, filepath.Join(dirRel, base+ExtIndices), m.IndicesDType)
	if err != nil {
		return &engine.Problem{Path: base + ExtIndices, Reason: engine.UnwrapPath(err).Error()}
	}
	defer indices.close()

	rows, cols := m.Shape[0], m.Shape[1]
	prev, err := indptr.next()
	if err != nil {
		return &engine.Problem{Path: base + ExtIndptr, Reason: err.Error()}
	}
	if prev != 0 {
		return &engine.Problem{Path: base + ExtIndptr, Reason: fmt.Sprintf("indptr[0] is %d, must be 0", prev)}
	}
	for r := int64(0); r < rows; r++ {
		end, err := indptr.next()
		if err != nil {
			return &engine.Problem{Path: base + ExtIndptr, Reason: err.Error()}
		}
		switch {
		case end < prev:
			return &engine.Problem{Path: base + ExtIndptr, Reason: fmt.Sprintf(
				"not monotonic: indptr[%d] = %d is less than indptr[%d] = %d", r+1, end, r, prev)}
		case end > m.NNZ:
			return &engine.Problem{Path: base + ExtIndptr, Reason: fmt.Sprintf(
				"indptr[%d] = %d is past nnz = %d", r+1, end, m.NNZ)}
		}
		for i := prev; i < end; i++ {
			col, err := indices.next()
			if err != nil {
				return &engine.Problem{Path: base + ExtIndices, Reason: err.Error()}
			}
			if col < 0 || col >= cols {
				return &engine.Problem{Path: base + ExtIndices, Reason: fmt.Sprintf(
					"index %d (row %d) is column %d, outside [0, %d)", i, r, col, cols)}
			}
		}
		prev = end
	}
	if prev != m.NNZ {
		return &engine.Problem{Path: base + ExtIndptr, Reason: fmt.Sprintf(
			"indptr[%d] = %d, must be nnz = %d", rows, prev, m.NNZ)}
	}
	return nil
}

func isIntDType(d string) bool {
	switch d {
	case "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64":
		return true
	}
	return false
}

// intReader reads a file of little-endian integers of one dtype in
// order.
type intReader struct {
	f     *os.File
	r     *bufio.Reader
	dtype string
	size  int
	buf   [8]byte
}

func openIntReader(back *engine.Backing, rel, dtype string) (*intReader, error) {
	f, err := back.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	return &intReader{f: f, r: bufio.NewReaderSize(f, 1<<20), dtype: dtype, size: int(dtypeSizes[dtype])}, nil
}

func (r *intReader) close() { r.f.Close() }

func (r *intReader) next() (int64, error) {
	b := r.buf[:r.size]
	if _, err := io.ReadFull(r.r, b); err != nil {
		return 0, fmt.Errorf("shorter than its size says (changed while checked?): %v", err)
	}
	switch r.dtype {
	case "int8":
		return int64(int8(b[0])), nil
	case "uint8":
		return int64(b[0]), nil
	case "int16":
		return int64(int16(binary.LittleEndian.Uint16(b))), nil
	case "uint16":
		return int64(binary.LittleEndian.Uint16(b)), nil
	case "int32":
		return int64(int32(binary.LittleEndian.Uint32(b))), nil
	case "uint32":
		return int64(binary.LittleEndian.Uint32(b)), nil
	case "int64":
		return int64(binary.LittleEndian.Uint64(b)), nil
	}
	v := binary.LittleEndian.Uint64(b)
	if v > math.MaxInt64 {
		return math.MaxInt64, nil // out of any range checked
	}
	return int64(v), nil
}
