package daf

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// daf array metadata: the NAME.yaml beside NAME.array (dense) or
// NAME.data/.indices/.indptr (sparse CSR). See formats/daf.md.

// dtypeSizes are the element types daf memory-maps, with their sizes.
var dtypeSizes = map[string]int64{
	"bool": 1, "int8": 1, "uint8": 1,
	"int16": 2, "uint16": 2, "float16": 2,
	"int32": 4, "uint32": 4, "float32": 4,
	"int64": 8, "uint64": 8, "float64": 8,
}

// DTypeSize is the element size of a daf dtype, 0 if unknown.
func DTypeSize(dtype string) int64 { return dtypeSizes[dtype] }

// Data file extensions of daf arrays.
const (
	ExtYAML    = ".yaml"
	ExtArray   = ".array"
	ExtData    = ".data"
	ExtIndices = ".indices"
	ExtIndptr  = ".indptr"
)

// dafDataExts are the extensions that can be an array's data file.
var dafDataExts = []string{ExtArray, ExtData, ExtIndices, ExtIndptr}

// SplitName splits "cell,gene#X.array" into ("cell,gene#X", ".array")
// when the extension is one of daf's data files.
func SplitName(name string) (base, ext string, ok bool) {
	for _, e := range dafDataExts {
		if b, found := strings.CutSuffix(name, e); found && b != "" {
			return b, e, true
		}
	}
	return "", "", false
}

// Meta is a parsed and validated NAME.yaml of a memory-mapped array.
type Meta struct {
	Sparse bool
	Shape  []int64
	// Dense: DType. Sparse: DataDType, IndicesDType, IndptrDType, NNZ.
	DType        string
	DataDType    string
	IndicesDType string
	IndptrDType  string
	NNZ          int64
}

// Rows is the first dimension.
func (m *Meta) Rows() int64 { return m.Shape[0] }

// Elements is the number of elements of a dense array.
func (m *Meta) Elements() int64 {
	n := int64(1)
	for _, d := range m.Shape {
		n *= d
	}
	return n
}

// DataFiles maps each data file extension of the array to the exact size
// the yaml demands of it.
func (m *Meta) DataFiles() map[string]int64 {
	if !m.Sparse {
		return map[string]int64{ExtArray: m.Elements() * dtypeSizes[m.DType]}
	}
	return map[string]int64{
		ExtData:    m.NNZ * dtypeSizes[m.DataDType],
		ExtIndices: m.NNZ * dtypeSizes[m.IndicesDType],
		ExtIndptr:  (m.Rows() + 1) * dtypeSizes[m.IndptrDType],
	}
}

// rawArrayYAML is what the yaml may hold; extra keys are ignored.
type rawArrayYAML struct {
	Version      []int64 `yaml:"version"`
	DType        *string `yaml:"dtype"`
	Shape        []int64 `yaml:"shape"`
	DataDType    *string `yaml:"data_dtype"`
	IndicesDType *string `yaml:"indices_dtype"`
	IndptrDType  *string `yaml:"indptr_dtype"`
	NNZ          *int64  `yaml:"nnz"`
}

// maxElements keeps size arithmetic far from int64 overflow.
const maxElements = int64(1) << 52

// ParseMeta parses NAME.yaml. It fails with a reason a user can act
// on when the yaml is not a valid daf array description (a scalar
// property yaml is such a case: callers treat it as a plain file).
func ParseMeta(data []byte) (*Meta, error) {
	var raw rawArrayYAML
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("unreadable yaml: %v", firstLine(err.Error()))
	}
	if len(raw.Version) != 2 || raw.Version[0] < 0 || raw.Version[1] < 0 {
		return nil, fmt.Errorf("version must be two non-negative integers, got %v", raw.Version)
	}
	if raw.Version[0] != 1 {
		return nil, fmt.Errorf("unsupported format version %d.%d (need 1.x)", raw.Version[0], raw.Version[1])
	}
	if len(raw.Shape) < 1 || len(raw.Shape) > 2 {
		return nil, fmt.Errorf("shape must have 1 or 2 dimensions, got %v", raw.Shape)
	}
	n := int64(1)
	for _, d := range raw.Shape {
		if d <= 0 {
			return nil, fmt.Errorf("shape dimensions must be positive, got %v", raw.Shape)
		}
		if n > maxElements/d {
			return nil, fmt.Errorf("shape %v is too large", raw.Shape)
		}
		n *= d
	}
	m := &Meta{Shape: raw.Shape}
	checkDType := func(key string, v *string) (string, error) {
		if v == nil {
			return "", fmt.Errorf("missing %s", key)
		}
		if dtypeSizes[*v] == 0 {
			return "", fmt.Errorf("unknown %s %q", key, *v)
		}
		return *v, nil
	}
	var err error
	switch {
	case raw.DType != nil && (raw.DataDType != nil || raw.NNZ != nil):
		return nil, fmt.Errorf("both dense (dtype) and sparse (data_dtype, nnz) keys")
	case raw.DType != nil:
		m.DType, err = checkDType("dtype", raw.DType)
		return m, err
	case raw.DataDType != nil || raw.NNZ != nil:
		m.Sparse = true
		if len(m.Shape) != 2 {
			return nil, fmt.Errorf("a sparse array must be 2D, got shape %v", raw.Shape)
		}
		if m.DataDType, err = checkDType("data_dtype", raw.DataDType); err != nil {
			return nil, err
		}
		if m.IndicesDType, err = checkDType("indices_dtype", raw.IndicesDType); err != nil {
			return nil, err
		}
		if m.IndptrDType, err = checkDType("indptr_dtype", raw.IndptrDType); err != nil {
			return nil, err
		}
		if raw.NNZ == nil || *raw.NNZ <= 0 || *raw.NNZ > maxElements {
			return nil, fmt.Errorf("nnz must be a positive integer")
		}
		m.NNZ = *raw.NNZ
		return m, nil
	}
	return nil, fmt.Errorf("missing dtype (dense) or data_dtype (sparse)")
}

// FormatMeta renders m the way daf writes it: block style, sorted keys.
func FormatMeta(m *Meta) []byte {
	var b strings.Builder
	if m.Sparse {
		fmt.Fprintf(&b, "data_dtype: %s\nindices_dtype: %s\nindptr_dtype: %s\nnnz: %d\n",
			m.DataDType, m.IndicesDType, m.IndptrDType, m.NNZ)
	} else {
		fmt.Fprintf(&b, "dtype: %s\n", m.DType)
	}
	b.WriteString("shape:\n")
	for _, d := range m.Shape {
		fmt.Fprintf(&b, "- %d\n", d)
	}
	b.WriteString("version:\n- 1\n- 0\n")
	return []byte(b.String())
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
