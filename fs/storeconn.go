package fs

import (
	"errors"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Store connections (mount option store_connections, read-only mounts).
//
// Two things a read-only mount wants are exclusive on one FUSE
// connection. Arrays want passthrough, which the daemon sets up in its
// answer to OPEN. Small documents want no OPEN at all: a connection whose
// daemon answers OPEN with ENOSYS (and FLUSH likewise) never sends either
// again, nor RELEASE, and an open() of a cached document then costs the
// daemon nothing (../shared/fuse-facts.md). So each store directory the
// mount serves gets a connection of its own, mounted over the directory
// by this daemon, serving the same nodes: the kernel walks into it
// instead of the main connection's directory.
//
// What a user sees: the store directory is a mount point (its st_dev
// differs; find -xdev, du -x and rsync -x stop at it), listed in
// /proc/mounts as fuse.arrayfs-store; `arrayfs umount` and SIGTERM
// unmount them first, a plain `umount` of the main mount point answers
// EBUSY while they are there (umount -R works).
//
// A store gets a connection the first time the main connection serves it
// (a lookup in it, or a listing), and at most once per mount: a
// connection that goes away (unmounted from outside, or dropped by the
// kernel when the directory went away) is not made again, and its store
// is served by the main connection from then on. A store whose files stop
// being a store has its connection detached.

// storeConns are the store connections of a mount.
type storeConns struct {
	main       *FS
	mountpoint string
	opts       gofs.Options // the main connection's

	mu      sync.Mutex
	conns   map[string]*storeConn // by store directory, each tried once
	closing bool
	wg      sync.WaitGroup
}

type storeConn struct {
	fsys   *FS
	at     string // its mount point
	server *fuse.Server
	gone   bool // its server has stopped
}

// ServeStoreConnections turns store connections on for the mount at
// mountpoint, mounted with the main connection's options mo.
func (f *FS) ServeStoreConnections(mountpoint string, mo *gofs.Options) {
	f.conns = &storeConns{main: f, mountpoint: mountpoint, opts: *mo, conns: map[string]*storeConn{}}
}

// CloseStoreConnections unmounts every store connection (detaching the
// busy ones) and waits for those unmounted to stop. No new ones are made.
func (f *FS) CloseStoreConnections() {
	c := f.conns
	if c == nil {
		return
	}
	c.mu.Lock()
	c.closing = true
	var up []*storeConn
	for _, sc := range c.conns {
		if sc.server != nil && !sc.gone {
			up = append(up, sc)
		}
	}
	c.mu.Unlock()
	for _, sc := range up {
		if err := sc.server.Unmount(); err != nil {
			f.logf("%s: store connection: unmount: %v; detaching it", sc.at, err)
			syscall.Unmount(sc.at, syscall.MNT_DETACH)
		}
	}
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		f.logf("store connections still in use after 10 s; they stop when their last user leaves")
	}
}

// storeServed tells the store connections that the main connection
// serves the store directory n: it gets a connection of its own.
func (n *dirNode) storeServed() {
	c := n.fsys.conns
	if c == nil || n.fsys.base != "" {
		return
	}
	rel := n.rel()
	if rel == "" {
		return // the dataset itself is a store: nothing to mount over
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.conns[rel] != nil {
		return
	}
	sc := &storeConn{at: filepath.Join(c.mountpoint, rel)}
	c.conns[rel] = sc
	c.wg.Add(1)
	// Mounting walks the mount point's path through the main
	// connection: never from within one of its requests.
	go c.serve(rel, sc)
}

func (c *storeConns) serve(rel string, sc *storeConn) {
	defer c.wg.Done()
	f := c.main
	st, err := f.back.Lstat(rel)
	if err != nil {
		return
	}
	sub := f.sub(rel)
	sc.fsys = sub
	opts := c.opts
	opts.RootStableAttr = &gofs.StableAttr{Ino: f.ino(&st.Stat_t), Gen: f.back.Generation(&st)}
	opts.MountOptions.Name = "arrayfs-store"
	opts.MountOptions.FsName = filepath.Join(f.ds.Root(), rel)
	raw := gofs.NewNodeFS(sub.root, &opts)
	server, err := fuse.NewServer(noOpenFS{raw}, sc.at, &opts.MountOptions)
	if err != nil {
		f.logf("%s: store connection not mounted (the main connection serves it): %v", sc.at, err)
		return
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		f.logf("%s: store connection not mounted (the main connection serves it): %v", sc.at, err)
		return
	}
	c.mu.Lock()
	sc.server = server
	closing := c.closing
	c.mu.Unlock()
	if closing {
		// Closed while mounting: CloseStoreConnections did not see it.
		server.Unmount()
	}
	server.Wait()
	c.mu.Lock()
	sc.gone = true
	c.mu.Unlock()
}

// sub is the file system of the store connection of store directory rel:
// the same dataset, rooted there.
func (f *FS) sub(rel string) *FS {
	s := &FS{ds: f.ds, back: f.back, opts: f.opts, rootDev: f.rootDev, logf: f.logf, started: f.started, base: rel, known: f.known, reads: f.reads}
	s.root = &dirNode{node: node{fsys: s}}
	s.prunes = f.prunes
	return s
}

// connFor returns the file system of the live store connection of
// directory dirRel, if there is one.
func (c *storeConns) connFor(dirRel string) *FS {
	c.mu.Lock()
	defer c.mu.Unlock()
	if sc := c.conns[dirRel]; sc != nil && sc.server != nil && !sc.gone {
		return sc.fsys
	}
	return nil
}

// storeGone detaches the connection of a directory that is no longer a
// store: it serves documents only, so it cannot serve what is there now.
func (c *storeConns) storeGone(dirRel string) {
	c.mu.Lock()
	sc := c.conns[dirRel]
	up := sc != nil && sc.server != nil && !sc.gone
	c.mu.Unlock()
	if up {
		c.main.logf("%s: no longer a store: its store connection is detached", sc.at)
		if err := syscall.Unmount(sc.at, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			c.main.logf("%s: detach: %v", sc.at, err)
		}
	}
}

// noOpenFS answers OPEN and FLUSH with ENOSYS: the kernel then sends
// neither again on the connection (nor RELEASE), and keeps the page
// cache of a file from one open to the next.
type noOpenFS struct{ fuse.RawFileSystem }

func (noOpenFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

func (noOpenFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status { return fuse.ENOSYS }
