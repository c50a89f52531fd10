package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

func init() { checkers = append(checkers, checkDirdb) }

// checkDirdbLockWait bounds how long check waits for an entry a Python
// process is writing.
const checkDirdbLockWait = 5 * time.Second

// checkDirdb validates the entries of a database directory: each
// NAME.pickle must be a complete pickle (not empty, ending with the STOP
// opcode: an in-place write interrupted by a crash leaves a truncated
// one), each NAME.json valid JSON. Files are read under dirdb's lock when
// their lock file exists; check creates nothing.
func checkDirdb(root, dirRel string, names []string, cfg Config) []Problem {
	if !namesHavePickle(names) && !ancestorHasPickle(root, dirRel) {
		return nil
	}
	dir := filepath.Join(root, dirRel)
	var out []Problem
	for _, n := range names {
		base, ext, ok := splitDirdbName(n)
		if !ok || ext == DirdbLock {
			continue
		}
		st, err := os.Lstat(filepath.Join(dir, n))
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		reason := checkDirdbFile(dir, base, ext)
		if reason != "" {
			out = append(out, Problem{Path: filepath.Join(dirRel, n), Reason: reason})
		}
	}
	return out
}

func checkDirdbFile(dir, base, ext string) string {
	if l, err := os.Open(filepath.Join(dir, base+DirdbLock)); err == nil {
		defer l.Close()
		deadline := time.Now().Add(checkDirdbLockWait)
		for unix.Flock(int(l.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			if time.Now().After(deadline) {
				return fmt.Sprintf("not checked: %s stays locked by another process", base+DirdbLock)
			}
			time.Sleep(lockPollMax)
		}
	}
	f, err := os.Open(filepath.Join(dir, base+ext))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if ext == DirdbMeta {
		if err := validateJSON(f); err != nil {
			return "not valid JSON: " + err.Error()
		}
		return ""
	}
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if st.Size() == 0 {
		return "empty: not a pickle (a write was interrupted?)"
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, st.Size()-1); err != nil {
		return err.Error()
	}
	if last[0] != '.' {
		return "truncated: a pickle ends with its STOP opcode '.', this one does not (a write was interrupted?)"
	}
	return ""
}

func namesHavePickle(names []string) bool {
	for _, n := range names {
		if _, ext, ok := splitDirdbName(n); ok && ext == DirdbData {
			return true
		}
	}
	return false
}

// ancestorHasPickle reports whether a directory above dirRel (up to the
// dataset root) holds a NAME.pickle: its subdirectories are sub-databases.
func ancestorHasPickle(root, dirRel string) bool {
	rel := cleanRel(dirRel)
	for rel != "." {
		rel = filepath.Dir(rel)
		names, err := readDirNames(filepath.Join(root, rel))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return false
		}
		if namesHavePickle(names) {
			return true
		}
	}
	return false
}
