package daf

import (
	"encoding/binary"
	"math"
	"path/filepath"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// viewKind is what an arrayView file holds.
type viewKind int

const (
	kInfo         viewKind = iota // info.json
	kRows                         // rows [a, b) of a dense array (a 1D array's elements), raw or .npy
	kCol                          // column a of a dense 2D array, gathered
	kPart                         // a sparse array's data, indices or indptr, as .npy
	kSparseRow                    // row a of a sparse array, densified
	kMatrixMarket                 // matrix.mtx of a sparse array
)

// arrayView is one view file of an array.
type arrayView struct {
	engine.ViewFileBase
	arrayRef
	kind   viewKind
	ext    string // kPart: which data file
	a, b   int64
	npy    bool
	single bool // kRows: one row (a .npy of shape (cols,), not (1, cols))
	whole  bool // kRows: data.npy (the array's own shape)
}

// Stat sizes the view without reading data (matrix.mtx excepted: its
// size is that of its text, computed once per version of the array).
func (v *arrayView) Stat() (engine.ViewStat, error) {
	it, err := v.open()
	if err != nil {
		return engine.ViewStat{}, err
	}
	defer it.release()
	st := engine.ViewStat{Mtime: it.mtime, Writable: v.writable(it)}
	switch v.kind {
	case kInfo:
		st.Size = int64(len(it.info()))
	case kMatrixMarket:
		mc, err := v.d.matrixMarket(it)
		if err != nil {
			return st, err
		}
		st.Size = mc.Size()
	default:
		st.Size = int64(len(v.header(it.meta))) + v.dataSize(it.meta)
	}
	return st, nil
}

func (v *arrayView) writable(it *item) bool {
	return !v.d.readOnly && (v.kind == kRows || v.kind == kCol)
}

// shape of the view's data, as its .npy header gives it.
func (v *arrayView) shape(m *Meta) []int64 {
	switch v.kind {
	case kRows:
		switch {
		case v.whole:
			return m.Shape
		case len(m.Shape) == 1:
			return []int64{v.b - v.a}
		case v.single:
			return []int64{m.Shape[1]}
		}
		return []int64{v.b - v.a, m.Shape[1]}
	case kCol:
		return []int64{m.Shape[0]}
	case kPart:
		if v.ext == ExtIndptr {
			return []int64{m.Rows() + 1}
		}
		return []int64{m.NNZ}
	case kSparseRow:
		return []int64{m.Shape[1]}
	}
	return nil
}

// dtype of the view's elements.
func (v *arrayView) dtype(m *Meta) string {
	switch {
	case !m.Sparse:
		return m.DType
	case v.kind == kPart && v.ext == ExtIndices:
		return m.IndicesDType
	case v.kind == kPart && v.ext == ExtIndptr:
		return m.IndptrDType
	}
	return m.DataDType
}

func (v *arrayView) header(m *Meta) []byte {
	if !v.npy {
		return nil
	}
	return engine.NpyHeader(numpyDescr[v.dtype(m)], false, v.shape(m))
}

func (v *arrayView) dataSize(m *Meta) int64 {
	n := dtypeSizes[v.dtype(m)]
	for _, d := range v.shape(m) {
		n *= d
	}
	return n
}

// rowBytes is the size of one row (one element of a 1D array).
func rowBytes(m *Meta) int64 {
	n := dtypeSizes[m.DType]
	if len(m.Shape) == 2 {
		n *= m.Shape[1]
	}
	return n
}

func (v *arrayView) Open(write bool) (engine.Content, error) {
	it, err := v.open()
	if err != nil {
		return nil, err
	}
	if write && !v.writable(it) {
		it.release()
		if v.d.readOnly {
			return nil, engine.Refuse(v.rel(), "open", syscall.EROFS, "read-only mount")
		}
		return nil, engine.ErrReadOnlyView(v.rel())
	}
	m := it.meta
	head := v.header(m)
	switch v.kind {
	case kInfo:
		it.release()
		return engine.BytesContent(it.info()), nil
	case kRows:
		a := it.files[ExtArray]
		rb := rowBytes(m)
		c := engine.NewHeadedContent(head, a, v.a*rb, (v.b-v.a)*rb, it.release)
		return &inPlace{HeadedContent: c, writesInto: writesInto{a: a, rel: v.rel()}}, nil
	case kCol:
		return &column{writesInto: writesInto{a: it.files[ExtArray], rel: v.rel()}, head: head, it: it, j: v.a,
			rows: m.Shape[0], stride: rowBytes(m), size: dtypeSizes[m.DType]}, nil
	case kPart:
		f := it.files[v.ext]
		return engine.NewHeadedContent(head, f, 0, f.Size(), it.release), nil
	case kSparseRow:
		defer it.release()
		row, err := denseRow(it, v.a)
		if err != nil {
			return nil, err
		}
		return engine.BytesContent(append(head, row...)), nil
	case kMatrixMarket:
		mc, err := v.d.matrixMarket(it)
		if err != nil {
			it.release()
			return nil, err
		}
		return engine.NewLineContent(mc.LineIndex, func() engine.LineGen { return entries(it) }, it.release), nil
	}
	it.release()
	return nil, syscall.EINVAL
}

// rel names the view in messages: the array's path and the view.
func (v *arrayView) rel() string { return filepath.Join(".arrayfs/views", v.dirRel, v.base) }

// inPlace is a contiguous range of a dense array (rows, a range,
// data.npy): reads are slices of the mapping, writes land in the array
// through the pool. A .npy's header is not the array's: a write may only
// repeat it.
type inPlace struct {
	*engine.HeadedContent
	writesInto
}

// writesInto is what every writable view of an array shares: it keeps
// its size, and its writes are the array's (nothing to commit).
type writesInto struct {
	a   *ArrayFile
	rel string
}

func (w writesInto) truncate(size, have int64) error {
	if size != have {
		return engine.Refuse(w.rel, "truncate", syscall.EINVAL,
			"refused: a view of an array keeps its size (%d bytes), not %d", have, size)
	}
	return nil
}

func (w writesInto) Commit() error  { return nil }
func (w writesInto) Target() string { return w.a.rel }
func (w writesInto) Sync() error    { return w.a.Sync() }

func (c *inPlace) WriteAt(p []byte, off int64) (int, error) {
	h := int64(len(c.Head))
	if off < 0 || off+int64(len(p)) > c.Size() {
		return 0, engine.Refuse(c.rel, "write", syscall.EFBIG,
			"refused: a view of an array keeps its size (%d bytes); writing %d bytes at %d goes past it", c.Size(), len(p), off)
	}
	n := 0
	if off < h {
		k := int(min(h-off, int64(len(p))))
		if string(p[:k]) != string(c.Head[off:off+int64(k)]) {
			return 0, engine.Refuse(c.rel, "write", syscall.EINVAL,
				"refused: the .npy header describes the array and cannot be changed; write the data after byte %d", h)
		}
		n, p, off = k, p[k:], h
	}
	if len(p) == 0 {
		return n, nil
	}
	w, err := c.a.WriteAt(p, c.SrcOff+off-h)
	return n + w, err
}

func (c *inPlace) Truncate(size int64) error { return c.truncate(size, c.Size()) }

func (c *inPlace) TargetRange(off, n int64) (int64, int64) {
	h := int64(len(c.Head))
	start := c.SrcOff + max(off, h) - h
	return start, max(start, c.SrcOff+off+n-h)
}

// column is column j of a dense 2D array, gathered from its rows at each
// read; writes scatter back into the rows.
type column struct {
	writesInto
	head               []byte
	it                 *item
	j                  int64
	rows, stride, size int64
}

func (c *column) Size() int64 { return int64(len(c.head)) + c.rows*c.size }

func (c *column) View(off int64, n int) (engine.View, error) {
	total := c.Size()
	if off < 0 || off >= total || n <= 0 {
		return engine.View{}, nil
	}
	end := min(off+int64(n), total)
	buf := make([]byte, end-off)
	h := int64(len(c.head))
	k := 0
	if off < h {
		k = copy(buf, c.head[off:])
	}
	if dOff := max(off, h) - h; k < len(buf) {
		dEnd := end - h
		r0, r1 := dOff/c.size, (dEnd+c.size-1)/c.size
		// One pinned view over the rows the read needs, then a gather.
		v := c.a.View(r0*c.stride, int((r1-r0)*c.stride))
		defer v.Release()
		for r := r0; r < r1; r++ {
			el := v.Bytes[(r-r0)*c.stride+c.j*c.size:][:c.size]
			lo, hi := max(dOff, r*c.size)-r*c.size, min(dEnd, (r+1)*c.size)-r*c.size
			k += copy(buf[k:], el[lo:hi])
		}
	}
	return engine.View{Bytes: buf}, nil
}

func (c *column) WriteAt(p []byte, off int64) (int, error) {
	h := int64(len(c.head))
	if off < h || off+int64(len(p)) > c.Size() {
		if off < h && string(p[:min(int64(len(p)), h-off)]) == string(c.head[off:min(h, off+int64(len(p)))]) && off+int64(len(p)) <= h {
			return len(p), nil
		}
		return 0, engine.Refuse(c.rel, "write", syscall.EINVAL,
			"refused: a column view takes writes of its data only (bytes %d to %d)", h, c.Size())
	}
	n := 0
	for n < len(p) {
		d := off + int64(n) - h
		r, in := d/c.size, d%c.size
		k := int(min(c.size-in, int64(len(p)-n)))
		w, err := c.a.WriteAt(p[n:n+k], r*c.stride+c.j*c.size+in)
		n += w
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *column) Truncate(size int64) error { return c.truncate(size, c.Size()) }

// TargetRange of a column spans the rows it touches.
func (c *column) TargetRange(off, n int64) (int64, int64) {
	h := int64(len(c.head))
	d0, d1 := max(off, h)-h, max(off+n, h)-h
	if d1 <= d0 {
		return 0, 0
	}
	r0, r1 := d0/c.size, (d1-1)/c.size
	return r0*c.stride + c.j*c.size, r1*c.stride + (c.j+1)*c.size
}

func (c *column) Release() { c.it.release() }

// readInt reads element i of a little-endian integer file of dtype.
func readInt(a *ArrayFile, dtype string, i int64) (int64, error) {
	size := dtypeSizes[dtype]
	var b [8]byte
	if _, err := a.ReadAt(b[:size], i*size); err != nil {
		return 0, err
	}
	return decodeInt(b[:size], dtype), nil
}

func decodeInt(b []byte, dtype string) int64 {
	switch dtype {
	case "int8":
		return int64(int8(b[0]))
	case "uint8", "bool":
		return int64(b[0])
	case "int16":
		return int64(int16(binary.LittleEndian.Uint16(b)))
	case "uint16":
		return int64(binary.LittleEndian.Uint16(b))
	case "int32":
		return int64(int32(binary.LittleEndian.Uint32(b)))
	case "uint32":
		return int64(binary.LittleEndian.Uint32(b))
	case "int64":
		return int64(binary.LittleEndian.Uint64(b))
	case "uint64":
		u := binary.LittleEndian.Uint64(b)
		if u > math.MaxInt64 {
			return -1
		}
		return int64(u)
	}
	return -1
}

// denseRow is row r of a sparse array, its zeros filled in.
func denseRow(it *item, r int64) ([]byte, error) {
	m := it.meta
	size := dtypeSizes[m.DataDType]
	row := make([]byte, m.Shape[1]*size)
	lo, err := readInt(it.files[ExtIndptr], m.IndptrDType, r)
	if err != nil {
		return nil, err
	}
	hi, err := readInt(it.files[ExtIndptr], m.IndptrDType, r+1)
	if err != nil {
		return nil, err
	}
	if lo < 0 || hi < lo || hi > m.NNZ {
		return nil, engine.Refuse(it.rel(ExtIndptr), "read", syscall.EIO, "indptr[%d:%d] = %d, %d is not a valid range of %d values", r, r+2, lo, hi, m.NNZ)
	}
	isz := dtypeSizes[m.IndicesDType]
	idx := it.files[ExtIndices].View(lo*isz, int((hi-lo)*isz))
	defer idx.Release()
	vals := it.files[ExtData].View(lo*size, int((hi-lo)*size))
	defer vals.Release()
	for k := int64(0); k < hi-lo && (k+1)*isz <= int64(len(idx.Bytes)); k++ {
		col := decodeInt(idx.Bytes[k*isz:(k+1)*isz], m.IndicesDType)
		if col < 0 || col >= m.Shape[1] || (k+1)*size > int64(len(vals.Bytes)) {
			return nil, engine.Refuse(it.rel(ExtIndices), "read", syscall.EIO, "column index %d of row %d is outside the %d columns", col, r, m.Shape[1])
		}
		copy(row[col*size:], vals.Bytes[k*size:(k+1)*size])
	}
	return row, nil
}
