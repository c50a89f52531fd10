package fs

import (
	"context"
	"encoding/json"
	"os"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/arrayfs/arrayfs/mountopts"
	"github.com/arrayfs/arrayfs/store/dirdb"
	"github.com/arrayfs/arrayfs/store/engine"
)

// reservedDir is arrayfs's own directory at the mount root, for derived
// views and the mount's state. Like ZFS's .zfs it is not listed (unless
// views=visible) so backups do not copy derived data, but it can be
// entered by name. It shadows a backing entry of the same name.
const reservedDir = ".arrayfs"

const viewsVisible = mountopts.ViewsVisible

// Inode numbers of arrayfs's own nodes: at the top of the number space,
// far from any backing file system's (^0 itself is go-fuse's).
const (
	reservedIno = ^uint64(0) - 1 - iota
	statsIno
)

// reservedNode is /.arrayfs.
type reservedNode struct {
	node
}

var (
	_ gofs.NodeLookuper  = (*reservedNode)(nil)
	_ gofs.NodeReaddirer = (*reservedNode)(nil)
	_ gofs.NodeGetattrer = (*reservedNode)(nil)
)

const statsName = "stats.json"

func (n *dirNode) lookupReserved(ctx context.Context, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	r := &reservedNode{node: node{fsys: n.fsys}}
	r.fill(&out.Attr)
	return n.NewInode(ctx, r, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: reservedIno}), 0
}

func (n *reservedNode) fill(a *fuse.Attr) { fillOwnDir(a, n.fsys.started) }

// fillOwnDir gives a directory of arrayfs's own (no backing file) its
// attributes: read-only, the daemon's, as old as the mount.
func fillOwnDir(a *fuse.Attr, started time.Time) {
	a.Mode = syscall.S_IFDIR | 0o555
	a.Nlink = 2
	a.Owner = fuse.Owner{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	a.SetTimes(&started, &started, &started)
}

func (n *reservedNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	return 0
}

func (n *reservedNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if name == viewsName {
		return n.fsys.viewsRoot(ctx, n.EmbeddedInode(), out), 0
	}
	if name != statsName {
		return nil, syscall.ENOENT
	}
	s := &statsNode{node: node{fsys: n.fsys}}
	s.fill(&out.Attr)
	return n.NewInode(ctx, s, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: statsIno}), 0
}

func (n *reservedNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	return gofs.NewListDirStream([]fuse.DirEntry{
		{Name: statsName, Mode: syscall.S_IFREG, Ino: statsIno},
		{Name: viewsName, Mode: syscall.S_IFDIR, Ino: viewIno("/")},
	}), 0
}

// statsNode is /.arrayfs/stats.json: the mount's state, fresh at each open.
type statsNode struct {
	node
}

var (
	_ gofs.NodeOpener    = (*statsNode)(nil)
	_ gofs.NodeGetattrer = (*statsNode)(nil)
)

// Stats is the content of /.arrayfs/stats.json.
type Stats struct {
	PID        int              `json:"pid"`
	Dataset    string           `json:"dataset"`
	Options    string           `json:"options"`
	UptimeSecs float64          `json:"uptime_seconds"`
	Pool       engine.PoolStats `json:"pool"`
	Dirdb      dirdb.Stats      `json:"dirdb"`
	// Reads are the READ requests the daemon served.
	Reads struct {
		Array int64 `json:"array"` // of array data files (none when passed through)
		View  int64 `json:"view"`  // of /.arrayfs/views files
		// Document counts READs of documents; DocumentsPrefilled the
		// documents put into the page cache before any READ of them
		// (store connections, docprefill.go).
		Document           int64 `json:"document"`
		DocumentsPrefilled int64 `json:"documents_prefilled"`
	} `json:"reads"`
	// Memory is the daemon's budget (memory.go) and what the Go
	// runtime holds, in bytes.
	Memory struct {
		Budget int64 `json:"budget"`
		Go     int64 `json:"go"`
		// HeapLive is the heap the last collection found live.
		HeapLive int64 `json:"heap_live"`
		// KnownNodes are the nodes of files (not directories) the
		// kernel holds; PrunedNodes those handed back to it under
		// memory pressure since the mount (known.go).
		KnownNodes  int   `json:"known_nodes"`
		PrunedNodes int64 `json:"pruned_nodes"`
	} `json:"memory"`
	// UnsyncedDirs is how many directories hold renames of published
	// versions not yet made durable (store/engine/dirsync.go).
	UnsyncedDirs int `json:"unsynced_dirs"`
}

func (n *statsNode) snapshot() []byte {
	s := Stats{
		PID:        os.Getpid(),
		Dataset:    n.fsys.ds.Root(),
		Options:    n.fsys.opts.String(),
		UptimeSecs: time.Since(n.fsys.started).Seconds(),
		Pool:       n.fsys.ds.Pool().Stats(),
		Dirdb:      n.fsys.ds.Dirdb().Stats(),
	}
	r := n.fsys.reads
	s.Reads.Array, s.Reads.View = r.array.Load(), r.view.Load()
	s.Reads.Document, s.Reads.DocumentsPrefilled = r.document.Load(), r.prefilled.Load()
	s.Memory.Budget, s.Memory.Go, s.Memory.HeapLive = n.fsys.MemoryBudget(), goMemory(), heapLive()
	s.Memory.KnownNodes, s.Memory.PrunedNodes = n.fsys.known.count(), n.fsys.known.pruned.Load()
	s.UnsyncedDirs = n.fsys.back.UnsyncedDirs()
	b, _ := json.MarshalIndent(s, "", "  ")
	return append(b, '\n')
}

func (n *statsNode) fill(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o444
	a.Nlink = 1
	a.Size = uint64(len(n.snapshot()))
	a.Owner = fuse.Owner{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	t := time.Now()
	a.SetTimes(&t, &t, &t)
}

func (n *statsNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fill(&out.Attr)
	out.SetTimeout(viewTimeout)
	return 0
}

func (n *statsNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EACCES
	}
	// DIRECT_IO: the content is made at open and its size is not
	// known to the kernel in advance.
	return &bytesHandle{data: n.snapshot()}, fuse.FOPEN_DIRECT_IO, 0
}

// bytesHandle serves a byte slice made at open.
type bytesHandle struct{ data []byte }

var _ gofs.FileReader = (*bytesHandle)(nil)

// Fsync of generated content (a marker, stats.json): nothing to write.
func (h *bytesHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno { return 0 }

func (h *bytesHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultData(h.data[off:end]), 0
}
