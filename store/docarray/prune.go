package docarray

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// Prune compacts a store: the live documents, in store order, back to
// back in a new body.bin (tombstones, old versions and garbage gone),
// their metadata and inode numbers kept.
//
// The two files cannot be replaced together by rename(2), and a new
// header.bin beside an old body.bin (or the reverse) is not a store. So
// the new store is built as a whole directory beside the old one and
// the two directories are swapped with one renameat2(RENAME_EXCHANGE):
//
//  1. build PARENT/.arrayfs-stage.prune.NAME.N/ holding the new
//     header.bin, body.bin and sidecar, plus hard links to any other file
//     of the store directory; fsync every file and the new directory.
//     A kill here leaves the store untouched and a staging directory
//     that the next prune removes (and `arrayfs check` reports).
//  2. exchange the two directories (atomic: the name NAME points at the
//     old complete store or at the new complete one, never at neither),
//     then fsync PARENT. A power loss before that fsync may undo the
//     exchange: the old store is still complete.
//  3. remove the old store, now under the staging name. A kill here
//     leaves NAME as the new store and the old one as a leftover.
//
// At every moment NAME is a store that opens with every live document,
// and the original Python code can open it too (the last record of the
// new header is live and ends at the end of the new body).

// PruneStats says what a prune did.
type PruneStats struct {
	Documents   int
	BytesBefore int64 // header.bin + body.bin
	BytesAfter  int64
	Elapsed     time.Duration
}

// pruneDoc is one live document as the prune copies it.
type pruneDoc struct {
	key  string
	data []byte // a pending version, or nil
	loc  docLoc
	meta *Meta
	ino  uint64
}

// Prune compacts the store in place (see above). progress, if not nil,
// is called with bytes copied so far and the total.
func (s *Store) Prune(progress func(done, total int64)) (PruneStats, error) {
	start := time.Now()
	var stats PruneStats
	if err := s.checkWritable("", "prune"); err != nil {
		return stats, err
	}
	if err := s.Sync(); err != nil {
		return stats, err
	}
	s.mutMu.Lock()
	defer s.mutMu.Unlock()
	s.wbMu.Lock()
	defer s.wbMu.Unlock()
	// The store's lock for the whole prune, and the store as another
	// program may have left it (lock.go).
	unlock, err := s.lockFiles(true, "prune")
	if err != nil {
		return stats, err
	}
	locked := s.dir
	defer func() {
		if s.dir == locked {
			unlock()
		}
	}()
	if changed, gone, now := s.filesChanged(); gone {
		return stats, s.pruneError("the store's files", fmt.Errorf("%s or %s is missing", HeaderName, BodyName))
	} else if changed {
		changes, err := s.reloadLocked(now)
		if err != nil {
			return stats, s.pruneError("re-reading the store another program changed", err)
		}
		s.ds.notifyDocs(s.Rel(), changes)
	}

	s.mu.RLock()
	live := s.liveDocs()
	docs := make([]pruneDoc, len(live))
	var total int64
	for n, d := range live {
		pd := pruneDoc{key: d.key, loc: s.slots[d.slot].loc()}
		if x := s.ext[d.slot]; x != nil {
			pd.meta, pd.ino = x.meta, x.ino
			if x.pending != nil {
				pd.data = x.pending.data
				pd.loc.size = int64(len(pd.data))
			}
		}
		total += pd.loc.size
		docs[n] = pd
	}
	rel, id, k, base, marker := s.rel, s.id, s.k, s.base, s.marker
	stats.BytesBefore = s.sigs[0].Size + s.sigs[1].Size
	s.mu.RUnlock()
	stats.Documents = len(docs)

	if engine.IsRoot(rel) {
		return stats, engine.Refuse(rel, "prune", syscall.EINVAL,
			"the store is the dataset directory itself; prune it with the dataset's parent as the dataset (unmounted: arrayfs prune DIR)")
	}
	parentRel, name := filepath.Split(filepath.Clean(rel))
	parent, err := s.ds.back.OpenDir(parentRel)
	if err != nil {
		return stats, s.pruneError("opening the store's parent directory", err)
	}
	defer parent.Close()
	pfd := int(parent.Fd())
	others, err := s.otherEntries()
	if err != nil {
		return stats, err
	}
	removeStalePrunes(s.ds.back, parentRel, name)
	tmp := fmt.Sprintf("%sprune.%s.%08x", engine.StagePrefix, name, rand.Uint32())
	if err := unix.Mkdirat(pfd, tmp, 0o700); err != nil {
		return stats, s.pruneError("making the staging directory", err)
	}
	tfd, err := unix.Openat(pfd, tmp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Unlinkat(pfd, tmp, unix.AT_REMOVEDIR)
		return stats, s.pruneError("opening the staging directory", err)
	}
	newDir := os.NewFile(uintptr(tfd), filepath.Join(parentRel, tmp))
	defer func() {
		if newDir != nil {
			newDir.Close()
		}
	}()
	// The staging directory is ours while we hold its flock (another
	// mount or a listing must not take it for a killed prune's), and
	// the new store is locked before anyone can see it under NAME.
	if err := unix.Flock(tfd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Unlinkat(pfd, tmp, unix.AT_REMOVEDIR)
		return stats, s.pruneError("locking the staging directory", err)
	}
	fail := func(what string, err error) (PruneStats, error) {
		engine.RemoveStaleDir(pfd, tmp)
		return stats, s.pruneError(what, err)
	}
	newBody, err := s.writePrunedStore(tfd, docs, total, progress)
	if err != nil {
		return fail("writing the new store", err)
	}
	side := encodeStoreLine(id, k, base.Mtime)
	side = append(side, encodeMarkerLine(marker)...)
	for _, d := range docs {
		if d.meta != nil || d.ino != 0 {
			m := base
			if d.meta != nil {
				m = *d.meta
			}
			side = append(side, encodeDocLine(d.key, m, d.ino)...)
		}
	}
	if err := writeFileAt(tfd, MetaName, side, 0o644); err != nil {
		return fail("writing the sidecar", err)
	}
	for _, o := range others {
		if err := unix.Linkat(s.dirFd(), o, tfd, o, 0); err != nil {
			return fail("linking "+o, err)
		}
	}
	if err := s.copyDirAttrs(tfd); err != nil {
		return fail("copying the directory's mode", err)
	}
	if err := unix.Fsync(tfd); err != nil {
		return fail("fsync of the staging directory", err)
	}
	if err := unix.Renameat2(pfd, tmp, pfd, name, unix.RENAME_EXCHANGE); err != nil {
		if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS) {
			err = fmt.Errorf("%v (the file system cannot exchange two directories atomically; prune needs renameat2 RENAME_EXCHANGE)", err)
		}
		return fail("swapping in the new store", err)
	}
	if err := parent.Sync(); err != nil {
		s.ds.rep.Logf("%s: prune: fsync of the parent directory: %v", rel, err)
	}

	// The store is the new one from here on: switch to it.
	s.mu.Lock()
	for _, x := range s.ext {
		x.pending = nil // written into the new body; the pool's copies are skipped
	}
	oldDir := s.dir
	s.dir, newDir = newDir, nil
	oldHeader, oldHmap, oldBody := s.header, s.hmap, s.body
	err = s.openFiles()
	if err == nil {
		oldHmap.Close()
		oldHeader.Close()
		oldBody.unref()
		s.gen++
		err = s.loadIndex()
	}
	if err == nil {
		var sc *sidecarState
		if sc, err = readSidecar(s.dirFd()); err == nil {
			s.applySidecar(sc)
			s.marker = marker
		}
	}
	if s.sidecar != nil {
		s.sidecar.Close()
		s.sidecar = nil
	}
	if err == nil {
		s.sidecar, err = openSidecarAppend(s.dirFd())
	}
	s.storeDirty, s.orderDirty = false, false
	s.orderChanged()
	stats.BytesAfter = s.sigs[0].Size + s.sigs[1].Size
	s.mu.Unlock()
	oldDir.Close() // drops the lock of the old store
	// The new store was locked before it got the name; it is now the
	// store, and its lock is only held while the files are written.
	unix.Flock(s.dirFd(), unix.LOCK_UN)
	if err != nil {
		return stats, s.pruneError("opening the new store (it is in place and complete)", err)
	}
	if newBody != stats.BytesAfter-s.sigs[0].Size {
		s.ds.rep.Logf("%s: prune: new body is %d bytes, expected %d", rel, stats.BytesAfter-s.sigs[0].Size, newBody)
	}
	// The old store, now under the staging name, goes; its flock went
	// with its descriptor (oldDir), and the new one's stays with s.dir.
	if _, err := engine.RemoveStaleDir(pfd, tmp); err != nil {
		s.ds.rep.Logf("%s: prune: removing the old store (now %s): %v", rel, tmp, err)
	}
	stats.Elapsed = time.Since(start)
	return stats, nil
}

func (s *Store) pruneError(what string, err error) error {
	return &engine.Error{Path: s.Rel(), Op: "prune", Reason: fmt.Sprintf("%s: %v; the store is unchanged", what, err), Errno: engine.ErrnoOf(err)}
}

// otherEntries lists what the store directory holds besides the store:
// regular files are carried over by hard links; anything else stops the
// prune (it could not be carried over atomically).
func (s *Store) otherEntries() ([]string, error) {
	names, err := engine.ReadDirSorted(s.ds.back, s.Rel())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if n == HeaderName || n == BodyName || n == MetaName || n == IndexName || engine.IsStageName(n) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(s.dirFd(), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil, engine.Refuse(filepath.Join(s.Rel(), n), "prune", syscall.ENOTEMPTY,
				"the store directory holds %s, which is not a regular file: move it out first", n)
		}
		out = append(out, n)
	}
	return out, nil
}

func (s *Store) copyDirAttrs(tfd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(s.dirFd(), &st); err != nil {
		return err
	}
	if err := unix.Fchmod(tfd, st.Mode&0o7777); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		return unix.Fchown(tfd, int(st.Uid), int(st.Gid))
	}
	return nil
}

// removeStalePrunes removes staging directories of earlier prunes of
// NAME that were killed (nobody holds their flock).
func removeStalePrunes(back *engine.Backing, parentRel, name string) {
	prefix := engine.StagePrefix + "prune." + name + "."
	names, err := back.ReadDirNames(parentRel)
	if err != nil {
		return
	}
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			back.RemoveStaleStage(parentRel, n)
		}
	}
}

// writePrunedStore writes body.bin and header.bin of the compacted store
// into directory dirFd and fsyncs them. It returns the new body's size.
func (s *Store) writePrunedStore(dirFd int, docs []pruneDoc, total int64, progress func(done, total int64)) (int64, error) {
	create := func(name string) (*os.File, error) {
		fd, err := unix.Openat(dirFd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), name), nil
	}
	bf, err := create(BodyName)
	if err != nil {
		return 0, err
	}
	defer bf.Close()
	hf, err := create(HeaderName)
	if err != nil {
		return 0, err
	}
	defer hf.Close()
	for _, f := range []*os.File{bf, hf} {
		if err := copyFileAttrs(s.body.f, f); err != nil {
			return 0, err
		}
	}
	hw := bufio.NewWriterSize(hf, 1<<20)
	rec := make([]byte, s.rs)
	var off int64
	lastReport := time.Now()
	// Documents that follow each other in the old body.bin are copied
	// in one run (all of them, in a store written in order).
	var run docLoc
	runAt := int64(0)
	flush := func() error {
		if run.size == 0 {
			return nil
		}
		err := copyRange(s.body.f, run.start, bf, runAt, run.size)
		run = docLoc{}
		return err
	}
	for _, d := range docs {
		if d.data != nil {
			if err := flush(); err != nil {
				return 0, err
			}
			if _, err := bf.WriteAt(d.data, off); err != nil {
				return 0, err
			}
		} else if run.size > 0 && run.end() == d.loc.start && run.size < 64<<20 {
			run.size += d.loc.size
		} else {
			if err := flush(); err != nil {
				return 0, err
			}
			run, runAt = d.loc, off
		}
		encodeRecord(rec, d.key, s.k, recordFor(docLoc{off, d.loc.size}))
		if _, err := hw.Write(rec); err != nil {
			return 0, err
		}
		off += d.loc.size
		if progress != nil && time.Since(lastReport) > 50*time.Millisecond {
			progress(off, total)
			lastReport = time.Now()
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	if err := hw.Flush(); err != nil {
		return 0, err
	}
	if err := bf.Sync(); err != nil {
		return 0, err
	}
	if err := hf.Sync(); err != nil {
		return 0, err
	}
	if progress != nil {
		progress(off, total)
	}
	return off, nil
}

func copyFileAttrs(from, to *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(from.Fd()), &st); err != nil {
		return err
	}
	if err := to.Chmod(os.FileMode(st.Mode & 0o777)); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		return to.Chown(int(st.Uid), int(st.Gid))
	}
	return nil
}

// copyRange copies n bytes between files in the kernel (copy_file_range
// shares extents where the file system can).
func copyRange(src *os.File, soff int64, dst *os.File, doff, n int64) error {
	for n > 0 {
		w, err := unix.CopyFileRange(int(src.Fd()), &soff, int(dst.Fd()), &doff, int(min(n, 1<<30)), 0)
		if err != nil {
			return err
		}
		if w == 0 {
			return fmt.Errorf("%s: unexpected end of file at %d", src.Name(), soff)
		}
		n -= int64(w)
	}
	return nil
}
