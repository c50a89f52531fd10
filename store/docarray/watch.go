package docarray

import (
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel may keep the names and attributes of documents for a long
// time (the file system asks it to: a loop over a big store then costs
// no LOOKUP per document). That is exact only if every change made
// behind arrayfs's back is noticed when it happens, not at the next
// directory operation (which a long-cached name never makes). So each
// open store's directory is watched with inotify: a change of header.bin
// or body.bin, or of the directory itself, makes the store look at its
// files at once (refresh), and the file system hears of what changed.
//
// The original DocumentArrayMemmap writes both files with write(2), which
// inotify sees; a writer through a shared mapping would not be seen
// before the next directory operation (at most refreshEvery apart).

// watchMask is what a store's directory is watched for.
const watchMask = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE | unix.IN_CREATE |
	unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
	unix.IN_ONLYDIR

// watcher is the inotify instance of a dataset's stores. Lock order:
// watcher.mu is a leaf; it is never held while calling into a store.
type watcher struct {
	d    *Stores
	file *os.File // the inotify descriptor, in the runtime's poller

	mu      sync.Mutex
	stores  map[int32]*Store // by watch descriptor
	pending map[*Store]bool  // to look at
	kick    chan struct{}
	closed  bool
}

func newWatcher(d *Stores) (*watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	w := &watcher{d: d, file: os.NewFile(uintptr(fd), "inotify"), stores: map[int32]*Store{},
		pending: map[*Store]bool{}, kick: make(chan struct{}, 1)}
	go w.readEvents()
	go w.lookLoop()
	return w, nil
}

// watch starts watching s's directory: the one s holds open, whatever
// its name now (the path through /proc names that descriptor).
func (w *watcher) watch(s *Store) {
	wd, err := unix.InotifyAddWatch(int(w.file.Fd()), "/proc/self/fd/"+strconv.Itoa(s.dirFd()), watchMask)
	if err != nil {
		s.ds.rep.Logf("%s: changes made behind arrayfs's back are seen at the next directory operation, not at once: inotify: %v", s.rel, err)
		return
	}
	w.mu.Lock()
	w.stores[int32(wd)] = s
	w.mu.Unlock()
	s.watchDesc.Store(int32(wd))
}

// unwatch stops watching s (its files are being closed).
func (w *watcher) unwatch(s *Store) {
	wd := s.watchDesc.Swap(0)
	if wd == 0 {
		return
	}
	w.mu.Lock()
	if w.stores[wd] == s {
		delete(w.stores, wd)
	}
	delete(w.pending, s)
	closed := w.closed
	w.mu.Unlock()
	if !closed {
		unix.InotifyRmWatch(int(w.file.Fd()), uint32(wd))
	}
}

func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.file.Close() // ends readEvents, which ends lookLoop
}

// readEvents marks the stores whose files changed.
func (w *watcher) readEvents() {
	defer close(w.kick)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			return
		}
		w.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+nameLen]
			off += unix.SizeofInotifyEvent + nameLen
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			switch {
			case mask&unix.IN_Q_OVERFLOW != 0:
				for _, s := range w.stores {
					w.pending[s] = true
				}
			case mask&unix.IN_IGNORED != 0:
				// The directory is gone, and the kernel may give wd to
				// another watch: it is no longer s's to remove.
				if s := w.stores[wd]; s != nil {
					s.watchDesc.CompareAndSwap(wd, 0)
					w.pending[s] = true
				}
				delete(w.stores, wd)
			case len(name) == 0 || string(name) == HeaderName || string(name) == BodyName:
				if s := w.stores[wd]; s != nil {
					w.pending[s] = true
				}
			}
		}
		w.mu.Unlock()
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// lookLoop refreshes the marked stores. A store that cannot be looked
// at right now (a write-back or another program holds its files) is
// looked at again a moment later. Events come in bursts (every write of
// the original is one): waiting refreshEvery gathers them.
func (w *watcher) lookLoop() {
	for range w.kick {
		for {
			time.Sleep(refreshEvery)
			w.mu.Lock()
			todo := make([]*Store, 0, len(w.pending))
			for s := range w.pending {
				todo = append(todo, s)
			}
			clear(w.pending)
			w.mu.Unlock()
			if len(todo) == 0 {
				break
			}
			for _, s := range todo {
				w.mu.Lock()
				closed := w.closed
				w.mu.Unlock()
				if closed {
					return
				}
				gone, settled := s.recheck()
				switch {
				case gone:
					w.d.retireStore(s, "its files were replaced or removed behind arrayfs's back")
				case !settled:
					w.mu.Lock()
					w.pending[s] = true
					w.mu.Unlock()
				}
			}
		}
	}
}
