package store

import (
	"path/filepath"
	"sort"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// Check validates every item it recognises under the dataset directory
// root and returns one Problem per thing wrong, sorted by path. It only
// reads, and follows no symbolic link.
func Check(root string, cfg Config) ([]engine.Problem, error) {
	back, err := engine.OpenBacking(root)
	if err != nil {
		return nil, err
	}
	defer back.Close()
	// The formats check through back only: no pool, nothing written.
	ds := newDataset(engine.Env{Back: back, Rep: engine.NewReporter(cfg.Logf), ReadOnly: true, LockTimeout: cfg.LockTimeout}, cfg)
	var problems []engine.Problem
	var walk func(rel string)
	walk = func(rel string) {
		names, err := engine.ReadDirSorted(back, rel)
		if err != nil {
			problems = append(problems, engine.Problem{Path: rel, Reason: engine.UnwrapPath(err).Error()})
			return
		}
		problems = append(problems, ds.Formats.Check(rel, names)...)
		for _, n := range names {
			child := filepath.Join(rel, n)
			if st, err := back.Lstat(child); err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR && !engine.IsStageName(n) {
				walk(child)
			}
		}
	}
	walk(".")
	sort.SliceStable(problems, func(i, j int) bool { return problems[i].Path < problems[j].Path })
	return problems, nil
}
