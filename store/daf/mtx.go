package daf

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// matrix.mtx of a sparse array: Matrix Market coordinate text (1-based
// "row col value" lines in CSR order), which R's Matrix::readMM,
// scipy.io.mmread, Julia and MATLAB read. The text is made on the fly
// (engine.LineIndex): nothing holds it.

// mtxIndex is the sizing pass of one version of a sparse array.
type mtxIndex struct {
	sigs [3]engine.FileSig // data, indices, indptr
	*engine.LineIndex
}

// mtxCache keeps the last index of each sparse array.
type mtxCache struct {
	mu sync.Mutex
	m  map[string]*mtxIndex
}

func itemSigs(it *item) ([3]engine.FileSig, error) {
	var sigs [3]engine.FileSig
	for i, ext := range []string{ExtData, ExtIndices, ExtIndptr} {
		st, err := it.files[ext].Stat()
		if err != nil {
			return sigs, err
		}
		sigs[i] = engine.SigOf(&st.Stat_t)
	}
	return sigs, nil
}

// matrixMarket returns the index of it's text, sizing it if this version
// was not sized before.
func (d *Arrays) matrixMarket(it *item) (*mtxIndex, error) {
	sigs, err := itemSigs(it)
	if err != nil {
		return nil, err
	}
	key := it.rel(ExtData)
	d.mtx.mu.Lock()
	mi := d.mtx.m[key]
	d.mtx.mu.Unlock()
	if mi != nil && mi.sigs == sigs {
		return mi, nil
	}
	m := it.meta
	field := "real"
	if isIntDType(m.DataDType) || m.DataDType == "bool" {
		field = "integer"
	}
	head := fmt.Appendf(nil, "%%%%MatrixMarket matrix coordinate %s general\n%d %d %d\n", field, m.Shape[0], m.Shape[1], m.NNZ)
	ix, err := engine.IndexLines(head, entries(it))
	if err != nil {
		return nil, err
	}
	mi = &mtxIndex{sigs: sigs, LineIndex: ix}
	d.mtx.mu.Lock()
	if d.mtx.m == nil {
		d.mtx.m = map[string]*mtxIndex{}
	}
	d.mtx.m[key] = mi
	d.mtx.mu.Unlock()
	return mi, nil
}

// entries formats the entries of it as Matrix Market lines.
func entries(it *item) engine.LineGen {
	var buf []byte
	return func(k0 int64, fn func(k int64, line []byte) bool) error {
		return walkEntries(it, k0, fn, &buf)
	}
}

// walkEntries formats the entries from k0 on, in order, calling fn with
// each entry's number and line until it returns false. buf is reused.
func walkEntries(it *item, k0 int64, fn func(k int64, line []byte) bool, buf *[]byte) error {
	m := it.meta
	indptr, indices, data := it.files[ExtIndptr], it.files[ExtIndices], it.files[ExtData]
	psz, isz, dsz := dtypeSizes[m.IndptrDType], dtypeSizes[m.IndicesDType], dtypeSizes[m.DataDType]
	pv := indptr.View(0, int(indptr.Size()))
	defer pv.Release()
	ptr := func(r int64) int64 { return decodeInt(pv.Bytes[r*psz:(r+1)*psz], m.IndptrDType) }
	// The row of entry k0: the last r with indptr[r] <= k0.
	r := int64(sort.Search(int(m.Rows()), func(r int) bool { return ptr(int64(r)+1) > k0 }))
	const batch = 1 << 16
	for k := k0; k < m.NNZ; {
		n := min(batch, m.NNZ-k)
		iv := indices.View(k*isz, int(n*isz))
		dv := data.View(k*dsz, int(n*dsz))
		if int64(len(iv.Bytes)) < n*isz || int64(len(dv.Bytes)) < n*dsz {
			iv.Release()
			dv.Release()
			return engine.Refuse(it.rel(ExtData), "read", syscall.EIO, "the array's files are shorter than its yaml says")
		}
		for i := int64(0); i < n; i++ {
			for r < m.Rows() && ptr(r+1) <= k+i {
				r++
			}
			col := decodeInt(iv.Bytes[i*isz:(i+1)*isz], m.IndicesDType)
			l := (*buf)[:0]
			l = strconv.AppendInt(l, r+1, 10)
			l = append(l, ' ')
			l = strconv.AppendInt(l, col+1, 10)
			l = append(l, ' ')
			l = appendValue(l, dv.Bytes[i*dsz:(i+1)*dsz], m.DataDType)
			l = append(l, '\n')
			*buf = l
			if !fn(k+i, l) {
				iv.Release()
				dv.Release()
				return nil
			}
		}
		iv.Release()
		dv.Release()
		k += n
	}
	return nil
}

// appendValue formats one value the shortest way that reads back exact
// as a double (what Matrix Market readers parse every real as).
func appendValue(b, v []byte, dtype string) []byte {
	switch dtype {
	case "float32":
		return strconv.AppendFloat(b, float64(math.Float32frombits(binary.LittleEndian.Uint32(v))), 'g', -1, 64)
	case "float64":
		return strconv.AppendFloat(b, math.Float64frombits(binary.LittleEndian.Uint64(v)), 'g', -1, 64)
	case "float16":
		return strconv.AppendFloat(b, float64(halfToFloat(binary.LittleEndian.Uint16(v))), 'g', -1, 64)
	case "uint64":
		return strconv.AppendUint(b, binary.LittleEndian.Uint64(v), 10)
	}
	return strconv.AppendInt(b, decodeInt(v, dtype), 10)
}

// halfToFloat converts an IEEE binary16 value.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0:
		for frac&0x400 == 0 {
			frac <<= 1
			exp--
		}
		exp++
		frac &= 0x3ff
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}
