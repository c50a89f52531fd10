package store

import (
	"fmt"
	"path/filepath"

	"github.com/arrayfs/arrayfs/store/docarray"
)

// PruneStore prunes the store at path, which must not be mounted (its
// lock must be free).
func PruneStore(path string, cfg Config, progress func(done, total int64)) (docarray.PruneStats, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return docarray.PruneStats{}, err
	}
	ds, err := Open(filepath.Dir(abs), cfg)
	if err != nil {
		return docarray.PruneStats{}, err
	}
	defer ds.Close()
	s := ds.Docs().Store(filepath.Base(abs))
	if s == nil {
		return docarray.PruneStats{}, fmt.Errorf("%s: not a docarray store (a directory with %s and %s that arrayfs can read)", path, docarray.HeaderName, docarray.BodyName)
	}
	return s.Prune(progress)
}
