package daf

import (
	"encoding/json"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// Views of an array (/.arrayfs/views/<dir>/<base>/): data.npy served
// from the mapping, rows and row ranges, gathered columns, rows and
// columns by the names of the dataset's axis files, a sparse array's
// parts, densified rows and Matrix Market text. Each request opens the
// array afresh (an array whose yaml went away has no views any more);
// the content holds its data files until released.

var _ engine.Viewer = (*Arrays)(nil)

// numpyDescr is the .npy descr of each daf dtype: daf writes native
// little-endian data.
var numpyDescr = map[string]string{
	"bool": "|b1", "int8": "|i1", "uint8": "|u1",
	"int16": "<i2", "uint16": "<u2", "float16": "<f2",
	"int32": "<i4", "uint32": "<u4", "float32": "<f4",
	"int64": "<i8", "uint64": "<u8", "float64": "<f8",
}

// item is an array opened for its views: its yaml and its data files,
// referenced until release.
type item struct {
	dirRel, base string
	meta         *Meta
	files        map[string]*ArrayFile // by extension
	mtime        int64
}

func (it *item) release() {
	for _, a := range it.files {
		a.Release()
	}
}

func (it *item) rel(ext string) string { return filepath.Join(it.dirRel, it.base+ext) }

// openItem opens array base of directory dirRel; nil when it is not a
// valid array (then it has no views).
func (d *Arrays) openItem(dirRel, base string) (*item, error) {
	data, err := d.back.ReadFile(filepath.Join(dirRel, base+ExtYAML))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	meta, err := ParseMeta(data)
	if err != nil {
		return nil, nil
	}
	it := &item{dirRel: dirRel, base: base, meta: meta, files: map[string]*ArrayFile{}}
	for ext := range meta.DataFiles() {
		a, err := d.arrayFile(filepath.Join(dirRel, base+ext))
		if err != nil || a == nil {
			it.release()
			return nil, err
		}
		it.files[ext] = a
		if st, err := a.Stat(); err == nil {
			it.mtime = max(it.mtime, st.Mtim.Nano())
		}
	}
	return it, nil
}

// ViewItems names the arrays of directory dirRel (whose sorted names are
// given) that have views: each NAME.yaml with a data file beside it. The
// arrays are validated when looked up.
func (d *Arrays) ViewItems(dirRel string, names []string) []string {
	var out []string
	for _, n := range names {
		base, ok := strings.CutSuffix(n, ExtYAML)
		if !ok || base == "" {
			continue
		}
		for _, ext := range dafDataExts {
			if _, found := slices.BinarySearch(names, base+ext); found {
				out = append(out, base)
				break
			}
		}
	}
	return out
}

// ViewItem is the view directory of array name of directory dirRel; nil
// when there is no valid array of that name.
func (d *Arrays) ViewItem(dirRel, name string) (engine.ViewDir, error) {
	it, err := d.openItem(dirRel, name)
	if it == nil || err != nil {
		return nil, err
	}
	it.release()
	return &arrayDir{arrayRef: arrayRef{d, dirRel, name}}, nil
}

// arrayRef names an array; every view reopens it.
type arrayRef struct {
	d            *Arrays
	dirRel, base string
}

func (r arrayRef) open() (*item, error) {
	it, err := r.d.openItem(r.dirRel, r.base)
	if err == nil && it == nil {
		err = syscall.ENOENT
	}
	return it, err
}

// arrayDir is /.arrayfs/views/<dir>/<base>/.
type arrayDir struct {
	engine.ViewDirBase
	arrayRef
}

func (v *arrayDir) List() ([]engine.ViewEntry, error) {
	it, err := v.open()
	if err != nil {
		return nil, err
	}
	defer it.release()
	files := func(names ...string) []engine.ViewEntry {
		var out []engine.ViewEntry
		for _, n := range names {
			out = append(out, engine.ViewEntry{Name: n})
		}
		return out
	}
	m := it.meta
	switch {
	case m.Sparse:
		return append(files("data.npy", "indices.npy", "indptr.npy", "info.json", "matrix.mtx"),
			engine.ViewEntry{Name: "rows", Dir: true}), nil
	case len(m.Shape) == 2:
		return append(files("data.npy", "info.json"),
			engine.ViewEntry{Name: "cols", Dir: true}, engine.ViewEntry{Name: "rows", Dir: true}), nil
	}
	out := files("data.npy", "info.json")
	if v.d.axis(v.dirRel, axesOf(v.base)[0]) != nil {
		out = append(out, engine.ViewEntry{Name: "by-name", Dir: true})
	}
	return out, nil
}

func (v *arrayDir) Lookup(name string) (engine.ViewNode, error) {
	it, err := v.open()
	if err != nil {
		return nil, err
	}
	m := it.meta
	it.release()
	file := func(k viewKind) (engine.ViewNode, error) {
		return &arrayView{arrayRef: v.arrayRef, kind: k, npy: strings.HasSuffix(name, ".npy")}, nil
	}
	switch {
	case name == "info.json":
		return file(kInfo)
	case name == "data.npy" && m.Sparse:
		return &arrayView{arrayRef: v.arrayRef, kind: kPart, ext: ExtData, npy: true}, nil
	case name == "indices.npy" && m.Sparse:
		return &arrayView{arrayRef: v.arrayRef, kind: kPart, ext: ExtIndices, npy: true}, nil
	case name == "indptr.npy" && m.Sparse:
		return &arrayView{arrayRef: v.arrayRef, kind: kPart, ext: ExtIndptr, npy: true}, nil
	case name == "matrix.mtx" && m.Sparse:
		return file(kMatrixMarket)
	case name == "data.npy":
		return &arrayView{arrayRef: v.arrayRef, kind: kRows, a: 0, b: m.Rows(), npy: true, whole: true}, nil
	case name == "rows" && (m.Sparse || len(m.Shape) == 2):
		return &linesDir{arrayRef: v.arrayRef}, nil
	case name == "cols" && !m.Sparse && len(m.Shape) == 2:
		return &linesDir{arrayRef: v.arrayRef, cols: true}, nil
	case !m.Sparse && len(m.Shape) == 1:
		if name == "by-name" && v.d.axis(v.dirRel, axesOf(v.base)[0]) != nil {
			return &byNameDir{arrayRef: v.arrayRef}, nil
		}
		// 1D ranges: <a>:<b> and <a>:<b>.npy.
		if a, b, ok := parseRange(strings.TrimSuffix(name, ".npy"), m.Rows()); ok {
			return &arrayView{arrayRef: v.arrayRef, kind: kRows, a: a, b: b, npy: strings.HasSuffix(name, ".npy")}, nil
		}
	}
	return nil, nil
}

// linesDir is rows/ (or cols/) of a 2D array: one file per row, zero
// padded so that ls sorts them in order; ranges a:b and .npy forms by
// lookup; by-name/ where the axis has names.
type linesDir struct {
	engine.ViewDirBase
	arrayRef
	cols bool
}

func (v *linesDir) axisIndex() int {
	if v.cols {
		return 1
	}
	return 0
}

func (v *linesDir) count(m *Meta) int64 { return m.Shape[v.axisIndex()] }

func (v *linesDir) List() ([]engine.ViewEntry, error) {
	it, err := v.open()
	if err != nil {
		return nil, err
	}
	n := v.count(it.meta)
	it.release()
	var out []engine.ViewEntry
	if axes := axesOf(v.base); len(axes) == 2 && v.d.axis(v.dirRel, axes[v.axisIndex()]) != nil {
		out = append(out, engine.ViewEntry{Name: "by-name", Dir: true})
	}
	width := len(strconv.FormatInt(max(n-1, 0), 10))
	for i := int64(0); i < n; i++ {
		out = append(out, engine.ViewEntry{Name: padded(i, width)})
	}
	return out, nil
}

func (v *linesDir) Lookup(name string) (engine.ViewNode, error) {
	it, err := v.open()
	if err != nil {
		return nil, err
	}
	m := it.meta
	it.release()
	if name == "by-name" {
		if axes := axesOf(v.base); len(axes) == 2 && v.d.axis(v.dirRel, axes[v.axisIndex()]) != nil {
			return &byNameDir{arrayRef: v.arrayRef, lines: v}, nil
		}
		return nil, nil
	}
	npy := strings.HasSuffix(name, ".npy")
	stem := strings.TrimSuffix(name, ".npy")
	n := v.count(m)
	if i, ok := parseIndex(stem, n); ok {
		return v.line(m, i, i+1, npy, true), nil
	}
	if a, b, ok := parseRange(stem, n); ok && !v.cols && !m.Sparse {
		return v.line(m, a, b, npy, false), nil
	}
	return nil, nil
}

// line is row or column i (single), or rows [a, b).
func (v *linesDir) line(m *Meta, a, b int64, npy, single bool) engine.ViewNode {
	switch {
	case m.Sparse:
		return &arrayView{arrayRef: v.arrayRef, kind: kSparseRow, a: a, b: b, npy: npy}
	case v.cols:
		return &arrayView{arrayRef: v.arrayRef, kind: kCol, a: a, b: b, npy: npy}
	}
	return &arrayView{arrayRef: v.arrayRef, kind: kRows, a: a, b: b, npy: npy, single: single}
}

// byNameDir is rows/by-name/, cols/by-name/ or (a vector's) by-name/:
// one entry per name of the axis file, the line or element it names.
type byNameDir struct {
	engine.ViewDirBase
	arrayRef
	lines *linesDir // nil for a vector
}

func (v *byNameDir) names() []string {
	axes := axesOf(v.base)
	if v.lines != nil {
		return v.d.axis(v.dirRel, axes[v.lines.axisIndex()])
	}
	return v.d.axis(v.dirRel, axes[0])
}

func (v *byNameDir) List() ([]engine.ViewEntry, error) {
	it, err := v.open()
	if err != nil {
		return nil, err
	}
	m := it.meta
	it.release()
	names := v.names()
	n := m.Rows()
	if v.lines != nil {
		n = v.lines.count(m)
	}
	var out []engine.ViewEntry
	for i, name := range names {
		if int64(i) < n && validViewName(name) {
			out = append(out, engine.ViewEntry{Name: name})
		}
	}
	return out, nil
}

func (v *byNameDir) Lookup(name string) (engine.ViewNode, error) {
	names := v.names()
	i := slices.Index(names, name)
	if i < 0 || !validViewName(name) {
		return nil, nil
	}
	it, err := v.open()
	if err != nil {
		return nil, err
	}
	m := it.meta
	it.release()
	if v.lines == nil {
		if int64(i) >= m.Rows() {
			return nil, nil
		}
		return &arrayView{arrayRef: v.arrayRef, kind: kRows, a: int64(i), b: int64(i) + 1, single: true}, nil
	}
	if int64(i) >= v.lines.count(m) {
		return nil, nil
	}
	return v.lines.line(m, int64(i), int64(i)+1, false, true), nil
}

// validViewName: an axis entry that can be a file name.
func validViewName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

// axesOf is the axis names of array base: "cell,gene#X" → [cell gene],
// "cell#age" → [cell]; nil for a name that is not of daf's form.
func axesOf(base string) []string {
	axes, _, ok := strings.Cut(base, "#")
	if !ok || axes == "" {
		return []string{""}
	}
	return strings.Split(axes, ",")
}

// info is info.json of an array.
func (it *item) info() []byte {
	m := it.meta
	info := map[string]any{"shape": m.Shape, "byte_order": "little"}
	if m.Sparse {
		info["kind"] = "sparse-csr"
		info["nnz"] = m.NNZ
		info["data_dtype"], info["data_numpy_dtype"] = m.DataDType, numpyDescr[m.DataDType]
		info["indices_dtype"], info["indices_numpy_dtype"] = m.IndicesDType, numpyDescr[m.IndicesDType]
		info["indptr_dtype"], info["indptr_numpy_dtype"] = m.IndptrDType, numpyDescr[m.IndptrDType]
		info["paths"] = map[string]string{"data": it.rel(ExtData), "indices": it.rel(ExtIndices), "indptr": it.rel(ExtIndptr)}
	} else {
		size := dtypeSizes[m.DType]
		info["kind"] = "dense"
		info["dtype"], info["numpy_dtype"] = m.DType, numpyDescr[m.DType]
		info["itemsize"] = size
		stride := size
		if len(m.Shape) == 2 {
			stride = size * m.Shape[1]
		}
		info["row_stride"] = stride
		info["path"] = it.rel(ExtArray)
	}
	return engine.JSON(info)
}

func padded(i int64, width int) string {
	s := strconv.FormatInt(i, 10)
	if len(s) < width {
		s = strings.Repeat("0", width-len(s)) + s
	}
	return s
}

// parseIndex accepts i with or without zero padding, in [0, n).
func parseIndex(s string, n int64) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	var i int64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		i = i*10 + int64(c-'0')
	}
	return i, i < n
}

// parseRange accepts a:b with 0 <= a < b <= n.
func parseRange(s string, n int64) (int64, int64, bool) {
	as, bs, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, false
	}
	a, ok1 := parseIndex(as, n)
	b, ok2 := parseIndex(bs, n+1)
	return a, b, ok1 && ok2 && a < b
}

// Xattrs are the derived attributes of the data file rel of a valid
// array: its kind, the dtype of its elements and the array's shape.
func (d *Arrays) Xattrs(rel string) []engine.Xattr {
	dirRel, name := filepath.Split(rel)
	base, ext, ok := SplitName(name)
	if !ok {
		return nil
	}
	it, err := d.openItem(filepath.Clean(dirRel), base)
	if it == nil || err != nil {
		return nil
	}
	defer it.release()
	m := it.meta
	kind, dtype := "dense", m.DType
	if m.Sparse {
		kind = "sparse-csr"
		dtype = map[string]string{ExtData: m.DataDType, ExtIndices: m.IndicesDType, ExtIndptr: m.IndptrDType}[ext]
	}
	shape, _ := json.Marshal(m.Shape)
	return []engine.Xattr{
		{Name: engine.XattrPrefix + "kind", Value: kind},
		{Name: engine.XattrPrefix + "dtype", Value: dtype},
		{Name: engine.XattrPrefix + "shape", Value: string(shape)},
	}
}
