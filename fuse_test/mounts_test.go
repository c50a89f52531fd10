package fuse_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOneWriterPerDataset: a second writable mount of a dataset, of
// anything inside it or of a directory holding it used to be accepted;
// a listing through it removed the first mount's staged files as a
// crash's leftovers, and the first's array replacement and dirdb rewrite
// were lost. Now it is refused with a message naming the first mount;
// read-only mounts may serve the dataset beside its writer, and a staged
// file is removed only when no process owns it.
func TestOneWriterPerDataset(t *testing.T) {
	requireFUSE(t)
	top := t.TempDir()
	ds := filepath.Join(top, "ds")
	run(t, "cp", "-r", fixturePath(t, "daf/arrays"), ds)
	run(t, "cp", "-r", fixturePath(t, "dirdb/db"), filepath.Join(ds, "db"))
	run(t, "cp", "-r", fixturePath(t, "docarray/store"), filepath.Join(ds, "docs"))
	run(t, "chmod", "-R", "u+w", ds)
	m1 := mount(t, ds)

	// Writes under way through the first mount: an array replacement
	// (O_TRUNC, half written) and a dirdb rewrite, both staged.
	arr := "cell#flag.array"
	size := len(mustRead(t, m1.Backing(arr)))
	fa, err := os.OpenFile(m1.Path(arr), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	if _, err := fa.Write(bytes.Repeat([]byte{1}, size/2)); err != nil {
		t.Fatal(err)
	}
	fe, err := os.OpenFile(m1.Path("db/set-001.pickle"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fe.Close()
	if _, err := fe.Write([]byte("\x80\x04K\x07.")); err != nil {
		t.Fatal(err)
	}
	stages := stageNames(t, ds)
	if len(stages) == 0 {
		t.Fatal("no staged files while two writes are under way")
	}

	// A second writable mount: of the dataset, of a store and of a
	// database inside it, of the directory holding it.
	other := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(other, 0o755)
	// Should a second mount happen after all (even one whose daemon the
	// time limit killed), it must not outlive the test.
	t.Cleanup(func() { syscall.Unmount(other, syscall.MNT_DETACH) })
	for _, target := range []string{ds, filepath.Join(ds, "docs"), filepath.Join(ds, "db"), top} {
		code, out := exitCode(t, "mount", target, other)
		if code != 1 || !strings.Contains(out, m1.Dir) || !strings.Contains(out, "-o ro") {
			t.Errorf("second writable mount of %s: exit %d, %q; want a refusal naming %s", target, code, out, m1.Dir)
		}
		if isMounted(other) {
			syscall.Unmount(other, syscall.MNT_DETACH)
			t.Fatalf("%s got mounted a second time", target)
		}
	}
	// An offline prune of a store of the mounted dataset: refused too.
	if code, out := exitCode(t, "prune", filepath.Join(ds, "docs")); code != 1 || !strings.Contains(out, m1.Dir) {
		t.Errorf("offline prune of a mounted store: exit %d, %q", code, out)
	}

	// Read-only mounts serve it beside the writer, and listing through
	// them (or checking it) leaves the writer's staged files alone.
	m2 := mount(t, ds, "ro")
	readDir(t, m2.Dir)
	readDir(t, m2.Path("db"))
	if code, out := exitCode(t, "check", ds); strings.Contains(out, "interrupted") {
		t.Errorf("check reports the writer's staged files as leftovers (exit %d):\n%s", code, out)
	}
	if got := stageNames(t, ds); strings.Join(got, ",") != strings.Join(stages, ",") {
		t.Errorf("staged files changed under the writer: %v, were %v", got, stages)
	}

	// The writer finishes: both writes land.
	if _, err := fa.Write(bytes.Repeat([]byte{1}, size-size/2)); err != nil {
		t.Fatal(err)
	}
	if err := fa.Close(); err != nil {
		t.Fatalf("close of the replacement: %v", err)
	}
	if err := fe.Close(); err != nil {
		t.Fatalf("close of the dirdb rewrite: %v", err)
	}
	m2.Unmount()
	m1.Unmount()
	if got := mustRead(t, filepath.Join(ds, arr)); !bytes.Equal(got, bytes.Repeat([]byte{1}, size)) {
		t.Errorf("the replacement did not land: %q...", got[:min(8, len(got))])
	}
	if got := readFile(filepath.Join(ds, "db/set-001.pickle")); got != "\x80\x04K\x07." {
		t.Errorf("the dirdb rewrite did not land: %q", got)
	}

	// Once the writer is gone, the dataset can be mounted writable.
	m3 := mount(t, ds)
	m3.Unmount()
}

// TestStagedFileOwnedByAnotherProcessSurvives: a listing through a mount
// removes staged files a crash left (nobody holds their flock), never one
// another process is writing.
func TestStagedFileOwnedByAnotherProcessSurvives(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	stale := filepath.Join(ds, ".arrayfs-stage.a.array.00000001")
	owned := filepath.Join(ds, ".arrayfs-stage.b.array.00000002")
	os.WriteFile(stale, []byte("left by a crash"), 0o600)
	f, err := os.OpenFile(owned, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	m := mount(t, ds)
	readDir(t, m.Dir)
	if _, err := os.Stat(stale); err == nil {
		t.Error("the staged file a crash left is still there after a listing")
	}
	if _, err := os.Stat(owned); err != nil {
		t.Errorf("a staged file another process owns was removed: %v", err)
	}
	m.Unmount()
}

func stageNames(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(e.Name(), ".arrayfs-stage.") {
			out = append(out, p)
		}
		return nil
	})
	return out
}
