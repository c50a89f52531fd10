package fuse_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// transferred is the files an rsync --itemize-changes output says it
// sent (lines ">f..."), sorted.
func transferred(out string) []string {
	var files []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, ">f") {
			if f := strings.Fields(line); len(f) == 2 {
				files = append(files, f[1])
			}
		}
	}
	slices.Sort(files)
	return files
}

// TestRsyncWholeDataset: rsync of the mount is a complete backup of the
// canonical tree; a second run, also with --checksum, and one after a
// remount transfer nothing; after one document, one array row and one
// dirdb entry change, the next run transfers exactly those three files;
// and the backup restored into a mount of an empty dataset, by rsync
// (with its temp files, or --inplace), cp -a or tar, gives the same
// dataset: daf and dirdb files byte for byte, the same documents in the
// same order, and the mtimes and modes kept.
func TestRsyncWholeDataset(t *testing.T) {
	// All three formats: store/ (docarray), arrays/ (daf), db/ (dirdb).
	root := fixtureDataset(t, map[string]string{"arrays": "daf/arrays", "db": "dirdb/db"})
	m := mount(t, root)
	old := time.Date(2019, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(m.Path("store/doc-000"), old, old)
	os.Chmod(m.Path("arrays/cell#i64.array"), 0o600)
	backup := t.TempDir()
	run(t, "rsync", "-aHAX", m.Dir+"/", backup+"/")
	for _, flags := range [][]string{{"-aHAX"}, {"-aHAX", "--checksum"}} {
		args := append(append([]string{}, flags...), "--itemize-changes", m.Dir+"/", backup+"/")
		if out := run(t, "rsync", args...); strings.TrimSpace(out) != "" {
			t.Errorf("rsync %v right after the backup transferred:\n%s", flags, out)
		}
	}
	m.Unmount()
	m = mount(t, root)
	if out := run(t, "rsync", "-aHAX", "--itemize-changes", m.Dir+"/", backup+"/"); strings.TrimSpace(out) != "" {
		t.Errorf("rsync after a remount transferred:\n%s", out)
	}

	// One document, one row of an array, one dirdb entry.
	if err := os.WriteFile(m.Path("store/doc-000"), pbDoc("doc-000", "changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(m.Path("arrays/cell,gene#X.array"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	row := make([]byte, 8)
	f.ReadAt(row, 0)
	for i := range row {
		row[i] ^= 0x5a
	}
	if _, err := f.WriteAt(row, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Path("db/set-000.pickle"), []byte("\x80\x04K\x07."), 0o644); err != nil {
		t.Fatal(err)
	}
	out := run(t, "rsync", "-aHAX", "--itemize-changes", m.Dir+"/", backup+"/")
	if got, want := transferred(out), []string{"arrays/cell,gene#X.array", "db/set-000.pickle", "store/doc-000"}; !slices.Equal(got, want) {
		t.Errorf("after three changes rsync transferred %v, want %v:\n%s", got, want, out)
	}
	m.Unmount()

	restores := map[string]func(dst string){
		"rsync":           func(dst string) { run(t, "rsync", "-aHAX", backup+"/", dst+"/") },
		"rsync --inplace": func(dst string) { run(t, "rsync", "-aHAX", "--inplace", backup+"/", dst+"/") },
		"cp -a":           func(dst string) { run(t, "cp", "-a", backup+"/.", dst+"/") },
		// pax: GNU tar's own format keeps whole seconds only.
		"tar": func(dst string) {
			run(t, "sh", "-c", "tar --format=posix -C '"+backup+"' -cf - . | tar -C '"+dst+"' -xpf -")
		},
	}
	wantDocs := readDocStore(t, filepath.Join(root, "store"), 36).Docs
	for how, restore := range restores {
		t.Run(strings.ReplaceAll(how, " ", "_"), func(t *testing.T) {
			empty := t.TempDir()
			m2 := mount(t, empty)
			restore(m2.Dir)
			// What the mount shows is the backup, names, bytes and times.
			if out := run(t, "rsync", "-aHAX", "--checksum", "--itemize-changes", "--dry-run", backup+"/", m2.Dir+"/"); strings.TrimSpace(out) != "" {
				t.Errorf("%s: the restored mount differs from the backup:\n%s", how, out)
			}
			m2.Unmount()
			for _, dir := range []string{"arrays", "db"} {
				ents, err := os.ReadDir(filepath.Join(root, dir))
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range ents {
					if !e.Type().IsRegular() {
						continue
					}
					rel := filepath.Join(dir, e.Name())
					a, b := filepath.Join(root, rel), filepath.Join(empty, rel)
					if !bytes.Equal(mustRead(t, a), mustRead(t, b)) {
						t.Errorf("%s: %s differs from the original's", how, rel)
					}
					if strings.HasSuffix(rel, ".lock") {
						// dirdb's lock files: every locker, dirdb
						// itself too, opens them O_TRUNC; their
						// times and modes are not data.
						continue
					}
					sa, _ := os.Stat(a)
					sb, err := os.Stat(b)
					if err != nil || !sa.ModTime().Equal(sb.ModTime()) || sa.Mode() != sb.Mode() {
						t.Errorf("%s: %s: mtime %v mode %v, the original's %v %v (%v)", how, rel, modTime(sb), modeOf(sb), sa.ModTime(), sa.Mode(), err)
					}
				}
			}
			sameDocs(t, how+": the restored store", readDocStore(t, filepath.Join(empty, "store"), 36).Docs, wantDocs)
		})
	}
}

func modTime(st os.FileInfo) any {
	if st == nil {
		return "?"
	}
	return st.ModTime()
}

func modeOf(st os.FileInfo) any {
	if st == nil {
		return "?"
	}
	return st.Mode()
}
