// fuseref is a reference for scripts/bench: a go-fuse file system that
// serves its bytes from memory, with no work per request, under one of
// the constraints arrayfs is held to: what a FUSE daemon reaches under
// that constraint on this kernel when the daemon costs nothing.
//
//	fuseref -big SIZE MOUNTPOINT
//
// Two files of the same SIZE bytes, read with FUSE READs of up to 1 MiB
// (max_write 1 MiB, as arrayfs): "direct", opened DIRECT_IO, as arrayfs
// opens a data.npy view (its bytes are the array's shifted by the .npy
// header, so the kernel cannot pass them through to the array's file);
// "buffered", read through the page cache, as an array file of a
// read-write mount whose readers are not passed through, but dropped
// from the cache at each open, so that every read is a first read.
//
//	fuseref -n N -size S MOUNTPOINT
//
// N files of S bytes on a connection in the kernel's no-OPEN mode (OPEN
// answered ENOSYS: no OPEN and no RELEASE, the page cache kept between
// opens) that still answers FLUSH: the fewest round trips a read-write
// mount can have and still learn of a writer's close, which is where a
// document is committed (and refused with EINVAL).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

var (
	bigSize = flag.Int64("big", 0, "serve one file of this many bytes")
	count   = flag.Int("n", 0, "serve this many small files")
	size    = flag.Int("size", 1024, "with -n: bytes per file")
)

type file struct {
	fs.Inode
	data      []byte
	openFlags uint32
}

func (f *file) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0644
	out.Size = uint64(len(f.data))
	return 0
}

func (f *file) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, f.openFlags, 0
}

func (f *file) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	end := min(off+int64(len(dest)), int64(len(f.data)))
	if off >= end {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(f.data[off:end]), 0
}

type root struct{ fs.Inode }

func (r *root) OnAdd(ctx context.Context) {
	if *bigSize > 0 {
		// Written, not left zero: untouched pages would all be the
		// kernel's one zero page, hot in the CPU's cache.
		data := make([]byte, *bigSize)
		for i := range data {
			data[i] = byte(i * 7)
		}
		r.AddChild("direct", r.NewPersistentInode(ctx, &file{data: data, openFlags: fuse.FOPEN_DIRECT_IO}, fs.StableAttr{Ino: 2}), false)
		// No FOPEN_KEEP_CACHE: the kernel drops the file's pages at
		// each open.
		r.AddChild("buffered", r.NewPersistentInode(ctx, &file{data: data}, fs.StableAttr{Ino: 3}), false)
		return
	}
	data := make([]byte, *size)
	for i := 0; i < *count; i++ {
		// Files on a no-OPEN connection keep their page cache.
		r.AddChild(fmt.Sprintf("doc-%06d", i), r.NewPersistentInode(ctx, &file{data: data}, fs.StableAttr{Ino: uint64(i + 2)}), false)
	}
}

// noOpen answers OPEN with ENOSYS once: the kernel then stops sending it
// (and RELEASE), but goes on sending FLUSH at every close.
type noOpen struct{ fuse.RawFileSystem }

func (noOpen) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

func main() {
	flag.Parse()
	if flag.NArg() != 1 || (*bigSize > 0) == (*count > 0) {
		fmt.Fprintln(os.Stderr, "usage: fuseref -big SIZE MOUNTPOINT | -n N [-size S] MOUNTPOINT")
		os.Exit(2)
	}
	hour := time.Hour
	opts := &fs.Options{EntryTimeout: &hour, AttrTimeout: &hour}
	opts.MountOptions.DirectMount = true
	opts.MountOptions.FsName = "fuseref"
	opts.MountOptions.MaxWrite = 1 << 20
	var raw fuse.RawFileSystem = fs.NewNodeFS(&root{}, opts)
	if *count > 0 {
		raw = noOpen{raw}
	}
	server, err := fuse.NewServer(raw, flag.Arg(0), &opts.MountOptions)
	if err != nil {
		log.Fatal(err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		log.Fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-sig; server.Unmount() }()
	server.Wait()
}
