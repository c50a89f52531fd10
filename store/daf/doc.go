// Package daf serves daf's memory-mapped arrays
// (../shared/formats/daf.md): a dense array is NAME.yaml
// beside NAME.array, a sparse one NAME.yaml beside NAME.data,
// NAME.indices and NAME.indptr. Each data file of a valid array is an
// ArrayFile served from its mapping, written in place chunk by chunk
// through the pool, and replaced whole only by a file of exactly the size
// the yaml gives it.
//
// It imports store/engine and nothing else of arrayfs.
//
// Invariants: an array is recognised by its names each time a data file
// is opened, so it appears when its yaml arrives and turns plain (logged
// once) when it stops being valid; the size of a served data file never
// changes; an ArrayFile serves one inode, and a replaced one is retired,
// kept for its open handles, never given out again (Arrays.mu guards the
// registry and every ArrayFile's refs).
package daf
