package dirdb

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// Unlink deletes a member: unlinking NAME.pickle deletes the entry
// (NAME.pickle, NAME.json and NAME.lock), unlinking NAME.json its
// metadata. Done under the entry's lock; the lock file is removed last,
// while held. handled is false when rel is not a dirdb member.
func (d *Databases) Unlink(rel string) (handled bool, err error) {
	entryRel, m, ok := d.dirdbMemberOf(rel)
	if !ok {
		return false, nil
	}
	if st, err := d.back.Lstat(rel); err == nil && st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return false, nil // a directory or link with an entry's name
	}
	e := d.getEntry(entryRel)
	defer e.release()
	e.mu.Lock()
	defer e.mu.Unlock()
	pending := e.m[m].stage != nil && e.m[m].stage.dirty.Load()
	lock, err := d.lockEntry(context.Background(), e.rel, "unlink")
	if err != nil {
		return true, err
	}
	defer lock.release()
	e.keepForHandlesLocked(m)
	if m == memberData {
		e.keepForHandlesLocked(memberMeta)
	}
	err = d.back.Unlink(rel)
	if err == syscall.ENOENT && pending {
		err = nil // it was being created: dropping the stage deletes it
	}
	if err != nil {
		return true, &engine.Error{Path: rel, Op: "unlink", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	e.detachLocked(m, true)
	if m == memberData {
		meta := e.relOf(memberMeta)
		if err := d.back.Unlink(meta); err != nil && err != syscall.ENOENT {
			return true, &engine.Error{Path: meta, Op: "unlink", Reason: err.Error() + " (its entry's data file is deleted)", Errno: engine.ErrnoOf(err)}
		}
		e.detachLocked(memberMeta, true)
		lock.remove()
		d.pool.Discard(e) // units of a detached member are skipped anyway
	}
	if err := d.back.SyncDir(e.dirRel()); err != nil {
		return true, &engine.Error{Path: rel, Op: "unlink", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	return true, nil
}

// Rename renames when either name is a dirdb member, or when a
// directory holding entries that something holds is renamed; handled is
// false otherwise. Every case holds the locks of the entries involved
// and publishes their pending versions first, so that the rename moves
// what was written.
//
//   - A.pickle → B.pickle renames the entry: the data, and the metadata
//     with it (A.json → B.json, or B.json removed when A has none);
//     A's lock file goes. Open handles of A follow it.
//   - X → B.pickle (rsync's temp file .B.pickle.XXXXXX): X replaces B's
//     data, atomically, after an fsync of X.
//   - X → B.json: the same, if X holds valid JSON (else EINVAL).
//   - A.pickle or A.json → a name that is no member: the file leaves
//     the database, under the lock.
func (d *Databases) Rename(from, to string, flags uint) (handled bool, err error) {
	fst, fromErr := d.back.Lstat(from)
	if fromErr == nil && fst.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return d.renameDir(from, to, flags)
	}
	fEntry, fm, fok := d.dirdbMemberOf(from)
	tEntry, tm, tok := d.dirdbMemberOf(to)
	if !fok && !tok {
		return false, nil
	}
	if fromErr == nil && fst.Mode&syscall.S_IFMT != syscall.S_IFREG && !fok {
		return false, nil // a link or special file renamed onto an entry's name: passed through
	}
	ctx := context.Background()
	exchange := flags&unix.RENAME_EXCHANGE != 0

	var ef, et *Entry
	if fok {
		ef = d.getEntry(fEntry)
		defer ef.release()
	}
	if tok {
		et = d.getEntry(tEntry)
		defer et.release()
	}
	unlock := lockEntryMutexes(ef, et)
	defer unlock()

	// What was written through the mount goes with the rename.
	if ef != nil {
		if err := ef.commitLocked(ctx, fm); err != nil {
			return true, err
		}
		if fm == memberData && tok && tm == memberData {
			if err := ef.commitLocked(ctx, memberMeta); err != nil {
				return true, err
			}
		}
	}
	if et != nil && exchange {
		if err := et.commitLocked(ctx, tm); err != nil {
			return true, err
		}
	}
	if tok && tm == memberMeta {
		if err := d.checkJSONFile(from, to); err != nil {
			return true, err
		}
	}
	// The data must be durable before a name points at it: rsync does
	// not fsync its temp file.
	if fromErr == nil && fst.Mode&syscall.S_IFMT == syscall.S_IFREG {
		if err := fsyncRel(d.back, from); err != nil {
			return true, &engine.Error{Path: from, Op: "rename", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
		}
	}

	var rels []string
	if ef != nil {
		rels = append(rels, ef.rel)
	}
	if et != nil {
		rels = append(rels, et.rel)
	}
	release, locks, err := d.lockEntries(ctx, "rename", rels...)
	if err != nil {
		return true, err
	}
	defer release()

	if et != nil && !exchange {
		// What the rename replaces stays for the handles open on it.
		et.keepForHandlesLocked(tm)
		if fok && tm == memberData && fm == memberData {
			et.keepForHandlesLocked(memberMeta)
		}
	}
	if err := d.back.Rename(from, to, flags); err != nil {
		return true, &engine.Error{Path: from, Op: "rename", Reason: "to " + to + ": " + err.Error(), Errno: engine.ErrnoOf(err)}
	}
	if fok && tok && fm == memberData && tm == memberData && ef != et {
		// An entry renamed: its handles follow it (and with exchange
		// B's follow B); B's old handles are detached.
		metaErr := d.renameMeta(ef, et, exchange)
		if !exchange {
			et.detachLocked(memberData, true)
			et.detachLocked(memberMeta, true)
			locks[0].remove() // A is no more
		}
		for m := member(0); m < numMembers; m++ {
			d.snaps.forget(ef.relOf(m))
			d.snaps.forget(et.relOf(m))
		}
		d.rekey(ef, et, exchange)
		if err := syncDirs(d.back, filepath.Dir(from), filepath.Dir(to)); err != nil {
			return true, &engine.Error{Path: to, Op: "rename", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
		}
		return true, metaErr
	}
	if ef != nil {
		ef.detachLocked(fm, false)
	}
	if et != nil {
		et.detachLocked(tm, !exchange)
	}
	if err := syncDirs(d.back, filepath.Dir(from), filepath.Dir(to)); err != nil {
		return true, &engine.Error{Path: to, Op: "rename", Reason: err.Error(), Errno: engine.ErrnoOf(err)}
	}
	return true, nil
}

// renameMeta moves the metadata along with an entry renamed from ef to
// et (swaps it with exchange). Locks held.
func (d *Databases) renameMeta(ef, et *Entry, exchange bool) error {
	a, b := ef.relOf(memberMeta), et.relOf(memberMeta)
	hasA, hasB := d.back.Exists(a), d.back.Exists(b)
	var err error
	switch {
	case exchange && hasA && hasB:
		err = d.back.Rename(a, b, unix.RENAME_EXCHANGE)
	case exchange && hasB:
		err = d.back.Rename(b, a, 0)
	case hasA:
		err = d.back.Rename(a, b, 0)
	case hasB:
		// B's old metadata does not describe A's data.
		err = d.back.Unlink(b)
	}
	if err != nil {
		return &engine.Error{Path: a, Op: "rename", Reason: "moving the metadata with its entry to " + b + ": " + engine.UnwrapPath(err).Error(), Errno: engine.ErrnoOf(err)}
	}
	return nil
}

// rekey makes ef the entry at et's name, so that handles open on A keep
// writing the entry now called B; with exchange the two swap names.
// Both mutexes held.
func (d *Databases) rekey(ef, et *Entry, exchange bool) {
	dd := d
	dd.mu.Lock()
	defer dd.mu.Unlock()
	a, b := ef.rel, et.rel
	if exchange {
		ef.setRel(b)
		et.setRel(a)
		dd.entries[a], dd.entries[b] = et, ef
		return
	}
	// B's object is done: its handles were detached above.
	delete(dd.entries, a)
	if dd.entries[b] == et {
		delete(dd.entries, b)
	}
	ef.setRel(b)
	dd.entries[b] = ef
	et.maybeDropLocked()
	ef.maybeDropLocked()
}

// renameDir renames a directory holding entries something holds:
// their pending versions are published first, and they follow the
// directory. Other directory renames are not handled here.
func (d *Databases) renameDir(from, to string, flags uint) (bool, error) {
	from, to = cleanRel(from), cleanRel(to)
	under := func(rel, dir string) bool { return strings.HasPrefix(rel, dir+"/") }
	dd := d
	dd.mu.Lock()
	var es []*Entry
	for rel, e := range dd.entries {
		if under(rel, from) || under(rel, to) {
			e.refs++
			es = append(es, e)
		}
	}
	dd.mu.Unlock()
	if len(es) == 0 {
		return false, nil
	}
	defer func() {
		for _, e := range es {
			e.release()
		}
	}()
	slices.SortFunc(es, func(a, b *Entry) int { return strings.Compare(a.String(), b.String()) })
	for _, e := range es {
		e.mu.Lock()
	}
	defer func() {
		for _, e := range es {
			e.mu.Unlock()
		}
	}()
	for _, e := range es {
		if err := e.commitAllLocked(context.Background()); err != nil {
			return true, err
		}
	}
	if err := d.back.Rename(from, to, flags); err != nil {
		return true, &engine.Error{Path: from, Op: "rename", Reason: "to " + to + ": " + err.Error(), Errno: engine.ErrnoOf(err)}
	}
	dd.mu.Lock()
	for _, e := range es {
		old := e.rel
		var rel string
		switch {
		case under(old, from):
			rel = to + old[len(from):]
		case flags&unix.RENAME_EXCHANGE != 0:
			rel = from + old[len(to):]
		default:
			continue // under to, which was an empty directory
		}
		if dd.entries[old] == e {
			delete(dd.entries, old)
		}
		e.setRel(rel)
		dd.entries[rel] = e
		for m := member(0); m < numMembers; m++ {
			dd.snaps.forget(old + memberExt[m])
		}
	}
	dd.mu.Unlock()
	return true, nil
}

// BeforeRmdir removes the lock files left in a database directory
// that holds nothing else (dirdb never removes them, and they are not
// shown), so that removing a database that looks empty works.
func (d *Databases) BeforeRmdir(rel string) {
	if d.readOnly || !d.isDirdbDir(rel) {
		return
	}
	names, err := engine.ReadDirSorted(d.back, rel)
	if err != nil {
		return
	}
	var locks []string
	for _, n := range names {
		_, ext, ok := splitDirdbName(n)
		switch {
		case ok && ext == ExtLock:
			locks = append(locks, n)
		case engine.IsStageName(n):
			engine.TidyStage(d.back, d.rep, rel, n)
		default:
			return // not empty: rmdir says so
		}
	}
	for _, n := range locks {
		entryRel := filepath.Join(rel, strings.TrimSuffix(n, ExtLock))
		l, err := d.lockEntry(context.Background(), entryRel, "rmdir")
		if err != nil {
			d.rep.Logf("%v", err)
			return
		}
		l.remove()
		l.release()
	}
}

// checkJSONFile refuses to rename from onto the metadata file to unless
// from holds valid JSON.
func (d *Databases) checkJSONFile(from, to string) error {
	f, err := d.back.OpenFile(from, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil // the rename itself will say
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil
	}
	if err := validateJSON(f); err != nil {
		d.stats.refused.Add(1)
		return engine.Refuse(to, "rename", syscall.EINVAL,
			"refused: %s is not valid JSON (%v); the old content is kept", from, err)
	}
	return nil
}

// lockEntryMutexes locks the mutexes of the given entries (nil ones
// skipped, a duplicate once) in path order.
func lockEntryMutexes(es ...*Entry) func() {
	var list []*Entry
	for _, e := range es {
		if e != nil && !slices.Contains(list, e) {
			list = append(list, e)
		}
	}
	slices.SortFunc(list, func(a, b *Entry) int { return strings.Compare(a.String(), b.String()) })
	for _, e := range list {
		e.mu.Lock()
	}
	return func() {
		for _, e := range list {
			e.mu.Unlock()
		}
	}
}

func fsyncRel(back *engine.Backing, rel string) error {
	f, err := back.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func syncDirs(back *engine.Backing, a, b string) error {
	if err := back.SyncDir(a); err != nil {
		return err
	}
	if b != a {
		return back.SyncDir(b)
	}
	return nil
}
