package store

import (
	"go/build"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/arrayfs/arrayfs"

// formatPackages are the format packages: each is a room of its own.
var formatPackages = []string{"store/daf", "store/dirdb", "store/docarray"}

// arrayfsImports lists the arrayfs packages that package dir (relative to
// the repository) imports, tests excluded, and whether it imports FUSE.
func arrayfsImports(t *testing.T, dir string) (own []string, fuse bool) {
	t.Helper()
	p, err := build.Import(module+"/"+dir, filepath.Join("..", dir), 0)
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	for _, imp := range p.Imports {
		if rel, ok := strings.CutPrefix(imp, module+"/"); ok {
			own = append(own, rel)
		}
		if strings.Contains(imp, "go-fuse") {
			fuse = true
		}
	}
	return own, fuse
}

// TestImportRules holds the packages to the direction of imports the
// README's layout shows: engine knows no format, a format knows only the
// engine, the dataset knows the formats, and nothing under store knows
// FUSE.
func TestImportRules(t *testing.T) {
	allowed := map[string][]string{
		"store/engine": {},
		"store":        append([]string{"store/engine"}, formatPackages...),
	}
	for _, f := range formatPackages {
		allowed[f] = []string{"store/engine"}
	}
	for dir, ok := range allowed {
		own, fuse := arrayfsImports(t, dir)
		if fuse {
			t.Errorf("%s imports FUSE", dir)
		}
		for _, imp := range own {
			if !slices.Contains(ok, imp) {
				t.Errorf("%s imports %s; it may import only %v", dir, imp, ok)
			}
		}
	}
}

// TestFSFilesUseOneFormat: each file of fs, one node type or its
// handles, uses at most one format package. file.go is the exception: a
// regular file's kind (plain, an array's data file, a dirdb member) is
// decided at each open, because it changes while the file keeps its
// node (an array appears when its yaml arrives), and file.go hands the
// open to that format's handles.
func TestFSFilesUseOneFormat(t *testing.T) {
	files, err := filepath.Glob("../fs/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fs files: %v", err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || filepath.Base(f) == "file.go" {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		var formats []string
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if slices.Contains(formatPackages, strings.TrimPrefix(path, module+"/")) {
				formats = append(formats, path)
			}
		}
		if len(formats) > 1 {
			t.Errorf("%s uses %d format packages %v; a node type uses its own format's only", f, len(formats), formats)
		}
	}
}
