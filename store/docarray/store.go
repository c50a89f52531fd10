package docarray

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// A Store is one DocumentArrayMemmap store (a directory holding
// header.bin and body.bin) served as a directory of documents.
//
// header.bin is parsed once, at open, into a compact index: one slot per
// header record (24 bytes each), a map from a 64-bit hash of each key to
// its slot, and small overlays (s.ext) for the few documents changed
// through the mount. Keys are not kept in memory: they are decoded from
// the header when needed. Document bytes are served from a mapping of
// body.bin; a document changed and not yet written back is served from
// its pending version.
//
// The store is the pool Owner of its documents' new versions (one unit
// per document, its new bytes) and of one unit ("h") standing for every
// header-only change (tombstones, renames, metadata), which any
// write-back writes too. See writeback.go for the write order.
//
// Slot invariants (s.mu):
//   - slot i is header record i; len(slots) >= nrec. Slots past nrec have
//     no record yet (a new document, or a rank reserved by an adopted
//     order).
//   - fLive: a document is in the slot and shown. It has bytes on disk
//     (fWritten, start/size) or a pending version (ext.pending), or both.
//   - fRecLive/fKeyDisk describe the record on disk: live, and carrying
//     the key of the document now in the slot. A slot that is not fLive
//     but fRecLive is a tombstone still to be written (in recDirty).
//   - fShadow: a later live record of a key already live at an earlier
//     slot (the original serves the later record's bytes at the earlier
//     position, and so do we); fBad: a record that cannot be served.
//     Both are left on disk as they are until the document is changed.
//   - byHash/collide map every live key to its slot.
type Store struct {
	ds *Stores
	k  int
	rs int // record size
	id uint64
	// readOnly: the mount is read-only.
	readOnly bool
	seed     uint64 // of the key hashes (keytable.go)

	// mutMu keeps mutations out while a prune rebuilds the store.
	// Order: mutMu, then wbMu, then the store directory's flock
	// (lock.go), then mu.
	mutMu sync.RWMutex
	// wbMu serialises write-backs, reloads and every change to the files.
	wbMu sync.Mutex
	mu   sync.RWMutex

	rel    string   // dataset-relative directory, for messages
	dir    *os.File // the store directory, flock'd while open
	header *os.File
	hmap   *engine.Mapping
	body   *bodyFile
	sigs   [2]engine.FileSig // header, body as last seen or written by us

	nrec     int   // records in header.bin
	bodySize int64 // the append position: always the end of body.bin

	slots   []slot
	byHash  *keyTable
	collide map[string]int32
	ext     map[int32]*docExtra
	// unsettled are the documents whose written (appended, record not
	// yet durable) is set: a write-back settles them all, without a
	// walk over every document.
	unsettled map[*docExtra]struct{}
	inoOwner  map[uint64]int32 // inode numbers that are not their key's default
	dups      map[int32][]int32
	recDirty  map[int32]struct{}
	creating  map[string]*newDoc
	live      int
	hashed    map[string]string // shortened names of long keys -> key

	// An adopted order (a .docarray marker written with an order): rank
	// i is reserved for order[i] until every listed key is in place.
	order       []string
	orderRank   map[string]int32
	orderFilled int
	rewrite     bool // the whole header is to be rewritten (relocation)

	base   Meta // what untouched documents show
	marker Meta
	// markerWritten is the text last written to the marker while the
	// store does not hold all it lists yet, and the mtime it came with
	// (settleMarkerLocked).
	markerWritten      []byte
	markerWrittenMtime int64
	metaDirty          map[string]bool
	markerDirty        bool
	orderDirty         bool
	storeDirty         bool
	sidecar            *os.File
	// sidecarPending: lines rendered and not yet appended.
	sidecarPending []byte
	orderGen       uint64
	markerGen      uint64
	markerText     []byte

	// journal and touched are the header changes and the keys changed
	// since header.bin last had all of them (journal.go);
	// replayed: a reload made versions pending again that the pool does
	// not hold, so the next write-back writes every pending version.
	journal  []docOp
	touched  map[string]touch
	replayed bool

	// tailUnsafe: docarray cannot reopen the store safely as it is on
	// disk (checkTail; tailNote says why).
	tailUnsafe bool
	tailNote   string
	// headerTrailing: header.bin ends in a torn record (a crash of a
	// writer in the middle of an append), cut at the next write-back.
	headerTrailing bool
	closed         bool
	lastCheck      atomic.Int64 // unix nanoseconds of the last refresh
	watchDesc      atomic.Int32 // its inotify watch (watch.go), 0 if none
	syncSoon       atomic.Bool  // a SyncSoon is due
	// gen counts the times the files were swapped or reloaded: offsets
	// in body.bin are not versions across them. reloads counts only
	// reloads after changes behind our back.
	gen uint64
	// changes counts the mount's changes of documents (touchKey): with
	// gen and reloads, the version of the whole-store views.
	changes uint64
	// indexBad and indexBadMsgs are the header records the index could
	// not serve (and the first reasons why), for its report; indexLoaded
	// says the index came from the saved one (indexfile.go).
	indexBad     int
	indexBadMsgs []string
	indexLoaded  bool
	reloads      uint64
}

type slotFlags uint32

const (
	fLive slotFlags = 1 << iota
	fWritten
	fRecLive
	fKeyDisk
	fShadow
	fBad
	fExt
)

type slot struct {
	start int64
	size  int64
	flags slotFlags
}

func (sl *slot) loc() docLoc { return docLoc{sl.start, sl.size} }

// docExtra is what the store keeps for a document beyond its slot: only
// for documents touched through the mount (or moved, or renamed).
type docExtra struct {
	slot int32
	// key is the document's key, always: a reload after a change behind
	// our back cannot read the old key from the header any more.
	key     string
	ino     uint64 // 0: the key's default
	meta    *Meta
	pending *docVersion
	// written is the version whose bytes a write-back appended to
	// body.bin and whose record is not durable yet: after a reload
	// (another program may have written over those bytes) it is
	// appended again.
	written *docVersion
}

// docVersion is a new content of a document, held by the pool until it
// is written back. data is immutable.
type docVersion struct {
	x    *docExtra
	data []byte
	seq  uint64
}

// versionSeq numbers pending versions (Entry.Version).
var versionSeq atomic.Uint64

func newVersion(x *docExtra, data []byte) *docVersion {
	return &docVersion{x: x, data: data, seq: versionSeq.Add(1)}
}

// newDoc is a document created and not yet closed: it has a name and an
// inode number, no slot. scratch holds a .docarray marker written under a
// temporary name (rsync's) until it is renamed onto .docarray.
type newDoc struct {
	key       string
	ino       uint64
	meta      Meta
	scratch   []byte
	isScratch bool
}

// bodyFile is one body.bin with its mapping; readers pin it while they
// hold views, so that a prune replacing body.bin does not pull it away.
type bodyFile struct {
	f    *os.File
	m    *engine.Mapping
	refs atomic.Int64
}

func (b *bodyFile) ref() *bodyFile { b.refs.Add(1); return b }

func (b *bodyFile) unref() {
	if b.refs.Add(-1) == 0 {
		b.m.Close()
		b.f.Close()
	}
}

// Entry is a document as the file system shows it.
type Entry struct {
	Name    string
	Key     string
	Ino     uint64
	Size    int64
	Meta    Meta
	Scratch bool // a marker held under a temporary name, not a document
	// Version changes whenever the content may have: the file system
	// keeps the kernel's cached pages only while it stays the same.
	Version uint64
	// Reloads counts the store's reloads after changes behind arrayfs's
	// back: the kernel may then also hold a stale size for a moment.
	Reloads uint64
}

func (s *Store) String() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rel
}

// Rel is the store directory's dataset-relative path.
func (s *Store) Rel() string { return s.String() }

// KeyLength is the store's key length K.
func (s *Store) KeyLength() int { return s.k }

// ReadOnly reports whether the store refuses changes (a read-only mount).
func (s *Store) ReadOnly() bool { return s.readOnly }

// errStoreProblem is a store that cannot be served (reported, then
// shown as plain files).
type errStoreProblem struct{ reason string }

func (e *errStoreProblem) Error() string { return e.reason }

// openStore opens the store in directory rel of d. A store that
// cannot be served is returned as an *errStoreProblem.
func openStore(d *Stores, rel string) (*Store, error) {
	dir, err := d.back.OpenDir(rel)
	if err != nil {
		return nil, err
	}
	s := &Store{ds: d, rel: rel, dir: dir, seed: rand.Uint64(), readOnly: d.readOnly, touched: map[string]touch{}}
	ok := false
	defer func() {
		if !ok {
			s.closeFiles()
		}
	}()
	// The files are read under the store's shared lock: a program
	// writing beside the mount under it is never seen half done.
	s.wbMu.Lock()
	defer s.wbMu.Unlock()
	defer s.lockForOpen()()
	sc, err := readSidecar(s.dirFd())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", MetaName, err)
	}
	if sc.unusable != "" {
		s.report(fmt.Sprintf("%s %s: not used; arrayfs writes a new one in its place", MetaName, sc.unusable))
	}
	if err := s.openFiles(); err != nil {
		return nil, err
	}
	// Untouched documents show body.bin's attributes (its mtime as
	// first seen, kept in the sidecar from then on).
	var st unix.Stat_t
	if err := unix.Fstat(int(s.body.f.Fd()), &st); err != nil {
		return nil, err
	}
	s.base = Meta{Mtime: st.Mtim.Nano(), Mode: st.Mode & 0o666, UID: st.Uid, GID: st.Gid}
	hsize := s.sigs[0].Size
	switch {
	case d.keyLength > 0:
		s.k = d.keyLength
	case sc.k > 0 && hsize%int64(docRecordSize(sc.k)) == 0:
		s.k = sc.k
	default:
		c := detectKeyLength(hsize, s.bodySize, func(p []byte, off int64) error {
			_, err := s.hmap.ReadAt(p, off) // from the mapping: no system call
			return err
		})
		if c.k == 0 {
			return nil, &errStoreProblem{c.reason}
		}
		s.k = c.k
	}
	s.rs = docRecordSize(s.k)
	// The index's memory counts in the daemon's budget while it is
	// built, not only after: a budget without it is below what the
	// parse needs, and the collector would run all through it.
	done := d.indexingStarted(hsize / int64(s.rs))
	toSave, err := s.openIndex()
	done()
	if err != nil {
		return nil, err
	}
	s.checkTail()
	s.applySidecar(sc)
	if !s.readOnly && (!sc.exists || sc.lines > 2*len(sc.docs)+64) {
		// The first sight of a store fixes what its untouched documents
		// show (and for good); a long log is compacted.
		if err := s.compactSidecar(); err != nil {
			return nil, fmt.Errorf("%s: %w", MetaName, err)
		}
	}
	if !s.readOnly {
		f, err := openSidecarAppend(s.dirFd())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", MetaName, err)
		}
		s.sidecar = f
	}
	if toSave != nil {
		// Only now: the save reads the index beside its users, under
		// s.mu, and what is done above writes it without (the store is
		// not yet anyone else's).
		s.saveIndex(*toSave)
	}
	ok = true
	return s, nil
}

func (s *Store) dirFd() int { return int(s.dir.Fd()) }

// openSidecarAppend opens the sidecar of store directory dirFd for
// appending, creating it: never through a symbolic link (a user who owns
// the store directory could point one at a file of root's), and only a
// regular file.
func openSidecarAppend(dirFd int) (*os.File, error) {
	fd, err := unix.Openat(dirFd, MetaName, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, err
	}
	if err := checkRegular(fd); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), MetaName), nil
}

// openFiles opens header.bin and body.bin of the store directory.
func (s *Store) openFiles() error {
	flag := unix.O_RDWR
	if s.readOnly {
		flag = unix.O_RDONLY
	}
	open := func(name string) (*os.File, *engine.Mapping, engine.FileSig, error) {
		fd, err := unix.Openat(s.dirFd(), name, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, nil, engine.FileSig{}, fmt.Errorf("%s: %w", name, err)
		}
		f := os.NewFile(uintptr(fd), filepath.Join(s.rel, name))
		if err := checkRegular(fd); err != nil {
			f.Close()
			return nil, nil, engine.FileSig{}, fmt.Errorf("%s: %w", name, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			f.Close()
			return nil, nil, engine.FileSig{}, err
		}
		m, err := engine.OpenMapping(f, true)
		if err != nil {
			f.Close()
			return nil, nil, engine.FileSig{}, err
		}
		return f, m, engine.SigOfUnix(&st), nil
	}
	h, hm, hsig, err := open(HeaderName)
	if err != nil {
		return err
	}
	b, bm, bsig, err := open(BodyName)
	if err != nil {
		hm.Close()
		h.Close()
		return err
	}
	s.header, s.hmap = h, hm
	bf := &bodyFile{f: b, m: bm}
	bf.refs.Store(1)
	s.body = bf
	s.sigs = [2]engine.FileSig{hsig, bsig}
	s.bodySize = bsig.Size
	return nil
}

func (s *Store) closeFiles() {
	if w := s.ds.watch; w != nil {
		w.unwatch(s)
	}
	if s.body != nil {
		s.body.unref()
		s.body = nil
	}
	if s.hmap != nil {
		s.hmap.Close()
		s.header.Close()
		s.hmap, s.header = nil, nil
	}
	if s.sidecar != nil {
		s.sidecar.Close()
		s.sidecar = nil
	}
	if s.dir != nil {
		s.dir.Close() // drops the flock
		s.dir = nil
	}
}

// extFor returns the docExtra of slot i, making one.
func (s *Store) extFor(i int32) *docExtra {
	if x := s.ext[i]; x != nil {
		return x
	}
	if s.slots[i].flags&fKeyDisk == 0 {
		panic("docarray: slot without a key on disk has no extra")
	}
	x := &docExtra{slot: i, key: s.diskKey(i)}
	s.ext[i] = x
	s.slots[i].flags |= fExt
	return x
}

// docIno is the inode number a key has by default in store id: a hash
// in the top quarter of the number space, far from the backing file
// system's numbers and from arrayfs's own (at the very top).
func docIno(id uint64, key string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < 8; i++ {
		h ^= uint64(byte(id >> (8 * i)))
		h *= 1099511628211
	}
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= 1099511628211
	}
	return inoSpace(h)
}

func inoSpace(h uint64) uint64 {
	v := 0xC000000000000000 | h&0x3FFFFFFFFFFFFFFF
	if v > ^uint64(0)-1<<16 {
		v -= 1 << 17
	}
	return v
}

func (s *Store) inoOf(i int32, key string) uint64 {
	if x := s.ext[i]; x != nil && x.ino != 0 {
		return x.ino
	}
	return docIno(s.id, key)
}

func (s *Store) metaOf(i int32) Meta {
	if x := s.ext[i]; x != nil && x.meta != nil {
		return *x.meta
	}
	return s.base
}

func (s *Store) sizeOf(i int32) int64 {
	if x := s.ext[i]; x != nil && x.pending != nil {
		return int64(len(x.pending.data))
	}
	return s.slots[i].size
}

func (s *Store) entry(i int32, key string) Entry {
	e := Entry{Name: NameOfKey(key), Key: key, Ino: s.inoOf(i, key), Size: s.sizeOf(i), Meta: s.metaOf(i), Reloads: s.reloads}
	if x := s.ext[i]; x != nil && x.pending != nil {
		e.Version = x.pending.seq << 1
	} else {
		sl := &s.slots[i]
		e.Version = (uint64(sl.start)*1099511628211^uint64(sl.size)*14695981039346656037^s.gen<<40)<<1 | 1
	}
	return e
}

func (nd *newDoc) entry() Entry {
	e := Entry{Name: NameOfKey(nd.key), Key: nd.key, Ino: nd.ino, Meta: nd.meta, Scratch: nd.isScratch}
	e.Size = int64(len(nd.scratch))
	return e
}

// report logs a problem of the store once.
func (s *Store) report(reason string) {
	s.ds.rep.Report(engine.Problem{Path: s.rel, Reason: reason})
}

// now is the time stamps of changes, in nanoseconds.
func now() int64 { return time.Now().UnixNano() }

func (s *Store) unitKey(ino uint64) string { return "d" + strconv.FormatUint(ino, 16) }

// headerUnit stands in the pool for the store's header-only changes.
func (s *Store) headerUnit() *engine.Unit { return &engine.Unit{Owner: s, Key: "h", Size: 1} }
