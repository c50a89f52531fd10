package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var umountCommand = &command{
	usage: "arrayfs umount MOUNTPOINT",
	help: `
Writes back everything arrayfs holds for the mount, unmounts it, and waits
until the arrayfs process serving it has finished and exited. Fails (and
leaves the mount alone) when the mount is busy or the write-back fails.
`,
	run: runUmount,
}

// umountTimeout bounds each wait on the serving process, so that a hung
// one cannot hang its caller forever.
const umountTimeout = 5 * time.Minute

func runUmount(args []string) error {
	if len(args) != 1 {
		return usagef("needs MOUNTPOINT")
	}
	mountpoint, err := filepath.Abs(args[0])
	if err != nil {
		return err
	}
	mi, ok := findMount(mountpoint)
	if !ok {
		return fmt.Errorf("%s: not a mount point", args[0])
	}
	if mi.fstype != "fuse.arrayfs" {
		return fmt.Errorf("%s: not an arrayfs mount (it is %s)", args[0], mi.fstype)
	}
	pid, err := servingPID(mountpoint)
	if err != nil {
		return err
	}
	// Write back while the mount is still there to report failures.
	if err := withTimeout(umountTimeout, func() error { return syncMount(mountpoint) }); err != nil {
		return fmt.Errorf("%s: write-back failed, not unmounting: %v", args[0], err)
	}
	if err := unmountWithStores(mountpoint); err != nil {
		return err
	}
	return waitExit(pid, umountTimeout)
}

// storeConnType is the mount type of a store connection (mount option
// store_connections): mounted by the daemon over a store directory.
const storeConnType = "fuse.arrayfs-store"

// unmountWithStores unmounts the store connections under mountpoint,
// then the mount. A store first used in between gets a connection of
// its own, which makes the mount busy: a few rounds let that settle.
func unmountWithStores(mountpoint string) error {
	for round := 0; ; round++ {
		subs := storeConnsUnder(mountpoint)
		for _, mi := range subs {
			if err := unmount(mi.mountpoint); err != nil {
				return err
			}
		}
		err := unmount(mountpoint)
		if err == nil || round == 3 || len(storeConnsUnder(mountpoint)) == 0 {
			return err
		}
	}
}

// storeConnsUnder lists the store connections mounted under mountpoint,
// deepest first.
func storeConnsUnder(mountpoint string) []mountInfo {
	var out []mountInfo
	for _, mi := range mounts() {
		if mi.fstype == storeConnType && strings.HasPrefix(mi.mountpoint, strings.TrimSuffix(mountpoint, "/")+"/") {
			out = append(out, mi)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i].mountpoint) > len(out[j].mountpoint) })
	return out
}

// servingPID reads the pid of the process serving the mount from its
// /.arrayfs/stats.json.
func servingPID(mountpoint string) (int, error) {
	var stats struct {
		PID int `json:"pid"`
	}
	err := withTimeout(30*time.Second, func() error {
		data, err := os.ReadFile(filepath.Join(mountpoint, ".arrayfs", "stats.json"))
		if err != nil {
			return err
		}
		return json.Unmarshal(data, &stats)
	})
	if err != nil || stats.PID <= 0 {
		return 0, fmt.Errorf("%s: cannot find the arrayfs process serving it: %v", mountpoint, err)
	}
	return stats.PID, nil
}

// syncMount asks arrayfs to write back everything: fsync of the root
// directory does that.
func syncMount(mountpoint string) error {
	f, err := os.Open(mountpoint)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func unmount(mountpoint string) error {
	err := syscall.Unmount(mountpoint, 0)
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("%s: busy (a process has a file open or its working directory there); nothing was unmounted", mountpoint)
	}
	if errors.Is(err, syscall.EPERM) {
		out, ferr := exec.Command("fusermount3", "-u", mountpoint).CombinedOutput()
		if ferr == nil {
			return nil
		}
		return fmt.Errorf("%s: fusermount3 -u: %s", mountpoint, strings.TrimSpace(string(out)))
	}
	return fmt.Errorf("%s: unmount: %v", mountpoint, err)
}

// waitExit waits for a process that is not our child to exit.
func waitExit(pid int, timeout time.Duration) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return pollExit(pid, timeout)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("arrayfs (pid %d) is still writing back after %v", pid, timeout)
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}

func pollExit(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("arrayfs (pid %d) is still writing back after %v", pid, timeout)
}

func withTimeout(d time.Duration, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("no answer after %v", d)
	}
}

type mountInfo struct {
	mountpoint string
	fstype     string
	source     string
}

// findMount looks dir up in /proc/self/mountinfo.
func findMount(dir string) (mountInfo, bool) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return mountInfo{}, false
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	var found mountInfo
	ok := false
	for _, mi := range mounts() {
		if mi.mountpoint == abs {
			// The last mount on a path is the visible one.
			found, ok = mi, true
		}
	}
	return found, ok
}

// mounts lists /proc/self/mountinfo.
func mounts() []mountInfo {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ... - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		sep := -1
		for i, fld := range fields {
			if fld == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fields) {
			continue
		}
		out = append(out, mountInfo{mountpoint: unescapeMount(fields[4]), fstype: fields[sep+1], source: unescapeMount(fields[sep+2])})
	}
	return out
}

// arrayfsMountsOf lists the arrayfs mounts of this namespace whose
// dataset (the mount's source) is dir, lies inside it or holds it: the
// writers a BusyError is about.
func arrayfsMountsOf(dir string) []mountInfo {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	within := func(a, b string) bool { return a == b || strings.HasPrefix(a, strings.TrimSuffix(b, "/")+"/") }
	var out []mountInfo
	for _, mi := range mounts() {
		if mi.fstype == "fuse.arrayfs" && (within(mi.source, dir) || within(dir, mi.source)) {
			out = append(out, mi)
		}
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
