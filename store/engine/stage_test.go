package engine

import (
	"os"
	"path/filepath"
	"testing"
)

// Publish renames at once and leaves the directory's durability to
// SyncDirs; Commit is durable by itself; a directory with renames is
// held once, however many.
func TestStagePublishDefersDirSync(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "db"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := OpenBacking(root)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(rel, content string, durable bool) {
		t.Helper()
		s, err := b.NewStage(rel, false, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.File().WriteString(content); err != nil {
			t.Fatal(err)
		}
		if durable {
			err = s.Commit()
		} else if err = s.Sync(); err == nil {
			err = s.Publish()
		}
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil || string(got) != content {
			t.Fatalf("%s after publishing = %q, %v; want %q", rel, got, err, content)
		}
	}
	publish("db/a", "one", true)
	if n := b.UnsyncedDirs(); n != 0 {
		t.Fatalf("after Commit: %d unsynced directories, want 0", n)
	}
	publish("db/a", "two", false)
	publish("db/b", "three", false)
	publish("top", "four", false)
	if n := b.UnsyncedDirs(); n != 2 {
		t.Fatalf("after publishing into two directories: %d unsynced, want 2", n)
	}
	if err := b.SyncDirs(); err != nil {
		t.Fatal(err)
	}
	if n := b.UnsyncedDirs(); n != 0 {
		t.Fatalf("after SyncDirs: %d unsynced directories, want 0", n)
	}
	names, _ := os.ReadDir(filepath.Join(root, "db"))
	if len(names) != 2 {
		t.Errorf("db holds %d names, want a and b only (no stage left behind)", len(names))
	}
}
