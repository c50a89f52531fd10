package docarray

import (
	"fmt"
	"syscall"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// Sharing a store with other programs. The original DocumentArrayMemmap
// takes no lock: a program appends at the end of the last record it read
// and writes header records at the positions it read. arrayfs does the
// same kind of writes, so two writers whose writes overlap in time lose
// one's. arrayfs therefore
//
//   - re-reads header.bin and body.bin before every write of either (the
//     first thing every write-back does) and, if another program changed
//     them, reloads first: it then appends at their real end, and its
//     changes not yet written are applied again on top of the other's
//     (journal.go);
//   - holds an exclusive flock on the store directory while it writes
//     the two files, and a shared one while it reads them, and never
//     otherwise.
//
// A program that writes the store beside the mount takes the same lock
// around its own reload and write (fcntl.flock on the directory, as the
// README shows); then neither side can ever see the other's write half
// done or write from a stale position. Without it the window is the
// length of one write of each side.

// storeLockPoll bounds the wait between two attempts at a busy lock
// where one cannot block (the first open of a store).
const storeLockPoll = 5 * time.Millisecond

// lockFiles takes the store directory's lock, exclusive to write the
// store's files, shared to read them, waiting up to the configured
// timeout while another process holds it (EBUSY after that). s.wbMu
// held.
//
// It waits in flock(2) itself, queued by the kernel, not by polling: a
// program that takes the lock again right after each of its writes would
// otherwise starve arrayfs's write-backs. Each wait has a descriptor of
// its own, so that one given up at the timeout (and granted later) can
// only release itself.
func (s *Store) lockFiles(exclusive bool, op string) (unlock func(), err error) {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	fd, err := unix.Openat(s.dirFd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &engine.Error{Path: s.rel, Op: op, Reason: fmt.Sprintf("opening the store directory to lock it: %v", err), Errno: engine.ErrnoOf(err)}
	}
	release := func() { unix.Close(fd) } // closing drops the flock
	if unix.Flock(fd, how|unix.LOCK_NB) == nil {
		return release, nil
	}
	timeout := s.ds.lockTimeout
	if timeout <= 0 {
		timeout = engine.DefaultLockTimeout
	}
	got := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(fd, how)
			if err != unix.EINTR {
				got <- err
				return
			}
		}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-got:
		if err != nil {
			release()
			return nil, &engine.Error{Path: s.rel, Op: op, Reason: fmt.Sprintf("flock of the store directory: %v", err), Errno: engine.ErrnoOf(err)}
		}
		return release, nil
	case <-t.C:
		go func() { <-got; release() }() // whenever the kernel grants it
		return nil, engine.Refuse(s.rel, op, syscall.EBUSY,
			"another process holds the store's lock for more than %v; nothing was written, the changes stay pending", timeout)
	}
}

// openWait bounds how long the first open of a store waits for the
// shared lock: past it the files are read anyway (a write another
// program makes meanwhile shows as a changed store at the next look, and
// is re-read then), rather than failing the lookup.
const openWait = time.Second

// lockForOpen takes the shared lock for reading a store the first time,
// waiting at most openWait; unlock is a no-op when it was not had.
func (s *Store) lockForOpen() func() {
	deadline := time.Now().Add(openWait)
	for {
		if unlock, ok := s.tryLockShared(); ok {
			return unlock
		}
		if time.Now().After(deadline) {
			s.report(fmt.Sprintf("another process held the store's lock for more than %v at its first look: read without it", openWait))
			return func() {}
		}
		time.Sleep(storeLockPoll)
	}
}

// tryLockShared takes the shared lock if it is free right now.
func (s *Store) tryLockShared() (unlock func(), ok bool) {
	if unix.Flock(s.dirFd(), unix.LOCK_SH|unix.LOCK_NB) != nil {
		return nil, false
	}
	return func() { unix.Flock(s.dirFd(), unix.LOCK_UN) }, true
}

// filesChanged reports whether header.bin or body.bin differ from how
// arrayfs last saw or left them (written by another program), and
// returns their signatures now. gone: a file is not there any more.
func (s *Store) filesChanged() (changed, gone bool, now [2]engine.FileSig) {
	for i, n := range []string{HeaderName, BodyName} {
		var st unix.Stat_t
		if unix.Fstatat(s.dirFd(), n, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return true, true, now
		}
		now[i] = engine.SigOfUnix(&st)
	}
	return now != s.sigs, false, now
}
