package main

import (
	"fmt"

	"github.com/arrayfs/arrayfs/mountopts"
	"github.com/arrayfs/arrayfs/store"
)

var checkCommand = &command{
	usage: "arrayfs check [-o key_length=N] DATASET",
	help: `
Validates every item arrayfs recognises in DATASET (daf arrays, docarray
stores, dirdb databases) without changing anything. Prints one line per
problem, "path: reason", and exits 1 if there is any, 0 if none.
`,
	run: runCheck,
}

func runCheck(args []string) error {
	m, err := parseMountArgs(args)
	if err != nil {
		return err
	}
	if m.background || m.logFile != "" {
		return usagef("takes only -o key_length=N and DATASET")
	}
	if len(m.positional) != 1 {
		return usagef("needs DATASET")
	}
	if err := checkOnlyKeyLength(m.opts); err != nil {
		return err
	}
	dataset := m.positional[0]
	if err := preflightDataset(dataset); err != nil {
		return err
	}
	problems, err := store.Check(dataset, store.Config{KeyLength: m.opts.KeyLength})
	for _, p := range problems {
		fmt.Println(p)
	}
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return &exitError{1}
	}
	return nil
}

func checkOnlyKeyLength(o mountopts.Options) error {
	d := mountopts.Default()
	d.KeyLength = o.KeyLength
	if o != d {
		return usagef("only the key_length option applies to check")
	}
	return nil
}
