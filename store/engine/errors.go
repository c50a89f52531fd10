package engine

import (
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"syscall"
)

// Error is an operation on a backing file that arrayfs refused or that
// failed, with the errno the file system answers for it. Its text names
// the path and the reason, which is what the log line and the user see.
type Error struct {
	Path   string
	Op     string
	Reason string
	Errno  syscall.Errno
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s: %s", e.Path, e.Op, e.Reason) }

func (e *Error) Unwrap() error { return e.Errno }

// Refuse is the Error of an operation arrayfs refuses, with the errno
// the caller gets and a reason that says what is kept.
func Refuse(path, op string, errno syscall.Errno, format string, args ...any) *Error {
	return &Error{Path: path, Op: op, Reason: fmt.Sprintf(format, args...), Errno: errno}
}

// ErrnoOf maps an error from this package to the errno a file system call
// should fail with.
func ErrnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var se *Error
	if errors.As(err, &se) {
		return se.Errno
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.EIO
}

// A Problem is one thing wrong with an item on disk, as `arrayfs check`
// prints it and the mount logs it.
type Problem struct {
	Path   string
	Reason string
}

func (p Problem) String() string { return p.Path + ": " + p.Reason }

// A Reporter logs each problem once per mount, however often the item is
// looked at.
type Reporter struct {
	// Logf logs one line, every time.
	Logf func(format string, args ...any)
	mu   sync.Mutex
	seen map[Problem]bool
}

// NewReporter reports through logf (log.Printf if nil).
func NewReporter(logf func(string, ...any)) *Reporter {
	if logf == nil {
		logf = log.Printf
	}
	return &Reporter{Logf: logf, seen: map[Problem]bool{}}
}

// Report logs p unless it was logged before.
func (r *Reporter) Report(p Problem) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[p] {
		return
	}
	r.seen[p] = true
	r.Logf("%s", p)
}

// UnwrapPath is err without the path an *os.PathError adds (messages
// name the dataset-relative path themselves).
func UnwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
