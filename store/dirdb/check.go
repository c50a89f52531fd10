package dirdb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// checkDirdbLockWait bounds how long check waits for an entry a Python
// process is writing.
const checkDirdbLockWait = 5 * time.Second

// Check validates the entries of a database directory: each
// NAME.pickle must be one whole pickle (pickle.go: an in-place write
// interrupted by a crash leaves a truncated one), each NAME.json valid
// JSON. Files are read under dirdb's lock when
// their lock file exists; check creates nothing.
func (d *Databases) Check(dirRel string, names []string) []engine.Problem {
	back := d.back
	if !namesHavePickle(names) && !ancestorHasPickle(back, dirRel) {
		return nil
	}
	var out []engine.Problem
	for _, n := range names {
		base, ext, ok := splitDirdbName(n)
		if !ok || ext == ExtLock {
			continue
		}
		if !back.IsRegular(filepath.Join(dirRel, n)) {
			continue
		}
		reason := checkDirdbFile(back, dirRel, base, ext)
		if reason != "" {
			out = append(out, engine.Problem{Path: filepath.Join(dirRel, n), Reason: reason})
		}
	}
	return out
}

func checkDirdbFile(back *engine.Backing, dirRel, base, ext string) string {
	if l, err := back.OpenFile(filepath.Join(dirRel, base+ExtLock), os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
		defer l.Close()
		deadline := time.Now().Add(checkDirdbLockWait)
		for unix.Flock(int(l.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			if time.Now().After(deadline) {
				return fmt.Sprintf("not checked: %s stays locked by another process", base+ExtLock)
			}
			time.Sleep(lockPollMax)
		}
	}
	f, err := back.OpenFile(filepath.Join(dirRel, base+ext), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return engine.UnwrapPath(err).Error()
	}
	defer f.Close()
	if ext == ExtJSON {
		if err := validateJSON(f); err != nil {
			return "not valid JSON: " + err.Error()
		}
		return ""
	}
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if err := validatePickle(f, st.Size()); err != nil {
		return err.Error()
	}
	return ""
}

func namesHavePickle(names []string) bool {
	for _, n := range names {
		if _, ext, ok := splitDirdbName(n); ok && ext == ExtPickle {
			return true
		}
	}
	return false
}

// ancestorHasPickle reports whether a directory above dirRel (up to the
// dataset root) holds a NAME.pickle: its subdirectories are sub-databases.
func ancestorHasPickle(back *engine.Backing, dirRel string) bool {
	rel := cleanRel(dirRel)
	for rel != "." {
		rel = filepath.Dir(rel)
		names, err := engine.ReadDirSorted(back, rel)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return false
		}
		if namesHavePickle(names) {
			return true
		}
	}
	return false
}
