package store

import (
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// Views is the view directory of the dataset's root
// (/.arrayfs/views of the mount): the dataset's directories, and in each
// the view directory of every item a format has views of, named as the
// item without its format's extensions.
func (d *Dataset) Views() engine.ViewDir { return &datasetViews{d: d, rel: "."} }

// datasetViews mirrors directory rel of the dataset.
type datasetViews struct {
	engine.ViewDirBase
	d   *Dataset
	rel string
}

func (v *datasetViews) viewers() []engine.Viewer {
	var out []engine.Viewer
	for _, f := range v.d.List {
		if vw, ok := f.(engine.Viewer); ok {
			out = append(out, vw)
		}
	}
	return out
}

// List shows the items first claimed by a format, then the directories
// that are no item; an item and a directory of one name show once, as
// the item (as Lookup finds it).
func (v *datasetViews) List() ([]engine.ViewEntry, error) {
	names, err := engine.ReadDirSorted(v.d.Back, v.rel)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []engine.ViewEntry
	for _, vw := range v.viewers() {
		for _, n := range vw.ViewItems(v.rel, names) {
			if !seen[n] {
				seen[n] = true
				out = append(out, engine.ViewEntry{Name: n, Dir: true})
			}
		}
	}
	for _, n := range names {
		if seen[n] || v.d.Hidden(v.rel, n) || (v.rel == "." && n == ".arrayfs") {
			continue
		}
		if st, err := v.d.Back.Lstat(filepath.Join(v.rel, n)); err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			out = append(out, engine.ViewEntry{Name: n, Dir: true})
		}
	}
	slices.SortFunc(out, func(a, b engine.ViewEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (v *datasetViews) Lookup(name string) (engine.ViewNode, error) {
	if name == "." || name == ".." || v.d.Hidden(v.rel, name) || (v.rel == "." && name == ".arrayfs") {
		return nil, nil
	}
	for _, vw := range v.viewers() {
		if dir, err := vw.ViewItem(v.rel, name); dir != nil || err != nil {
			return dir, err
		}
	}
	rel := filepath.Join(v.rel, name)
	if st, err := v.d.Back.Lstat(rel); err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return &datasetViews{d: v.d, rel: rel}, nil
	}
	return nil, nil
}
