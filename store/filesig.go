package store

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// fileSig identifies one version of a file, to tell whether it changed
// behind arrayfs's back: an in-place rewrite changes the size or the
// timestamps, a replacement the inode.
type fileSig struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns
}

func sigOf(st *syscall.Stat_t) fileSig {
	return fileSig{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

func sigOfUnix(st *unix.Stat_t) fileSig {
	return fileSig{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}
