package store

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// One writer per dataset. Two processes writing one dataset (two
// writable mounts, or a mount and an offline prune) would each take the
// other's staged files for a crash's leftovers and append to the same
// stores from stale positions. A writable Dataset therefore holds, for
// as long as it is open:
//
//   - an exclusive flock on its own directory, and
//   - a shared flock on every directory above it, up to /.
//
// Two writable datasets conflict exactly when one's directory is the
// other's or lies inside it: the inner one's shared lock meets the outer
// one's exclusive lock, whichever came first. Datasets side by side
// share their ancestors' shared locks. Read-only datasets take no lock:
// any number may serve a dataset beside its writer. The locks go with
// the process, so a crash leaves none behind.

// BusyError is a dataset that another process writes already: the
// directory whose lock is held (the dataset, one above it, or the
// dataset itself as the parent of a busy one inside).
type BusyError struct {
	Dataset string // the dataset asked for
	Held    string // the directory whose lock another writer holds
	Inside  bool   // the other writer's dataset is inside this one
}

func (e *BusyError) Error() string {
	switch {
	case e.Inside:
		return fmt.Sprintf("dataset %s: another arrayfs process writes a dataset inside it (its lock on %s is held); a second writer would undo the first's writes", e.Dataset, e.Held)
	case e.Held == e.Dataset:
		return fmt.Sprintf("dataset %s: another arrayfs process writes it already; a second writer would undo the first's writes", e.Dataset)
	}
	return fmt.Sprintf("dataset %s: another arrayfs process writes %s, which holds it; a second writer would undo the first's writes", e.Dataset, e.Held)
}

// datasetLock is the locks a writable Dataset holds.
type datasetLock struct{ fds []int }

// lockDataset takes the writer's locks of the dataset directory at path
// (absolute) whose descriptor is fd.
func lockDataset(path string, fd int) (*datasetLock, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, err
	}
	l := &datasetLock{}
	ok := false
	defer func() {
		if !ok {
			l.release()
		}
	}()
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	l.fds = append(l.fds, dup)
	if err := unix.Flock(dup, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &BusyError{Dataset: path, Held: path, Inside: !othersHoldExclusive(dup)}
		}
		return nil, fmt.Errorf("dataset %s: lock: %w", path, err)
	}
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		afd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			// A directory above that cannot be opened cannot be a
			// dataset another process opened either.
			if dir == "/" {
				break
			}
			continue
		}
		l.fds = append(l.fds, afd)
		if err := unix.Flock(afd, unix.LOCK_SH|unix.LOCK_NB); err != nil {
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &BusyError{Dataset: path, Held: dir}
			}
			return nil, fmt.Errorf("dataset %s: lock of %s: %w", path, dir, err)
		}
		if dir == "/" {
			break
		}
	}
	ok = true
	return l, nil
}

// othersHoldExclusive tells, for a directory whose exclusive lock we did
// not get, whether another writer holds it exclusively (the same
// dataset) rather than shared (a dataset inside it).
func othersHoldExclusive(fd int) bool {
	return unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB) != nil
}

func (l *datasetLock) release() {
	if l == nil {
		return
	}
	for _, fd := range l.fds {
		unix.Close(fd) // drops the flock
	}
	l.fds = nil
}
