package dirdb

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"
)

// Views of a dirdb entry (/.arrayfs/views/<db>/NAME/): data.npy when the
// pickle holds a numpy ndarray (its data served from the entry's
// snapshot, no copy), and meta.json (what the entry is, and its
// NAME.json). Every request snapshots the entry afresh, under dirdb's
// lock as any read of it.

var _ engine.Viewer = (*Databases)(nil)

// ViewItems names the entries of a database directory.
func (d *Databases) ViewItems(dirRel string, names []string) []string {
	if !d.isDirdbDir(dirRel) {
		return nil
	}
	var out []string
	for _, n := range names {
		if base, ext, ok := splitDirdbName(n); ok && ext == ExtPickle {
			out = append(out, base)
		}
	}
	return out
}

// ViewItem is the view directory of entry name of dirRel; nil when
// there is none.
func (d *Databases) ViewItem(dirRel, name string) (engine.ViewDir, error) {
	rel := filepath.Join(dirRel, name)
	if _, ext, ok := splitDirdbName(name + ExtPickle); !ok || ext != ExtPickle || !d.isDirdbDir(dirRel) ||
		!d.back.IsRegular(rel+ExtPickle) {
		return nil, nil
	}
	return &entryDir{d: d, rel: rel}, nil
}

// entryDir is the views of one entry.
type entryDir struct {
	engine.ViewDirBase
	d   *Databases
	rel string // the entry's path without extension
}

// snapshot is the entry's pickle as it is now, referenced.
func (v *entryDir) snapshot() (*Snapshot, error) {
	f, ok := v.d.dirdbFile(v.rel + ExtPickle)
	if !ok {
		return nil, syscall.ENOENT
	}
	defer f.Release()
	return f.Snapshot(context.Background())
}

// array reads the pickle of s; why says why it holds no ndarray.
func (v *entryDir) array(s *Snapshot) (*ndArrayInfo, string) {
	return parseNdArray(s, s.Size())
}

func (v *entryDir) List() ([]engine.ViewEntry, error) {
	s, err := v.snapshot()
	if err != nil {
		return nil, err
	}
	defer s.Release()
	out := []engine.ViewEntry{{Name: "meta.json"}}
	if a, _ := v.array(s); a != nil {
		out = append([]engine.ViewEntry{{Name: "data.npy"}}, out...)
	}
	return out, nil
}

func (v *entryDir) Lookup(name string) (engine.ViewNode, error) {
	switch name {
	case "meta.json":
		return &entryFile{dir: v, name: name}, nil
	case "data.npy":
		s, err := v.snapshot()
		if err != nil {
			return nil, err
		}
		defer s.Release()
		if a, _ := v.array(s); a != nil {
			return &entryFile{dir: v, name: name}, nil
		}
	}
	return nil, nil
}

// entryFile is data.npy or meta.json of an entry.
type entryFile struct {
	engine.ViewFileBase
	dir  *entryDir
	name string
}

func (v *entryFile) Stat() (engine.ViewStat, error) {
	c, err := v.Open(false)
	if err != nil {
		return engine.ViewStat{}, err
	}
	defer c.Release()
	st := engine.ViewStat{Size: c.Size()}
	if m, err := v.dir.d.back.Lstat(v.dir.rel + ExtPickle); err == nil {
		st.Mtime = m.Mtim.Nano()
	}
	return st, nil
}

func (v *entryFile) Open(write bool) (engine.Content, error) {
	if write {
		if v.dir.d.readOnly {
			return nil, engine.Refuse(v.rel(), "open", syscall.EROFS, "read-only mount")
		}
		return nil, engine.ErrReadOnlyView(v.rel())
	}
	s, err := v.dir.snapshot()
	if err != nil {
		return nil, err
	}
	a, why := v.dir.array(s)
	if v.name == "meta.json" {
		defer s.Release()
		return engine.BytesContent(v.meta(s, a, why)), nil
	}
	if a == nil {
		s.Release()
		return nil, syscall.ENOENT
	}
	head := engine.NpyHeader(a.descr, a.fortran, a.shape)
	if a.data != nil {
		s.Release()
		return engine.BytesContent(append(head, a.data...)), nil
	}
	return engine.NewHeadedContent(head, s, a.off, a.n, s.Release), nil
}

func (v *entryFile) rel() string {
	return filepath.Join(".arrayfs/views", v.dir.rel, v.name)
}

// meta is meta.json: the entry, the array its pickle holds (or why it
// holds none), and its NAME.json.
func (v *entryFile) meta(s *Snapshot, a *ndArrayInfo, why string) []byte {
	m := map[string]any{
		"entry":       v.dir.rel,
		"pickle":      v.dir.rel + ExtPickle,
		"pickle_size": s.Size(),
		"ndarray":     nil,
		"metadata":    nil,
	}
	if a != nil {
		m["ndarray"] = map[string]any{"dtype": a.descr, "shape": a.shape, "fortran_order": a.fortran}
	} else {
		m["not_ndarray"] = why
	}
	if meta, ok := v.dir.d.dirdbFile(v.dir.rel + ExtJSON); ok {
		defer meta.Release()
		if ms, err := meta.Snapshot(context.Background()); err == nil {
			b := make([]byte, ms.Size())
			n, _ := ms.ReadAt(b, 0)
			ms.Release()
			var j any
			if json.Unmarshal(b[:n], &j) == nil {
				m["metadata"] = j
			}
		} else if !errors.Is(err, fs.ErrNotExist) && !strings.Contains(err.Error(), "no such file") {
			m["metadata_error"] = err.Error()
		}
	}
	return engine.JSON(m)
}
