package fuse_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's first command: arrayfs demo MOUNTPOINT mounts a demo
// dataset in the foreground, prints commands to try, and Ctrl-C ends it.
func TestDemo(t *testing.T) {
	requireFUSE(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	var out bytes.Buffer
	cmd := exec.Command(arrayfsBin, "demo", mnt)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir()) // where the demo dataset goes
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if isMounted(mnt) {
			cmd.Process.Kill()
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	deadline := time.Now().Add(time.Minute)
	for !isMounted(mnt) {
		if time.Now().After(deadline) {
			t.Fatalf("demo did not mount:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	names := strings.Join(readDir(t, mnt), " ")
	for _, want := range []string{"cell,gene#UMIs.array", "cell,gene#UMIs.yaml", "cell,gene#sparse.indptr", "cell#age.array", "__daf__.yaml"} {
		if !strings.Contains(names, want) {
			t.Errorf("demo dataset lacks %s: %s", want, names)
		}
	}
	got := dafHashes(t, mnt)
	if len(got) < 4 {
		t.Errorf("numpy reads %d demo arrays, want at least 4: %v", len(got), got)
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo exit after Ctrl-C: %v\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("demo did not exit after SIGINT:\n%s", out.String())
	}
	if isMounted(mnt) {
		t.Fatal("demo left its mount")
	}
	if !strings.Contains(out.String(), "Try, in another terminal") {
		t.Errorf("demo printed no commands to try:\n%s", out.String())
	}
}
