// Package fs is the go-fuse node tree of arrayfs: one node type per kind
// of file, each implementing just the operations it needs. It parses no
// format: it asks the store what a name is and serves what it is told.
package fs

import (
	"context"
	"log"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/arrayfs/arrayfs/mountopts"
	"github.com/arrayfs/arrayfs/store"
	"github.com/arrayfs/arrayfs/store/engine"
)

// FS is one mounted dataset.
type FS struct {
	ds      *store.Dataset
	back    *engine.Backing
	opts    mountopts.Options
	rootDev uint64
	root    *dirNode
	logf    func(format string, args ...any)
	started time.Time
	prunes  *pruneState // shared with its store connections
	known   *knownNodes // shared with its store connections (known.go)
	// reads counts the READ requests the daemon served, by kind of
	// file (stats.json): what passthrough and the page cache spare it.
	// Shared with its store connections.
	reads *readCounts
	// base is the dataset-relative directory of root: "" for the main
	// connection, the store's directory for a store connection.
	base string
	// conns are the store connections of the main connection, or nil
	// (storeconn.go).
	conns *storeConns
}

type readCounts struct {
	array, view, document atomic.Int64
	// prefilled counts the documents put into the page cache ahead of
	// their first READ (docprefill.go).
	prefilled atomic.Int64
}

// New builds the node tree for ds.
func New(ds *store.Dataset, opts mountopts.Options, logf func(string, ...any)) (*FS, error) {
	if logf == nil {
		logf = log.Printf
	}
	st, err := ds.Backing().Lstat("")
	if err != nil {
		return nil, err
	}
	f := &FS{ds: ds, back: ds.Backing(), opts: opts, rootDev: uint64(st.Dev), logf: logf, started: time.Now(), reads: &readCounts{}}
	f.root = &dirNode{node: node{fsys: f}}
	f.prunes = newPruneState()
	f.known = newKnownNodes()
	ds.Docs().SetNotify(f.onDocChanges)
	return f, nil
}

// Root is the root node to mount.
func (f *FS) Root() gofs.InodeEmbedder { return f.root }

// Cache lifetimes. arrayfs is the only writer of the backing files while
// mounted (it says so in the README), so the kernel may keep names and
// attributes for a while; a change made behind its back shows up within
// these times.
const (
	entryTimeout    = time.Second
	attrTimeout     = time.Second
	negativeTimeout = time.Second
)

// docTimeout is how long the kernel keeps the names and attributes of
// documents. They change only through the mount (the kernel follows, or
// is told: NotifyContent at each commit) or behind its back, which each
// store notices at once (store/docarray/watch.go) and reports to
// onDocChanges, which tells the kernel exactly. A loop over a store of
// 100,000 documents then sends no LOOKUP or GETATTR for them.
const docTimeout = time.Hour

// MountOptions are the go-fuse options for mounting f.
func (f *FS) MountOptions(mountpoint string) *gofs.Options {
	et, at, nt := entryTimeout, attrTimeout, negativeTimeout
	o := &gofs.Options{
		EntryTimeout:    &et,
		AttrTimeout:     &at,
		NegativeTimeout: &nt,
		// Modes are shown as the backing files have them, 0000 included.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			FsName:      f.ds.Root(),
			Name:        "arrayfs",
			AllowOther:  f.opts.AllowOther,
			Debug:       f.opts.Debug,
			MaxWrite:    1 << 20,
			DirectMount: true,
			// No ATOMIC_O_TRUNC: O_TRUNC comes as a SETATTR after the
			// OPEN, and the kernel keeps the size that SETATTR answers
			// (opentrunc.go). DIRECT_IO files may still be mapped shared.
			// READDIRPLUS_AUTO: the kernel asks for attributes with a
			// listing only when the reader then looks at them (ls -l,
			// rsync), not for ls -f or find over a million documents.
			// ASYNC_DIO: a large read of a DIRECT_IO file (a view) goes
			// to the daemon as several requests at once.
			ExtraCapabilities: fuse.CAP_DIRECT_IO_ALLOW_MMAP | fuse.CAP_READDIRPLUS_AUTO | fuse.CAP_ASYNC_DIO,
		},
	}
	if f.opts.CheckPermissions() {
		o.MountOptions.Options = append(o.MountOptions.Options, "default_permissions")
	}
	if f.opts.ReadOnly {
		o.MountOptions.Options = append(o.MountOptions.Options, "ro")
	}
	return o
}

// node is what every node type shares: the file system it belongs to,
// and the handles opened for writing on it not used yet (opentrunc.go).
type node struct {
	gofs.Inode
	fsys  *FS
	fresh freshWriters
	known knownLinks
}

// rel is the node's dataset-relative path.
func (n *node) rel() string {
	p := n.Path(n.fsys.root.EmbeddedInode())
	if n.fsys.base != "" {
		return filepath.Join(n.fsys.base, p)
	}
	return p
}

// childRel is the dataset-relative path of name in directory n.
func (n *node) childRel(name string) string { return filepath.Join(n.rel(), name) }

// Node identity. A node stands for one backing file: its inode number
// and a generation (engine.Backing.Generation) that tells it from a later
// file given the same number by the backing file system, which reuses
// numbers at once (after arrayfs's own rename-replacements, for one).
// Without the generation, a lookup of the later file would find the
// node of the earlier one, and writes to one name would land in another
// file. A node whose name now leads to another file is stale: it
// answers ESTALE, and the kernel looks the name up again (except an open
// and a readlink, which are of the name: file.go).

// ino maps a backing file's number to the inode number shown, as
// go-fuse's loopback does: the backing number itself for files on the
// dataset's own device, mixed with the device number otherwise.
func (f *FS) ino(st *syscall.Stat_t) uint64 {
	swap := func(d uint64) uint64 { return d<<32 | d>>32 }
	return (swap(uint64(st.Dev)) ^ swap(f.rootDev)) ^ st.Ino
}

// stable is the go-fuse identity of a backing file.
func (f *FS) stable(st *engine.Stat) gofs.StableAttr {
	return gofs.StableAttr{Mode: st.Mode & syscall.S_IFMT, Ino: f.ino(&st.Stat_t), Gen: f.back.Generation(st)}
}

// isOwn reports whether st is the node's own backing file.
func (n *node) isOwn(st *engine.Stat) bool {
	id := n.StableAttr()
	return id.Ino == n.fsys.ino(&st.Stat_t) && id.Gen == n.fsys.back.Generation(st)
}

// lstatOwn returns the attributes of the node's backing file, or ESTALE
// when its name now leads to another file.
func (n *node) lstatOwn() (engine.Stat, syscall.Errno) {
	st, err := n.fsys.back.Lstat(n.rel())
	if err != nil {
		return st, gofs.ToErrno(err)
	}
	if !n.isOwn(&st) {
		return st, syscall.ESTALE
	}
	return st, 0
}

// newChild makes the node for a backing file named name (empty for
// one without a name) of directory parent.
func (f *FS) newChild(ctx context.Context, parent *gofs.Inode, name string, st *engine.Stat) *gofs.Inode {
	var ops gofs.InodeEmbedder
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		ops = &dirNode{node: node{fsys: f}}
	case syscall.S_IFLNK:
		ops = &linkNode{node: node{fsys: f}}
	case syscall.S_IFREG:
		ops = &fileNode{node: node{fsys: f}}
	default:
		ops = &specialNode{node: node{fsys: f}}
	}
	return f.childInode(ctx, parent, name, ops, f.stable(st))
}

// errno turns an error into the errno to answer, logging refusals and
// failures of the engine with their path and reason.
func (f *FS) errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var se *engine.Error
	if asStoreError(err, &se) {
		f.logf("%v", se)
	}
	return engine.ErrnoOf(err)
}

// readOnly answers EROFS for changes on a read-only mount.
func (f *FS) readOnly() bool { return f.opts.ReadOnly }
