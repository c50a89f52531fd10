package fuse_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestForkDoesNotPublish: a Python process rewrites a dirdb entry, a
// document and an array, and in the middle of each runs a subprocess.
// The fork copies its descriptors and the child's exec closes them,
// which the file system sees as a close: each used to publish the half
// written file (a torn pickle on disk, a document refused or cut short).
// Only the writer's own close publishes.
func TestForkDoesNotPublish(t *testing.T) {
	requireFUSE(t)
	ds := t.TempDir()
	run(t, "cp", "-r", fixturePath(t, "dirdb/db"), filepath.Join(ds, "db"))
	run(t, "cp", "-r", fixturePath(t, "daf/arrays"), filepath.Join(ds, "arrays"))
	run(t, "chmod", "-R", "u+w", ds)
	writeDocStore(t, filepath.Join(ds, "docs"), 36, []storeDoc{{"d", pbDoc("d", "old")}})
	m := mount(t, ds)
	oldPickle := mustRead(t, m.Backing("db/set-002.pickle"))
	arraySize := len(mustRead(t, m.Backing("arrays/cell#flag.array")))
	newDoc := pbDoc("d", "new and longer than the old one")
	os.WriteFile(filepath.Join(ds, "..", "newdoc"), newDoc, 0o644)

	// Each file: write half, fork+exec a child, report what readers see,
	// write the rest, close.
	out := pyRun(t, `
import subprocess, sys
mnt, backing, n, newdoc = sys.argv[1], sys.argv[2], int(sys.argv[3]), open(sys.argv[4], 'rb').read()
def rewrite(rel, content, read_backing):
    f = open(mnt + '/' + rel, 'wb')
    half = len(content) // 2
    f.write(content[:half]); f.flush()
    subprocess.run(['true'], check=True)
    seen = open(mnt + '/' + rel, 'rb').read()
    disk = open(backing + '/' + rel, 'rb').read() if read_backing else b''
    f.write(content[half:])
    f.close()
    print(rel, len(seen), seen == content[:half], len(disk), disk == content[:half])
rewrite('db/set-002.pickle', b'\x80\x04' + b'x' * 1000 + b'.', True)
rewrite('docs/d', newdoc, False)
rewrite('arrays/cell#flag.array', b'\x01' * n, True)
`, m.Dir, ds, strconv.Itoa(arraySize), filepath.Join(ds, "..", "newdoc"))
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 5 {
			t.Fatalf("unexpected output: %q", out)
		}
		if f[2] == "True" || f[4] == "True" {
			t.Errorf("%s: the half written version was published when the writer forked (through the mount: %s bytes, half: %s; on disk: %s bytes, half: %s)", f[0], f[1], f[2], f[3], f[4])
		}
	}
	if got := mustRead(t, m.Path("docs/d")); !bytes.Equal(got, newDoc) {
		t.Errorf("document after the writer's close: %q", got)
	}
	if got := mustRead(t, m.Path("db/set-002.pickle")); len(got) != 1003 || bytes.Equal(got, oldPickle) {
		t.Errorf("entry after the writer's close: %d bytes", len(got))
	}
	if got := mustRead(t, m.Path("arrays/cell#flag.array")); !bytes.Equal(got, bytes.Repeat([]byte{1}, arraySize)) {
		t.Errorf("array after the writer's close: %q...", got[:min(8, len(got))])
	}
	m.Unmount()
}
