package daf

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/arrayfs/arrayfs/store/enginetest"
)

var fixtureDir = enginetest.FixtureDir

func TestParseArrayMetaFixtures(t *testing.T) {
	dir := fixtureDir(t, "daf/arrays")
	cases := map[string]Meta{
		"cell,gene#X":      {DType: "float32", Shape: []int64{1000, 64}},
		"cell#i64":         {DType: "int64", Shape: []int64{1000}},
		"cell#flag":        {DType: "bool", Shape: []int64{1000}},
		"cell,gene#u8":     {DType: "uint8", Shape: []int64{1000, 64}},
		"cell,gene#sparse": {Sparse: true, Shape: []int64{1000, 64}, DataDType: "float32", IndicesDType: "int32", IndptrDType: "int32", NNZ: 3764},
	}
	for name, want := range cases {
		data, err := os.ReadFile(filepath.Join(dir, name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseMeta(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("%s: got %+v want %+v", name, *got, want)
		}
		// The original writes exactly what FormatMeta writes.
		if string(FormatMeta(got)) != string(data) {
			t.Errorf("%s: FormatArrayMeta = %q, the original wrote %q", name, FormatMeta(got), data)
		}
		for ext, size := range got.DataFiles() {
			st, err := os.Stat(filepath.Join(dir, name+ext))
			if err != nil || st.Size() != size {
				t.Errorf("%s%s: size %v want %d (%v)", name, ext, st.Size(), size, err)
			}
		}
	}
}

func TestParseArrayMetaForms(t *testing.T) {
	ok := map[string]string{
		"flow style":     "dtype: float64\nshape: [3, 4]\nversion: [1, 0]\n",
		"extra keys":     "dtype: int8\nshape: [2]\nversion: [1, 7]\nowner: me\n",
		"unsorted keys":  "version:\n- 1\n- 0\nshape:\n- 5\ndtype: uint16\n",
		"float16 sparse": "data_dtype: float16\nindices_dtype: int64\nindptr_dtype: int64\nnnz: 1\nshape: [1, 1]\nversion: [1, 0]\n",
	}
	for name, y := range ok {
		if _, err := ParseMeta([]byte(y)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]struct{ yaml, reason string }{
		"unknown dtype":     {"dtype: complex64\nshape: [2]\nversion: [1, 0]\n", "unknown dtype"},
		"bad major":         {"dtype: int8\nshape: [2]\nversion: [2, 0]\n", "unsupported format version 2.0"},
		"no version":        {"dtype: int8\nshape: [2]\n", "version"},
		"zero dim":          {"dtype: int8\nshape: [0]\nversion: [1, 0]\n", "positive"},
		"3d":                {"dtype: int8\nshape: [1, 2, 3]\nversion: [1, 0]\n", "1 or 2 dimensions"},
		"unreadable":        {"dtype: [int8\nshape: :\n", "unreadable yaml"},
		"scalar":            {"2022-07-06 16:49:44\n", "unreadable yaml"},
		"no dtype":          {"shape: [2]\nversion: [1, 0]\n", "missing dtype"},
		"sparse 1d":         {"data_dtype: int8\nindices_dtype: int32\nindptr_dtype: int32\nnnz: 1\nshape: [2]\nversion: [1, 0]\n", "must be 2D"},
		"sparse nnz 0":      {"data_dtype: int8\nindices_dtype: int32\nindptr_dtype: int32\nnnz: 0\nshape: [2, 2]\nversion: [1, 0]\n", "nnz"},
		"dense and sparse":  {"dtype: int8\ndata_dtype: int8\nshape: [2]\nversion: [1, 0]\n", "both dense"},
		"huge":              {"dtype: int8\nshape: [9223372036854775807, 4]\nversion: [1, 0]\n", "too large"},
		"sparse no indices": {"data_dtype: int8\nindptr_dtype: int32\nnnz: 1\nshape: [2, 2]\nversion: [1, 0]\n", "missing indices_dtype"},
	}
	for name, c := range bad {
		_, err := ParseMeta([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, c.reason)
		}
	}
}

func TestSplitDafName(t *testing.T) {
	for name, want := range map[string][2]string{
		"cell,gene#X.array":       {"cell,gene#X", ".array"},
		"a.data":                  {"a", ".data"},
		"a.indices":               {"a", ".indices"},
		"a.indptr":                {"a", ".indptr"},
		".x.array.AbC123":         {"", ""},
		".array":                  {"", ""},
		"cell,gene#sparse.yaml":   {"", ""},
		"cell#metacell.array.bak": {"", ""},
	} {
		base, ext, ok := SplitName(name)
		if ok != (want[0] != "") || base != want[0] || ext != want[1] {
			t.Errorf("SplitDafName(%q) = %q %q %v, want %q %q", name, base, ext, ok, want[0], want[1])
		}
	}
}
