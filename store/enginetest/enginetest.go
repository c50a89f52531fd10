// Package enginetest is what the tests of the format packages share: the
// fixtures the original Python code wrote, a log that tests can count
// lines of, and a dataset of one format alone over a directory (the
// engine.Formats a store.Dataset would make, without the dataset lock).
//
// It imports store/engine only, so that a format's tests need nothing
// of another format or of package store. Only tests import it.
package enginetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/arrayfs/arrayfs/store/engine"
)

// FixtureDir is the directory of fixture rel (under ../shared/fixtures
// of the repository), found from the test's working directory.
func FixtureDir(t testing.TB, rel string) string {
	t.Helper()
	up := ".."
	for range 6 {
		p := filepath.Join(up, "shared", "fixtures", rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		up = filepath.Join(up, "..")
	}
	t.Fatalf("fixture %s not found", rel)
	return ""
}

// CopyFixtureDir copies the files of a fixture directory into a temp dir.
func CopyFixtureDir(t testing.TB, rel string) string {
	t.Helper()
	src := FixtureDir(t, rel)
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// Log keeps the lines a dataset logs.
type Log struct {
	mu    sync.Mutex
	lines []string
}

// Logf is the dataset's log function.
func (l *Log) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

// Count is how many lines hold sub.
func (l *Log) Count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

// Config is the part of the mount options a format sees.
type Config = engine.EnvConfig

// A Dataset is a directory served by the format of a test alone.
type Dataset struct {
	engine.Formats
}

// Open opens root served by the format newFormat makes over its Env.
// The caller closes it.
func Open[F engine.Format](t testing.TB, root string, cfg Config, newFormat func(engine.Env) F) (*Dataset, F) {
	t.Helper()
	back, err := engine.OpenBacking(root)
	if err != nil {
		t.Fatal(err)
	}
	env := engine.NewEnv(back, cfg)
	f := newFormat(env)
	return &Dataset{engine.Formats{Env: env, List: []engine.Format{f}}}, f
}

// Root is the directory's absolute path.
func (d *Dataset) Root() string { return d.Back.Path() }

// Close writes back everything and closes the format and the directory.
func (d *Dataset) Close() error {
	err := d.Formats.Close()
	d.Back.Close()
	return err
}
