package docarray

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"

	"github.com/arrayfs/arrayfs/store/engine"

	"golang.org/x/sys/unix"
)

// The sidecar, MetaName in the store directory, keeps what a file
// system needs and docarray has no place for: each document's mtime,
// mode, owner and inode number, the marker's, the store's identity and
// the mtime untouched documents show. docarray ignores it.
//
// It is a log of JSON lines, appended at each write-back and replayed at
// open (the last line about a key wins); it is rewritten compacted when
// the log is much longer than what it describes. A torn last line (a
// crash during an append) is ignored.
//
//	{"store":{"id":"…","key_length":36,"base_mtime":…}}       identity, K, default mtime (ns)
//	{"k":"doc-1","mtime":…,"ctime":…,"atime":…,"mode":420,"uid":0,"gid":0,"ino":…} a document ("ino" only when it moved; "ctime", "atime" when kept)
//	{"k":"doc-1","rm":true}                                    forget a document
//	{"marker":{"mtime":…,"mode":420,"uid":0,"gid":0,"ctime":…}} the .docarray marker
//	{"order":["a","b",…]}                                      an adopted order still being filled
//	{"order":null}                                             no adopted order
//
// Lines about keys the header does not hold (a crash between the two)
// are ignored.

// Meta is what a document shows besides its bytes.
type Meta struct {
	Mtime int64  // nanoseconds since the epoch
	Mode  uint32 // permission bits
	UID   uint32
	GID   uint32
	// Ctime is the last change of anything of it (bytes, name, mode,
	// owner, times), which utimes cannot set: backup tools that trust
	// ctime see a restored document as changed. 0: Mtime (a sidecar from
	// before ctime was kept).
	Ctime int64
	// Atime is the access time utimes set last; reads leave it (as on a
	// noatime mount). 0: Mtime.
	Atime int64
}

// AccessTime is the document's atime.
func (m Meta) AccessTime() int64 {
	if m.Atime == 0 {
		return m.Mtime
	}
	return m.Atime
}

// ChangeTime is the document's ctime.
func (m Meta) ChangeTime() int64 {
	if m.Ctime == 0 {
		return m.Mtime
	}
	return m.Ctime
}

// changed notes a change of the document now.
func (m *Meta) changed() { m.Ctime = now() }

type metaLine struct {
	Store  *storeLine `json:"store,omitempty"`
	Key    *string    `json:"k,omitempty"`
	Mtime  *int64     `json:"mtime,omitempty"`
	Ctime  int64      `json:"ctime,omitempty"`
	Atime  int64      `json:"atime,omitempty"`
	Mode   *uint32    `json:"mode,omitempty"`
	UID    *uint32    `json:"uid,omitempty"`
	GID    *uint32    `json:"gid,omitempty"`
	Ino    uint64     `json:"ino,omitempty"`
	Rm     bool       `json:"rm,omitempty"`
	Marker *metaJSON  `json:"marker,omitempty"`
	// Order is a pointer to a slice so that "order":null (cleared) and
	// no "order" (not mentioned) differ.
	Order *[]string `json:"order,omitempty"`
}

type storeLine struct {
	ID        string `json:"id"`
	KeyLength int    `json:"key_length"`
	BaseMtime int64  `json:"base_mtime"`
}

type metaJSON struct {
	Mtime int64  `json:"mtime"`
	Mode  uint32 `json:"mode"`
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	Ctime int64  `json:"ctime,omitempty"`
	Atime int64  `json:"atime,omitempty"`
}

func (m Meta) json() *metaJSON { return &metaJSON{m.Mtime, m.Mode, m.UID, m.GID, m.Ctime, m.Atime} }

// sidecarState is the replayed content of a sidecar.
type sidecarState struct {
	exists   bool
	unusable string // why a file there is not one arrayfs can use
	id       uint64
	k        int
	base     int64
	docs     map[string]docSidecar
	marker   *Meta
	order    []string
	hasOrder bool
	lines    int
}

type docSidecar struct {
	meta Meta
	ino  uint64
}

// readSidecar replays the sidecar of the store directory dirFd.
func readSidecar(dirFd int) (*sidecarState, error) {
	st := &sidecarState{docs: map[string]docSidecar{}}
	fd, err := unix.Openat(dirFd, MetaName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ENOENT) {
		return st, nil
	}
	if errors.Is(err, syscall.ELOOP) {
		// A symbolic link where arrayfs keeps its own file: never
		// followed (it could point anywhere the daemon may write);
		// the store starts a sidecar of its own over it.
		st.unusable = "is a symbolic link"
		return st, nil
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), MetaName)
	defer f.Close()
	if err := checkRegular(fd); err != nil {
		st.unusable = err.Error()
		return st, nil
	}
	st.exists = true
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			// A line without its newline is a torn append.
			break
		}
		if err != nil {
			return nil, err
		}
		var l metaLine
		if json.Unmarshal(line, &l) != nil {
			continue
		}
		st.lines++
		st.apply(&l)
	}
	return st, nil
}

func (st *sidecarState) apply(l *metaLine) {
	switch {
	case l.Store != nil:
		if id, err := strconv.ParseUint(l.Store.ID, 16, 64); err == nil {
			st.id = id
		}
		st.k, st.base = l.Store.KeyLength, l.Store.BaseMtime
	case l.Key != nil && l.Rm:
		delete(st.docs, *l.Key)
	case l.Key != nil:
		d := st.docs[*l.Key]
		if l.Mtime != nil {
			d.meta.Mtime = *l.Mtime
		}
		if l.Mode != nil {
			d.meta.Mode = *l.Mode
		}
		if l.UID != nil {
			d.meta.UID = *l.UID
		}
		if l.GID != nil {
			d.meta.GID = *l.GID
		}
		d.meta.Ctime, d.meta.Atime = l.Ctime, l.Atime
		d.ino = l.Ino
		st.docs[*l.Key] = d
	case l.Marker != nil:
		st.marker = &Meta{Mtime: l.Marker.Mtime, Mode: l.Marker.Mode, UID: l.Marker.UID, GID: l.Marker.GID, Ctime: l.Marker.Ctime, Atime: l.Marker.Atime}
	case l.Order != nil:
		st.order, st.hasOrder = *l.Order, true
	}
}

func newStoreID() uint64 {
	for {
		if id := rand.Uint64(); id != 0 {
			return id
		}
	}
}

func encodeStoreLine(id uint64, k int, base int64) []byte {
	return jsonLine(metaLine{Store: &storeLine{ID: fmt.Sprintf("%016x", id), KeyLength: k, BaseMtime: base}})
}

func encodeDocLine(key string, m Meta, ino uint64) []byte {
	return jsonLine(metaLine{Key: &key, Mtime: &m.Mtime, Ctime: m.Ctime, Atime: m.Atime, Mode: &m.Mode, UID: &m.UID, GID: &m.GID, Ino: ino})
}

func encodeRmLine(key string) []byte { return jsonLine(metaLine{Key: &key, Rm: true}) }

func encodeMarkerLine(m Meta) []byte { return jsonLine(metaLine{Marker: m.json()}) }

func encodeOrderLine(order []string) []byte {
	if order == nil {
		return []byte("{\"order\":null}\n")
	}
	return jsonLine(metaLine{Order: &order})
}

func jsonLine(l metaLine) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	// Every field marshals; Encode adds the newline.
	_ = enc.Encode(l)
	return b.Bytes()
}

// writeFileAt writes a new file name in dirFd through a staged file:
// written, fsynced, renamed over name, directory fsynced.
//
// The directory keeps its mtime: these are arrayfs's own files, and a
// directory whose mtime moved would make rsync think it changed.
func writeFileAt(dirFd int, name string, data []byte, perm uint32) error {
	var dst unix.Stat_t
	if err := unix.Fstat(dirFd, &dst); err == nil {
		defer unix.UtimesNanoAt(dirFd, "", []unix.Timespec{dst.Atim, dst.Mtim}, unix.AT_EMPTY_PATH)
	}
	fd, tmp, err := engine.CreateStageFile(dirFd, name, perm)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), tmp)
	err = f.Chmod(os.FileMode(perm & 0o777))
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	// Renamed while still open: the flock keeps it ours until then.
	if err == nil {
		err = unix.Renameat(dirFd, tmp, dirFd, name)
	}
	if err != nil {
		unix.Unlinkat(dirFd, tmp, 0)
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return unix.Fsync(dirFd)
}

// checkRegular refuses a descriptor that is not a regular file (a FIFO
// or device put where arrayfs keeps a file of its own).
func checkRegular(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("not a regular file")
	}
	return nil
}
