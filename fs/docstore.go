package fs

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/arrayfs/arrayfs/store/docarray"
	"github.com/arrayfs/arrayfs/store/engine"
)

// A directory that is a docarray store (header.bin + body.bin) is served
// by the store: one file per live document, named by its key, and the
// .docarray marker. dirNode asks at the top of each operation what the
// directory is now, since a plain directory becomes a store the moment
// a marker is written into it.

// docStore returns the store directory n is, or nil for a plain one.
func (n *dirNode) docStore() *docarray.Store { return n.fsys.ds.Docs().Store(n.rel()) }

// docStoreErr is docStore for the operations that say why a store
// cannot be read (EACCES, EIO) instead of showing its directory plain.
func (n *dirNode) docStoreErr() (*docarray.Store, syscall.Errno) {
	s, err := n.fsys.ds.Docs().StoreErr(n.rel())
	if err != nil {
		return nil, n.fsys.errno(err)
	}
	return s, 0
}

// dirIno is the backing directory's inode number (for the marker's).
func (n *dirNode) dirIno() uint64 {
	st, err := n.fsys.back.Lstat(n.rel())
	if err != nil {
		return 0
	}
	return st.Ino
}

func fillDocAttr(a *fuse.Attr, e docarray.Entry) {
	a.Mode = syscall.S_IFREG | e.Meta.Mode&0o7777
	a.Size = uint64(e.Size)
	a.Blocks = (a.Size + 511) / 512
	a.Blksize = 4096
	a.Nlink = 1
	a.Owner = fuse.Owner{Uid: e.Meta.UID, Gid: e.Meta.GID}
	a.Ino = e.Ino
	at, mt, ct := time.Unix(0, e.Meta.AccessTime()), time.Unix(0, e.Meta.Mtime), time.Unix(0, e.Meta.ChangeTime())
	a.SetTimes(&at, &mt, &ct)
}

func (n *dirNode) newDocInode(ctx context.Context, name string, e docarray.Entry) *gofs.Inode {
	return n.fsys.childInode(ctx, n.EmbeddedInode(), name, &docNode{node: node{fsys: n.fsys}}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: e.Ino})
}

func (n *dirNode) storeLookup(ctx context.Context, s *docarray.Store, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.storeServed()
	if name == docarray.MarkerName {
		// Its size and times follow every change of the store: the
		// kernel asks each time, as Getattr tells it (marker.go).
		out.SetAttrTimeout(markerAttrTimeout)
		return n.markerInode(ctx, s, &out.Attr)
	}
	e, err := s.Lookup(name)
	if err != nil {
		return nil, n.fsys.errno(err)
	}
	fillDocAttr(&out.Attr, e)
	out.SetEntryTimeout(docTimeout)
	out.SetAttrTimeout(docTimeout)
	return n.newDocInode(ctx, name, e), 0
}

// recheckDocs makes the kernel look again at every name of store
// directory dirRel it holds (after a change that may rename, remove or
// renumber documents without a request on each: a marker rewritten, a
// prune, a store dropped).
func (f *FS) recheckDocs(dirRel string) { go f.onDocChanges(dirRel, nil) }

func (n *dirNode) storeReaddir(s *docarray.Store) (gofs.DirStream, syscall.Errno) {
	n.storeServed()
	docs := s.List()
	entries := make([]fuse.DirEntry, 0, len(docs)+1)
	for _, e := range docs {
		entries = append(entries, fuse.DirEntry{Name: e.Name, Mode: syscall.S_IFREG, Ino: e.Ino})
	}
	// Last, so that rm -r empties the store before it meets the marker.
	entries = append(entries, fuse.DirEntry{Name: docarray.MarkerName, Mode: syscall.S_IFREG, Ino: docarray.MarkerIno(n.dirIno())})
	return gofs.NewListDirStream(entries), 0
}

func callerMeta(ctx context.Context, mode uint32) docarray.Meta {
	m := docarray.Meta{Mtime: time.Now().UnixNano(), Mode: mode & 0o7777, UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if c, ok := fuse.FromContext(ctx); ok {
		m.UID, m.GID = c.Uid, c.Gid
	}
	return m
}

func (n *dirNode) storeCreate(ctx context.Context, s *docarray.Store, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if name == docarray.MarkerName {
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, 0, syscall.EEXIST
		}
		ch, errno := n.markerInode(ctx, s, &out.Attr)
		if errno != 0 {
			return nil, nil, 0, errno
		}
		h, errno := ch.Operations().(*markerNode).openWriter(s, flags)
		if errno == 0 {
			h.writers.wrote(ctx)
		}
		return ch, h, 0, errno
	}
	e, created, err := s.Create(name, callerMeta(ctx, mode), flags&syscall.O_EXCL != 0)
	if err != nil {
		return nil, nil, 0, n.fsys.errno(err)
	}
	fillDocAttr(&out.Attr, e)
	out.SetEntryTimeout(docTimeout)
	out.SetAttrTimeout(docTimeout)
	ch := n.newDocInode(ctx, name, e)
	dn := ch.Operations().(*docNode)
	h, errno := dn.openWriter(s, name, e, flags|syscall.O_WRONLY, created)
	if errno != 0 {
		if created {
			s.Abandon(name, e.Ino)
		}
		return nil, nil, 0, errno
	}
	h.writers.wrote(ctx) // its creator is its writer (closer.go)
	return ch, h, 0, 0
}

func (n *dirNode) storeUnlink(s *docarray.Store, name string) syscall.Errno {
	if name != docarray.MarkerName {
		err := s.Remove(name)
		if err == nil {
			s.SyncSoon()
			n.markerChanged()
		}
		return n.fsys.errno(err)
	}
	// The marker goes with the store, once the store is empty: rm -r of
	// a store directory then works (it removes the documents first).
	if s.Len() > 0 {
		return n.fsys.errno(&engine.Error{Path: filepath.Join(n.rel(), name), Op: "unlink", Errno: syscall.EPERM,
			Reason: fmt.Sprintf("the marker of a store with %d documents cannot be removed (remove the documents first)", s.Len())})
	}
	return n.fsys.errno(n.fsys.ds.Docs().Remove(s))
}

// rmStore makes an empty store child of n a plain directory before rmdir.
func (n *dirNode) rmStore(name string) syscall.Errno {
	s := n.fsys.ds.Docs().Store(n.childRel(name))
	if s == nil {
		return 0
	}
	if s.Len() > 0 {
		return syscall.ENOTEMPTY
	}
	return n.fsys.errno(n.fsys.ds.Docs().Remove(s))
}

// storeRename is a rename where either side is a store, or the target
// is a marker.
func (n *dirNode) storeRename(src *docarray.Store, name string, dst *dirNode, dstS *docarray.Store, newName string, flags uint32) syscall.Errno {
	marker := docarray.MarkerName
	switch {
	case src == nil && dstS == nil:
		// A plain file renamed onto .docarray (rsync's last step when
		// it copies a marker): the directory becomes a store.
		if flags != 0 {
			return syscall.EINVAL
		}
		return dst.createStoreFromFile(n, name)
	case src == nil || dstS == nil:
		return syscall.EXDEV // mv copies instead, and the copy is validated
	case name == marker:
		return n.fsys.errno(&engine.Error{Path: filepath.Join(n.rel(), name), Op: "rename", Errno: syscall.EPERM,
			Reason: "the marker of a store cannot be moved"})
	case src != dstS && newName == marker:
		return syscall.EXDEV
	case newName == marker:
		if flags != 0 {
			return syscall.EINVAL
		}
		if err := src.AdoptScratch(name); err != nil {
			return n.fsys.errno(err)
		}
		n.notifyEntries(marker)
		return 0
	case src == dstS:
		err := src.Rename(name, newName, uint(flags))
		if err == nil {
			src.SyncSoon()
			n.markerChanged()
		}
		return n.fsys.errno(err)
	default:
		err := src.MoveTo(dstS, name, newName, uint(flags))
		if err == nil {
			src.SyncSoon()
			dstS.SyncSoon()
			n.markerChanged()
			dst.markerChanged()
		}
		return n.fsys.errno(err)
	}
}

// createStoreFromFile turns n (a plain directory) into a store with the
// marker held by the plain file name of directory from.
func (n *dirNode) createStoreFromFile(from *dirNode, name string) syscall.Errno {
	rel := from.childRel(name)
	st, err := n.fsys.back.Lstat(rel)
	if err != nil {
		return gofs.ToErrno(err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return syscall.EINVAL
	}
	data, err := n.fsys.back.ReadFile(rel)
	if err != nil {
		return gofs.ToErrno(err)
	}
	meta := docarray.Meta{Mtime: st.Mtim.Nano(), Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid}
	skip := ""
	if from == n {
		skip = name
	}
	_, moved, err := n.fsys.ds.Docs().Create(n.rel(), data, meta, skip)
	if err != nil {
		return n.fsys.errno(err)
	}
	if err := n.fsys.back.Unlink(rel); err != nil {
		n.fsys.logf("%s: the store is made; removing %s: %v", n.rel(), rel, err)
	}
	n.notifyEntries(append(moved, docarray.MarkerName)...)
	return 0
}

// notifyEntries drops the kernel's cached entries for names of n, from a
// goroutine (never inside a request on n).
func (n *dirNode) notifyEntries(names ...string) {
	go func() {
		for _, name := range names {
			n.NotifyEntry(name)
		}
	}()
}

// onDocChanges is the store's report of documents changed behind
// arrayfs's back: drop what the kernel caches of the names it knows in
// that directory. It runs in its own goroutine.
func (f *FS) onDocChanges(dirRel string, changes []docarray.Change) {
	s := f.ds.Docs().Store(dirRel)
	if c := f.conns; c != nil {
		if sub := c.connFor(dirRel); sub != nil {
			sub.docsChanged(sub.root.EmbeddedInode(), s, changes)
		}
		if s == nil {
			c.storeGone(dirRel)
		}
	}
	if dir := f.cachedInode(splitRel(dirRel)); dir != nil {
		f.docsChanged(dir, s, changes)
	}
}

// docsChanged tells the kernel what changed in the directory dir of
// this connection, whose store is now s (nil: none).
func (f *FS) docsChanged(dir *gofs.Inode, s *docarray.Store, changes []docarray.Change) {
	// The kernel's copy of the listing (dirhandle.go), for an open
	// directory rewound before its next open.
	dir.NotifyContent(0, 0)
	changed := map[string]bool{}
	for _, c := range changes {
		changed[c.Name] = true
		if c.Added {
			dir.NotifyEntry(c.Name)
		}
	}
	for name, ch := range dir.Children() {
		switch ch.Operations().(type) {
		case *markerNode:
			ch.NotifyContent(0, 0)
			continue
		case *docNode:
		default:
			// A plain file or directory: the directory is no store (or
			// no longer one); its names are not the store's to drop.
			continue
		}
		e, err := docarray.Entry{}, error(syscall.ENOENT)
		if s != nil {
			e, err = s.Lookup(name)
		}
		switch {
		case err != nil && s == nil:
			// No store here now: the name may be a plain file.
			dir.NotifyEntry(name)
		case err != nil:
			dir.NotifyDelete(name, ch)
		case e.Ino != ch.StableAttr().Ino:
			dir.NotifyEntry(name)
		case changed[name]:
			ch.NotifyContent(0, 0)
		}
	}
}

// Extended attributes of a store directory, arrayfs's control interface
// for `arrayfs prune` through the mount:
//
//	user.arrayfs.store           (read) "docarray key_length=K documents=N"
//	user.arrayfs.prune           (write) prune the store now; the write
//	                             returns when it is done
//	user.arrayfs.prune_progress  (read) "DONE TOTAL" bytes of the prune running
//	user.arrayfs.prune_result    (read) JSON of the last prune's figures
const (
	xattrStore         = "user.arrayfs.store"
	xattrPrune         = "user.arrayfs.prune"
	xattrPruneProgress = "user.arrayfs.prune_progress"
	xattrPruneResult   = "user.arrayfs.prune_result"
)

// pruneState is what the file system knows of the prunes it ran.
type pruneState struct {
	mu      sync.Mutex
	running map[*docarray.Store]*[2]atomic.Int64
	results map[*docarray.Store][]byte
}

func newPruneState() *pruneState {
	return &pruneState{running: map[*docarray.Store]*[2]atomic.Int64{}, results: map[*docarray.Store][]byte{}}
}

func (n *dirNode) storeGetxattr(s *docarray.Store, attr string, dest []byte) (uint32, syscall.Errno, bool) {
	var val []byte
	ps := n.fsys.prunes
	switch attr {
	case xattrStore:
		val = fmt.Appendf(nil, "docarray key_length=%d documents=%d", s.KeyLength(), s.Len())
	case xattrPruneProgress:
		ps.mu.Lock()
		p := ps.running[s]
		ps.mu.Unlock()
		if p == nil {
			return 0, syscall.ENODATA, true
		}
		val = fmt.Appendf(nil, "%d %d", p[0].Load(), p[1].Load())
	case xattrPruneResult:
		ps.mu.Lock()
		val = ps.results[s]
		ps.mu.Unlock()
		if val == nil {
			return 0, syscall.ENODATA, true
		}
	default:
		return 0, 0, false
	}
	if len(dest) == 0 {
		return uint32(len(val)), 0, true
	}
	if len(dest) < len(val) {
		return uint32(len(val)), syscall.ERANGE, true
	}
	return uint32(copy(dest, val)), 0, true
}

func (n *dirNode) storeSetxattr(s *docarray.Store, attr string) (syscall.Errno, bool) {
	if attr != xattrPrune {
		if strings.HasPrefix(attr, "user.arrayfs.") {
			return syscall.EPERM, true
		}
		return 0, false
	}
	ps := n.fsys.prunes
	ps.mu.Lock()
	if ps.running[s] != nil {
		ps.mu.Unlock()
		return syscall.EBUSY, true
	}
	p := &[2]atomic.Int64{}
	ps.running[s] = p
	ps.mu.Unlock()
	stats, err := s.Prune(func(done, total int64) { p[0].Store(done); p[1].Store(total) })
	ps.mu.Lock()
	delete(ps.running, s)
	if err == nil {
		ps.results[s], _ = json.Marshal(map[string]any{
			"documents": stats.Documents, "bytes_before": stats.BytesBefore,
			"bytes_after": stats.BytesAfter, "seconds": stats.Elapsed.Seconds()})
	}
	ps.mu.Unlock()
	if err != nil {
		return n.fsys.errno(err), true
	}
	n.fsys.recheckDocs(n.rel())
	n.fsys.logf("%s: pruned: %d documents, %d -> %d bytes in %v", n.rel(), stats.Documents, stats.BytesBefore, stats.BytesAfter, stats.Elapsed.Round(time.Millisecond))
	return 0, true
}
