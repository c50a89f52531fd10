package store

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Check validates every item it recognises under the dataset directory
// root and returns one Problem per thing wrong, sorted by path. It only
// reads.
func Check(root string, cfg Config) ([]Problem, error) {
	var problems []Problem
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		if err != nil {
			problems = append(problems, Problem{Path: rel, Reason: err.Error()})
			return nil
		}
		if !e.IsDir() {
			return nil
		}
		names, err := readDirNames(p)
		if err != nil {
			problems = append(problems, Problem{Path: rel, Reason: err.Error()})
			return nil
		}
		for _, c := range checkers {
			problems = append(problems, c(root, rel, names, cfg)...)
		}
		return nil
	})
	sort.SliceStable(problems, func(i, j int) bool { return problems[i].Path < problems[j].Path })
	return problems, err
}

// A checker validates the items of one format in one directory. Each
// format registers its own.
type checker func(root, dirRel string, names []string, cfg Config) []Problem

var checkers = []checker{checkStaged, checkArrays}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

func checkStaged(root, dirRel string, names []string, cfg Config) []Problem {
	var out []Problem
	for _, n := range names {
		if IsStageName(n) {
			out = append(out, Problem{Path: filepath.Join(dirRel, n),
				Reason: "staged file left by an interrupted write (the old content is intact; the next mount removes it)"})
		}
	}
	return out
}

// checkArrays validates every daf array of a directory: each NAME.yaml
// with a data file beside it.
func checkArrays(root, dirRel string, names []string, cfg Config) []Problem {
	dir := filepath.Join(root, dirRel)
	has := map[string]bool{}
	for _, n := range names {
		has[n] = true
	}
	var out []Problem
	for _, n := range names {
		base, ok := strings.CutSuffix(n, ExtYAML)
		if !ok || base == "" {
			continue
		}
		var first string
		for _, ext := range dafDataExts {
			if has[base+ext] {
				first = base + ext
				break
			}
		}
		if first == "" {
			continue // a scalar property or any other yaml
		}
		if _, p, err := validateArray(dir, first); err != nil {
			out = append(out, Problem{Path: filepath.Join(dirRel, first), Reason: err.Error()})
		} else if p != nil {
			out = append(out, Problem{Path: filepath.Join(dirRel, p.Path), Reason: p.Reason})
		}
	}
	return out
}
