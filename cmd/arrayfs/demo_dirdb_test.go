package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arrayfs/arrayfs/store"
)

// TestDemoDirdb: the demo's dirdb entry is what Python's pickle and json
// read, and arrayfs check finds nothing wrong with the demo dataset.
func TestDemoDirdb(t *testing.T) {
	dir := t.TempDir()
	if err := writeDemoDataset(dir); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/bin/python3", "-c", `
import json, pickle, sys
print(pickle.load(open(sys.argv[1] + '/hello.pickle', 'rb')), json.load(open(sys.argv[1] + '/hello.json')))
`, filepath.Join(dir, "db")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "{'greeting': 'hello', 'values': [1, 2, 3]} {'source': 'arrayfs demo', 'n': 3}" {
		t.Errorf("python reads the demo entry as %s (%v)", out, err)
	}
	problems, err := store.Check(dir, store.Config{})
	if err != nil || len(problems) != 0 {
		t.Errorf("check of the demo dataset: %v %v", problems, err)
	}
}
