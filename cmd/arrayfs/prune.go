package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arrayfs/arrayfs/store"
	"github.com/arrayfs/arrayfs/store/docarray"
)

var pruneCommand = &command{
	usage: "arrayfs prune [-o key_length=N] STORE",
	help: `
Compacts the docarray store in directory STORE: the live documents are
copied, in store order, into a new header.bin and body.bin; tombstones,
old versions and garbage are dropped. Each document keeps its bytes, its
place in the order, its mtime, mode, owner and inode number. The new
store is built beside the old one and swapped in with one atomic rename,
so a kill at any moment leaves a complete store (the old or the new).

STORE may be a store inside an arrayfs mount (the mount prunes it, while
serving it) or a store that is not mounted. A progress bar is shown when
stderr is a terminal.
`,
	run: runPrune,
}

// Extended attributes of a store directory in a mount (see fs/docstore.go).
const (
	xattrStore         = "user.arrayfs.store"
	xattrPrune         = "user.arrayfs.prune"
	xattrPruneProgress = "user.arrayfs.prune_progress"
	xattrPruneResult   = "user.arrayfs.prune_result"
)

func runPrune(args []string) error {
	m, err := parseMountArgs(args)
	if err != nil {
		return err
	}
	if m.background || m.logFile != "" {
		return usagef("takes only -o key_length=N and STORE")
	}
	if len(m.positional) != 1 {
		return usagef("needs STORE")
	}
	if err := checkOnlyKeyLength(m.opts); err != nil {
		return err
	}
	path := m.positional[0]
	if st, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: %v", path, unwrapPathError(err))
	} else if !st.IsDir() {
		return fmt.Errorf("%s: not a directory", path)
	}
	bar := newProgressBar(os.Stderr, path)
	var stats docarray.PruneStats
	if mounted(path) {
		stats, err = pruneThroughMount(path, bar)
	} else {
		stats, err = store.PruneStore(path, store.Config{KeyLength: m.opts.KeyLength, Logf: func(f string, a ...any) {
			fmt.Fprintf(os.Stderr, "arrayfs prune: "+f+"\n", a...)
		}}, bar.update)
		err = busyError(err, "prune it through that mount (arrayfs prune MOUNTPOINT/PATH-OF-THE-STORE)")
	}
	bar.finish()
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d documents; %s -> %s (%s freed) in %v\n", path, stats.Documents,
		humanBytes(stats.BytesBefore), humanBytes(stats.BytesAfter), humanBytes(stats.BytesBefore-stats.BytesAfter),
		stats.Elapsed.Round(time.Millisecond))
	return nil
}

// mounted reports whether path is a store served by an arrayfs mount:
// only the mount answers the store's attribute.
func mounted(path string) bool {
	_, err := unix.Getxattr(path, xattrStore, make([]byte, 256))
	return err == nil
}

// pruneThroughMount asks the mount to prune the store (the write of the
// prune attribute returns when it is done) and shows its progress.
func pruneThroughMount(path string, bar *progressBar) (docarray.PruneStats, error) {
	done := make(chan error, 1)
	go func() { done <- unix.Setxattr(path, xattrPrune, []byte("1"), 0) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 64)
	for {
		select {
		case err := <-done:
			if err != nil {
				return docarray.PruneStats{}, fmt.Errorf("%s: prune through the mount: %v (the mount's log says why)", path, err)
			}
			return pruneResult(path)
		case <-tick.C:
			if n, err := unix.Getxattr(path, xattrPruneProgress, buf); err == nil {
				f := strings.Fields(string(buf[:n]))
				if len(f) == 2 {
					d, _ := strconv.ParseInt(f[0], 10, 64)
					t, _ := strconv.ParseInt(f[1], 10, 64)
					bar.update(d, t)
				}
			}
		}
	}
}

func pruneResult(path string) (docarray.PruneStats, error) {
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(path, xattrPruneResult, buf)
	if err != nil {
		return docarray.PruneStats{}, fmt.Errorf("%s: pruned, but the mount gives no figures: %v", path, err)
	}
	var r struct {
		Documents   int     `json:"documents"`
		BytesBefore int64   `json:"bytes_before"`
		BytesAfter  int64   `json:"bytes_after"`
		Seconds     float64 `json:"seconds"`
	}
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		return docarray.PruneStats{}, err
	}
	return docarray.PruneStats{Documents: r.Documents, BytesBefore: r.BytesBefore, BytesAfter: r.BytesAfter,
		Elapsed: time.Duration(r.Seconds * float64(time.Second))}, nil
}

// progressBar draws "label [#####.....] 45% 12.3 MiB/27.0 MiB" on a
// terminal, redrawn in place; nothing when the output is not one.
type progressBar struct {
	w     io.Writer
	label string
	on    bool
	drawn bool
}

func newProgressBar(f *os.File, label string) *progressBar {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return &progressBar{w: f, label: label, on: err == nil || os.Getenv("ARRAYFS_PROGRESS") == "1"}
}

func (b *progressBar) update(done, total int64) {
	if !b.on || total <= 0 {
		return
	}
	const width = 30
	filled := int(min(done, total) * width / total)
	fmt.Fprintf(b.w, "\r%s [%s%s] %3d%% %s/%s", b.label, strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		done*100/total, humanBytes(done), humanBytes(total))
	b.drawn = true
}

func (b *progressBar) finish() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	f, u := float64(n), 0
	for (f >= unit || f <= -unit) && u < 5 {
		f /= unit
		u++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTP"[u-1])
}
