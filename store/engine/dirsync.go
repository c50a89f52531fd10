package engine

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Renames made durable later.
//
// A version published at close(2) (Stage.Publish) is renamed over its
// file at once, so every reader, through the mount or beside it, sees
// it; but the directory entry the rename wrote is made durable later,
// as ext4 makes a close durable only at its next commit. What a crash
// can never show is a torn file: the staged data is fsync'd before the
// rename, so after a crash the name holds the old version or the new.
//
// Later means the first of: an fsync(2) of any file of the mount, a
// periodic write-back (the writeback option), a directory's fsync,
// SIGTERM and unmount (SyncDirs each time). So an acknowledged fsync
// still covers every publication before it, and close(2) waits for
// one device flush instead of two.
//
// Directories are held by their open descriptor, keyed by inode: a
// directory renamed meanwhile is still the one synced, and its inode
// number cannot be reused while the descriptor pins it.

// deferDirSync takes over dir, whose entries a rename just changed,
// until the next SyncDirs.
func (b *Backing) deferDirSync(dir *os.File) {
	var st unix.Stat_t
	if err := unix.Fstat(int(dir.Fd()), &st); err != nil {
		// Without its identity it cannot be kept: sync it now.
		dir.Sync()
		dir.Close()
		return
	}
	b.mu.Lock()
	if _, ok := b.unsynced[st.Ino]; ok {
		b.mu.Unlock()
		dir.Close()
		return
	}
	b.unsynced[st.Ino] = dir
	b.mu.Unlock()
}

// SyncDirs makes durable every rename published since the last call.
// It returns once renames published before it began are durable, also
// when another SyncDirs is doing the work (syncMu).
func (b *Backing) SyncDirs() error {
	b.syncMu.Lock()
	defer b.syncMu.Unlock()
	b.mu.Lock()
	dirs := b.unsynced
	b.unsynced = map[uint64]*os.File{}
	b.mu.Unlock()
	var first error
	for _, d := range dirs {
		if err := d.Sync(); err != nil && first == nil {
			first = fmt.Errorf("%s: fsync of directory: %w", d.Name(), err)
		}
		d.Close()
	}
	return first
}

// UnsyncedDirs is the number of directories holding renames not yet
// durable (stats.json).
func (b *Backing) UnsyncedDirs() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.unsynced)
}
