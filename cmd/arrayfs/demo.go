package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/arrayfs/arrayfs/store/daf"
	"github.com/arrayfs/arrayfs/store/docarray"
)

var demoCommand = &command{
	usage: "arrayfs demo [-o OPTIONS] MOUNTPOINT",
	help: `
Writes a small demo dataset into a new temporary directory, mounts it at
MOUNTPOINT in the foreground and prints a few commands to try in another
terminal. Ctrl-C unmounts; the dataset directory is kept for a look.
`,
	run: runDemo,
}

func runDemo(args []string) error {
	m, err := parseMountArgs(args)
	if err != nil {
		return err
	}
	if len(m.positional) != 1 {
		return usagef("needs MOUNTPOINT")
	}
	if m.background {
		return usagef("the demo runs in the foreground")
	}
	mountpoint := m.positional[0]
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "arrayfs-demo-")
	if err != nil {
		return err
	}
	if err := writeDemoDataset(dir); err != nil {
		return err
	}
	if err := preflight(dir, mountpoint); err != nil {
		return err
	}
	logger, err := openLog(m)
	if err != nil {
		return err
	}
	mnt, _ := filepath.Abs(mountpoint)
	fmt.Printf(`arrayfs demo: the dataset is in %[1]s, mounted at %[2]s.
Try, in another terminal:

  ls -l %[2]s
  cat %[2]s/cell,gene#UMIs.yaml
  /usr/bin/python3 -c "import numpy as np; print(np.fromfile('%[2]s/cell,gene#UMIs.array', dtype='float32').reshape(200, 50)[:3, :5])"
  od -A d -t d8 %[2]s/cell#age.array | head -3
  /usr/bin/python3 -c "import pickle; print(pickle.load(open('%[2]s/db/hello.pickle', 'rb')))"
  cat %[2]s/db/hello.json
  ls -f %[2]s/docs; cat %[2]s/docs/.docarray; od -c %[2]s/docs/hello | head
  cp %[2]s/docs/hello %[2]s/docs/hello-again      # a new document (bytes must be a DocumentProto)
  rsync -a %[2]s/ /tmp/arrayfs-demo-copy/
  cat %[2]s/.arrayfs/stats.json

Ctrl-C (or 'arrayfs umount %[2]s') writes back and unmounts.
`, dir, mnt)
	return serve(dir, mountpoint, m.opts, logger, func(error) {})
}

// writeDemoDataset writes a daf dataset: a dense matrix, vectors of
// several types, a sparse matrix, axes and a few plain files; and a
// dirdb database, db/.
func writeDemoDataset(dir string) error {
	const cells, genes = 200, 50
	files := map[string]string{
		"__daf__.yaml": "version:\n- 1\n- 0\n",
		"created.yaml": "2026-11-22 00:00:00\n",
		"README.txt":   "A demo dataset of arrayfs: daf arrays (dense and sparse), a docarray store (docs/), a dirdb database (db/) and plain files.\n",
	}
	cellAxis, geneAxis := "cell\n", "gene\n"
	for i := 0; i < cells; i++ {
		cellAxis += fmt.Sprintf("C%03d\n", i)
	}
	for j := 0; j < genes; j++ {
		geneAxis += fmt.Sprintf("G%02d\n", j)
	}
	files["cell#.csv"], files["gene#.csv"] = cellAxis, geneAxis
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}

	umis := make([]byte, 4*cells*genes)
	for i := 0; i < cells*genes; i++ {
		binary.LittleEndian.PutUint32(umis[4*i:], math.Float32bits(float32(i)*0.5))
	}
	if err := daf.WriteDenseArray(dir, "cell,gene#UMIs", "float32", []int64{cells, genes}, umis); err != nil {
		return err
	}
	age := make([]byte, 8*cells)
	doublet := make([]byte, cells)
	for i := 0; i < cells; i++ {
		binary.LittleEndian.PutUint64(age[8*i:], uint64(20+i%60))
		if i%17 == 0 {
			doublet[i] = 1
		}
	}
	if err := daf.WriteDenseArray(dir, "cell#age", "int64", []int64{cells}, age); err != nil {
		return err
	}
	if err := daf.WriteDenseArray(dir, "cell#is_doublet", "bool", []int64{cells}, doublet); err != nil {
		return err
	}

	// A sparse CSR matrix: row i has its non-zeros at columns j with (i+j)%7 == 0.
	var data, indices []byte
	indptr := make([]byte, 4*(cells+1))
	nnz := 0
	for i := 0; i < cells; i++ {
		for j := 0; j < genes; j++ {
			if (i+j)%7 == 0 {
				data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(i+j)))
				indices = binary.LittleEndian.AppendUint32(indices, uint32(j))
				nnz++
			}
		}
		binary.LittleEndian.PutUint32(indptr[4*(i+1):], uint32(nnz))
	}
	if err := daf.WriteSparseArray(dir, "cell,gene#sparse", cells, genes, "float32", "int32", data, indices, indptr); err != nil {
		return err
	}
	if err := writeDemoDirdb(filepath.Join(dir, "db")); err != nil {
		return err
	}
	return writeDemoDocs(filepath.Join(dir, "docs"))
}

// writeDemoDirdb writes a dirdb database with one entry, as dirdb
// writes it: the pickle (the bytes Python's pickle.dumps gives for
// {'greeting': 'hello', 'values': [1, 2, 3]} with protocol 4), its
// metadata as json.dump writes it, and the empty lock file dirdb leaves.
func writeDemoDirdb(db string) error {
	if err := os.Mkdir(db, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"hello.pickle": "\x80\x04\x95+\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x08greeting\x94\x8c\x05hello\x94" +
			"\x8c\x06values\x94]\x94(K\x01K\x02K\x03eu.",
		"hello.json": `{"source": "arrayfs demo", "n": 3}`,
		"hello.lock": "",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(db, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeDemoDocs writes a small docarray store: a few text documents,
// one with an id longer than the key length, one with a '/' in its id.
func writeDemoDocs(dir string) error {
	keys := []string{"hello", "world", "a/b", "an-id-longer-than-thirty-six-characters-truncated"}
	var docs [][]byte
	for i, k := range keys {
		docs = append(docs, docarray.TextDocument(k, fmt.Sprintf("demo document %d: %s", i, k)))
	}
	return docarray.WriteStore(dir, docarray.DefaultKeyLength, keys, docs)
}
