package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/syslog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	afs "github.com/arrayfs/arrayfs/fs"
	"github.com/arrayfs/arrayfs/mountopts"
	"github.com/arrayfs/arrayfs/store"
)

var mountCommand = &command{
	usage: "arrayfs mount [-o OPTIONS] [--background] [--log FILE] DATASET MOUNTPOINT",
	help: `
Mounts the dataset directory DATASET at MOUNTPOINT and serves it until
unmounted. Runs in the foreground unless --background is given, which
returns once the mount is ready.

SIGINT or SIGTERM writes back every pending write, unmounts and exits 0;
so does an unmount from outside (arrayfs umount, umount, fusermount3 -u).
One writable mount per dataset: a second one (of it, or of a directory
inside or above it) is refused, naming the first; read-only ones may join.

  -o OPTIONS      comma list of mount options (may be repeated):
                    ro, rw                 read-only or read-write (default rw)
                    allow_other            let other users use the mount (implies
                                           default_permissions)
                    default_permissions    let the kernel check permissions
                    no_default_permissions with allow_other: check nothing (warned)
                    pool_size=N            dirty units held before write-back (default 1000)
                    pool_bytes=SIZE        dirty bytes held before write-back (default 64M)
                    writeback=DURATION     periodic write-back (default 5s; 0 = only on
                                           eviction, fsync, close and unmount)
                    key_length=N           key length of docarray stores (default: detect)
                    views=hidden|visible   list /.arrayfs in the root (default hidden)
                    store_connections      with ro: serve each docarray store directory on a
                                           FUSE connection of its own, mounted over it, that
                                           never opens a document (the fastest small-file
                                           reads; the store directories become mount points)
                    debug                  log every FUSE request
  --background    detach once mounted (logs go to --log FILE, else syslog)
  --log FILE      append log lines to FILE instead of stderr
`,
	run: runMount,
}

// readyEnv names the descriptor on which a --background child reports
// that its mount is ready ("ok") or why it failed.
const readyEnv = "ARRAYFS_READY_FD"

func runMount(args []string) error {
	m, err := parseMountArgs(args)
	if err != nil {
		return err
	}
	if len(m.positional) != 2 {
		return usagef("needs DATASET and MOUNTPOINT")
	}
	dataset, mountpoint := m.positional[0], m.positional[1]
	if err := preflight(dataset, mountpoint); err != nil {
		return err
	}
	if m.background && os.Getenv(readyEnv) == "" {
		return daemonize(m)
	}
	logger, err := openLog(m)
	if err != nil {
		return err
	}
	return serve(dataset, mountpoint, m.opts, logger, readyNotifier())
}

// preflight turns the common reasons a mount fails into one clear line
// each, before anything is started.
func preflight(dataset, mountpoint string) error {
	if err := preflightDataset(dataset); err != nil {
		return err
	}
	st, err := os.Stat(mountpoint)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mount point %s: no such directory", mountpoint)
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("mount point %s: a FUSE file system whose process died is still mounted there; run 'fusermount3 -u %s' (or 'umount -l %s') first", mountpoint, mountpoint, mountpoint)
	case err != nil:
		return fmt.Errorf("mount point %s: %v", mountpoint, unwrapPathError(err))
	case !st.IsDir():
		return fmt.Errorf("mount point %s: not a directory", mountpoint)
	}
	if err := preflightNesting(dataset, mountpoint); err != nil {
		return err
	}
	if mi, ok := findMount(mountpoint); ok {
		return fmt.Errorf("mount point %s: in use (a %s file system is mounted there); unmount it first", mountpoint, mi.fstype)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("/dev/fuse is missing: this machine cannot serve FUSE file systems (load the fuse module, or give the container /dev/fuse)")
	}
	return nil
}

func preflightDataset(dataset string) error {
	st, err := os.Stat(dataset)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("dataset %s: no such directory", dataset)
	case err != nil:
		return fmt.Errorf("dataset %s: %v", dataset, unwrapPathError(err))
	case !st.IsDir():
		return fmt.Errorf("dataset %s: not a directory", dataset)
	}
	return nil
}

// preflightNesting refuses a mount point that is the dataset or inside
// it (through symbolic links and bind mounts too): every access to the
// mount would reach the dataset through the mount itself, and the first
// lookup would hang every process that touches it.
func preflightNesting(dataset, mountpoint string) error {
	var ds syscall.Stat_t
	if err := syscall.Stat(dataset, &ds); err != nil {
		return fmt.Errorf("dataset %s: %v", dataset, err)
	}
	p, err := filepath.EvalSymlinks(mountpoint)
	if err != nil {
		return fmt.Errorf("mount point %s: %v", mountpoint, unwrapPathError(err))
	}
	if p, err = filepath.Abs(p); err != nil {
		return err
	}
	for first := true; ; first = false {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil && st.Dev == ds.Dev && st.Ino == ds.Ino {
			if first {
				return fmt.Errorf("mount point %s is the dataset directory itself: mount it somewhere outside the dataset", mountpoint)
			}
			return fmt.Errorf("mount point %s is inside the dataset %s (at %s): the mount would serve itself; choose a mount point outside the dataset", mountpoint, dataset, p)
		}
		if p == "/" || p == "." {
			return nil
		}
		p = filepath.Dir(p)
	}
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// daemonize starts this command again, detached, and returns once the
// child reports that its mount is ready.
func daemonize(m *mountArgs) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"mount"}
	for _, l := range m.lists {
		args = append(args, "-o", l)
	}
	if m.logFile != "" {
		args = append(args, "--log", m.logFile)
	}
	args = append(args, "--background", "--")
	args = append(args, m.positional...)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	// The child must not hold the caller's stdout: a caller reading it
	// to EOF would wait for the unmount.
	cmd.Stdin, cmd.Stdout = nil, nil
	if m.logFile == "" {
		cmd.Stderr = os.Stderr // until it has mounted and switched to syslog
	} else {
		lf, err := os.OpenFile(m.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			w.Close()
			return fmt.Errorf("log file %s: %v", m.logFile, unwrapPathError(err))
		}
		// A crash (a Go panic goes to stderr) must land in the log too.
		defer lf.Close()
		cmd.Stderr = lf
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	w.Close()
	msg, _ := io.ReadAll(r)
	if strings.TrimSpace(string(msg)) == "ok" {
		cmd.Process.Release()
		return nil
	}
	werr := cmd.Wait()
	if len(msg) == 0 {
		return fmt.Errorf("the background process exited before mounting (%v)", werr)
	}
	return errors.New(strings.TrimSpace(string(msg)))
}

// readyNotifier returns what serve calls once mounted, or with the error
// that stopped it: a --background child writes it to its parent.
func readyNotifier() func(error) {
	fdStr := os.Getenv(readyEnv)
	if fdStr == "" {
		return func(error) {}
	}
	os.Unsetenv(readyEnv)
	var fd int
	fmt.Sscan(fdStr, &fd)
	f := os.NewFile(uintptr(fd), "ready")
	var once sync.Once
	return func(err error) {
		once.Do(func() {
			if err == nil {
				io.WriteString(f, "ok\n")
			} else {
				io.WriteString(f, err.Error()+"\n")
			}
			f.Close()
		})
	}
}

func openLog(m *mountArgs) (*log.Logger, error) {
	flags := log.LstdFlags | log.Lmsgprefix
	if m.opts.Debug {
		// A request's time is what its rx and tx lines tell apart.
		flags |= log.Lmicroseconds
	}
	if m.logFile != "" {
		f, err := os.OpenFile(m.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("log file %s: %v", m.logFile, unwrapPathError(err))
		}
		return log.New(f, "arrayfs: ", flags), nil
	}
	if os.Getenv(readyEnv) != "" {
		if w, err := syslog.New(syslog.LOG_INFO|syslog.LOG_DAEMON, "arrayfs"); err == nil {
			return log.New(w, "", 0), nil
		}
	}
	return log.New(os.Stderr, "arrayfs: ", flags), nil
}

// serve mounts and serves until unmounted, then writes back everything.
func serve(dataset, mountpoint string, opts mountopts.Options, logger *log.Logger, ready func(error)) (err error) {
	defer func() { ready(err) }()
	if abs, err := filepath.Abs(mountpoint); err == nil {
		mountpoint = abs
	}
	// The kernel has applied the caller's umask to every mode it sends
	// (arrayfs does not ask for FUSE_DONT_MASK): the daemon's own must
	// not take bits off again, or a file created 0620 becomes 0600 and
	// one created 04777 becomes 04755. Every file arrayfs makes for
	// itself names its mode.
	syscall.Umask(0)
	if opts.StoreConnections && !opts.ReadOnly {
		// A writer's close must reach the daemon to commit its document
		// (and report a refusal); a connection without OPEN and FLUSH
		// would never tell it.
		return fmt.Errorf("mount option store_connections: only for read-only mounts (add -o ro)")
	}
	ds, err := store.Open(dataset, store.Config{
		PoolUnits: opts.PoolSize,
		PoolBytes: opts.PoolBytes,
		KeyLength: opts.KeyLength,
		ReadOnly:  opts.ReadOnly,
		Logf:      logger.Printf,
	})
	if err != nil {
		return busyError(err, "mount it read-only (-o ro) beside it, or unmount that one first")
	}
	fsys, err := afs.New(ds, opts, logger.Printf)
	if err != nil {
		ds.Close()
		return err
	}
	mo := fsys.MountOptions(mountpoint)
	mo.Logger = logger
	mo.MountOptions.Logger = logger
	server, err := mountCapturingHelper(mountpoint, fsys, mo)
	if err != nil {
		ds.Close()
		return err
	}
	raiseReadahead(mountpoint, logger)
	if opts.StoreConnections {
		fsys.ServeStoreConnections(mountpoint, mo)
	}
	fsys.KeepMemoryBudget()
	ds.Pool().StartTimer(opts.Writeback, func(err error) { logger.Printf("periodic write-back: %v", err) }, ds.Backing().SyncDirs)
	logger.Printf("mounted %s at %s (%s)", ds.Root(), mountpoint, opts)
	if opts.AllowOther && !opts.CheckPermissions() {
		logger.Printf("warning: allow_other with no_default_permissions: the kernel checks no permissions, so every user may read, write and change every file of the dataset that this process (uid %d) may", os.Geteuid())
	}
	ready(nil)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go unmountOnSignal(sigs, server, fsys, ds, mountpoint, logger)

	server.Wait()
	signal.Stop(sigs)
	fsys.CloseStoreConnections() // after a lazy unmount from outside
	// An unmount from outside lands here with the pool still full.
	err = ds.Close()
	stats := ds.Pool().Stats()
	if err != nil {
		logger.Printf("write-back at unmount: %v (%d units still dirty)", err, stats.Units)
		return &exitError{1}
	}
	logger.Printf("unmounted %s; everything written back (%d units written back while mounted)", mountpoint, stats.WriteBacks)
	return nil
}

// busyError names the mount that writes a dataset already, when that is
// why it cannot be opened for writing, and says what to do instead.
func busyError(err error, advice string) error {
	var be *store.BusyError
	if !errors.As(err, &be) {
		return err
	}
	var names []string
	for _, mi := range arrayfsMountsOf(be.Dataset) {
		names = append(names, fmt.Sprintf("%s (dataset %s)", mi.mountpoint, mi.source))
	}
	who := "another arrayfs process (not a mount of this namespace: an offline prune?)"
	if len(names) > 0 {
		who = "the arrayfs mount at " + strings.Join(names, ", ")
	}
	return fmt.Errorf("%v: it is written by %s; %s", err, who, advice)
}

// unmountOnSignal writes back and unmounts on SIGINT/SIGTERM. When the
// mount is busy it detaches it (umount -l): processes still inside keep
// working, and serve returns once the last of them lets go.
func unmountOnSignal(sigs <-chan os.Signal, server *fuse.Server, fsys *afs.FS, ds *store.Dataset, mountpoint string, logger *log.Logger) {
	for sig := range sigs {
		logger.Printf("%v: writing back and unmounting %s", sig, mountpoint)
		if err := ds.Sync(); err != nil {
			logger.Printf("write-back: %v", err)
		}
		fsys.CloseStoreConnections()
		if err := server.Unmount(); err == nil {
			return
		} else {
			logger.Printf("unmount: %v; detaching the mount instead (it goes away when the last user leaves)", err)
		}
		if err := lazyUnmount(mountpoint); err != nil {
			logger.Printf("detach: %v", err)
		}
	}
}

func lazyUnmount(mountpoint string) error {
	if err := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err == nil {
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", "-z", mountpoint).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u -z: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// readaheadKB is the kernel readahead arrayfs asks for on its mount: the
// default 128 KiB caps sequential reads of big arrays well below what the
// mapping can serve (see ../shared/fuse-facts.md: 1 MiB reads and 1 MiB
// readahead more than double cold throughput).
const readaheadKB = 1024

// raiseReadahead sets the mount's readahead. Only root may; elsewhere the
// kernel default stays, which is slower but correct.
func raiseReadahead(mountpoint string, logger *log.Logger) {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(fmt.Sprint(readaheadKB)), 0); err != nil && os.Geteuid() == 0 {
		logger.Printf("readahead stays at the kernel default: %v", err)
	}
}

// mountCapturingHelper mounts. Where mount(2) is not permitted, go-fuse
// runs fusermount3 with our stderr; its complaint is captured so that the
// user gets one line that says what went wrong.
func mountCapturingHelper(mountpoint string, fsys *afs.FS, mo *gofs.Options) (*fuse.Server, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	helperSaid := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		r.Close()
		helperSaid <- strings.Join(strings.Fields(string(b)), " ")
	}()
	stderr := os.Stderr
	os.Stderr = w
	server, err := gofs.Mount(mountpoint, fsys.Root(), mo)
	os.Stderr = stderr
	w.Close()
	said := <-helperSaid
	if err != nil {
		return nil, mountError(mountpoint, err, said)
	}
	if said != "" {
		fmt.Fprintln(stderr, said)
	}
	return server, nil
}

// mountError explains why mounting failed, with what fusermount3 said.
func mountError(mountpoint string, err error, helperSaid string) error {
	msg := strings.TrimSpace(err.Error())
	if helperSaid != "" {
		msg = helperSaid
	}
	switch {
	case strings.Contains(msg, "executable file not found"):
		return fmt.Errorf("cannot mount at %s: not root, and fusermount3 is not installed (apt-get install fuse3)", mountpoint)
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || helperSaid != "" ||
		strings.Contains(msg, "ermission denied") || strings.Contains(msg, "not permitted"):
		return fmt.Errorf("not permitted to mount at %s: %s (mount as root, or as a user fusermount3 lets mount there)", mountpoint, msg)
	}
	return fmt.Errorf("mount at %s: %s", mountpoint, msg)
}
