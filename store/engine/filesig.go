package engine

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// FileSig identifies one version of a file, to tell whether it changed
// behind arrayfs's back: an in-place rewrite changes the size or the
// timestamps, a replacement the inode.
type FileSig struct {
	dev, ino     uint64
	Size         int64
	Mtime, Ctime int64 // ns
}

// SigOf is the signature of the file st describes.
func SigOf(st *syscall.Stat_t) FileSig {
	return FileSig{dev: uint64(st.Dev), ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
}

// SigOfUnix is SigOf for a unix.Stat_t.
func SigOfUnix(st *unix.Stat_t) FileSig {
	return FileSig{dev: st.Dev, ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
}
