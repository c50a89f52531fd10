package fuse_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests of what a hostile local user can do through a mount that root
// serves to everybody (allow_other): nothing beyond what their own
// permissions allow on the backing files.

// nobody is the unprivileged user the attacks run as.
const nobody = 65534

// openBase is a temp directory every user can traverse (t.TempDir is
// 0700 and so is its parent), owned by root.
func openBase(t *testing.T) string {
	t.Helper()
	base := t.TempDir()
	for _, d := range []string{base, filepath.Dir(base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return base
}

// asNobody runs a shell script as the unprivileged user, with a time
// limit, and returns its combined output.
func asNobody(t *testing.T, script string) (string, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run as another user")
	}
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Dir = "/"
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("as nobody: %q timed out", script)
	}
	return string(out), err
}

// mountForAll mounts dataset with allow_other and opens the way to the
// mount point for every user.
func mountForAll(t *testing.T, dataset string, opts ...string) *Mount {
	t.Helper()
	m := mount(t, dataset, append([]string{"allow_other"}, opts...)...)
	for _, d := range []string{filepath.Dir(m.Dir), filepath.Dir(filepath.Dir(m.Dir))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// attack runs setup (which must succeed: an attack that could not even
// start proves nothing) and then try, as nobody; it returns try's output.
func attack(t *testing.T, setup []string, try string) string {
	t.Helper()
	out, err := asNobody(t, "set -e; "+strings.Join(setup, "; ")+"; echo SETUP-DONE; "+try)
	if !strings.Contains(out, "SETUP-DONE") {
		t.Fatalf("the attack's setup failed (%v): %s", err, out)
	}
	return out[strings.Index(out, "SETUP-DONE")+len("SETUP-DONE"):]
}

func writeOwned(t *testing.T, p, content string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func mkdirOwned(t *testing.T, p string, uid int) {
	t.Helper()
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// TestSymlinkSwapEscapes: a user who owns a directory inside the
// dataset looks a file (or a directory) of theirs up through the mount,
// then swaps it on the backing side for a symlink to a root-only file.
// The kernel still holds the old node, so the next open goes to the
// daemon with the old name: the daemon must not follow the link. Before
// the fix it opened the link's target as root: the user read the secret
// and wrote over a root-owned file.
func TestSymlinkSwapEscapes(t *testing.T) {
	requireFUSE(t)
	base := openBase(t)
	ds := filepath.Join(base, "ds")
	if err := os.Mkdir(ds, 0o755); err != nil {
		t.Fatal(err)
	}
	u := filepath.Join(ds, "u")
	mkdirOwned(t, u, nobody)
	writeOwned(t, filepath.Join(u, "f"), "mine\n", 0o644, nobody)
	writeOwned(t, filepath.Join(u, "g"), "mine too\n", 0o644, nobody)
	mkdirOwned(t, filepath.Join(u, "sub"), nobody)
	writeOwned(t, filepath.Join(u, "sub", "f"), "mine\n", 0o644, nobody)

	secretDir := filepath.Join(base, "secret")
	if err := os.Mkdir(secretDir, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(secretDir, "f")
	writeOwned(t, secret, "TOPSECRET\n", 0o600, 0)
	rootFile := filepath.Join(base, "rootfile")
	writeOwned(t, rootFile, "root's\n", 0o644, 0)

	m := mountForAll(t, ds)
	mu := m.Path("u")

	// A file swapped for a link to the secret: read.
	out := attack(t, []string{
		"cat " + mu + "/f",
		"rm " + u + "/f",
		"ln -s " + secret + " " + u + "/f",
	}, "cat "+mu+"/f")
	if strings.Contains(out, "TOPSECRET") {
		t.Errorf("the user read a root-only file through a swapped symlink: %q", out)
	}

	// A file swapped for a link to a root-owned file: written.
	out = attack(t, []string{
		"cat " + mu + "/g >/dev/null",
		"rm " + u + "/g",
		"ln -s " + rootFile + " " + u + "/g",
	}, "echo PWNED >> "+mu+"/g; echo PWNED > "+mu+"/g")
	if got := readFile(rootFile); got != "root's\n" {
		t.Errorf("the user wrote a root-owned file through a swapped symlink: now %q (%s)", got, out)
	}

	// A directory swapped for a link to a root-only directory: a name
	// the kernel had cached under it reaches the other directory's file.
	out = attack(t, []string{
		"cat " + mu + "/sub/f >/dev/null",
		"mv " + u + "/sub " + u + "/old",
		"ln -s " + secretDir + " " + u + "/sub",
	}, "cat "+mu+"/sub/f")
	if strings.Contains(out, "TOPSECRET") {
		t.Errorf("the user read a root-only file through a directory swapped for a symlink: %q", out)
	}

	// Links inside the dataset still work as links, followed by the
	// kernel with the caller's own rights.
	if err := os.Symlink("old/f", filepath.Join(u, "link")); err != nil {
		t.Fatal(err)
	}
	if out, err := asNobody(t, "cat "+mu+"/link"); err != nil || out != "mine\n" {
		t.Errorf("a symlink inside the dataset: %q %v", out, err)
	}
	if got := readFile(secret); got != "TOPSECRET\n" {
		t.Errorf("the secret changed: %q", got)
	}
}

// TestSidecarSymlinkNotFollowed: a store directory is the user's, who
// puts a symlink where arrayfs keeps its sidecar, pointing at a
// root-owned file. Mounting and writing a document must never append to
// (or read) that file.
func TestSidecarSymlinkNotFollowed(t *testing.T) {
	requireFUSE(t)
	base := openBase(t)
	ds := filepath.Join(base, "ds")
	if err := os.Mkdir(ds, 0o755); err != nil {
		t.Fatal(err)
	}
	docs := filepath.Join(ds, "docs")
	run(t, "cp", "-r", fixturePath(t, "docarray/store"), docs)
	run(t, "chmod", "-R", "u+w", docs)
	run(t, "chown", "-R", "65534:65534", docs)
	rootFile := filepath.Join(base, "rootfile")
	writeOwned(t, rootFile, "root's\n", 0o644, 0)
	sidecar := filepath.Join(docs, ".arrayfs-docmeta.jsonl")
	os.Remove(sidecar)
	if err := os.Symlink(rootFile, sidecar); err != nil {
		t.Fatal(err)
	}
	os.Lchown(sidecar, nobody, nobody)

	m := mountForAll(t, ds)
	doc := pbDoc("attacker-doc", "hello")
	src := filepath.Join(base, "doc.bin")
	os.WriteFile(src, doc, 0o644)
	if out, err := asNobody(t, "cp "+src+" "+m.Path("docs/attacker-doc")+" && touch "+m.Path("docs/attacker-doc")); err != nil {
		t.Fatalf("writing a document: %v: %s", err, out)
	}
	m.Unmount()
	if got := readFile(rootFile); got != "root's\n" {
		t.Errorf("the root-owned file behind the sidecar symlink was written: %q", got)
	}
	if st, err := os.Lstat(sidecar); err != nil || st.Mode()&os.ModeSymlink != 0 {
		t.Errorf("the sidecar is still a symlink (or gone): %v %v", st.Mode(), err)
	}
}

// TestAllowOtherChecksPermissions: with allow_other alone the kernel
// used to check nothing, and the root daemon did everything asked: any
// user read 0600 files, chmodded root's files and created files in
// root's directories. allow_other now implies default_permissions;
// no_default_permissions turns that off, with a warning in the log.
func TestAllowOtherChecksPermissions(t *testing.T) {
	requireFUSE(t)
	base := openBase(t)
	ds := filepath.Join(base, "ds")
	if err := os.Mkdir(ds, 0o755); err != nil {
		t.Fatal(err)
	}
	writeOwned(t, filepath.Join(ds, "private"), "root only\n", 0o600, 0)
	writeOwned(t, filepath.Join(ds, "public"), "everyone\n", 0o644, 0)
	m := mountForAll(t, ds)

	if out, err := asNobody(t, "cat "+m.Path("public")); err != nil || out != "everyone\n" {
		t.Fatalf("a readable file: %q %v", out, err)
	}
	if out, err := asNobody(t, "cat "+m.Path("private")); err == nil || strings.Contains(out, "root only") {
		t.Errorf("another user read a 0600 file of root's: %q", out)
	}
	if out, err := asNobody(t, "chmod 666 "+m.Path("public")); err == nil {
		t.Errorf("another user chmodded root's file: %q", out)
	}
	if out, err := asNobody(t, "echo x > "+m.Path("new")); err == nil {
		t.Errorf("another user created a file in root's 0755 directory: %q", out)
	}
	if st, err := os.Stat(filepath.Join(ds, "public")); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("public is now %v (%v)", st.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(ds, "new")); err == nil {
		t.Error("the refused create left a file")
	}
	m.Unmount()

	// Explicitly off: the old behaviour, and a warning says so.
	m = mountForAll(t, ds, "no_default_permissions")
	if out, err := asNobody(t, "cat "+m.Path("private")); err != nil || out != "root only\n" {
		t.Errorf("no_default_permissions: the daemon's own rights apply: %q %v", out, err)
	}
	m.Unmount()
	if log := readFile(m.Log); !strings.Contains(log, "no_default_permissions") || !strings.Contains(log, "warning") {
		t.Errorf("no warning in the log about no_default_permissions:\n%s", log)
	}
}
