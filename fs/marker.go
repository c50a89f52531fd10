package fs

import (
	"context"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/arrayfs/arrayfs/store/docarray"
)

// markerNode is the .docarray file of a store directory: rendered from
// the store (its key length and the keys in store order), and written to
// make a store (in a plain directory) or to give one an order.
type markerNode struct {
	node
	noXattrs

	mu sync.Mutex
	// creating is the handle writing this marker into a plain directory,
	// which becomes a store when it is closed.
	creating *markerWriteHandle
}

var (
	_ gofs.NodeOpener        = (*markerNode)(nil)
	_ gofs.NodeGetattrer     = (*markerNode)(nil)
	_ gofs.NodeSetattrer     = (*markerNode)(nil)
	_ gofs.NodeGetxattrer    = (*markerNode)(nil)
	_ gofs.NodeSetxattrer    = (*markerNode)(nil)
	_ gofs.NodeListxattrer   = (*markerNode)(nil)
	_ gofs.NodeRemovexattrer = (*markerNode)(nil)
)

func (n *dirNode) markerInode(ctx context.Context, s *docarray.Store, a *fuse.Attr) (*gofs.Inode, syscall.Errno) {
	mn := &markerNode{node: node{fsys: n.fsys}}
	ch := n.NewInode(ctx, mn, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: docarray.MarkerIno(n.dirIno())})
	if s != nil {
		data, meta := s.Marker()
		fillMarkerAttr(a, int64(len(data)), meta)
	}
	return ch, 0
}

func fillMarkerAttr(a *fuse.Attr, size int64, m docarray.Meta) {
	fillDocAttr(a, docarray.Entry{Size: size, Meta: m})
}

// createMarker is the creation of .docarray in a plain directory: the
// directory becomes a store when the file is closed with a valid marker.
func (n *dirNode) createMarker(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	ch, _ := n.markerInode(ctx, nil, &out.Attr)
	mn := ch.Operations().(*markerNode)
	meta := callerMeta(ctx, mode)
	fillMarkerAttr(&out.Attr, 0, meta)
	h := &markerWriteHandle{fsys: n.fsys, node: mn, dir: n, meta: meta, dirty: true}
	h.writers.wrote(ctx) // its creator is its writer (closer.go)
	mn.mu.Lock()
	mn.creating = h
	mn.mu.Unlock()
	return ch, h, fuse.FOPEN_DIRECT_IO, 0
}

// markerAttrTimeout is how long the kernel keeps the marker's
// attributes, which change with every change of the store: as short as
// it gets (go-fuse takes 0 for "unset" and puts the mount's timeout in
// its place). A change made through the mount also drops them at once
// (markerChanged).
const markerAttrTimeout = time.Nanosecond

// markerChanged drops what the kernel keeps of the marker's attributes
// (its size, its times) after a change of the store's list of documents,
// before the change is answered. It runs inside the request that made
// the change, which holds no lock of the marker's inode.
func (n *dirNode) markerChanged() {
	if ch := n.GetChild(docarray.MarkerName); ch != nil {
		ch.NotifyContent(-1, 0) // attributes only
	}
}

// dir is the directory the marker is in.
func (n *markerNode) dir() *dirNode {
	_, parent := n.Parent()
	if parent == nil {
		return nil
	}
	d, _ := parent.Operations().(*dirNode)
	return d
}

// docStore is the store the marker describes; nil when its directory
// is gone or is not (or no longer) a store.
func (n *markerNode) docStore() *docarray.Store {
	if d := n.dir(); d != nil {
		return d.docStore()
	}
	return nil
}

func (n *markerNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	c := n.creating
	n.mu.Unlock()
	if c != nil {
		c.mu.Lock()
		fillMarkerAttr(&out.Attr, int64(len(c.buf)), c.meta)
		c.mu.Unlock()
		return 0
	}
	s := n.docStore()
	if s == nil {
		return syscall.ENOENT
	}
	data, meta := s.Marker()
	fillMarkerAttr(&out.Attr, int64(len(data)), meta)
	if w, ok := f.(*markerWriteHandle); ok {
		w.mu.Lock()
		if w.dirty {
			out.Size = uint64(len(w.buf))
		}
		w.mu.Unlock()
	}
	// The content follows the store: let the kernel ask again.
	out.SetTimeout(markerAttrTimeout)
	return 0
}

func (n *markerNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.readOnly() {
		return syscall.EROFS
	}
	if h := n.openTruncation(ctx, f, in); h != nil {
		f = h.(gofs.FileHandle) // the truncation of an open(O_TRUNC)
	}
	if size, ok := in.GetSize(); ok {
		if size > docarray.MaxDocumentSize {
			return syscall.EFBIG
		}
		w, isW := f.(*markerWriteHandle)
		if !isW {
			return syscall.EPERM
		}
		w.writers.wrote(ctx)
		w.truncate(int64(size))
	}
	c := attrChangeOf(in)
	n.mu.Lock()
	cr := n.creating
	n.mu.Unlock()
	switch {
	case c == (docarray.AttrChange{}):
	case cr != nil:
		cr.mu.Lock()
		docarray.ApplyAttr(&cr.meta, c)
		cr.mu.Unlock()
	default:
		s := n.docStore()
		if s == nil {
			return syscall.ENOENT
		}
		if _, err := s.SetMarkerAttr(c); err != nil {
			return n.fsys.errno(err)
		}
	}
	return n.Getattr(ctx, f, out)
}

func (n *markerNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	writing := flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 || flags&syscall.O_TRUNC != 0
	if writing && n.fsys.readOnly() {
		return nil, 0, syscall.EROFS
	}
	d := n.dir()
	if d == nil {
		return nil, 0, syscall.ENOENT
	}
	s := d.docStore()
	if s == nil {
		if !writing {
			return nil, 0, syscall.ENOENT
		}
		// A marker refused a moment ago may still be in the kernel's
		// name cache (the notification that drops it is asynchronous):
		// writing to it is a new attempt to make this directory a store.
		h := &markerWriteHandle{fsys: n.fsys, node: n, dir: d, meta: callerMeta(ctx, 0o644), dirty: true}
		h.writers.wrote(ctx)
		n.fresh.add(ctx, h) // its O_TRUNC comes as a SETATTR (opentrunc.go)
		n.mu.Lock()
		n.creating = h
		n.mu.Unlock()
		return h, fuse.FOPEN_DIRECT_IO, 0
	}
	if writing {
		h, errno := n.openWriter(s, flags)
		if errno == 0 {
			h.writers.wrote(ctx)
			n.fresh.add(ctx, h)
		}
		return h, fuse.FOPEN_DIRECT_IO, errno
	}
	data, _ := s.Marker()
	// DIRECT_IO: the content is made at open and changes with the store.
	return &bytesHandle{data: data}, fuse.FOPEN_DIRECT_IO, 0
}

var _ gofs.NodeReader = (*markerNode)(nil)

// Read serves a READ through its handle, or without one (a store
// connection opens nothing): the marker as the store makes it now.
func (n *markerNode) Read(ctx context.Context, f gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if r, ok := f.(gofs.FileReader); ok {
		return r.Read(ctx, dest, off)
	}
	s := n.docStore()
	if s == nil {
		return nil, syscall.ENOENT
	}
	data, _ := s.Marker()
	h := bytesHandle{data: data}
	return h.Read(ctx, dest, off)
}

func (n *markerNode) openWriter(s *docarray.Store, flags uint32) (*markerWriteHandle, syscall.Errno) {
	h := &markerWriteHandle{fsys: n.fsys, node: n, dir: n.dir(), store: s}
	if flags&syscall.O_TRUNC != 0 {
		h.dirty = true
	} else {
		data, _ := s.Marker()
		h.buf = append([]byte(nil), data...)
	}
	return h, 0
}

// markerWriteHandle buffers a marker being written; closing it applies
// it (or makes the store, for a marker created in a plain directory).
type markerWriteHandle struct {
	fsys  *FS
	node  *markerNode
	dir   *dirNode
	store *docarray.Store // nil: creating a store

	mu    sync.Mutex
	buf   []byte
	meta  docarray.Meta
	dirty bool
	done  bool
	// abandoned: a marker refused at a close in a plain directory, taken
	// back (the directory stays plain); the handle writes nowhere after.
	abandoned bool

	writers writerSet // processes that wrote (closer.go)
}

var (
	_ gofs.FileReader   = (*markerWriteHandle)(nil)
	_ gofs.FileWriter   = (*markerWriteHandle)(nil)
	_ gofs.FileFlusher  = (*markerWriteHandle)(nil)
	_ gofs.FileFsyncer  = (*markerWriteHandle)(nil)
	_ gofs.FileReleaser = (*markerWriteHandle)(nil)
)

func (h *markerWriteHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off >= int64(len(h.buf)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(dest[:copy(dest, h.buf[off:])]), 0
}

func (h *markerWriteHandle) truncateOpen(ctx context.Context, size int64) syscall.Errno {
	h.writers.wrote(ctx)
	h.truncate(size)
	return 0
}

func (h *markerWriteHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.node.fresh.drop(h)
	h.writers.wrote(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.abandoned {
		return 0, syscall.ESTALE
	}
	if off < 0 || off+int64(len(data)) > docarray.MaxDocumentSize {
		return 0, syscall.EFBIG
	}
	if end := off + int64(len(data)); end > int64(len(h.buf)) {
		h.buf = append(h.buf, make([]byte, end-int64(len(h.buf)))...)
	}
	copy(h.buf[off:], data)
	h.dirty = true
	return uint32(len(data)), 0
}

func (h *markerWriteHandle) truncate(size int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if size <= int64(len(h.buf)) {
		h.buf = h.buf[:size]
	} else {
		h.buf = append(h.buf, make([]byte, size-int64(len(h.buf)))...)
	}
	h.dirty = true
}

func (h *markerWriteHandle) apply() syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.dirty || h.abandoned {
		return 0
	}
	var err error
	if h.store == nil {
		var moved []string
		h.store, moved, err = h.fsys.ds.Docs().Create(h.dir.rel(), h.buf, h.meta, "")
		if err == nil {
			h.node.stopCreating(h)
			h.dir.notifyEntries(moved...)
		}
	} else {
		err = h.store.WriteMarker(h.buf, nil)
	}
	if err != nil {
		return h.fsys.errno(err)
	}
	h.dirty, h.done = false, true
	go h.node.NotifyContent(0, 0)
	h.fsys.recheckDocs(h.dir.rel())
	return 0
}

func (h *markerWriteHandle) Flush(ctx context.Context) syscall.Errno {
	h.node.fresh.drop(h)
	if !h.writers.isWriter(ctx) {
		return 0 // a fork's copy of the descriptor closed (closer.go)
	}
	errno := h.apply()
	if errno != 0 {
		h.mu.Lock()
		h.abandonLocked(true)
		h.mu.Unlock()
	}
	return errno
}

// stopCreating: h no longer makes this marker; a handle that opened
// the name after it (a new attempt) keeps its own claim.
func (n *markerNode) stopCreating(h *markerWriteHandle) {
	n.mu.Lock()
	if n.creating == h {
		n.creating = nil
	}
	n.mu.Unlock()
}

// abandonLocked: a marker refused in a plain directory never was. At a
// refused close this is done before close(2) returns (now), so that the
// name is gone for whoever looks next; at the release, for the rest.
func (h *markerWriteHandle) abandonLocked(now bool) {
	if h.store != nil || h.done || h.abandoned {
		return
	}
	h.abandoned = true
	h.node.stopCreating(h)
	h.fsys.logf("%s: %s was not a valid marker; the directory stays a plain directory", filepath.Join(h.dir.rel(), docarray.MarkerName), docarray.MarkerName)
	if now {
		h.dir.NotifyEntry(docarray.MarkerName) // FLUSH holds no lock of the directory
	} else {
		h.dir.notifyEntries(docarray.MarkerName)
	}
}

func (h *markerWriteHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := h.apply(); errno != 0 {
		return errno
	}
	return h.fsys.errno(h.fsys.ds.Sync())
}

func (h *markerWriteHandle) Release(ctx context.Context) syscall.Errno {
	h.node.fresh.drop(h)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.abandonLocked(false)
	return 0
}
