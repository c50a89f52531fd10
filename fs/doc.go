package fs

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/arrayfs/arrayfs/store/docarray"
	"github.com/arrayfs/arrayfs/store/engine"
)

// docNode is one document of a store. It keeps no state of its own: the
// store and the name are found from its parent at each call (a rename
// moves the node, and the name with it).
//
// Lock order: docWriteHandle.mu, then docNode.mu, then the store's
// locks. docNode.mu guards only the fields below and is never held while
// taking a handle's lock: a Getattr racing with a writer (stat beside
// pwrite and close) would otherwise deadlock both, in D state.
type docNode struct {
	node

	mu sync.Mutex
	// writer is the open handle holding changes not yet committed; its
	// size is the file's size until then.
	writer *docWriteHandle
	// cached is the version of the content the kernel may have pages
	// of: an open keeps them (FOPEN_KEEP_CACHE) only if it is the same.
	// On a store connection, which has no OPEN, it is the version put
	// into the page cache at an IOCTL (docprefill.go).
	cached    uint64
	reloads   uint64
	hasCached bool
	// prefilled is the store and its version at the last IOCTL that
	// looked at the document (docprefill.go).
	prefilled prefillMark
}

var (
	_ gofs.NodeOpener        = (*docNode)(nil)
	_ gofs.NodeGetattrer     = (*docNode)(nil)
	_ gofs.NodeSetattrer     = (*docNode)(nil)
	_ gofs.NodeGetxattrer    = (*docNode)(nil)
	_ gofs.NodeSetxattrer    = (*docNode)(nil)
	_ gofs.NodeListxattrer   = (*docNode)(nil)
	_ gofs.NodeRemovexattrer = (*docNode)(nil)
)

// locate finds the node's store and current name.
func (n *docNode) locate() (*docarray.Store, string, syscall.Errno) {
	name, parent := n.Parent()
	if parent == nil {
		return nil, "", syscall.ENOENT
	}
	d, ok := parent.Operations().(*dirNode)
	if !ok {
		return nil, "", syscall.ENOENT
	}
	s := d.docStore()
	if s == nil {
		return nil, "", syscall.ENOENT
	}
	return s, name, 0
}

func (n *docNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var e docarray.Entry
	s, name, errno := n.locate()
	if errno == 0 {
		var err error
		if e, err = s.Lookup(name); err != nil {
			errno = n.fsys.errno(err)
		}
	}
	gone := errno != 0
	if gone {
		// An open file outlives its name (fstat after unlink).
		switch h := f.(type) {
		case *docReadHandle:
			e, errno = h.entry, 0
		case *docWriteHandle:
			e, errno = h.entry, 0
		default:
			return errno
		}
	}
	n.mu.Lock()
	w := n.writer
	n.mu.Unlock()
	if w != nil {
		// Without n.mu: the handle's lock comes first (see docNode).
		if size, dirty := w.pendingSize(); dirty {
			e.Size = size
		}
	}
	fillDocAttr(&out.Attr, e)
	if gone {
		out.Nlink = 0 // no name leads to it
	}
	out.SetTimeout(docTimeout)
	return 0
}

func (n *docNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	s, name, errno := n.locate()
	if errno != 0 {
		return errno
	}
	if h := n.openTruncation(ctx, f, in); h != nil {
		f = h.(gofs.FileHandle) // the truncation of an open(O_TRUNC)
	}
	if size, ok := in.GetSize(); ok {
		if size > docarray.MaxDocumentSize {
			return syscall.EFBIG
		}
		if h, ok := f.(*docWriteHandle); ok {
			h.writers.wrote(ctx)
			h.truncate(int64(size))
		} else if errno := n.truncate(s, name, int64(size)); errno != 0 {
			return errno
		}
	}
	c := attrChangeOf(in)
	if c != (docarray.AttrChange{}) {
		if _, err := s.SetAttr(name, c); err != nil {
			return n.fsys.errno(err)
		}
	}
	if c.Mtime != nil {
		// A writer's next commit keeps it, as a close keeps the mtime
		// futimens set after the last write.
		w, _ := f.(*docWriteHandle)
		if w == nil {
			n.mu.Lock()
			w = n.writer
			n.mu.Unlock()
		}
		if w != nil {
			w.mu.Lock()
			w.mtime = *c.Mtime
			w.mu.Unlock()
		}
	}
	return n.Getattr(ctx, f, out)
}

// truncate without an open file (truncate(1)): a new version, validated.
func (n *docNode) truncate(s *docarray.Store, name string, size int64) syscall.Errno {
	r, e, err := s.Open(name)
	if err != nil {
		return n.fsys.errno(err)
	}
	data, err := r.Bytes()
	r.Release()
	if err != nil {
		return n.fsys.errno(err)
	}
	if size <= int64(len(data)) {
		data = data[:size]
	} else {
		data = append(data, make([]byte, size-int64(len(data)))...)
	}
	if err := s.Commit(name, e.Ino, data); err != nil {
		return n.fsys.errno(err)
	}
	go n.NotifyContent(0, 0)
	return 0
}

func (n *docNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	n.fsys.known.use(&n.node)
	writing := flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 || flags&syscall.O_TRUNC != 0
	if writing && n.fsys.readOnly() {
		return nil, 0, syscall.EROFS
	}
	s, name, errno := n.locate()
	if errno != 0 {
		return nil, 0, errno
	}
	if writing {
		e, err := s.Lookup(name)
		if err != nil {
			return nil, 0, n.fsys.errno(err)
		}
		h, errno := n.openWriter(s, name, e, flags, false)
		if errno == 0 {
			h.writers.wrote(ctx) // its opener is its writer (closer.go)
			n.fresh.add(ctx, h)
		}
		return h, 0, errno
	}
	r, e, err := s.Open(name)
	if err != nil {
		return nil, 0, n.fsys.errno(err)
	}
	// The kernel's pages of the document outlive the open while the
	// version is the one they were read from; a new version (ours, or
	// one found on disk after a change behind our back) drops them
	// right at this open, without waiting for an invalidation.
	var keep uint32
	n.mu.Lock()
	switch {
	case n.writer != nil:
		// A new version is being written: the kernel's idea of the
		// size follows the writer; read this version around it.
		keep = fuse.FOPEN_DIRECT_IO
	case n.hasCached && n.reloads != e.Reloads:
		// The store was changed behind our back and just reloaded:
		// the kernel may still hold the old size until the
		// invalidation sent for it lands. Read around its cache this
		// once (a shared mmap of this one open is refused).
		keep = fuse.FOPEN_DIRECT_IO
	case n.hasCached && n.cached == e.Version:
		keep = fuse.FOPEN_KEEP_CACHE
	case !n.hasCached && n.prefillAtOpen(s, name, r, e):
		keep = fuse.FOPEN_KEEP_CACHE
	}
	n.cached, n.reloads, n.hasCached = e.Version, e.Reloads, true
	n.mu.Unlock()
	// A reader's close has nothing to commit: no FLUSH for it.
	keep |= fuse.FOPEN_NOFLUSH
	return &docReadHandle{viewHandle[*docarray.Reader]{r}, e, s}, keep, 0
}

// docReadHandle serves one version of a document straight from the
// mapping of body.bin (or from its pending version).
type docReadHandle struct {
	viewHandle[*docarray.Reader]
	entry docarray.Entry
	store *docarray.Store
}

var (
	_ gofs.FileReader   = (*docReadHandle)(nil)
	_ gofs.FileReleaser = (*docReadHandle)(nil)
	_ gofs.FileFsyncer  = (*docReadHandle)(nil)
)

// Fsync through a descriptor open for reading makes the document as it
// reads durable, as on any file system (sync FILE): its version may be
// committed and not written back yet.
func (h *docReadHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if h.store.ReadOnly() {
		return 0
	}
	return engine.ErrnoOf(h.store.Sync())
}

// docWriteHandle is a document open for writing. The new content is
// built in memory (starting from the current one, unless O_TRUNC) and
// committed as a whole at close or fsync, where it must parse as a
// DocumentProto: otherwise the close fails with EINVAL and the document
// keeps its previous content.
//
// FLUSH comes at every close(2) of every descriptor of the open file,
// and a shell redirection (open, dup2, close) closes one before anything
// is written. So a close commits only what was written since the last
// commit; a file created or truncated and closed without a write (touch,
// ": > f") is committed, empty, when the last descriptor goes.
type docWriteHandle struct {
	fsys  *FS
	node  *docNode
	s     *docarray.Store
	entry docarray.Entry

	mu      sync.Mutex
	base    *docarray.Reader // the version opened
	buf     []byte
	loaded  bool // buf is the content (else base is)
	shared  bool // buf was handed to the store: copy before changing it
	dirty   bool
	wrote   bool // written (or truncated) since the last commit
	refused bool // the last commit was refused and nothing changed since
	created bool // the document did not exist before this handle
	done    bool // committed at least once
	// abandoned: a new document refused at a close, taken back (it
	// never was); the handle writes nowhere after.
	abandoned bool
	// mtime is the one set (futimens) after the last write, which the
	// commit keeps; 0: the commit's time.
	mtime int64

	writers writerSet // processes that wrote (closer.go)
}

var (
	_ gofs.FileReader   = (*docWriteHandle)(nil)
	_ gofs.FileWriter   = (*docWriteHandle)(nil)
	_ gofs.FileFlusher  = (*docWriteHandle)(nil)
	_ gofs.FileFsyncer  = (*docWriteHandle)(nil)
	_ gofs.FileReleaser = (*docWriteHandle)(nil)
)

func (n *docNode) openWriter(s *docarray.Store, name string, e docarray.Entry, flags uint32, created bool) (*docWriteHandle, syscall.Errno) {
	h := &docWriteHandle{fsys: n.fsys, node: n, s: s, entry: e, created: created}
	if created || flags&syscall.O_TRUNC != 0 {
		h.loaded, h.dirty = true, true
	} else {
		r, _, err := s.Open(name)
		if err != nil {
			return nil, n.fsys.errno(err)
		}
		h.base = r
	}
	if h.dirty {
		n.mu.Lock()
		n.writer = h
		n.mu.Unlock()
	}
	return h, 0
}

// pendingSize is the size of the content being written, if it is to
// be the file's (not a refused one).
func (h *docWriteHandle) pendingSize() (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return int64(len(h.buf)), h.dirty && !h.refused
}

// load makes buf the content, ready to change.
func (h *docWriteHandle) load() error {
	if !h.loaded {
		b, err := h.base.Bytes()
		if err != nil {
			return err
		}
		h.buf, h.loaded = b, true
	}
	if h.shared {
		h.buf = append([]byte(nil), h.buf...)
		h.shared = false
	}
	return nil
}

func (h *docWriteHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.loaded {
		v := h.base.View(off, len(dest))
		n := copy(dest, v.Bytes)
		v.Release()
		return fuse.ReadResultData(dest[:n]), 0
	}
	if off >= int64(len(h.buf)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(dest[:copy(dest, h.buf[off:])]), 0
}

func (h *docWriteHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.node.fresh.drop(h)
	h.writers.wrote(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.abandoned {
		return 0, syscall.ESTALE
	}
	if err := h.load(); err != nil {
		return 0, h.fsys.errno(err)
	}
	if off < 0 || off+int64(len(data)) > docarray.MaxDocumentSize {
		return 0, syscall.EFBIG
	}
	if end := off + int64(len(data)); end > int64(len(h.buf)) {
		h.buf = append(h.buf, make([]byte, end-int64(len(h.buf)))...)
	}
	copy(h.buf[off:], data)
	h.markDirty()
	return uint32(len(data)), 0
}

func (h *docWriteHandle) markDirty() {
	h.wrote, h.refused, h.mtime = true, false, 0
	if !h.dirty {
		h.dirty = true
		h.node.mu.Lock()
		h.node.writer = h
		h.node.mu.Unlock()
	}
}

// truncateOpen is the truncation of the open(O_TRUNC) that made h.
func (h *docWriteHandle) truncateOpen(ctx context.Context, size int64) syscall.Errno {
	h.writers.wrote(ctx)
	h.truncate(size)
	return 0
}

func (h *docWriteHandle) truncate(size int64) {
	h.node.fresh.drop(h)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.load() != nil {
		return
	}
	if size <= int64(len(h.buf)) {
		h.buf = h.buf[:size]
	} else {
		h.buf = append(h.buf, make([]byte, size-int64(len(h.buf)))...)
	}
	h.markDirty()
}

// commit hands the new content to the store: at fsync, at a close that
// follows writes (flush), at the last close (release).
func (h *docWriteHandle) commit(flush bool) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.commitLocked(flush)
}

func (h *docWriteHandle) commitLocked(flush bool) syscall.Errno {
	if h.abandoned {
		return 0
	}
	if !h.dirty || h.refused || flush && !h.wrote {
		return 0
	}
	name := h.entry.Name
	if _, cur, errno := h.node.locate(); errno == 0 {
		name = cur
	}
	err := h.s.CommitAt(name, h.entry.Ino, h.buf, h.mtime)
	// Committed or refused, the kernel's pages of the file are what
	// this writer wrote: drop them.
	go h.node.NotifyContent(0, 0)
	if err != nil {
		h.refused = true
		return h.fsys.errno(err)
	}
	added := h.created && !h.done
	h.shared, h.dirty, h.done, h.wrote = true, false, true, false
	h.node.mu.Lock()
	if h.node.writer == h {
		h.node.writer = nil
	}
	h.node.mu.Unlock()
	if _, parent := h.node.Parent(); added && parent != nil {
		if d, ok := parent.Operations().(*dirNode); ok {
			d.markerChanged() // a new key in the marker's order
		}
	}
	// The close writes it back, without waiting: programs reading the
	// store beside the mount see it at once.
	h.s.SyncSoon()
	return 0
}

func (h *docWriteHandle) Flush(ctx context.Context) syscall.Errno {
	h.node.fresh.drop(h)
	if !h.writers.isWriter(ctx) {
		return 0 // a fork's copy of the descriptor closed (closer.go)
	}
	errno := h.commit(true)
	if errno != 0 {
		h.mu.Lock()
		h.abandonLocked(true)
		h.mu.Unlock()
	}
	return errno
}

// abandonLocked: a new document whose content was refused never was.
// At a refused close this is done before close(2) returns (now: the
// kernel holds no lock of the directory during FLUSH), so that the
// name is gone for whoever looks next; at the release, for the rest.
// The handle then writes nowhere (ESTALE).
func (h *docWriteHandle) abandonLocked(now bool) {
	if !h.created || h.done || h.abandoned {
		return
	}
	h.abandoned = true
	name := h.entry.Name
	if _, cur, errno := h.node.locate(); errno == 0 {
		name = cur
	}
	h.s.Abandon(name, h.entry.Ino)
	if _, parent := h.node.Parent(); parent != nil {
		if now {
			parent.NotifyEntry(name)
		} else {
			go parent.NotifyEntry(name) // the kernel keeps a name for long
		}
	}
}

func (h *docWriteHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	h.node.fresh.drop(h)
	if errno := h.commit(false); errno != 0 {
		return errno
	}
	return h.fsys.errno(h.s.Sync())
}

func (h *docWriteHandle) Release(ctx context.Context) syscall.Errno {
	h.node.fresh.drop(h)
	h.mu.Lock()
	defer h.mu.Unlock()
	// Nobody waits for this: a refusal here is only logged.
	h.commitLocked(false)
	if h.base != nil {
		h.base.Release()
	}
	h.node.mu.Lock()
	if h.node.writer == h {
		h.node.writer = nil
	}
	h.node.mu.Unlock()
	h.abandonLocked(false)
	return 0
}

var _ gofs.NodeReader = (*docNode)(nil)

// Read serves a READ through its handle, or without one: on a store
// connection (storeconn.go) the kernel opens nothing, and each READ
// reads the document's current version.
func (n *docNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n.fsys.reads.document.Add(1)
	if r, ok := f.(gofs.FileReader); ok {
		return r.Read(ctx, dest, off)
	}
	s, name, errno := n.locate()
	if errno != 0 {
		return nil, errno
	}
	r, _, err := s.Open(name)
	if err != nil {
		return nil, n.fsys.errno(err)
	}
	return sourceResult[*docarray.Reader]{viewResult{r.View(off, len(dest))}, r}, 0
}

// sourceResult is a viewResult that also lets go of its source once
// the reply is written.
type sourceResult[S viewSource] struct {
	viewResult
	src S
}

func (r sourceResult[S]) Done() {
	r.viewResult.Done()
	r.src.Release()
}
