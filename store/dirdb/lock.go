package dirdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// lockPollMax bounds the wait between two attempts at a busy lock. Python
// polls every 50 ms; polling faster lets arrayfs in between two of a
// writer's acquisitions without making it wait longer.
const lockPollMax = 10 * time.Millisecond

// entryLock is dirdb's lock of one entry held by arrayfs: an exclusive
// flock(2) on NAME.lock, the lock Python's filelock takes. A nil
// *entryLock is a lock that could not be taken because the lock file
// cannot be created (read-only directory); nobody can write there then.
type entryLock struct {
	f     *os.File
	back  *engine.Backing
	rel   string // of the lock file
	since time.Time
	stats *dirdbCounters
}

// lockEntry takes the lock of the entry at entryRel (its path without
// extension), waiting up to the configured timeout while another process
// holds it. op names the operation in errors.
//
// The lock file is created if missing and never truncated (dirdb
// truncates it, but it is always empty). A lock file unlinked while we
// waited (an entry deleted through the mount, or a newer filelock that
// removes its lock file on release) locks nothing: after acquiring, a
// lock on a file with no links is dropped and taken again on the file
// now at the path, as filelock itself does.
func (d *Databases) lockEntry(ctx context.Context, entryRel, op string) (*entryLock, error) {
	lockRel := entryRel + ExtLock
	timeout := d.lockTimeout
	if timeout <= 0 {
		timeout = engine.DefaultLockTimeout
	}
	deadline := time.Now().Add(timeout)
	wait := 500 * time.Microsecond
	waited := false
	for {
		f, err := d.back.OpenFile(lockRel, os.O_RDWR|os.O_CREATE|syscall.O_NONBLOCK, 0o644)
		if err != nil {
			errno := engine.ErrnoOf(err)
			if errno == syscall.EROFS || errno == syscall.EACCES || errno == syscall.EPERM {
				d.rep.Report(engine.Problem{Path: lockRel, Reason: fmt.Sprintf(
					"cannot create dirdb's lock file (%v); entries here are read without the lock", errno)})
				return nil, nil
			}
			return nil, &engine.Error{Path: entryRel, Op: op, Reason: fmt.Sprintf("opening lock file %s: %v", lockRel, engine.UnwrapPath(err)), Errno: errno}
		}
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err == nil {
				break
			}
			if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
				f.Close()
				return nil, &engine.Error{Path: entryRel, Op: op, Reason: fmt.Sprintf("flock %s: %v", lockRel, err), Errno: engine.ErrnoOf(err)}
			}
			if !waited {
				waited = true
				d.stats.lockWaits.Add(1)
			}
			if time.Now().After(deadline) {
				f.Close()
				d.stats.lockTimeouts.Add(1)
				return nil, engine.Refuse(entryRel, op, syscall.EBUSY,
					"%s is held by another process (a dirdb writer?) for more than %v; nothing was changed", lockRel, timeout)
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				f.Close()
				return nil, engine.Refuse(entryRel, op, syscall.EINTR, "interrupted while waiting for %s", lockRel)
			case <-t.C:
			}
			wait = min(wait*2, lockPollMax)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			return nil, &engine.Error{Path: entryRel, Op: op, Reason: fmt.Sprintf("fstat %s: %v", lockRel, err), Errno: engine.ErrnoOf(err)}
		}
		if st.Nlink == 0 {
			f.Close()
			continue
		}
		d.stats.lockTaken.Add(1)
		return &entryLock{f: f, back: d.back, rel: lockRel, since: time.Now(), stats: &d.stats}, nil
	}
}

// release drops the lock (closing the file releases the flock).
func (l *entryLock) release() {
	if l == nil {
		return
	}
	l.f.Close()
	held := time.Since(l.since).Microseconds()
	l.stats.lockHeldTotal.Add(held)
	for {
		old := l.stats.lockHeldMax.Load()
		if held <= old || l.stats.lockHeldMax.CompareAndSwap(old, held) {
			break
		}
	}
}

// remove unlinks the lock file while the lock is held: the entry is
// being deleted. Lockers that opened the file before see a file without
// links once they get it, and start again (see lockEntry).
func (l *entryLock) remove() {
	if l != nil {
		l.back.Unlink(l.rel)
	}
}

// lockEntries takes the locks of several entries in path order, so that
// two of arrayfs's own operations cannot deadlock on them. Duplicates
// are locked once.
func (d *Databases) lockEntries(ctx context.Context, op string, entryRels ...string) (func(), []*entryLock, error) {
	sorted := sortedUnique(entryRels)
	locks := make([]*entryLock, 0, len(sorted))
	release := func() {
		for i := len(locks) - 1; i >= 0; i-- {
			locks[i].release()
		}
	}
	for _, r := range sorted {
		l, err := d.lockEntry(ctx, r, op)
		if err != nil {
			release()
			return nil, nil, err
		}
		locks = append(locks, l)
	}
	byRel := make([]*entryLock, len(entryRels))
	for i, r := range entryRels {
		for j, s := range sorted {
			if s == r {
				byRel[i] = locks[j]
			}
		}
	}
	return release, byRel, nil
}

func sortedUnique(in []string) []string {
	out := append([]string(nil), in...)
	slices.Sort(out)
	return slices.Compact(out)
}
