package docarray

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arrayfs/arrayfs/store/engine"
	"golang.org/x/sys/unix"
)

// The saved index: the in-memory index of header.bin (index.go), kept
// beside the store as IndexName so that the next open of an unchanged
// store reads it instead of parsing every record (a million records: a
// few tens of milliseconds instead of a third of a second).
//
// It is a cache and nothing else: used only while header.bin is the file
// it was made from (same device, inode, size, mtime and ctime, to the
// nanosecond), body.bin has the size it had and the key length is the
// same, and its checksum holds; otherwise the records are parsed again
// and a new one is saved. docarray ignores the file, and the mount
// never shows it. It is written (staged, then renamed into place) right
// after a parse, on a read-write mount only; a store that arrayfs itself
// writes to is parsed again at its next open.

// IndexName is the saved index in a store directory.
const IndexName = ".arrayfs-docindex"

const indexMagic = "ARRAYFS-DOCINDEX\x01"

// indexSig is what the saved index is valid for.
type indexSig struct {
	dev, ino           uint64
	size, mtime, ctime int64
	bodySize           int64
	k                  int64
}

func (s *Store) indexSig() (indexSig, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(s.header.Fd()), &st); err != nil {
		return indexSig{}, err
	}
	return indexSig{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
		bodySize: s.bodySize, k: int64(s.k)}, nil
}

// indexEncoder writes the saved index file as it is encoded, with its
// checksum, a bounded chunk at a time.
type indexEncoder struct {
	w   io.Writer
	b   []byte
	sum uint32
	err error
}

func (e *indexEncoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *indexEncoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *indexEncoder) str(v string) { e.u64(uint64(len(v))); e.b = append(e.b, v...) }

// flush writes what is encoded so far.
func (e *indexEncoder) flush() {
	if e.err == nil && len(e.b) > 0 {
		e.sum = crc32.Update(e.sum, castagnoli, e.b)
		_, e.err = e.w.Write(e.b)
	}
	e.b = e.b[:0]
}

// indexChunk is how many records (or table cells) are encoded under one
// hold of the store's shared lock: about a megabyte.
var indexChunk = 1 << 16

// writeIndex writes the saved index of s for sig to w. It is encoded from
// the live index, a chunk at a time under the store's shared lock, not
// from a copy of it: at ten million records a copy and the encoded file
// took 800 MB beside the index's 440 MB, over the daemon's memory
// budget, and the collector ran all through the parse. Every change of
// the index changes the store's version, so a version other than ver
// (the index as parsed) means the index would be saved half old and half
// new: the save is abandoned.
func (s *Store) writeIndex(w io.Writer, sig indexSig, ver StoreVersion) error {
	e := &indexEncoder{w: w, b: make([]byte, 0, indexChunk*20+4096)}
	// under runs fn under the shared lock if the index is still ver's.
	under := func(fn func()) error {
		s.mu.RLock()
		same := s.versionLocked() == ver
		if same {
			fn()
		}
		s.mu.RUnlock()
		if !same {
			return errIndexChanged
		}
		e.flush()
		return e.err
	}
	var n, cells int
	err := under(func() {
		e.b = append(e.b, indexMagic...)
		for _, v := range []int64{int64(sig.dev), int64(sig.ino), sig.size, sig.mtime, sig.ctime, sig.bodySize, sig.k} {
			e.u64(uint64(v))
		}
		n, cells = len(s.slots), len(s.byHash.hs)
		e.u64(s.seed)
		e.u64(uint64(n))
		e.u64(uint64(s.live))
		e.u64(uint64(s.indexBad))
		e.u64(uint64(len(s.indexBadMsgs)))
		for _, m := range s.indexBadMsgs {
			e.str(m)
		}
	})
	for i := 0; i < n && err == nil; i += indexChunk {
		err = under(func() {
			for _, sl := range s.slots[i:min(n, i+indexChunk)] {
				e.u64(uint64(sl.start))
				e.u64(uint64(sl.size))
				// fExt says the store holds a docExtra for the slot,
				// which a new process does not.
				e.u32(uint32(sl.flags &^ fExt))
			}
		})
	}
	if err == nil {
		err = under(func() { e.u64(uint64(cells)); e.u64(uint64(s.byHash.n)) })
	}
	for c := 0; c < cells && err == nil; c += indexChunk {
		err = under(func() {
			for _, h := range s.byHash.hs[c:min(cells, c+indexChunk)] {
				e.u64(h)
			}
		})
	}
	for c := 0; c < cells && err == nil; c += indexChunk {
		err = under(func() {
			for _, i := range s.byHash.slots[c:min(cells, c+indexChunk)] {
				e.u32(uint32(i))
			}
		})
	}
	if err == nil {
		// What few keys collide, repeat or are too long to name a file
		// (index.go): one chunk.
		err = under(func() {
			e.u64(uint64(len(s.collide)))
			for k, i := range s.collide {
				e.str(k)
				e.u64(uint64(i))
			}
			e.u64(uint64(len(s.dups)))
			for j, ds := range s.dups {
				e.u64(uint64(j))
				e.u64(uint64(len(ds)))
				for _, d := range ds {
					e.u64(uint64(d))
				}
			}
			e.u64(uint64(len(s.hashed)))
			for name, key := range s.hashed {
				e.str(name)
				e.str(key)
			}
		})
	}
	if err != nil {
		return err
	}
	e.u32(e.sum)
	e.flush()
	return e.err
}

var errIndexChanged = errors.New("the index changed while it was saved")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errIndexStale = errors.New("not this header.bin's")

// indexReader decodes a saved index, failing at the first thing out of
// place.
type indexReader struct {
	b   []byte
	err error
}

// take returns the next n bytes, or nil once anything is missing.
func (r *indexReader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = io.ErrUnexpectedEOF
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *indexReader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (r *indexReader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// count reads a length that each of its items needs at least min bytes
// for, so that a corrupt count cannot make it allocate past the file.
func (r *indexReader) count(min int) int {
	n := r.u64()
	if r.err == nil && (min > 0 && n > uint64(len(r.b)/min) || n > 1<<40) {
		r.err = io.ErrUnexpectedEOF
	}
	if r.err != nil {
		return 0
	}
	return int(n)
}

// str copies: the bytes read are a mapping's.
func (r *indexReader) str() string {
	return string(r.take(r.count(1)))
}

// loadSavedIndex reads the saved index into s, if it is valid for the
// store's files as they are; false means parse the records. It is
// decoded from a mapping of the file: at ten million records a copy of
// it in the heap (400 MB) next to the index it decodes to took the
// daemon over its memory budget.
func (s *Store) loadSavedIndex(sig indexSig) bool {
	// Never through a link, and only a regular file.
	fd, err := unix.Openat(s.dirFd(), IndexName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), IndexName)
	defer f.Close()
	if checkRegular(fd) != nil {
		return false
	}
	m, err := engine.OpenMapping(f, false)
	if err != nil {
		return false
	}
	defer m.Close()
	ok := false
	// A page that cannot be read (the file cut short under the mapping)
	// is an error of Scan's, not a crash: the records are parsed.
	err = m.Scan(0, int(m.Size()), func(data []byte) { ok = s.decodeSavedIndex(data, sig) })
	return err == nil && ok
}

// savedIndex is a saved index file taken apart: its small parts
// decoded, its slots and key map still the file's bytes.
type savedIndex struct {
	body       []byte // what the checksum covers
	sum        uint32
	sig        indexSig
	seed       uint64
	n          int // records
	live, nbad int
	msgs       []string
	slotBytes  []byte // n slots of savedSlotSize bytes
	cells, tn  int    // the key map's cells, and the hashes it holds
	hashBytes  []byte // cells hashes of 8 bytes
	cellBytes  []byte // cells slots of 4 bytes
	collide    map[string]int32
	dups       map[int32][]int32
	hashed     map[string]string
}

// parseSavedIndex takes a saved index apart, as writeIndex wrote it; ok
// is false if it is not one, or is cut short or too long. Its checksum
// is not checked.
func parseSavedIndex(data []byte) (x savedIndex, ok bool) {
	if len(data) < len(indexMagic)+4 || !bytes.HasPrefix(data, []byte(indexMagic)) {
		return x, false
	}
	x.body, x.sum = data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	r := &indexReader{b: x.body[len(indexMagic):]}
	x.sig.dev, x.sig.ino = r.u64(), r.u64()
	x.sig.size, x.sig.mtime, x.sig.ctime = int64(r.u64()), int64(r.u64()), int64(r.u64())
	x.sig.bodySize, x.sig.k = int64(r.u64()), int64(r.u64())
	x.seed = r.u64()
	x.n = r.count(20)
	x.live, x.nbad = int(r.u64()), int(r.u64())
	x.msgs = make([]string, r.count(8))
	for i := range x.msgs {
		x.msgs[i] = r.str()
	}
	x.slotBytes = r.take(x.n * savedSlotSize)
	x.cells = r.count(12)
	if r.err != nil || x.cells == 0 || x.cells&(x.cells-1) != 0 {
		return x, false
	}
	x.tn = int(r.u64())
	x.hashBytes, x.cellBytes = r.take(x.cells*8), r.take(x.cells*4)
	x.collide = map[string]int32{}
	for range r.count(16) {
		k := r.str()
		x.collide[k] = int32(r.u64())
	}
	x.dups = map[int32][]int32{}
	for range r.count(16) {
		j := int32(r.u64())
		ds := make([]int32, r.count(8))
		for i := range ds {
			ds[i] = int32(r.u64())
		}
		x.dups[j] = ds
	}
	x.hashed = map[string]string{}
	for range r.count(16) {
		name := r.str()
		x.hashed[name] = r.str()
	}
	return x, r.err == nil && len(r.b) == 0
}

// decodeSavedIndex sets s's index from the saved index data if it is
// valid for sig; it changes nothing otherwise. Nothing it keeps refers to
// data.
//
// The slots and the key map are most of it (at ten million records 200
// and 190 MB): they are decoded by one worker per CPU, a range each,
// while one of them checks the checksum; nothing decoded is kept unless
// the checksum holds.
func (s *Store) decodeSavedIndex(data []byte, sig indexSig) bool {
	x, ok := parseSavedIndex(data)
	if !ok || x.sig != sig || x.n != int(s.sigs[0].Size/int64(s.rs)) {
		return false
	}
	slots := make([]slot, x.n)
	t := &keyTable{}
	t.init(x.cells)
	t.n = x.tn
	var sumOK bool
	var badCell atomic.Bool
	jobs := []func(){func() { sumOK = crc32.Checksum(x.body, castagnoli) == x.sum }}
	per := indexChunk // slots or cells a job
	for lo := 0; lo < x.n; lo += per {
		hi := min(x.n, lo+per)
		jobs = append(jobs, func() { decodeSlots(slots[lo:hi], x.slotBytes[lo*savedSlotSize:hi*savedSlotSize]) })
	}
	for lo := 0; lo < x.cells; lo += per {
		hi := min(x.cells, lo+per)
		jobs = append(jobs, func() {
			// Every slot the table names must be a record of this
			// header.
			if !decodeCells(t, lo, hi, x.hashBytes, x.cellBytes, x.n) {
				badCell.Store(true)
			}
		})
	}
	runJobs(jobs)
	if !sumOK || badCell.Load() {
		return false
	}
	s.initIndex(x.n)
	s.seed, s.slots, s.byHash, s.collide, s.dups, s.hashed, s.live = x.seed, slots, t, x.collide, x.dups, x.hashed, x.live
	s.indexBad, s.indexBadMsgs = x.nbad, x.msgs
	s.indexLoaded = true
	return true
}

// savedSlotSize is a slot in the saved index: start, size, flags.
const savedSlotSize = 8 + 8 + 4

func decodeSlots(slots []slot, b []byte) {
	le := binary.LittleEndian
	for i := range slots {
		e := b[i*savedSlotSize : (i+1)*savedSlotSize]
		slots[i] = slot{start: int64(le.Uint64(e)), size: int64(le.Uint64(e[8:])), flags: slotFlags(le.Uint32(e[16:]))}
	}
}

// decodeCells decodes cells [lo, hi) of t; false if one names no record
// of n.
func decodeCells(t *keyTable, lo, hi int, hashBytes, cellBytes []byte, n int) bool {
	le := binary.LittleEndian
	ok := true
	for c := lo; c < hi; c++ {
		h, i := le.Uint64(hashBytes[8*c:]), int32(le.Uint32(cellBytes[4*c:]))
		t.hs[c], t.slots[c] = h, i
		if h != 0 && (i < 0 || int(i) >= n) {
			ok = false
		}
	}
	return ok
}

// runJobs runs jobs on one goroutine per CPU and returns when all are
// done.
func runJobs(jobs []func()) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(jobs)) {
		wg.Go(func() {
			for j := next.Add(1) - 1; j < int64(len(jobs)); j = next.Add(1) - 1 {
				jobs[j]()
			}
		})
	}
	wg.Wait()
}

// saveIndex writes the saved index of the index just parsed (see
// writeIndex): staged beside the store and renamed into place, in the
// background. A failure only means that the next open parses the
// records again.
func (s *Store) saveIndex(sig indexSig) {
	ver := s.Version()
	dfd, err := unix.Dup(s.dirFd())
	if err != nil {
		return
	}
	s.ds.saves.Add(1)
	go func() {
		defer s.ds.saves.Done()
		defer unix.Close(dfd)
		fd, name, err := engine.CreateStageFile(dfd, IndexName, 0o644)
		if err != nil {
			return
		}
		f := os.NewFile(uintptr(fd), name)
		err = s.writeIndex(f, sig, ver)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = unix.Renameat(dfd, name, dfd, IndexName)
		}
		if err != nil {
			unix.Unlinkat(dfd, name, 0)
		}
	}()
}

// openIndex reads the saved index if it is valid, else parses the
// records; toSave is then the signature the index they make is to be
// saved with (saveIndex), nil if it is not to be. An index is saved only
// of a header.bin last changed more than racyWindow ago: a change after
// it then has a later timestamp, whatever the file system's clock tick.
func (s *Store) openIndex() (toSave *indexSig, err error) {
	sig, sigErr := s.indexSig()
	if sigErr == nil && s.loadSavedIndex(sig) {
		s.reportIndex()
		return nil, nil
	}
	if err := s.loadIndex(); err != nil {
		return nil, err
	}
	if sigErr == nil && !s.readOnly && time.Now().UnixNano()-max(sig.mtime, sig.ctime) > int64(indexRacyWindow) {
		return &sig, nil
	}
	return nil, nil
}

// indexRacyWindow: a header.bin changed this recently may change again
// without its timestamps changing.
var indexRacyWindow = 2 * time.Second
