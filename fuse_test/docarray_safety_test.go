package fuse_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDocChangesSurviveFailedWriteBack: on a file system that is full,
// write-backs fail (ENOSPC); rm and mv acknowledged meanwhile used to be
// undone, because arrayfs took its own partial append (cut off again)
// for a change behind its back and reloaded the store without them.
// They stay, and reach the files once there is room.
func TestDocChangesSurviveFailedWriteBack(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	small := t.TempDir()
	if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mounting a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })
	ds := filepath.Join(small, "ds")
	var docs []storeDoc
	for i := 0; i < 10; i++ {
		k := fmt.Sprintf("d%d", i)
		docs = append(docs, storeDoc{k, pbDoc(k, strings.Repeat("x", 100))})
	}
	writeDocStore(t, filepath.Join(ds, "s"), 36, docs)
	m := mount(t, ds, "writeback=0")
	readDir(t, m.Path("s"))
	// Fill the file system, leaving less room than the next document.
	filler := filepath.Join(small, "filler")
	f, _ := os.Create(filler)
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	big := pbDoc("big", strings.Repeat("b", 64<<10))
	if err := os.WriteFile(m.Path("s/big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syncFile(m.Path("s/big")); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fsync on a full file system: %v, want ENOSPC", err)
	}
	// Changes acknowledged while write-backs fail...
	if err := os.Remove(m.Path("s/d3")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.Path("s/d1"), m.Path("s/d9new")); err != nil {
		t.Fatal(err)
	}
	syncFile(m.Path("s/big")) // fails again, partial append and all
	time.Sleep(200 * time.Millisecond)
	names := strings.Join(readdirNames(t, m.Path("s")), ",")
	if strings.Contains(names, "d3,") || strings.Contains(names, "d1,") || !strings.Contains(names, "d9new") {
		t.Errorf("while the file system is full: %s", names)
	}
	// ...reach the files once there is room again.
	os.Remove(filler)
	if err := syncFile(m.Path("s/big")); err != nil {
		t.Fatalf("fsync with room again: %v", err)
	}
	m.Unmount()
	st := readDocStore(t, filepath.Join(ds, "s"), 36)
	got := map[string][]byte{}
	for _, d := range st.Docs {
		got[d.Key] = d.Data
	}
	if _, ok := got["d3"]; ok {
		t.Error("the deletion of d3 was undone")
	}
	if _, ok := got["d1"]; ok {
		t.Error("the rename of d1 was undone")
	}
	if !bytes.Equal(got["d9new"], docs[1].Data) || !bytes.Equal(got["big"], big) {
		t.Errorf("d9new or big missing: %v", st.keys())
	}
	if !st.TailOK {
		t.Error("tail")
	}
	if log := readFile(m.Log); !strings.Contains(log, "no space left on device") {
		t.Errorf("the log does not say why write-backs failed:\n%s", log)
	}
}

// syncFile fsyncs a file (through a descriptor open for reading, as
// sync(1) FILE does).
func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// TestDocCrashLeftoversRepaired: what a crash in the middle of an append
// leaves (bytes past the last record in body.bin, a torn record at the
// end of header.bin) made the store unsafe for the original, whose next
// append lands after the last record; a remount and a clean unmount left
// it so. The first write-back after mounting repairs it, with no other
// change made.
func TestDocCrashLeftoversRepaired(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	dir := filepath.Join(ds, "s")
	pyOriginal(t, origPrelude+`
dam = DocumentArrayMemmap(sys.argv[1])
for i in range(5):
    dam.append(Document(id='d%d' % i, text='t%d' % i))
dam.flush()
`, dir)
	appendTo := func(name string, data []byte) {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(data)
		f.Close()
	}
	appendTo("body.bin", []byte("half of a document the crash cut off"))
	appendTo("header.bin", make([]byte, 84)) // half a record
	m := mount(t, ds)
	if got := readdirNames(t, m.Path("s")); len(got) != 6 {
		t.Errorf("served %v", got)
	}
	m.Unmount()
	if h := mustRead(t, filepath.Join(dir, "header.bin")); len(h)%168 != 0 {
		t.Errorf("header.bin still ends in a torn record (%d bytes)", len(h))
	}
	if st := readDocStore(t, dir, 36); !st.TailOK || len(st.Docs) != 5 {
		t.Errorf("after a clean unmount: %d documents, last record ends at the end of body.bin: %v", len(st.Docs), st.TailOK)
	}
	// The original opens it and appends safely.
	out := pyOriginal(t, origPrelude+`
dam = DocumentArrayMemmap(sys.argv[1])
dam.append(Document(id='after', text='after the crash'))
dam.flush()
del dam
print(json.dumps(dump(sys.argv[1])))
`, dir)
	if want := `[["d0", "t0"], ["d1", "t1"], ["d2", "t2"], ["d3", "t3"], ["d4", "t4"], ["after", "after the crash"]]`; strings.TrimSpace(out) != want {
		t.Errorf("the original reads %s, want %s", out, want)
	}
}

// TestDocBadRecordsServed: a store with one bad record among a few good
// ones, or ending in a torn record (the original killed in the middle of
// an append), used to be shown as plain files: key-length detection gave
// up. The good records are served and check names the bad one.
func TestDocBadRecordsServed(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	var docs []storeDoc
	for i := 0; i < 4; i++ {
		k := fmt.Sprintf("d%d", i)
		docs = append(docs, storeDoc{k, pbDoc(k, "x")})
	}
	writeDocStore(t, filepath.Join(ds, "onebad"), 36, docs)
	h := mustRead(t, filepath.Join(ds, "onebad", "header.bin"))
	binary.LittleEndian.PutUint64(h[1*168+144:], 1<<40) // record 1 points far past body.bin
	os.WriteFile(filepath.Join(ds, "onebad", "header.bin"), h, 0o644)
	writeDocStore(t, filepath.Join(ds, "torn"), 36, docs)
	f, _ := os.OpenFile(filepath.Join(ds, "torn", "header.bin"), os.O_WRONLY|os.O_APPEND, 0)
	f.Write(h[2*168 : 2*168+100])
	f.Close()

	out, err := runTimeout(time.Minute, arrayfsBin, "check", ds)
	if err == nil || !strings.Contains(out, "onebad/header.bin: record 1 (key \"d1\"): past the end of body.bin") ||
		!strings.Contains(out, "torn/header.bin: 772 bytes is not a whole number of 168-byte records") || strings.Contains(out, "no key length fits") {
		t.Errorf("check:\n%s", out)
	}
	m := mount(t, ds, "ro")
	if got := strings.Join(readdirNames(t, m.Path("onebad")), ","); got != "d0,d2,d3,.docarray" {
		t.Errorf("onebad serves %s", got)
	}
	if got := strings.Join(readdirNames(t, m.Path("torn")), ","); got != "d0,d1,d2,d3,.docarray" {
		t.Errorf("torn serves %s", got)
	}
	if got := mustRead(t, m.Path("torn/d3")); !bytes.Equal(got, docs[3].Data) {
		t.Errorf("torn/d3: %q", got)
	}
	m.Unmount()
}

// TestDocKeyThatIsTheMarkersName: a document whose key is ".docarray"
// (written by the original) collided with the marker: listed twice,
// unreadable, and cp -r or rsync of the store failed or dropped it. It is
// named %2Edocarray, and survives a copy and a restore.
func TestDocKeyThatIsTheMarkersName(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	pyOriginal(t, origPrelude+`
dam = DocumentArrayMemmap(sys.argv[1])
for k in ['a', '.docarray', '.arrayfs-docmeta.jsonl', 'b']:
    dam.append(Document(id=k, text='text of ' + k))
dam.flush()
`, filepath.Join(ds, "s"))
	os.Mkdir(filepath.Join(ds, "restored"), 0o755)
	m := mount(t, ds)
	if got := strings.Join(readdirNames(t, m.Path("s")), ","); got != "a,%2Edocarray,%2Earrayfs-docmeta.jsonl,b,.docarray" {
		t.Errorf("listing: %s", got)
	}
	if got := mustRead(t, m.Path("s/%2Edocarray")); !bytes.Contains(got, []byte("text of .docarray")) {
		t.Errorf("%%2Edocarray: %q", got)
	}
	if got := readFile(m.Path("s/.docarray")); !strings.Contains(got, `- ".docarray"`) {
		t.Errorf("the marker lists the key:\n%s", got)
	}
	backup := filepath.Join(t.TempDir(), "backup")
	run(t, "cp", "-r", m.Path("s"), backup)
	run(t, "rsync", "-a", backup+"/", m.Path("restored")+"/")
	m.Unmount()
	out := pyOriginal(t, origPrelude+`
print(json.dumps(dump(sys.argv[1])))
`, filepath.Join(ds, "restored"))
	if want := `[["a", "text of a"], [".docarray", "text of .docarray"], [".arrayfs-docmeta.jsonl", "text of .arrayfs-docmeta.jsonl"], ["b", "text of b"]]`; strings.TrimSpace(out) != want {
		t.Errorf("restored store, read by the original: %s\nwant %s", out, want)
	}
}

// TestDocCloseWritesBack: the close of a document (and rm, mv) reaches
// header.bin and body.bin at once, without waiting for the timer: the
// original, reading the store beside the mount, sees it within moments.
// Before, a document copied in and closed was in the files only at the
// next timer tick.
func TestDocCloseWritesBack(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	writeDocStore(t, filepath.Join(ds, "s"), 36, []storeDoc{{"a", pbDoc("a", "a")}, {"b", pbDoc("b", "b")}})
	m := mount(t, ds, "writeback=1h")
	keys := func() string {
		return strings.TrimSpace(pyOriginal(t, origPrelude+`
dam = DocumentArrayMemmap(sys.argv[1])
print(','.join(dam._header_keys))
`, filepath.Join(ds, "s")))
	}
	if err := os.WriteFile(m.Path("s/c"), pbDoc("c", "c"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := keys(); got != "a,b,c" {
		t.Errorf("after a document was copied in and closed, the original reads %s", got)
	}
	os.Remove(m.Path("s/a"))
	os.Rename(m.Path("s/b"), m.Path("s/bb"))
	time.Sleep(300 * time.Millisecond)
	if got := keys(); got != "bb,c" {
		t.Errorf("after rm and mv, the original reads %s", got)
	}
	m.Unmount()
}

// TestErrnosOfUsersMistakesAndBrokenFiles: a daf array truncated behind
// the mount while a handle of it is open is the plain file it now is for
// the next open (it was EIO: the kernel refuses a passthrough open of an
// inode open through the page cache); fsync through a descriptor open
// for reading is 0, as on ext4 (sync FILE).
func TestErrnosOfUsersMistakesAndBrokenFiles(t *testing.T) {
	requireFUSE(t)
	ds := fixture(t, "daf/arrays")
	writeDocStore(t, filepath.Join(ds, "s"), 36, []storeDoc{{"a", pbDoc("a", "a")}})
	m := mount(t, ds)
	arr := "cell#i64.array"
	f, err := os.Open(m.Path(arr))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Read(make([]byte, 100))
	if err := os.Truncate(m.Backing(arr), 4000); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // the kernel's attributes expire
	if got, err := os.ReadFile(m.Path(arr)); err != nil || len(got) != 4000 {
		t.Errorf("an array truncated behind the mount, opened again: %d bytes, %v", len(got), err)
	}
	for _, p := range []string{"s/a", "s/.docarray", arr, "cell#i64.yaml"} {
		if err := syncFile(m.Path(p)); err != nil {
			t.Errorf("fsync of %s open for reading: %v", p, err)
		}
	}
	f.Close()
	m.Unmount()
	if log := readFile(m.Log); !strings.Contains(log, "cell#i64.array: size mismatch") {
		t.Errorf("no log line about the truncated array:\n%s", log)
	}
}

// TestDocUnsafeTailRepaired: the fixture store, as the original left it
// after an update, holds doc-002's current bytes past the end of its
// last record, where the original's next append goes: that append
// overwrites doc-002. A mount, even one that only reads, now repairs such
// a store (the last document appended again), so the append is safe; a
// read-only mount changes nothing.
func TestDocUnsafeTailRepaired(t *testing.T) {
	requireFUSE(t)
	appendDoc := func(dir string) {
		pyOriginal(t, origPrelude+`
dam = DocumentArrayMemmap(sys.argv[1])
dam.append(Document(id='appended', text='x' * 400))
dam.flush()
`, dir)
	}
	intact := func(dir string, docs []storeDoc) []string {
		got := map[string][]byte{}
		for _, d := range readDocStore(t, dir, 36).Docs {
			got[d.Key] = d.Data
		}
		var broken []string
		for _, d := range docs {
			if !bytes.Equal(got[d.Key], d.Data) {
				broken = append(broken, d.Key)
			}
		}
		return broken
	}

	// As the original left it, its own next append breaks a document.
	plain, docs := fixtureStore(t)
	appendDoc(filepath.Join(plain, "store"))
	if broken := intact(filepath.Join(plain, "store"), docs); len(broken) == 0 {
		t.Fatal("the fixture no longer shows the hazard: the original's append broke nothing")
	}

	// A read-only mount writes nothing.
	root, docs := fixtureStore(t)
	dir := filepath.Join(root, "store")
	h0, b0 := mustRead(t, filepath.Join(dir, "header.bin")), mustRead(t, filepath.Join(dir, "body.bin"))
	m := mount(t, root, "ro")
	docsThroughMount(t, m.Path("store"))
	m.Unmount()
	if !bytes.Equal(h0, mustRead(t, filepath.Join(dir, "header.bin"))) || !bytes.Equal(b0, mustRead(t, filepath.Join(dir, "body.bin"))) {
		t.Error("a read-only mount changed header.bin or body.bin")
	}

	// A mount that only reads leaves it safe, documents unchanged.
	m = mount(t, root)
	docsThroughMount(t, m.Path("store"))
	m.Unmount()
	st := readDocStore(t, dir, 36)
	sameDocs(t, "after the mount", st.Docs, docs)
	if !st.TailOK || !bytes.HasPrefix(mustRead(t, filepath.Join(dir, "body.bin")), b0) {
		t.Errorf("after the mount: last record ends at the end of body.bin: %v; old bytes kept in place", st.TailOK)
	}
	if log := readFile(m.Log); !strings.Contains(log, "store: repaired so that docarray can reopen it and append safely") || !strings.Contains(log, "docarray's next append would overwrite it") {
		t.Errorf("the repair is not logged:\n%s", log)
	}
	appendDoc(dir)
	if broken := intact(dir, docs); len(broken) != 0 {
		t.Errorf("the original's append after the mount broke %v", broken)
	}
}

// TestUnreadableStoreIsEACCES: a store whose body.bin the daemon may
// not read (here: root without CAP_DAC_OVERRIDE, as any user's daemon
// is for other users' files) showed header.bin and body.bin as plain
// files, so its documents vanished (ENOENT) with no reason given. Its
// directory now answers EACCES, and the log says which store and why.
func TestUnreadableStoreIsEACCES(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop a capability")
	}
	base := t.TempDir()
	ds, mnt, log := filepath.Join(base, "ds"), filepath.Join(base, "mnt"), filepath.Join(base, "log")
	writeDocStore(t, filepath.Join(ds, "s"), 36, []storeDoc{{"a", pbDoc("a", "a")}})
	body := filepath.Join(ds, "s", "body.bin")
	os.Chmod(body, 0o600)
	os.Chown(body, nobody, nobody)
	os.Mkdir(mnt, 0o755)
	out, err := runTimeout(time.Minute, "setpriv", "--bounding-set=-dac_override,-dac_read_search",
		arrayfsBin, "mount", "--background", "--log", log, ds, mnt)
	if err != nil {
		t.Fatalf("mount without CAP_DAC_OVERRIDE: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := runTimeout(time.Minute, arrayfsBin, "umount", mnt); err != nil {
			t.Errorf("umount: %v %s", err, out)
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	_, err = os.ReadDir(filepath.Join(mnt, "s"))
	_, err2 := os.ReadFile(filepath.Join(mnt, "s", "a"))
	if !errors.Is(err, syscall.EACCES) || !errors.Is(err2, syscall.EACCES) {
		t.Errorf("ls and cat of a store the daemon may not read: %v, %v; want EACCES", err, err2)
	}
	if got := readFile(log); !strings.Contains(got, "s: cannot be read: ") || !strings.Contains(got, "permission denied") {
		t.Errorf("the log does not say why:\n%s", got)
	}
}
