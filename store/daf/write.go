package daf

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteDenseArray creates NAME.yaml and NAME.array in dir the way daf
// does: the yaml first, then the data. data must have the yaml's size.
func WriteDenseArray(dir, name, dtype string, shape []int64, data []byte) error {
	m := &Meta{DType: dtype, Shape: shape}
	return writeArray(dir, name, m, map[string][]byte{ExtArray: data})
}

// WriteSparseArray creates a CSR array (NAME.yaml + .data/.indices/.indptr).
func WriteSparseArray(dir, name string, rows, cols int64, dataDType, indexDType string, data, indices, indptr []byte) error {
	nnz := int64(len(data)) / DTypeSize(dataDType)
	m := &Meta{Sparse: true, Shape: []int64{rows, cols}, DataDType: dataDType,
		IndicesDType: indexDType, IndptrDType: indexDType, NNZ: nnz}
	return writeArray(dir, name, m, map[string][]byte{ExtData: data, ExtIndices: indices, ExtIndptr: indptr})
}

func writeArray(dir, name string, m *Meta, files map[string][]byte) error {
	for ext, size := range m.DataFiles() {
		if int64(len(files[ext])) != size {
			return fmt.Errorf("%s%s: %d bytes given, the yaml says %d", name, ext, len(files[ext]), size)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name+ExtYAML), FormatMeta(m), 0o644); err != nil {
		return err
	}
	for ext, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name+ext), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
