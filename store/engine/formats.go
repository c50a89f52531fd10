package engine

import (
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Formats are the formats of one dataset directory over the Env they
// share, asked in order: the first that handles a request answers it.
// The dataset (package store) is one; a format's own tests make one of
// that format alone.
type Formats struct {
	Env
	List []Format
}

// Classify tells what the regular file at rel is: nil for a plain file,
// else, referenced, the member of a format's item that it is (callers
// tell them apart by type).
func (fs *Formats) Classify(rel string) (Item, error) {
	for _, f := range fs.List {
		if it, err := f.Classify(rel); it != nil || err != nil {
			return it, err
		}
	}
	return nil, nil
}

// Hidden reports whether name in directory dirRel is arrayfs's or a
// format's own bookkeeping, never shown: staged files, and what a format
// hides.
func (fs *Formats) Hidden(dirRel, name string) bool {
	return IsStageName(name) || fs.visibility(dirRel, name) == Hidden
}

// Unlisted reports whether name is left out of listings of directory
// dirRel though it can be reached by name.
func (fs *Formats) Unlisted(dirRel, name string) bool {
	return fs.visibility(dirRel, name) == Unlisted
}

func (fs *Formats) visibility(dirRel, name string) Visibility {
	for _, f := range fs.List {
		if v := f.Visibility(dirRel, name); v != Listed {
			return v
		}
	}
	return Listed
}

// Unlink removes the file rel.
func (fs *Formats) Unlink(rel string) error {
	for _, f := range fs.List {
		if handled, err := f.Unlink(rel); handled {
			if err == nil {
				fs.moved(rel, "", false)
			}
			return err
		}
	}
	if err := fs.Back.Unlink(rel); err != nil {
		return err
	}
	fs.moved(rel, "", false)
	return nil
}

// Rename renames the file or directory from to to; flags are
// renameat2's. A format may do the rename itself, or refuse it (an
// array's data file of the wrong size: EINVAL).
func (fs *Formats) Rename(from, to string, flags uint) error {
	exchange := flags&unix.RENAME_EXCHANGE != 0
	for _, f := range fs.List {
		if handled, err := f.Rename(from, to, flags); handled {
			if err == nil {
				fs.moved(from, to, exchange)
			}
			return err
		}
	}
	if err := fs.Back.Rename(from, to, flags); err != nil {
		return err
	}
	fs.moved(from, to, exchange)
	return nil
}

// moved tells every format of a rename or (to "") an unlink done.
func (fs *Formats) moved(from, to string, exchange bool) {
	for _, f := range fs.List {
		f.Moved(from, to, exchange)
	}
}

// Sync writes back everything dirty: the pool, then what each format
// keeps beyond it, then the renames of publications (dirsync.go).
func (fs *Formats) Sync() error {
	err := fs.Pool.FlushAll()
	for _, f := range fs.List {
		if serr := f.Sync(); err == nil {
			err = serr
		}
	}
	if serr := fs.Back.SyncDirs(); err == nil {
		err = serr
	}
	return err
}

// Close stops the pool's timer, writes back everything and closes every
// format. The backing directory stays open: it is its opener's.
func (fs *Formats) Close() error {
	fs.Pool.Close()
	err := fs.Sync()
	for _, f := range fs.List {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// Check validates the items of every format in directory dirRel, whose
// sorted names are given, and staged files no process owns.
func (fs *Formats) Check(dirRel string, names []string) []Problem {
	var out []Problem
	for _, n := range names {
		if IsStageName(n) && !fs.Back.StageOwned(dirRel, n) {
			out = append(out, Problem{Path: filepath.Join(dirRel, n),
				Reason: "staged file left by an interrupted write (the old content is intact; the next mount removes it)"})
		}
	}
	for _, f := range fs.List {
		out = append(out, f.Check(dirRel, names)...)
	}
	return out
}
