package fuse_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// exitCode runs arrayfs and returns its exit status and output.
func exitCode(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := runTimeout(time.Minute, arrayfsBin, args...)
	if err == nil {
		return 0, out
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out
	}
	t.Fatalf("arrayfs %v: %v", args, err)
	return 0, ""
}

// Every mistake is one clear line on stderr and a non-zero exit.
func TestCLIErrors(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	ds := fixture(t, "daf/arrays")
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"mount", filepath.Join(dir, "nope"), mnt}, 1, "dataset " + filepath.Join(dir, "nope") + ": no such directory"},
		{[]string{"mount", ds, filepath.Join(dir, "nomnt")}, 1, "mount point " + filepath.Join(dir, "nomnt") + ": no such directory"},
		{[]string{"mount", "-o", "pool_size=abc", ds, mnt}, 2, `mount option "pool_size=abc": not a positive integer`},
		{[]string{"mount", "-o", "turbo", ds, mnt}, 2, `mount option "turbo": unknown option`},
		{[]string{"mount", "--background", "--log", "/proc/no/such/log", ds, mnt}, 1, "log file /proc/no/such/log: no such file or directory"},
		{[]string{"mount", ds, ds}, 1, "is the dataset directory itself"},
		{[]string{"mount", ds, filepath.Join(ds, "inner")}, 1, "is inside the dataset"},
		{[]string{"mount", ds, filepath.Join(dir, "link-into-ds")}, 1, "is inside the dataset"},
		{[]string{"mount", ds}, 2, "needs DATASET and MOUNTPOINT"},
		{[]string{"mount", "--frobnicate", ds, mnt}, 2, "unknown flag --frobnicate"},
		{[]string{"umount", mnt}, 1, "not a mount point"},
		{[]string{"check", filepath.Join(dir, "nope")}, 1, "no such directory"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"help", "mount"}, 0, "usage: arrayfs mount"},
		{[]string{"version"}, 0, "arrayfs "},
	}
	os.Mkdir(filepath.Join(ds, "inner"), 0o755)
	os.Symlink(filepath.Join(ds, "inner"), filepath.Join(dir, "link-into-ds"))
	for _, c := range cases {
		code, out := exitCode(t, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("arrayfs %v: exit %d, output %q; want exit %d and %q", c.args, code, out, c.code, c.want)
		}
		if c.code == 1 && strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("arrayfs %v: error is not one line: %q", c.args, out)
		}
	}

	// A mount point in use.
	m := mount(t, ds)
	code, out := exitCode(t, "mount", ds, m.Dir)
	if code != 1 || !strings.Contains(out, "in use") {
		t.Errorf("mount on a mount point in use: exit %d %q", code, out)
	}
	// umount of a busy mount fails and leaves it mounted.
	f, err := os.Open(m.Path("cell#i64.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	code, out = exitCode(t, "umount", m.Dir)
	f.Close()
	if code != 1 || !strings.Contains(out, "busy") || !isMounted(m.Dir) {
		t.Errorf("umount of a busy mount: exit %d %q, mounted %v", code, out, isMounted(m.Dir))
	}
	m.Unmount()

	// No /dev/fuse: in a private mount namespace with an empty /dev.
	out, err = runTimeout(time.Minute, "unshare", "-m", "sh", "-c",
		"mount -t tmpfs none /dev && exec "+arrayfsBin+" mount "+ds+" "+mnt)
	if err == nil || !strings.Contains(out, "/dev/fuse is missing") {
		t.Errorf("mount without /dev/fuse: %v %q", err, out)
	}
}

// A user who may not mount is told so in one line.
func TestCLINotPermitted(t *testing.T) {
	requireFUSE(t)
	if os.Getuid() != 0 {
		t.Skip("needs root to run a command as another user")
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // the test's temp root, 0700
	os.Chmod(dir, 0o755)
	ds := fixture(t, "daf/arrays")
	os.Chmod(filepath.Dir(ds), 0o755)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755) // owned by root: nobody may not mount on it
	bin := filepath.Join(dir, "arrayfs")
	run(t, "cp", arrayfsBin, bin)
	os.Chmod(bin, 0o755)
	out, err := runTimeout(time.Minute, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "mount", ds, mnt)
	if err == nil {
		runTimeout(time.Minute, "umount", mnt)
		t.Fatalf("nobody mounted on root's directory: %s", out)
	}
	if !strings.Contains(out, "not permitted to mount at "+mnt) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("not permitted: %q", out)
	}
}

// Options that go to the kernel reach it; debug logs every request.
func TestMountOptionsReachTheMount(t *testing.T) {
	ds := fixture(t, "daf/arrays")
	m := mount(t, ds, "allow_other,default_permissions,ro", "debug")
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var line string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, " "+m.Dir+" ") {
			line = l
		}
	}
	for _, want := range []string{" ro,", "allow_other", "default_permissions", "fuse.arrayfs"} {
		if !strings.Contains(line, want) {
			t.Errorf("mountinfo lacks %q: %s", want, line)
		}
	}
	mustRead(t, m.Path("cell#i64.yaml"))
	m.Unmount()
	if log := readFile(m.Log); !strings.Contains(log, "LOOKUP") || !strings.Contains(log, "cell#i64.yaml") {
		t.Errorf("debug did not log FUSE requests:\n%.2000s", log)
	}
}
